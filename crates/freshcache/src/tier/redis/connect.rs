//! Connecting: the node list of a cluster URL, credentials that override the URL's, TLS with a
//! chosen CA, then the PING and the owner check before the tier is trusted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisError};

use super::{Conn, Failure, RedisOptions, RedisTier};
use crate::clock::SharedClock;
use crate::error::{Error, RedisErrorKind, Result};
use crate::tier::breaker::Breaker;

/// The node URLs of a `redis+cluster://a:1,b:2` URL, each as `redis://[auth@]a:1`.
pub(super) fn cluster_nodes(url: &str) -> Vec<String> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("rediss+cluster://") {
        ("rediss://", r)
    } else if let Some(r) = url.strip_prefix("redis+cluster://") {
        ("redis://", r)
    } else {
        return vec![url.to_owned()];
    };
    let (auth, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}{auth}{h}"))
        .collect()
}

fn connection_info(
    url: &str,
    cfg: &RedisOptions,
) -> std::result::Result<redis::ConnectionInfo, RedisError> {
    let info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(p) = &cfg.password {
        settings = settings.set_password(p);
    }
    if let Some(u) = &cfg.username {
        settings = settings.set_username(u);
    }
    Ok(info.set_redis_settings(settings))
}

impl RedisTier {
    /// Connects, authenticates, and checks that Redis's content belongs to this server run.
    ///
    /// # Errors
    /// [`Error::Redis`] naming the (redacted) URL and the reason: unreachable, wrong password,
    /// bad URL.
    // One function on purpose (~95 lines): connecting is one sequence (node list, TLS,
    // connection, PING, owner check) whose every failure must name the URL and its kind.
    pub async fn connect(cfg: &RedisOptions, clock: SharedClock) -> Result<Self> {
        // rustls needs one process-wide crypto provider for rediss://; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fail = |f: Failure| Error::Redis {
            url: cfg.redacted_url.clone(),
            kind: f.kind,
            reason: f.reason,
        };
        let invalid = |reason: String| Failure {
            kind: RedisErrorKind::InvalidUrl,
            reason,
        };
        let nodes = cluster_nodes(&cfg.url);
        let first = nodes
            .first()
            .ok_or_else(|| fail(invalid("no Redis node in the URL".into())))?;
        let first_info = connection_info(first, cfg).map_err(|e| fail(Failure::from(&e)))?;
        let certs = match &cfg.tls_ca_file {
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| {
                    fail(invalid(format!(
                        "cannot read the CA file {}: {e}",
                        path.display()
                    )))
                })?),
            }),
            None => None,
        };
        let pubsub_client = match &certs {
            Some(c) => Client::build_with_tls(first_info.clone(), c.clone()),
            None => Client::open(first_info.clone()),
        }
        .map_err(|e| fail(Failure::from(&e)))?;
        let conn = if cfg.cluster {
            let mut b = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.timeout.max(Duration::from_millis(10)))
                .retries(1);
            if let Some(p) = &cfg.password {
                b = b.password(p);
            }
            if let Some(u) = &cfg.username {
                b = b.username(u);
            }
            if let Some(c) = &certs {
                b = b.certs(c.clone());
            }
            let client = b.build().map_err(|e| fail(Failure::from(&e)))?;
            let c = tokio::time::timeout(cfg.connect_timeout, client.get_async_connection())
                .await
                .map_err(|_| fail(Failure::timeout(cfg.connect_timeout)))?
                .map_err(|e| fail(Failure::from(&e)))?;
            Conn::Cluster(c)
        } else {
            let mgr_cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.connect_timeout))
                .set_response_timeout(Some(cfg.timeout.max(Duration::from_millis(10))))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let c = tokio::time::timeout(
                cfg.connect_timeout,
                ConnectionManager::new_with_config(pubsub_client.clone(), mgr_cfg),
            )
            .await
            .map_err(|_| fail(Failure::timeout(cfg.connect_timeout)))?
            .map_err(|e| fail(Failure::from(&e)))?;
            Conn::Single(c)
        };
        let tier = Self {
            conn,
            pubsub_client,
            cluster_nodes: nodes,
            namespace: cfg.namespace.clone(),
            timeout: cfg.timeout,
            breaker: Breaker::new(cfg.breaker_failures, cfg.breaker_open_for),
            clock,
            trusted: AtomicBool::new(false),
            verifying: tokio::sync::Mutex::new(()),
            url: cfg.redacted_url.clone(),
        };
        // PING proves the credentials; the owner check proves the content.
        let pong: String = tier
            .raw(redis::cmd("PING"), cfg.connect_timeout)
            .await
            .map_err(&fail)?;
        if pong != "PONG" {
            return Err(fail(Failure::from(
                format!("unexpected PING answer {pong:?}").as_str(),
            )));
        }
        tier.verify_owner(cfg.connect_timeout).await.map_err(fail)?;
        tier.trusted.store(true, Ordering::Release);
        Ok(tier)
    }
}
