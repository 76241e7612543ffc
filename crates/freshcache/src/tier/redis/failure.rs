//! How Redis calls fail: [`Unavailable`] for the cache (which carries on without Redis), and
//! `Failure` inside the tier, each keeping the [`RedisErrorKind`] (timeout, refused, auth,
//! protocol, ...) so it is not lost on the way to logs and errors.

use std::time::Duration;

use redis::RedisError;

use crate::error::RedisErrorKind;

/// A Redis call that did not complete, and why: the cache carries on without Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    /// Why.
    pub kind: RedisErrorKind,
}

impl Unavailable {
    /// The breaker is open, or the tier is not trusted yet: Redis was not asked.
    pub(super) const NOT_ASKED: Self = Self {
        kind: RedisErrorKind::BreakerOpen,
    };
}

/// A failed Redis exchange: its kind and a short description (never the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(super) kind: RedisErrorKind,
    pub(super) reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.kind.name())
    }
}

impl From<&RedisError> for Failure {
    fn from(e: &RedisError) -> Self {
        let text = e.to_string();
        let kind = if e.is_timeout() {
            RedisErrorKind::Timeout
        } else if e.is_connection_refusal() {
            RedisErrorKind::Refused
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || ["WRONGPASS", "NOAUTH", "NOPERM"]
                .iter()
                .any(|code| text.contains(code))
        {
            RedisErrorKind::Auth
        } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
            RedisErrorKind::InvalidUrl
        } else if text.contains("TLS") || text.contains("certificate") {
            RedisErrorKind::Tls
        } else if e.is_io_error() {
            RedisErrorKind::Io
        } else {
            RedisErrorKind::Protocol
        };
        Self {
            kind,
            reason: describe(e),
        }
    }
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        Self::from(&e)
    }
}

/// An answer this client did not expect.
impl From<&str> for Failure {
    fn from(reason: &str) -> Self {
        Self {
            kind: RedisErrorKind::Protocol,
            reason: reason.to_owned(),
        }
    }
}

impl Failure {
    pub(super) fn timeout(after: Duration) -> Self {
        Self {
            kind: RedisErrorKind::Timeout,
            reason: format!("no answer within {after:?}"),
        }
    }
}

fn describe(e: &RedisError) -> String {
    // Server and client messages never contain the password; keep them short.
    let text = e.to_string();
    text.chars().take(300).collect()
}
