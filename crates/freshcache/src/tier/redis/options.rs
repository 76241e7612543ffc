//! What the Redis tier needs to connect and behave, as a type of its own: the cache builds it
//! from the configuration, so the tier knows nothing of config files.

use std::path::PathBuf;
use std::time::Duration;

/// Connection and behaviour options of the Redis tier.
#[derive(Clone)]
pub(crate) struct RedisOptions {
    /// The URL as given (it may hold a password): used to connect, never logged.
    pub url: String,
    /// The URL with its password redacted, for logs and errors.
    pub redacted_url: String,
    /// A `redis+cluster://` URL: the nodes of one Redis Cluster.
    pub cluster: bool,
    /// Key prefix for everything the tier writes.
    pub namespace: String,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Deadline of connecting.
    pub connect_timeout: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_open_for: Duration,
    /// Password that overrides the URL's.
    pub password: Option<String>,
    /// ACL user that overrides the URL's.
    pub username: Option<String>,
    /// CA certificate (PEM) for `rediss://`, instead of the system trust store.
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.redacted_url)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
