//! `freshcache`: the service and the command-line tools over a freshcache directory.
//!
//! Exit codes: 0 success; 1 miss (or stale); 2 invalid input (key, value, config, usage);
//! 3 runtime failure (disk, index, I/O).

mod commands;
mod items;
mod output;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use freshcache::Config;

/// Default configuration file.
const DEFAULT_CONFIG: &str = "config/runtime.yml";

#[derive(Debug, Parser)]
#[command(
    name = "freshcache",
    version,
    about = "A multi-tier cache for time-sensitive signals"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "FRESHCACHE_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args, Clone, Copy)]
struct JsonFlag {
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: HTTP API on the embedded (or configured) tiers.
    Serve {
        /// Listen address; overrides `server.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Print a fresh value (raw bytes, or JSON with --json); exits 1 on a miss.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Store a value read from FILE, or stdin when FILE is `-` or absent.
    Set {
        /// The key (not with `--jsonl`).
        #[arg(required_unless_present = "jsonl")]
        key: Option<String>,
        /// Input file, or `-` for stdin.
        file: Option<PathBuf>,
        /// Store every item of a newline-delimited JSON file (`-` for stdin) in one batch:
        /// `{"key": "odds:g1:1", "value": 1.91, "ttl": "30s", "as_of": 1700000000}` per line
        /// (a string value is stored as text, other JSON as JSON). Every item is checked
        /// first; one bad item writes nothing and is named.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["key", "file", "ttl", "as_of"])]
        jsonl: Option<PathBuf>,
        /// Lifetime shorter than the type's (e.g. `30s`), when the type allows it.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        /// How the value is encoded.
        #[arg(long, value_enum, default_value_t = CodecArg::Bytes)]
        codec: CodecArg,
        /// When the signal was true (Unix seconds or RFC 3339); age counts from here.
        #[arg(long, value_parser = parse_timestamp)]
        as_of: Option<freshcache::Timestamp>,
        /// Keys the value was computed from (comma-separated): each must be fresh now, and the
        /// value stays fresh only while they are fresh and unchanged.
        #[arg(long, value_name = "KEYS", value_delimiter = ',')]
        derived_from: Vec<String>,
        /// Store even if an input is missing or stale (the value is then not fresh until they
        /// are).
        #[arg(long, requires = "derived_from")]
        unchecked_inputs: bool,
        /// Tags (comma-separated), for `invalidate --tag`.
        #[arg(long, value_name = "TAGS", value_delimiter = ',')]
        tags: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove one key from every tier.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Drop every key under PREFIX (or everything with --all) and print the count; or, with
    /// --tag, make every entry carrying TAG (and what was derived from it) not fresh.
    Invalidate {
        /// The prefix, e.g. `news:espn:`.
        #[arg(required_unless_present_any = ["all", "tag"], conflicts_with_all = ["all", "tag"])]
        prefix: Option<String>,
        /// A tag to invalidate.
        #[arg(long, conflicts_with = "all")]
        tag: Option<String>,
        /// Emergency flush of every entry.
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove expired entries, evict to the size limit, repair rows and files that disagree.
    Cleanup {
        /// Report what would be done without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Leave files younger than this alone (they may belong to a write in flight).
        #[arg(long, value_parser = parse_duration_or_zero, default_value = "10m")]
        orphan_grace: std::time::Duration,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Verify index integrity, every entry's checksums, and rows against files; exits 1 when
    /// something is wrong, unless --repair fixed it.
    Doctor {
        /// Fix what is found: remove corrupt entries, orphans and dangling rows.
        #[arg(long)]
        repair: bool,
        /// Leave files younger than this alone (they may belong to a write in flight).
        #[arg(long, value_parser = parse_duration_or_zero, default_value = "10m")]
        orphan_grace: std::time::Duration,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show where an entry lives, its age, remaining TTL, size, codec and validators.
    Inspect {
        /// The key.
        key: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Freshness report for an inference run's signals; exits 1 if any is stale or missing.
    /// Every check is recorded in the audit trail under the run id.
    Check {
        /// The keys the run needs.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Run id for the audit trail (default: generated).
        #[arg(long)]
        run_id: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The audit trail of one run: every signal checked, its age, TTL and verdict.
    Audit {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Fetch URL into KEY with a conditional request (ETag / Last-Modified); a 304 re-validates
    /// the stored entry without a download.
    Fetch {
        /// The feed's http:// or https:// URL.
        url: String,
        /// The key to store the body under.
        #[arg(long)]
        key: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Make the keys listed in a manifest fresh (fetch their URLs, read their files), with
    /// progress; exits 1 when any item could not be made fresh.
    Warm {
        /// YAML/JSON list of `{key, url | file, critical}`.
        manifest: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Statistics per tier and per data type.
    Stats {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration; exits 2 and names the problem when it is invalid.
    Check {
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CodecArg {
    Bytes,
    Json,
    Msgpack,
    Text,
}

impl From<CodecArg> for freshcache::Codec {
    fn from(c: CodecArg) -> Self {
        match c {
            CodecArg::Bytes => freshcache::Codec::Bytes,
            CodecArg::Json => freshcache::Codec::Json,
            CodecArg::Msgpack => freshcache::Codec::MsgPack,
            CodecArg::Text => freshcache::Codec::Text,
        }
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    freshcache::config::parse_duration(s)
}

fn parse_duration_or_zero(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

fn parse_timestamp(s: &str) -> Result<freshcache::Timestamp, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(freshcache::Timestamp::from_secs(secs));
    }
    humantime::parse_rfc3339_weak(s)
        .map(freshcache::Timestamp::from_system_time)
        .map_err(|e| format!("{s:?} is neither Unix seconds nor RFC 3339: {e}"))
}

/// How a command ended, mapped to an exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Key not found or not fresh.
    Miss,
    /// The freshness guard refused (exit 1, like a miss, with the reason).
    Refused(anyhow::Error),
    /// The caller's input was refused.
    Invalid(anyhow::Error),
    /// Something broke.
    Runtime(anyhow::Error),
}

impl From<freshcache::Error> for Failure {
    fn from(e: freshcache::Error) -> Self {
        // The library's one classification decides the exit code (and the HTTP status).
        match e.class().exit_code() {
            1 => Failure::Refused(e.into()),
            2 => Failure::Invalid(e.into()),
            _ => Failure::Runtime(e.into()),
        }
    }
}

impl From<freshcache::ConfigError> for Failure {
    fn from(e: freshcache::ConfigError) -> Self {
        Failure::Invalid(e.into())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Runtime(e.into())
    }
}

pub(crate) type CmdResult = Result<(), Failure>;

/// Loads the configuration: the file when it exists; the embedded default when the default
/// path is absent; environment overrides either way.
pub(crate) fn load_config(path: &std::path::Path) -> Result<Config, freshcache::ConfigError> {
    if !path.exists() && path == std::path::Path::new(DEFAULT_CONFIG) {
        return Config::from_yaml_str("", None, std::env::vars());
    }
    Config::load(path)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // One rustls crypto provider for the process (https feeds, rediss://).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Miss) => ExitCode::from(1),
        Err(Failure::Refused(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Invalid(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}
