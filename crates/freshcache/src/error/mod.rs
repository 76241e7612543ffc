//! The library's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;

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
    /// A derived value was refused because one of its declared inputs is missing, stale or
    /// no longer what it was; nothing was written. (Opt out with `Value::unchecked_inputs`.)
    #[error("{key} not stored: input {input} {problem}")]
    InputNotFresh {
        /// The derived value's key, shortened to 120 bytes.
        key: String,
        /// The input at fault.
        input: String,
        /// What is wrong with it.
        problem: InputProblem,
    },
    /// A derived value's inputs lead back to the value itself; nothing was written.
    #[error("{key} not stored: its inputs lead back to it ({path})")]
    LineageCycle {
        /// The derived value's key, shortened to 120 bytes.
        key: String,
        /// The chain of inputs, `a <- b <- a`.
        path: String,
    },
    /// A tag breaks the tag rules (1 to 128 printable ASCII characters, no `,`).
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag {
        /// The tag, shortened to 120 bytes.
        tag: String,
        /// Which rule it breaks.
        reason: String,
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

/// Why a declared input does not vouch for a derived value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputProblem {
    /// Not in the cache.
    Missing,
    /// Past its deadline since `since` (or itself derived from an input that is not fresh).
    Stale {
        /// When it stopped being fresh.
        since: Timestamp,
    },
    /// Rewritten with other content at `at`.
    Changed {
        /// When the current content was stored.
        at: Timestamp,
    },
    /// The derived value carries `tag`, invalidated at `at`.
    TagInvalidated {
        /// The tag.
        tag: String,
        /// When it was invalidated.
        at: Timestamp,
    },
    /// The chain of inputs is deeper than the cache follows.
    TooDeep,
}

impl fmt::Display for InputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("missing"),
            Self::Stale { since } => write!(f, "stale since {since}"),
            Self::Changed { at } => write!(f, "changed at {at}"),
            Self::TagInvalidated { tag, at } => write!(f, "invalidated (tag {tag} at {at})"),
            Self::TooDeep => f.write_str("beyond the deepest chain of inputs followed"),
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
            Error::StaleSignals { .. } | Error::InputNotFresh { .. } => ErrorClass::StaleSignals,
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
                | Error::LineageCycle { .. }
                | Error::InvalidTag { .. }
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

mod kinds;
#[cfg(test)]
mod tests;

pub use kinds::{ErrorClass, FetchErrorKind, RedisErrorKind, StorageFault};
