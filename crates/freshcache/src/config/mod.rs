//! Configuration: the raw file as written (`config/runtime.yml`) and the validated [`Config`].
//!
//! The seed's file loads unchanged: numbers under `ttl:` are hours, strings are durations
//! (`60s`, `24h`, `1h 30m`). Environment variables `FRESHCACHE_<SECTION>__<FIELD>` override the
//! file (`FRESHCACHE_CACHE__CACHE_DIR=/var/cache/fc`). Every error names the file, the line
//! when known, the field and the reason.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::datatype::{DataTypeSpec, Placement, Registry, StalePolicy, TtlOverride};
use crate::error::{ConfigError, Result};

/// The prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "FRESHCACHE_";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

mod manifest;
mod raw;
mod schedule;
mod sources;

pub use manifest::{RawWarmItem, WarmItem, WarmSource, load_manifest, validate};
pub use schedule::Schedule;

pub use sources::{CacheControl, SourceConfig};
use sources::{locate_source, sources};

pub use raw::RawSource;
pub use raw::{
    ByteSize, RawCache, RawCleanup, RawConfig, RawDataType, RawDisk, RawFreshness, RawMemory,
    RawMonitoring, RawRedis, RawSegments, RawServer, TtlValue, parse_duration, parse_size,
};
pub use raw::{RawStale, RawStalePolicy};

/// Memory tier settings.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryConfig {
    /// Byte budget.
    pub max_bytes: u64,
}

/// Disk tier settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskConfig {
    /// Entries up to this stored size live inline in the index.
    pub inline_max: u64,
}

/// Cleanup settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CleanupConfig {
    /// Cron expression (5 or 6 fields).
    pub interval: String,
    /// Disk tier limit in bytes.
    pub max_size_bytes: u64,
    /// Free space to leave on the filesystem, in bytes (0: no watermark).
    pub min_free_disk: u64,
}

/// Alert thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitoringConfig {
    /// Fraction of checked signals.
    pub ttl_violation_threshold: f64,
    /// Fraction of lookups.
    pub cache_hit_ratio_threshold: f64,
}

/// A Redis URL; its password never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL with its password, for connecting.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    #[must_use]
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://") else {
            return s.clone();
        };
        let rest = &s[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                let shown = if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    "***".to_owned()
                };
                format!("{}{shown}{}", &s[..scheme_end + 3], &rest[at..])
            }
            None => s.clone(),
        }
    }

    /// True for `redis+cluster://` URLs.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.0.starts_with("redis+cluster://") || self.0.starts_with("rediss+cluster://")
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Redis tier settings (used when `redis_url` is set).
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// Key prefix for everything freshcache writes.
    pub namespace: String,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Deadline of connecting.
    pub connect_timeout: Duration,
    /// Values larger than this stay out of Redis.
    pub max_value_size: u64,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_open_for: Duration,
    /// Cross-instance load lease.
    pub lease: Duration,
    /// Password from the config or environment (overrides the URL's).
    pub password: Option<String>,
    /// ACL user from the config or environment (overrides the URL's).
    pub username: Option<String>,
    /// CA certificate (PEM) for `rediss://`, instead of the system trust store.
    pub tls_ca_file: Option<PathBuf>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_value_size", &self.max_value_size)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_for", &self.breaker_open_for)
            .field("lease", &self.lease)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("username", &self.username)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// Inference guard settings.
#[derive(Clone, Debug, PartialEq)]
pub struct FreshnessConfig {
    /// Audit rows older than this are removed by cleanup.
    pub audit_retention: Duration,
    /// Accepted lateness for clock skew between hosts (zero by default).
    pub clock_skew_tolerance: Duration,
}

/// Service settings.
#[derive(Clone, PartialEq)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token for mutating routes.
    pub auth_token: Option<String>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Redis URL (the Redis tier); `None` runs embedded.
    pub redis_url: Option<RedisUrl>,
    /// Redis tier options.
    pub redis: RedisConfig,
    /// Directory for blobs.
    pub cache_dir: PathBuf,
    /// SQLite index file.
    pub metadata_path: PathBuf,
    /// Data types by prefix.
    pub data_types: Registry,
    /// Memory tier.
    pub memory: MemoryConfig,
    /// Disk tier.
    pub disk: DiskConfig,
    /// Cleanup.
    pub cleanup: CleanupConfig,
    /// Alert thresholds.
    pub monitoring: MonitoringConfig,
    /// Inference guard.
    pub freshness: FreshnessConfig,
    /// Keys warmed by `serve` at start.
    pub warm: Vec<WarmItem>,
    /// Service.
    pub server: ServerConfig,
    /// Feeds kept fresh by `serve`.
    pub sources: Vec<SourceConfig>,
}

impl Default for Config {
    /// The embedded default: memory + disk under `data/cache`, seed TTLs 24 h / 1 h / 60 s.
    fn default() -> Self {
        match Self::from_raw(RawConfig::default(), None, "") {
            Ok(c) => c,
            Err(e) => unreachable!("built-in defaults are valid: {e}"),
        }
    }
}

fn builtin_types() -> Vec<(&'static str, DataTypeSpec)> {
    let spec =
        |name: &str, prefix: &str, ttl: u64, max: u64, compress: u64, seg: (usize, usize)| {
            DataTypeSpec {
                id: 0,
                name: name.into(),
                prefix: prefix.into(),
                ttl: Duration::from_secs(ttl),
                max_value_size: max,
                placement: Placement::MemoryRedisDisk,
                compress_above: compress,
                segments: seg.0..=seg.1,
                ttl_override: TtlOverride::ShorterOnly,
                stale: StalePolicy::Never,
                refresh_ahead: 0.0,
            }
        };
    vec![
        (
            "llm_features",
            spec(
                "llm_features",
                "llm:features:",
                24 * 3600,
                64 * MIB,
                16 * KIB,
                (4, 4),
            ),
        ),
        (
            "news_articles",
            spec("news_articles", "news:", 3600, 16 * MIB, 4 * KIB, (3, 4)),
        ),
        (
            "odds_data",
            spec("odds_data", "odds:", 60, MIB, 16 * KIB, (3, 3)),
        ),
    ]
}

/// Collects `FRESHCACHE_A__B=v` pairs as (`["a","b"]`, var name, value).
fn env_overrides<I>(vars: I) -> Vec<(Vec<String>, String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut out: Vec<_> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(ENV_PREFIX)?;
            if !rest.contains("__") {
                return None;
            }
            let path = rest.split("__").map(str::to_ascii_lowercase).collect();
            Some((path, k, v))
        })
        .collect();
    out.sort();
    out
}

fn set_path(root: &mut serde_json::Value, path: &[String], value: serde_json::Value) -> bool {
    let mut cur = root;
    for (i, seg) in path.iter().enumerate() {
        if cur.is_null() {
            *cur = serde_json::Value::Object(serde_json::Map::new());
        }
        let Some(obj) = cur.as_object_mut() else {
            return false;
        };
        if i + 1 == path.len() {
            obj.insert(seg.clone(), value);
            return true;
        }
        cur = obj.entry(seg.clone()).or_insert(serde_json::Value::Null);
    }
    false
}

/// An environment value read as a YAML scalar (so `30`, `true`, `1.5` keep their types).
fn scalar(v: &str) -> serde_json::Value {
    serde_saphyr::from_str::<serde_json::Value>(v)
        .ok()
        .filter(|j| !j.is_object() && !j.is_array() && !j.is_null())
        .unwrap_or_else(|| serde_json::Value::String(v.to_owned()))
}

/// Best-effort line of a dotted field path in the YAML text (1-based).
fn locate(text: &str, path: &str) -> Option<u64> {
    let mut want = path.split('.').peekable();
    let mut min_indent = 0usize;
    let mut current = want.next()?;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let name = trimmed
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        if indent >= min_indent && name == current && trimmed.contains(':') {
            match want.next() {
                Some(next) => {
                    current = next;
                    min_indent = indent + 1;
                }
                None => return Some(i as u64 + 1),
            }
        }
    }
    None
}

fn deser_error(file: Option<&Path>, text: &str, e: &serde_saphyr::Error) -> ConfigError {
    let line = e.location().map(|l| l.line()).filter(|&l| l > 0);
    let field = line
        .and_then(|l| text.lines().nth(usize::try_from(l).ok()?.checked_sub(1)?))
        .and_then(|l| l.trim_start().split(':').next())
        .map(|s| s.trim().trim_start_matches("- ").to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(document)".into());
    // The library's message carries its own "error: line L column C:" prefix and a snippet;
    // the location is reported separately, so keep only the reason.
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default();
    let reason = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .split_once(": ")
        .filter(|(loc, _)| loc.starts_with("line "))
        .map_or(first, |(_, rest)| rest)
        .to_owned();
    ConfigError {
        file: file.map(Path::to_path_buf),
        line,
        field,
        reason,
    }
}

fn parse_yaml<T: DeserializeOwned>(file: Option<&Path>, text: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| deser_error(file, text, &e))
}

impl Config {
    /// Loads `path`, applying overrides from the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line, field and reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Loads `path`, applying overrides from `env` (name, value) pairs.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line, field and reason.
    pub fn load_with_env<I>(path: &Path, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        Self::from_yaml_str(&text, Some(path), env)
    }

    /// Parses YAML text (`file` is used in messages), applying `env` overrides.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line, field and reason.
    pub fn from_yaml_str<I>(text: &str, file: Option<&Path>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        // First pass straight from the text, so errors in the file carry their line.
        let mut raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            parse_yaml(file, text)?
        };
        let overrides = env_overrides(env);
        if !overrides.is_empty() {
            let mut tree: serde_json::Value = if text.trim().is_empty() {
                serde_json::Value::Object(serde_json::Map::new())
            } else {
                parse_yaml(file, text)?
            };
            for (path, var, value) in &overrides {
                if !set_path(&mut tree, path, scalar(value)) {
                    return Err(ConfigError {
                        file: None,
                        line: None,
                        field: var.clone(),
                        reason: "does not name a configuration field".into(),
                    });
                }
            }
            raw = serde_json::from_value(tree).map_err(|e| ConfigError {
                file: None,
                line: None,
                field: overrides
                    .iter()
                    .map(|(_, var, _)| var.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: format!("environment override is invalid: {e}"),
            })?;
        }
        Self::from_raw(raw, file, text)
    }

    /// Validates a raw config; `text` is the file content used to locate fields.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field and reason.
    pub fn from_raw(raw: RawConfig, file: Option<&Path>, text: &str) -> Result<Self, ConfigError> {
        let err = |field: &str, reason: String| ConfigError {
            file: file.map(Path::to_path_buf),
            line: locate(text, field),
            field: field.to_owned(),
            reason,
        };
        let cache = raw.cache.unwrap_or_default();
        let server = raw.server.unwrap_or_default();

        // Data types: built-ins, then declarations, then the `ttl:` map.
        let mut types: Vec<(String, DataTypeSpec)> = builtin_types()
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        for (name, rt) in cache.data_types.unwrap_or_default() {
            let field = format!("cache.data_types.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(err(&field, "type names use a-z, 0-9 and _".into()));
            }
            let idx = match types.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    let Some(prefix) = rt.prefix.clone() else {
                        return Err(err(&field, "a new data type needs a prefix".into()));
                    };
                    let Some(ttl) = rt.ttl else {
                        return Err(err(&field, "a new data type needs a ttl".into()));
                    };
                    types.push((
                        name.clone(),
                        DataTypeSpec {
                            id: 0,
                            name: name.as_str().into(),
                            prefix,
                            ttl: ttl.0,
                            max_value_size: MIB,
                            placement: Placement::MemoryRedisDisk,
                            compress_above: 16 * KIB,
                            segments: 2..=16,
                            ttl_override: TtlOverride::ShorterOnly,
                            stale: StalePolicy::Never,
                            refresh_ahead: 0.0,
                        },
                    ));
                    types.len() - 1
                }
            };
            let spec = &mut types[idx].1;
            if let Some(p) = rt.prefix {
                spec.prefix = p;
            }
            if let Some(t) = rt.ttl {
                spec.ttl = t.0;
            }
            if let Some(m) = rt.max_value_size {
                spec.max_value_size = m.0;
            }
            if let Some(p) = rt.placement {
                spec.placement = p;
            }
            if let Some(c) = rt.compress_above {
                spec.compress_above = c.0;
            }
            if let Some(s) = rt.segments {
                spec.segments = s.min..=s.max;
            }
            if let Some(o) = rt.ttl_override {
                spec.ttl_override = o;
            }
            if let Some(st) = rt.stale {
                let max = match (st.policy, st.max) {
                    (RawStalePolicy::Never, _) => Duration::ZERO,
                    (_, None) => {
                        return Err(err(
                            &format!("{field}.stale.max"),
                            "a stale policy needs `max`, e.g. 30s".into(),
                        ));
                    }
                    (_, Some(text)) => parse_duration(&text)
                        .map_err(|reason| err(&format!("{field}.stale.max"), reason))?,
                };
                spec.stale = match st.policy {
                    RawStalePolicy::Never => StalePolicy::Never,
                    RawStalePolicy::WhileRevalidate => StalePolicy::WhileRevalidate(max),
                    RawStalePolicy::IfError => StalePolicy::IfError(max),
                };
            }
            if let Some(r) = rt.refresh_ahead {
                if !(0.0..1.0).contains(&r) {
                    return Err(err(
                        &format!("{field}.refresh_ahead"),
                        format!("must be a fraction in 0..1, got {r}"),
                    ));
                }
                spec.refresh_ahead = r;
            }
        }
        for (name, ttl) in cache.ttl.unwrap_or_default() {
            match types.iter_mut().find(|(n, _)| *n == name) {
                Some((_, spec)) => spec.ttl = ttl.0,
                None => {
                    return Err(err(
                        &format!("cache.ttl.{name}"),
                        format!(
                            "unknown data type {name:?}; declare it under cache.data_types (known: {})",
                            types
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
        for (name, spec) in &types {
            let field = format!("cache.data_types.{name}");
            if let Err(e) = crate::key::KeyPrefix::parse(&spec.prefix) {
                return Err(err(&format!("{field}.prefix"), e.to_string()));
            }
            if spec.max_value_size == 0 {
                return Err(err(
                    &format!("{field}.max_value_size"),
                    "must be > 0".into(),
                ));
            }
            if spec.segments.start() < &2 || spec.segments.start() > spec.segments.end() {
                return Err(err(
                    &format!("{field}.segments"),
                    "needs 2 <= min <= max".into(),
                ));
            }
            if let Some((other, _)) = types
                .iter()
                .find(|(n, s)| n != name && s.prefix == spec.prefix)
            {
                return Err(err(
                    &format!("{field}.prefix"),
                    format!("prefix {:?} is also used by {other}", spec.prefix),
                ));
            }
        }
        let default = match cache.default_data_type {
            None => None,
            Some(d) => Some(types.iter().position(|(n, _)| *n == d).ok_or_else(|| {
                err(
                    "cache.default_data_type",
                    format!("unknown data type {d:?}"),
                )
            })?),
        };

        let cache_dir = cache
            .cache_dir
            .unwrap_or_else(|| PathBuf::from("data/cache"));
        if cache_dir.as_os_str().is_empty() {
            return Err(err("cache.cache_dir", "must not be empty".into()));
        }
        let metadata_path = cache
            .metadata_path
            .unwrap_or_else(|| cache_dir.join("metadata.db"));

        let cleanup = cache.cleanup.unwrap_or_default();
        let interval = cleanup.interval.unwrap_or_else(|| "0 2 * * *".into());
        if let Err(reason) = Schedule::parse(&interval) {
            return Err(err("cache.cleanup.interval", reason));
        }
        let gb = cleanup.max_size_gb.unwrap_or(10.0);
        if !gb.is_finite() || gb <= 0.0 {
            return Err(err(
                "cache.cleanup.max_size_gb",
                format!("must be > 0, got {gb}"),
            ));
        }

        let mon = cache.monitoring.unwrap_or_default();
        let frac = |field: &str, v: Option<f64>, dflt: f64| {
            let v = v.unwrap_or(dflt);
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(err(field, format!("must be a fraction in 0..=1, got {v}")))
            }
        };
        let monitoring = MonitoringConfig {
            ttl_violation_threshold: frac(
                "cache.monitoring.ttl_violation_threshold",
                mon.ttl_violation_threshold,
                0.01,
            )?,
            cache_hit_ratio_threshold: frac(
                "cache.monitoring.cache_hit_ratio_threshold",
                mon.cache_hit_ratio_threshold,
                0.8,
            )?,
        };

        let max_bytes = cache
            .memory
            .and_then(|m| m.max_bytes)
            .map_or(256 * MIB, |b| b.0);
        if max_bytes < 64 * KIB {
            return Err(err(
                "cache.memory.max_bytes",
                "must be at least 64KiB".into(),
            ));
        }
        let inline_max = cache
            .disk
            .and_then(|d| d.inline_max)
            .map_or(8 * KIB, |b| b.0);
        if inline_max > MIB {
            return Err(err("cache.disk.inline_max", "must be at most 1MiB".into()));
        }

        let redis_url = cache.redis_url.filter(|u| !u.trim().is_empty());
        if let Some(url) = &redis_url
            && ![
                "redis://",
                "rediss://",
                "redis+cluster://",
                "rediss+cluster://",
                "unix://",
            ]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(err(
                "cache.redis_url",
                "must start with redis://, rediss://, redis+cluster:// or unix://".into(),
            ));
        }
        let raw_redis = cache.redis.unwrap_or_default();
        let dur = |field: &str, v: Option<String>, dflt: Duration| match v {
            None => Ok(dflt),
            Some(text) => parse_duration(&text).map_err(|reason| err(field, reason)),
        };
        let namespace = raw_redis.namespace.unwrap_or_else(|| "freshcache:".into());
        if namespace.is_empty()
            || namespace.len() > 64
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(err(
                "cache.redis.namespace",
                "use 1..=64 characters of letters, digits, '-', '_', '.', ':'".into(),
            ));
        }
        let redis = RedisConfig {
            namespace,
            timeout: dur(
                "cache.redis.timeout",
                raw_redis.timeout,
                Duration::from_millis(50),
            )?,
            connect_timeout: dur(
                "cache.redis.connect_timeout",
                raw_redis.connect_timeout,
                Duration::from_secs(2),
            )?,
            max_value_size: raw_redis.max_value_size.map_or(MIB, |b| b.0),
            breaker_failures: raw_redis.breaker_failures.unwrap_or(5).max(1),
            breaker_open_for: dur(
                "cache.redis.breaker_open_for",
                raw_redis.breaker_open_for,
                Duration::from_secs(1),
            )?,
            lease: dur(
                "cache.redis.lease",
                raw_redis.lease,
                Duration::from_secs(10),
            )?,
            password: raw_redis.password.filter(|p| !p.is_empty()),
            username: raw_redis.username.filter(|u| !u.is_empty()),
            tls_ca_file: raw_redis.tls_ca_file,
        };

        let warm = validate(cache.warm.clone().unwrap_or_default(), file, "cache.warm")?;
        let raw_freshness = cache.freshness.unwrap_or_default();
        let audit_retention = match raw_freshness.audit_retention {
            None => Duration::from_secs(30 * 86_400),
            Some(text) => parse_duration(&text)
                .map_err(|reason| err("cache.freshness.audit_retention", reason))?,
        };
        let clock_skew_tolerance = match raw_freshness.clock_skew_tolerance {
            None => Duration::ZERO,
            Some(text) if text.trim() == "0" || text.trim() == "0s" => Duration::ZERO,
            Some(text) => parse_duration(&text)
                .map_err(|reason| err("cache.freshness.clock_skew_tolerance", reason))?,
        };

        let listen_text = server.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            err(
                "server.listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8080: {e}"),
            )
        })?;
        let auth_token = server.auth_token.filter(|t| !t.is_empty());

        let data_types = Registry::new(types.into_iter().map(|(_, s)| s).collect(), default);
        let sources = sources(
            cache.sources.unwrap_or_default(),
            &data_types,
            |i, name, reason| ConfigError {
                file: file.map(Path::to_path_buf),
                line: locate_source(text, i, name),
                field: format!("cache.sources[{i}].{name}"),
                reason,
            },
        )?;

        Ok(Config {
            source: file.map(Path::to_path_buf),
            redis_url: redis_url.map(RedisUrl),
            redis,
            cache_dir,
            metadata_path,
            data_types,
            memory: MemoryConfig { max_bytes },
            disk: DiskConfig { inline_max },
            cleanup: CleanupConfig {
                interval,
                max_size_bytes: (gb * 1e9) as u64,
                min_free_disk: cleanup.min_free_disk.map_or(0, |b| b.0),
            },
            monitoring,
            freshness: FreshnessConfig {
                audit_retention,
                clock_skew_tolerance,
            },
            warm,
            server: ServerConfig { listen, auth_token },
            sources,
        })
    }

    /// The same configuration with its cache directory (and index) moved under `dir`.
    #[must_use]
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self.metadata_path = self.cache_dir.join("metadata.db");
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"# config/runtime.yml
cache:
  redis_url: "redis://localhost:6379"
  cache_dir: "data/cache"
  metadata_path: "data/cache/metadata.db"
  
  # TTL configurations (hours)
  ttl:
    llm_features: 24
    news_articles: 1
    odds_data: 0.017  # 1 minute
    
  # Cleanup schedule
  cleanup:
    interval: "0 2 * * *"  # Daily at 2 AM
    max_size_gb: 10
    
  # Monitoring
  monitoring:
    ttl_violation_threshold: 0.01  # 1%
    cache_hit_ratio_threshold: 0.8  # 80%
"#;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn ttl(c: &Config, name: &str) -> Duration {
        c.data_types.by_name(name).unwrap().ttl
    }

    #[test]
    fn seed_config_loads_unchanged_with_hours_as_numbers() {
        let c = Config::from_yaml_str(SEED, Some(Path::new("seed.yml")), no_env()).unwrap();
        assert_eq!(ttl(&c, "llm_features"), Duration::from_secs(24 * 3600));
        assert_eq!(ttl(&c, "news_articles"), Duration::from_secs(3600));
        assert_eq!(ttl(&c, "odds_data"), Duration::from_millis(61_200));
        assert_eq!(
            c.redis_url.as_ref().map(RedisUrl::expose),
            Some("redis://localhost:6379")
        );
        assert_eq!(c.cleanup.interval, "0 2 * * *");
        assert_eq!(c.cleanup.max_size_bytes, 10_000_000_000);
        assert_eq!(c.metadata_path, PathBuf::from("data/cache/metadata.db"));
        assert!((c.monitoring.cache_hit_ratio_threshold - 0.8).abs() < 1e-9);
    }

    #[test]
    fn shipped_default_file_is_the_embedded_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/runtime.yml");
        let c = Config::load_with_env(&path, no_env()).unwrap();
        assert_eq!(c.redis_url, None);
        assert_eq!(c.cache_dir, PathBuf::from("data/cache"));
        assert_eq!(ttl(&c, "llm_features"), Duration::from_secs(24 * 3600));
        assert_eq!(ttl(&c, "news_articles"), Duration::from_secs(3600));
        assert_eq!(ttl(&c, "odds_data"), Duration::from_secs(60));
        let d = Config::default();
        assert_eq!(c.data_types, d.data_types);
    }

    #[test]
    fn durations_and_declared_types_are_accepted() {
        let text = r#"
cache:
  ttl:
    odds_data: 60s
    news_articles: "1h 30m"
  data_types:
    weather:
      prefix: "weather:"
      ttl: 10m
      max_value_size: 64KiB
      placement: disk_only
      segments: {min: 2, max: 3}
      ttl_override: never
  default_data_type: weather
"#;
        let c = Config::from_yaml_str(text, None, no_env()).unwrap();
        assert_eq!(ttl(&c, "odds_data"), Duration::from_secs(60));
        assert_eq!(ttl(&c, "news_articles"), Duration::from_secs(5400));
        let w = c.data_types.by_name("weather").unwrap();
        assert_eq!(w.ttl, Duration::from_secs(600));
        assert_eq!(w.max_value_size, 65536);
        assert_eq!(w.placement, Placement::DiskOnly);
        assert_eq!(w.ttl_override, TtlOverride::Never);
        let k = crate::key::Key::parse("other:x").unwrap();
        assert_eq!(&*c.data_types.resolve(&k).unwrap().name, "weather");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            (
                "FRESHCACHE_CACHE__CACHE_DIR".to_owned(),
                "/tmp/fc-env".to_owned(),
            ),
            (
                "FRESHCACHE_CACHE__TTL__ODDS_DATA".to_owned(),
                "30s".to_owned(),
            ),
            (
                "FRESHCACHE_CACHE__CLEANUP__MAX_SIZE_GB".to_owned(),
                "2".to_owned(),
            ),
            ("FRESHCACHE_CONFIG".to_owned(), "ignored.yml".to_owned()),
            ("OTHER__THING".to_owned(), "ignored".to_owned()),
        ];
        let c = Config::from_yaml_str(SEED, None, env).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/tmp/fc-env"));
        assert_eq!(ttl(&c, "odds_data"), Duration::from_secs(30));
        assert_eq!(c.cleanup.max_size_bytes, 2_000_000_000);
        // metadata_path was explicit in the file and stays.
        assert_eq!(c.metadata_path, PathBuf::from("data/cache/metadata.db"));
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let env = vec![(
            "FRESHCACHE_CACHE__TTL__ODDS_DATA".to_owned(),
            "soon".to_owned(),
        )];
        let e = Config::from_yaml_str(SEED, None, env).unwrap_err();
        assert_eq!(e.field, "FRESHCACHE_CACHE__TTL__ODDS_DATA");
        assert!(e.reason.contains("duration"), "{e}");
    }

    #[test]
    fn bad_values_report_file_line_field_and_reason() {
        let text = "cache:\n  ttl:\n    odds_data: soon\n";
        let e = Config::from_yaml_str(text, Some(Path::new("r.yml")), no_env()).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(Path::new("r.yml")));
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.field, "odds_data");
        assert!(e.reason.contains("duration"), "{e}");

        let text = "cache:\n  cache_dir: x\n  ttl:\n    odds_data: -1\n";
        let e = Config::from_yaml_str(text, Some(Path::new("r.yml")), no_env()).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.reason.contains("positive"), "{e}");
    }

    #[test]
    fn unknown_fields_and_types_are_refused_with_their_line() {
        let e = Config::from_yaml_str("cache:\n  cache_dirr: x\n", None, no_env()).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.reason.contains("cache_dirr"), "{e}");

        let e =
            Config::from_yaml_str("cache:\n  ttl:\n    weather: 1\n", None, no_env()).unwrap_err();
        assert_eq!(e.field, "cache.ttl.weather");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("unknown data type"), "{e}");

        let text = "server:\n  listen: nowhere\n";
        let e = Config::from_yaml_str(text, None, no_env()).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("server.listen", Some(2)));

        let text = "cache:\n  cleanup:\n    interval: daily\n";
        let e = Config::from_yaml_str(text, None, no_env()).unwrap_err();
        assert_eq!(e.field, "cache.cleanup.interval");

        let text = "cache:\n  data_types:\n    a:\n      prefix: \"odds:\"\n      ttl: 1\n";
        let e = Config::from_yaml_str(text, None, no_env()).unwrap_err();
        assert!(e.reason.contains("also used"), "{e}");
    }

    #[test]
    fn other_sections_of_runtime_yml_are_left_alone() {
        let text = "model:\n  name: x\ncache:\n  cache_dir: /tmp/x\n";
        let c = Config::from_yaml_str(text, None, no_env()).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn redis_passwords_never_show_in_debug_or_display() {
        let text = "cache:\n  redis_url: \"redis://app:hunter2@db:6379/0\"\n  redis:\n    password: s3cret\n";
        let c = Config::from_yaml_str(text, None, no_env()).unwrap();
        let url = c.redis_url.clone().unwrap();
        assert_eq!(url.redacted(), "redis://app:***@db:6379/0");
        assert_eq!(url.expose(), "redis://app:hunter2@db:6379/0");
        let shown = format!("{c:?} {url}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(c.redis.password.as_deref(), Some("s3cret"));
        let plain = RedisUrl("redis://127.0.0.1:6379".into());
        assert_eq!(plain.redacted(), "redis://127.0.0.1:6379");
        assert_eq!(
            RedisUrl("redis://:pw@h:1".into()).redacted(),
            "redis://:***@h:1"
        );
        assert!(RedisUrl("redis+cluster://h:1,h:2".into()).is_cluster());
    }

    #[test]
    fn redis_options_are_validated() {
        let e = Config::from_yaml_str("cache:\n  redis:\n    timeout: soon\n", None, no_env())
            .unwrap_err();
        assert_eq!(e.field, "cache.redis.timeout");
        let e = Config::from_yaml_str("cache:\n  redis:\n    namespace: \"a b\"\n", None, no_env())
            .unwrap_err();
        assert_eq!(e.field, "cache.redis.namespace");
        let c = Config::default();
        assert_eq!(c.redis.timeout, Duration::from_millis(50));
        assert_eq!(c.redis.namespace, "freshcache:");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("1.5 MiB").unwrap(), 1_572_864);
        assert_eq!(parse_size("12").unwrap(), 12);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn sources_parse_with_defaults_and_keep_credentials_out_of_debug() {
        let text = r#"
cache:
  sources:
    - url: "http://reader:pw@feeds.example/espn.json?token=s3cret"
      key: "news:espn:front"
      refresh: 5m
    - url: "http://127.0.0.1:9000/odds"
      key: "odds:g42:1700000000"
      refresh: 30s
      cache_control: ignore
"#;
        let c = Config::from_yaml_str(text, None, no_env()).unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[0].key.as_str(), "news:espn:front");
        assert_eq!(c.sources[0].refresh, Duration::from_secs(300));
        assert_eq!(c.sources[0].cache_control, CacheControl::MayShorten);
        assert_eq!(c.sources[1].refresh, Duration::from_secs(30));
        assert_eq!(c.sources[1].cache_control, CacheControl::Ignore);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("pw@"),
            "{debug}"
        );
        assert!(Config::default().sources.is_empty());
    }

    #[test]
    fn bad_sources_name_the_item_field_and_line() {
        let first = "cache:\n  sources:\n    - url: \"http://h/ok\"\n      key: \"news:a:b\"\n      refresh: 1m\n";
        let second = |url: &str, key: &str, refresh: &str| {
            format!("{first}    - url: \"{url}\"\n      key: \"{key}\"\n      refresh: {refresh}\n")
        };
        for (text, field, reason, line) in [
            (
                second("ftp://h/x", "news:a:c", "1m"),
                "cache.sources[1].url",
                "scheme",
                6,
            ),
            (
                second("not a url", "news:a:c", "1m"),
                "cache.sources[1].url",
                "URL",
                6,
            ),
            (
                second("http://h/x", "weather:x", "1m"),
                "cache.sources[1].key",
                "no data type",
                7,
            ),
            (
                second("http://h/x", "news:a", "1m"),
                "cache.sources[1].key",
                "segment",
                7,
            ),
            (
                second("http://h/x", "news:a:b", "1m"),
                "cache.sources[1].key",
                "already fed",
                7,
            ),
            (
                second("http://h/x", "news:a:c", "500ms"),
                "cache.sources[1].refresh",
                "1s",
                8,
            ),
            (
                second("http://h/x", "news:a:c", "soon"),
                "cache.sources[1].refresh",
                "duration",
                8,
            ),
        ] {
            let e = Config::from_yaml_str(&text, Some(Path::new("r.yml")), no_env()).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains(reason), "{e}");
            assert_eq!(e.line, Some(line), "{e}");
        }

        let text = format!("{first}      cache_control: sometimes\n");
        let e = Config::from_yaml_str(&text, None, no_env()).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("cache_control", Some(6)),
            "{e}"
        );
        let text = "cache:\n  sources:\n    - url: \"http://h/x\"\n      key: \"news:a:b\"\n";
        let e = Config::from_yaml_str(text, None, no_env()).unwrap_err();
        assert!(e.reason.contains("refresh"), "{e}");
    }

    #[test]
    fn auth_token_is_redacted_in_debug_output() {
        let c = Config::from_yaml_str("server:\n  auth_token: s3cret\n", None, no_env()).unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("pw@"),
            "{debug}"
        );
        assert_eq!(c.server.auth_token.as_deref(), Some("s3cret"));
    }
}
