//! The library's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error from a user-supplied loader, shared by every caller that waited on it.
pub type LoaderError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in freshcache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key breaks the key rules; nothing was read or written.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key (truncated when very long).
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// No data type is declared for the key's prefix and no default type is configured.
    #[error("no data type matches key {key:?}; known prefixes: {known}")]
    UnknownDataType {
        /// The key, shortened to 120 bytes (an attacker's megabyte key is not echoed back).
        key: String,
        /// The configured prefixes, comma-separated.
        known: String,
    },
    /// The value is larger than its data type allows; nothing was written.
    #[error("value for {key:?} is {size} bytes; data type {data_type} allows at most {max}")]
    TooLarge {
        /// The key, shortened to 120 bytes (an attacker's megabyte key is not echoed back).
        key: String,
        /// The data type's name.
        data_type: String,
        /// The value's size in bytes.
        size: u64,
        /// The type's limit in bytes.
        max: u64,
    },
    /// A per-call TTL the data type's policy does not allow.
    #[error("ttl {requested:?} for {key:?} is not allowed: {reason}")]
    TtlNotAllowed {
        /// The key, shortened to 120 bytes (an attacker's megabyte key is not echoed back).
        key: String,
        /// The requested TTL.
        requested: Duration,
        /// Why the policy refuses it.
        reason: String,
    },
    /// The producer's `as_of` puts the value past its TTL already; nothing was written.
    #[error("value for {key:?} is already stale: produced {age:?} ago, ttl {ttl:?}")]
    AlreadyExpired {
        /// The key, shortened to 120 bytes (an attacker's megabyte key is not echoed back).
        key: String,
        /// Age of the signal at the time of the write.
        age: Duration,
        /// The TTL that applies.
        ttl: Duration,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Stored bytes failed verification (checksum, framing, key mismatch).
    #[error("corrupt entry: {reason}")]
    Corrupt {
        /// What failed.
        reason: String,
    },
    /// A value could not be encoded or decoded with its codec.
    #[error("codec error for {key:?}: {reason}")]
    Codec {
        /// The key, shortened to 120 bytes (an attacker's megabyte key is not echoed back).
        key: String,
        /// What the serde format reported.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What the operating system or SQLite reported.
        #[source]
        source: io::Error,
    },
    /// The SQLite index failed.
    #[error("index database {}: {source}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// What the operating system or SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// The freshness guard refused: at least one signal is stale or missing. The report lists
    /// every signal with its verdict, age and TTL.
    #[error("{report}")]
    StaleSignals {
        /// Every checked signal with its verdict, age and TTL (not only the refused ones).
        report: crate::report::BoxedReport,
    },
    /// Redis could not be used at start-up: unreachable, wrong credentials, bad URL. (Once
    /// running, Redis failures degrade to memory + disk instead of erroring.)
    #[error("redis {url}: {reason}")]
    Redis {
        /// The URL with its password redacted.
        url: String,
        /// What kind of failure, for callers that branch on it.
        kind: RedisErrorKind,
        /// What went wrong.
        reason: String,
    },
    /// The loader given to `get_or_fetch` failed; every waiting caller sees the same error.
    #[error("loader for {key:?} failed: {source}")]
    Loader {
        /// The key, shortened to 120 bytes (an attacker's megabyte key is not echoed back).
        key: String,
        /// The loader's error.
        #[source]
        source: LoaderError,
    },
    /// Items of a batch were refused; nothing of the batch was written. Every refused item is
    /// listed with its position, key and reason.
    #[error("{} of {total} batch items refused: {}", refused.len(), describe_refused(refused))]
    InvalidBatch {
        /// The refused items, in batch order.
        refused: Vec<RefusedItem>,
        /// Items in the batch.
        total: usize,
    },
    /// An HTTP fetch failed; whatever was stored under the key is left as it was.
    #[error("fetch {url}: {reason}")]
    Fetch {
        /// The URL without credentials or query string.
        url: String,
        /// What kind of failure, for callers that branch on it.
        kind: FetchErrorKind,
        /// What happened.
        reason: String,
    },
}

/// Why the filesystem refused a write, for callers that branch on it (a CLI exit code, an HTTP
/// status). Reads of what is already stored go on in both cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageFault {
    /// No space or no inodes left (`ENOSPC`, `EDQUOT`, `SQLITE_FULL`): writes succeed again
    /// once space is freed.
    DiskFull,
    /// The filesystem is read-only (`EROFS`, `SQLITE_READONLY`): writes succeed again once it is
    /// writable.
    ReadOnly,
}

impl StorageFault {
    /// Short lowercase name, safe as a metrics label.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            StorageFault::DiskFull => "disk_full",
            StorageFault::ReadOnly => "read_only",
        }
    }

    fn of_io(e: &io::Error) -> Option<Self> {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Some(StorageFault::DiskFull)
            }
            io::ErrorKind::ReadOnlyFilesystem => Some(StorageFault::ReadOnly),
            _ => None,
        }
    }

    fn of_index(e: &rusqlite::Error) -> Option<Self> {
        match e.sqlite_error_code()? {
            rusqlite::ErrorCode::DiskFull => Some(StorageFault::DiskFull),
            rusqlite::ErrorCode::ReadOnly => Some(StorageFault::ReadOnly),
            _ => None,
        }
    }
}

/// What went wrong in an HTTP fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchErrorKind {
    /// The URL is not an absolute `http://` or `https://` URL.
    InvalidUrl,
    /// The HTTP client could not be built (TLS set-up).
    Setup,
    /// No connection: DNS, refused, reset before a response, TLS handshake.
    Connect,
    /// The connect timeout or the total timeout passed.
    Timeout,
    /// The origin answered with a status other than 200 or 304.
    Status(u16),
    /// More body bytes on the wire than allowed.
    BodyTooLarge,
    /// More bytes after decompression than allowed (a gzip bomb, or simply too large).
    DecodedTooLarge,
    /// The body could not be decoded: corrupt gzip, or an encoding that was not asked for.
    Encoding,
    /// The `Content-Type` is not one of the allowed media types.
    ContentType,
    /// A header value that cannot be kept: too long, or with control bytes such as CR/LF.
    Header,
    /// A redirect to a host that is not allowed, or too many redirects.
    Redirect,
    /// The response broke HTTP mid-way: malformed, truncated, or a 304 to an unconditional
    /// request.
    Protocol,
}

impl FetchErrorKind {
    /// True when the same fetch may succeed later: connection failures, timeouts, broken
    /// responses, 5xx, 408 and 429.
    #[must_use]
    pub fn is_transient(self) -> bool {
        match self {
            FetchErrorKind::Connect | FetchErrorKind::Timeout | FetchErrorKind::Protocol => true,
            FetchErrorKind::Status(s) => s >= 500 || s == 408 || s == 429,
            _ => false,
        }
    }

    /// Short lowercase name, safe as a metrics label.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FetchErrorKind::InvalidUrl => "invalid_url",
            FetchErrorKind::Setup => "setup",
            FetchErrorKind::Connect => "connect",
            FetchErrorKind::Timeout => "timeout",
            FetchErrorKind::Status(_) => "status",
            FetchErrorKind::BodyTooLarge => "body_too_large",
            FetchErrorKind::DecodedTooLarge => "decoded_too_large",
            FetchErrorKind::Encoding => "encoding",
            FetchErrorKind::ContentType => "content_type",
            FetchErrorKind::Header => "header",
            FetchErrorKind::Redirect => "redirect",
            FetchErrorKind::Protocol => "protocol",
        }
    }
}

/// One item of a batch that was refused, and why.
#[derive(Debug)]
pub struct RefusedItem {
    /// Its position in the batch, from 0.
    pub index: usize,
    /// Its key as given, shortened to 120 bytes.
    pub key: String,
    /// Why it was refused.
    pub error: Error,
}

/// The first refused items of a batch, for the error's message.
fn describe_refused(refused: &[RefusedItem]) -> String {
    let mut text: Vec<String> = refused
        .iter()
        .take(5)
        .map(|r| format!("#{} {}: {}", r.index, r.key, r.error))
        .collect();
    if refused.len() > 5 {
        text.push(format!("and {} more", refused.len() - 5));
    }
    text.join("; ")
}

/// Why a Redis call failed, kept from the connection at start-up and at run time alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisErrorKind {
    /// The URL (or TLS material it names) cannot be used.
    InvalidUrl,
    /// Nothing listens at the address, or the connection was reset.
    Refused,
    /// No answer within the configured time.
    Timeout,
    /// The server refused the credentials or the command (`WRONGPASS`, `NOAUTH`, `NOPERM`).
    Auth,
    /// The TLS handshake failed.
    Tls,
    /// The server answered something this client did not expect (not Redis, wrong owner).
    Protocol,
    /// The circuit breaker is open: Redis was not asked.
    BreakerOpen,
    /// Another failure of the connection.
    Io,
}

impl RedisErrorKind {
    /// True when the same call may succeed later without a change of configuration: a wrong
    /// password or URL will not fix itself.
    #[must_use]
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Refused | Self::Timeout | Self::BreakerOpen | Self::Io
        )
    }

    /// Short lowercase name for logs and responses.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidUrl => "invalid_url",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Auth => "auth",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::BreakerOpen => "breaker_open",
            Self::Io => "io",
        }
    }
}

/// The one classification of an [`Error`] that every face uses: the HTTP status, the CLI's exit
/// code and the Python exception class all follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The caller's input was refused (key, TTL, codec, config, URL): fix the call.
    InvalidInput,
    /// The value is larger than its type allows.
    TooLarge,
    /// The freshness guard refused the signals.
    StaleSignals,
    /// The source behind the cache failed (a loader, an origin server).
    Upstream,
    /// Redis could not be used (see [`RedisErrorKind`]).
    Redis,
    /// The filesystem is full.
    DiskFull,
    /// The filesystem is read-only.
    ReadOnly,
    /// Storage failed otherwise (I/O, the index, damaged data).
    Storage,
}

impl ErrorClass {
    /// The HTTP status a service answers with.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidInput => 400,
            Self::TooLarge => 413,
            Self::StaleSignals => 409,
            Self::Upstream => 502,
            Self::DiskFull => 507,
            Self::Redis | Self::ReadOnly | Self::Storage => 503,
        }
    }

    /// The exit code of a command that failed with it: 2 for input the caller must fix, 1 for
    /// a refusal by the guard, 3 for a failure of the machinery.
    #[must_use]
    pub fn exit_code(self) -> u8 {
        match self {
            Self::InvalidInput | Self::TooLarge => 2,
            Self::StaleSignals => 1,
            Self::Upstream | Self::Redis | Self::DiskFull | Self::ReadOnly | Self::Storage => 3,
        }
    }

    /// Short lowercase name, used as the `error` code of HTTP answers.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::TooLarge => "too_large",
            Self::StaleSignals => "stale_signals",
            Self::Upstream => "upstream",
            Self::Redis => "redis",
            Self::DiskFull => "disk_full",
            Self::ReadOnly => "read_only",
            Self::Storage => "storage",
        }
    }
}

impl Error {
    /// True when retrying the same call later may succeed (I/O, a busy index, a loader, a
    /// fetch that failed for a reason [`FetchErrorKind::is_transient`] accepts).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        if let Some(kind) = self.fetch_kind() {
            return kind.is_transient();
        }
        if let Error::Redis { kind, .. } = self {
            return kind.is_transient();
        }
        matches!(
            self,
            Error::Io { .. } | Error::Index { .. } | Error::Loader { .. }
        )
    }

    /// The classification every face maps from (HTTP status, exit code, exception class).
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::TooLarge { .. } => ErrorClass::TooLarge,
            Error::StaleSignals { .. } => ErrorClass::StaleSignals,
            _ if self.is_invalid_input() => ErrorClass::InvalidInput,
            Error::Loader { .. } | Error::Fetch { .. } => ErrorClass::Upstream,
            Error::Redis { .. } => ErrorClass::Redis,
            _ if self.is_disk_full() => ErrorClass::DiskFull,
            _ if self.is_read_only() => ErrorClass::ReadOnly,
            _ => ErrorClass::Storage,
        }
    }

    /// The kind of a Redis failure; `None` for other errors.
    #[must_use]
    pub fn redis_kind(&self) -> Option<RedisErrorKind> {
        match self {
            Error::Redis { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// True when the caller's input was refused (bad key, size, TTL, config, codec).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidKey { .. }
                | Error::UnknownDataType { .. }
                | Error::TooLarge { .. }
                | Error::TtlNotAllowed { .. }
                | Error::AlreadyExpired { .. }
                | Error::Config(_)
                | Error::Codec { .. }
                | Error::Fetch {
                    kind: FetchErrorKind::InvalidUrl,
                    ..
                }
                | Error::Redis {
                    kind: RedisErrorKind::InvalidUrl,
                    ..
                }
                | Error::InvalidBatch { .. }
        )
    }

    /// Why the filesystem refused a write (disk full, read-only); `None` for other errors.
    #[must_use]
    pub fn storage_fault(&self) -> Option<StorageFault> {
        match self {
            Error::Io { source, .. } => StorageFault::of_io(source),
            Error::Index { source, .. } => StorageFault::of_index(source),
            _ => None,
        }
    }

    /// True when a write failed for lack of space or inodes.
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        self.storage_fault() == Some(StorageFault::DiskFull)
    }

    /// True when a write failed because the filesystem is read-only.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.storage_fault() == Some(StorageFault::ReadOnly)
    }

    /// The kind of a failed fetch; `None` for other errors.
    #[must_use]
    pub fn fetch_kind(&self) -> Option<FetchErrorKind> {
        match self {
            Error::Fetch { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// True when a fetch or a Redis call ran out of time.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        self.fetch_kind() == Some(FetchErrorKind::Timeout)
            || self.redis_kind() == Some(RedisErrorKind::Timeout)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        Error::Corrupt {
            reason: reason.into(),
        }
    }
}

/// Shortens untrusted text for error messages.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// A configuration problem: which file, where, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `None` for built-in defaults.
    pub file: Option<PathBuf>,
    /// 1-based line when known.
    pub line: Option<u64>,
    /// Dotted field path, e.g. `cache.ttl.odds_data`, or an environment variable.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// `path` could not be read at all.
    #[must_use]
    pub fn unreadable(path: &std::path::Path, e: &std::io::Error) -> Self {
        Self {
            file: Some(path.to_path_buf()),
            line: None,
            field: "(file)".into(),
            reason: format!("cannot read: {e}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, _) => f.write_str("config: ")?,
        }
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_names_file_line_field_and_reason() {
        let e = ConfigError {
            file: Some("config/runtime.yml".into()),
            line: Some(7),
            field: "cache.ttl.odds_data".into(),
            reason: "not a duration".into(),
        };
        assert_eq!(
            e.to_string(),
            "config/runtime.yml:7: cache.ttl.odds_data: not a duration"
        );
    }

    #[test]
    fn clip_keeps_short_text_and_shortens_long_text_on_a_char_boundary() {
        assert_eq!(clip("odds:g1"), "odds:g1");
        let long = "é".repeat(200);
        let c = clip(&long);
        assert!(c.len() < 200 && c.ends_with("(400 bytes)"));
    }

    #[test]
    fn predicates_split_input_errors_from_transient_ones() {
        let bad = Error::InvalidKey {
            key: "x".into(),
            reason: "r".into(),
        };
        assert!(bad.is_invalid_input() && !bad.is_transient());
        let io = Error::io("/x", io::Error::other("boom"));
        assert!(io.is_transient() && !io.is_invalid_input());
    }

    #[test]
    fn fetch_errors_say_whether_a_retry_may_help() {
        let fetch = |kind| Error::Fetch {
            url: "http://feed.example/odds".into(),
            kind,
            reason: "r".into(),
        };
        assert!(fetch(FetchErrorKind::Status(503)).is_transient());
        assert!(!fetch(FetchErrorKind::Status(404)).is_transient());
        assert!(fetch(FetchErrorKind::Timeout).is_timeout());
        assert!(!fetch(FetchErrorKind::BodyTooLarge).is_transient());
        assert!(fetch(FetchErrorKind::InvalidUrl).is_invalid_input());
        assert_eq!(
            fetch(FetchErrorKind::Connect).fetch_kind(),
            Some(FetchErrorKind::Connect)
        );
        assert_eq!(
            fetch(FetchErrorKind::Header).to_string(),
            "fetch http://feed.example/odds: r"
        );
    }

    #[test]
    fn one_classification_gives_the_status_and_the_exit_code() {
        let redis = |kind| Error::Redis {
            url: "redis://127.0.0.1:1/0".into(),
            kind,
            reason: "x".into(),
        };
        // A wrong password or URL does not fix itself; a refused or slow connection may.
        assert!(!redis(RedisErrorKind::Auth).is_transient());
        assert!(!redis(RedisErrorKind::InvalidUrl).is_transient());
        assert!(redis(RedisErrorKind::Refused).is_transient());
        assert!(redis(RedisErrorKind::Timeout).is_timeout());
        assert_eq!(
            redis(RedisErrorKind::InvalidUrl).class(),
            ErrorClass::InvalidInput
        );
        assert_eq!(redis(RedisErrorKind::Auth).class(), ErrorClass::Redis);

        let too_large = Error::TooLarge {
            key: "odds:g:1".into(),
            data_type: "odds_data".into(),
            size: 2,
            max: 1,
        };
        assert_eq!(too_large.class(), ErrorClass::TooLarge);
        assert_eq!(
            (
                too_large.class().http_status(),
                too_large.class().exit_code()
            ),
            (413, 2)
        );
        let bad_key = Error::InvalidKey {
            key: "x".into(),
            reason: "y".into(),
        };
        assert_eq!(
            (bad_key.class().http_status(), bad_key.class().exit_code()),
            (400, 2)
        );
        let fetch = Error::Fetch {
            url: "http://127.0.0.1/".into(),
            kind: FetchErrorKind::InvalidUrl,
            reason: "z".into(),
        };
        assert_eq!(fetch.class(), ErrorClass::InvalidInput);
        let upstream = Error::Fetch {
            url: "http://127.0.0.1/".into(),
            kind: FetchErrorKind::Connect,
            reason: "z".into(),
        };
        assert_eq!(
            (upstream.class().http_status(), upstream.class().exit_code()),
            (502, 3)
        );
    }
}
