//! What kind of failure an error is: storage faults, fetch and Redis failure kinds, and the
//! one classification every face maps from.

use std::io;

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

    pub(super) fn of_io(e: &io::Error) -> Option<Self> {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Some(StorageFault::DiskFull)
            }
            io::ErrorKind::ReadOnlyFilesystem => Some(StorageFault::ReadOnly),
            _ => None,
        }
    }

    pub(super) fn of_index(e: &rusqlite::Error) -> Option<Self> {
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

/// The one classification of an [`Error`](crate::Error) that every face uses: the HTTP status,
/// the CLI's exit code and the Python exception class all follow from it.
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
