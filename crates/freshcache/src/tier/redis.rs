//! L2: Redis, shared between processes and hosts.
//!
//! Values are the same checksummed envelopes as on disk, under `{namespace}v/{key}`, with the
//! entry's *remaining* lifetime as Redis expiry (a second guard; the reader still judges
//! freshness from the envelope). Every call has a deadline and goes through a circuit breaker;
//! failures are reported to the caller as [`Unavailable`] so the cache can carry on with memory
//! and disk.
//!
//! A Redis restarted from an old snapshot could hand back values that were overwritten after
//! the snapshot. To rule that out, the tier records the server's `run_id` under
//! `{namespace}owner`; when a connection (re)establishes and the recorded id differs, every
//! freshcache key in the namespace is dropped before Redis is trusted again (single node; in
//! cluster mode each shard's durability is the cluster's own business).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, IntoConnectionInfo, RedisError};

use super::breaker::{Breaker, BreakerState};
use crate::clock::SharedClock;
use crate::config::{RedisConfig, RedisUrl};
use crate::error::{Error, Result};

/// A Redis call that did not complete: the cache carries on without Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Whether a `SET` applies always or only to an absent key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetWhen {
    Always,
    Absent,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How the tier reaches Redis.
pub struct RedisTier {
    conn: Conn,
    pubsub_client: Client,
    cluster_nodes: Vec<String>,
    namespace: String,
    timeout: Duration,
    breaker: Breaker,
    clock: SharedClock,
    /// False after a failure until the owner check has run again.
    trusted: AtomicBool,
    verifying: tokio::sync::Mutex<()>,
    url: RedisUrl,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Escapes glob characters so a prefix matches only itself in `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn describe(e: &RedisError) -> String {
    // Server and client messages never contain the password; keep them short.
    let text = e.to_string();
    text.chars().take(300).collect()
}

/// The node URLs of a `redis+cluster://a:1,b:2` URL, each as `redis://[auth@]a:1`.
fn cluster_nodes(url: &str) -> Vec<String> {
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
    cfg: &RedisConfig,
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
    pub async fn connect(url: &RedisUrl, cfg: &RedisConfig, clock: SharedClock) -> Result<Self> {
        // rustls needs one process-wide crypto provider for rediss://; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fail = |reason: String| Error::Redis {
            url: url.redacted(),
            reason,
        };
        let nodes = cluster_nodes(url.expose());
        let first = nodes
            .first()
            .ok_or_else(|| fail("no Redis node in the URL".into()))?;
        let first_info = connection_info(first, cfg).map_err(|e| fail(describe(&e)))?;
        let certs = match &cfg.tls_ca_file {
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| {
                    fail(format!("cannot read the CA file {}: {e}", path.display()))
                })?),
            }),
            None => None,
        };
        let pubsub_client = match &certs {
            Some(c) => Client::build_with_tls(first_info.clone(), c.clone()),
            None => Client::open(first_info.clone()),
        }
        .map_err(|e| fail(describe(&e)))?;
        let conn = if url.is_cluster() {
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
            let client = b.build().map_err(|e| fail(describe(&e)))?;
            let c = tokio::time::timeout(cfg.connect_timeout, client.get_async_connection())
                .await
                .map_err(|_| fail(format!("no answer within {:?}", cfg.connect_timeout)))?
                .map_err(|e| fail(describe(&e)))?;
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
            .map_err(|_| fail(format!("no answer within {:?}", cfg.connect_timeout)))?
            .map_err(|e| fail(describe(&e)))?;
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
            url: url.clone(),
        };
        // PING proves the credentials; the owner check proves the content.
        let pong: String = tier
            .raw(redis::cmd("PING"), cfg.connect_timeout)
            .await
            .map_err(&fail)?;
        if pong != "PONG" {
            return Err(fail(format!("unexpected PING answer {pong:?}")));
        }
        tier.verify_owner(cfg.connect_timeout).await.map_err(fail)?;
        tier.trusted.store(true, Ordering::Release);
        Ok(tier)
    }

    async fn raw<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
        deadline: Duration,
    ) -> std::result::Result<T, String> {
        let fut = async {
            match self.conn.clone() {
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
            }
        };
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {deadline:?}")),
        }
    }

    /// Runs `cmd` through the breaker with the call deadline.
    async fn call<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
    ) -> std::result::Result<T, Unavailable> {
        let now = self.clock.now();
        if !self.breaker.allow(now) {
            return Err(Unavailable);
        }
        match self.raw(cmd, self.timeout).await {
            Ok(v) => {
                self.breaker.success();
                Ok(v)
            }
            Err(reason) => {
                self.trusted.store(false, Ordering::Release);
                if self.breaker.failure(self.clock.now()) {
                    tracing::warn!(url = %self.url, reason, "redis circuit breaker opened");
                } else {
                    tracing::debug!(url = %self.url, reason, "redis call failed");
                }
                Err(Unavailable)
            }
        }
    }

    /// After a failure, re-checks the owner run id before Redis content is trusted again; run
    /// by the cache's background repair loop, never on a reader's path.
    pub async fn recover(&self) -> std::result::Result<(), Unavailable> {
        if self.trusted.load(Ordering::Acquire) {
            return Ok(());
        }
        if !self.breaker.allow(self.clock.now()) {
            return Err(Unavailable);
        }
        let Ok(_guard) = self.verifying.try_lock() else {
            return Err(Unavailable);
        };
        match self
            .verify_owner(self.timeout.max(Duration::from_millis(200)) * 4)
            .await
        {
            Ok(()) => {
                self.breaker.success();
                self.trusted.store(true, Ordering::Release);
                tracing::info!(url = %self.url, "redis tier trusted again");
                Ok(())
            }
            Err(reason) => {
                self.breaker.failure(self.clock.now());
                tracing::debug!(url = %self.url, reason, "redis owner check failed");
                Err(Unavailable)
            }
        }
    }

    fn owner_key(&self) -> String {
        format!("{}owner", self.namespace)
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}v/{key}", self.namespace)
    }

    fn lease_key(&self, key: &str) -> String {
        format!("{}l/{key}", self.namespace)
    }

    /// The channel on which instances announce writes and invalidations.
    #[must_use]
    pub fn channel(&self) -> String {
        format!("{}events", self.namespace)
    }

    /// Compares the server's run id with the one recorded beside the data; on a mismatch
    /// (restart, restore from a snapshot, first use) drops every value in the namespace.
    async fn verify_owner(&self, deadline: Duration) -> std::result::Result<(), String> {
        if matches!(self.conn, Conn::Cluster(_)) {
            return Ok(());
        }
        let info: String = self
            .raw(redis::cmd("INFO").arg("server").clone(), deadline)
            .await?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(str::trim)
            .ok_or("INFO server has no run_id")?
            .to_owned();
        let recorded: Option<String> = self
            .raw(redis::cmd("GET").arg(self.owner_key()).clone(), deadline)
            .await?;
        if recorded.as_deref() == Some(run_id.as_str()) {
            return Ok(());
        }
        let dropped = self
            .scan_unlink(
                &format!("{}v/*", glob_escape(&self.namespace)),
                deadline * 20,
            )
            .await?;
        if recorded.is_some() {
            tracing::warn!(
                url = %self.url,
                dropped,
                "redis restarted since its values were written; dropped them rather than risk stale hits"
            );
        }
        let _: () = self
            .raw(
                redis::cmd("SET").arg(self.owner_key()).arg(&run_id).clone(),
                deadline,
            )
            .await?;
        Ok(())
    }

    /// `SCAN MATCH pattern` + `UNLINK` on every master; returns how many keys went.
    async fn scan_unlink(
        &self,
        pattern: &str,
        deadline: Duration,
    ) -> std::result::Result<u64, String> {
        let nodes: Vec<Client> = match &self.conn {
            Conn::Single(_) => vec![self.pubsub_client.clone()],
            Conn::Cluster(_) => self.cluster_masters(deadline).await?,
        };
        let mut removed = 0u64;
        for node in nodes {
            let fut = async {
                let mut c = node.get_multiplexed_async_connection().await?;
                let mut cursor: u64 = 0;
                let mut n = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    if !keys.is_empty() {
                        // One key per UNLINK: in a cluster, keys of one node span many slots
                        // and a multi-key UNLINK would be refused (CROSSSLOT).
                        let mut pipe = redis::pipe();
                        for k in &keys {
                            pipe.cmd("UNLINK").arg(k);
                        }
                        let gone: Vec<u64> = pipe.query_async(&mut c).await?;
                        n += gone.iter().sum::<u64>();
                    }
                    if next == 0 {
                        return Ok::<u64, RedisError>(n);
                    }
                    cursor = next;
                }
            };
            removed += tokio::time::timeout(deadline, fut)
                .await
                .map_err(|_| format!("scan did not finish within {deadline:?}"))?
                .map_err(|e| describe(&e))?;
        }
        Ok(removed)
    }

    /// Clients for every cluster master, from `CLUSTER NODES`.
    async fn cluster_masters(
        &self,
        deadline: Duration,
    ) -> std::result::Result<Vec<Client>, String> {
        let text: String = self
            .raw(redis::cmd("CLUSTER").arg("NODES").clone(), deadline)
            .await?;
        let template = self.cluster_nodes.first().ok_or("no cluster node")?;
        let mut out = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 || !f[2].split(',').any(|flag| flag == "master") || f[2].contains("fail")
            {
                continue;
            }
            let addr = f[1].split('@').next().unwrap_or_default();
            // Same scheme and credentials as the configured node, another address.
            let url = match template.rfind('@') {
                Some(at) => format!("{}{addr}", &template[..=at]),
                None => {
                    let scheme_end = template.find("://").map_or(0, |i| i + 3);
                    format!("{}{addr}", &template[..scheme_end])
                }
            };
            out.push(Client::open(url.as_str()).map_err(|e| describe(&e))?);
        }
        Ok(out)
    }

    /// The stored envelope for `key`, if Redis holds one and is trusted.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis is down, slow, untrusted or the breaker is open.
    pub async fn get(&self, key: &str) -> std::result::Result<Option<Vec<u8>>, Unavailable> {
        // Until the owner check has run again (in the background, see `recover`), Redis content
        // is not read: readers never wait on it.
        if !self.trusted.load(Ordering::Acquire) {
            return Err(Unavailable);
        }
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.value_key(key));
        self.call(cmd).await
    }

    /// Stores an envelope with Redis expiry `ttl` (the entry's remaining lifetime).
    ///
    /// # Errors
    /// [`Unavailable`] when the write did not complete.
    pub async fn set(
        &self,
        key: &str,
        envelope: &[u8],
        ttl: Duration,
    ) -> std::result::Result<(), Unavailable> {
        self.set_px(self.value_key(key), envelope, ttl, SetWhen::Always)
            .await
            .map(|_| ())
    }

    /// `SET name value PX ttl`, with `NX` when only an absent key may be set; true when set.
    async fn set_px(
        &self,
        name: String,
        value: &[u8],
        ttl: Duration,
        when: SetWhen,
    ) -> std::result::Result<bool, Unavailable> {
        let px = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(name).arg(value);
        if when == SetWhen::Absent {
            cmd.arg("NX");
        }
        cmd.arg("PX").arg(px);
        let reply: Option<String> = self.call(cmd).await?;
        Ok(reply.is_some())
    }

    /// Stores an envelope only if Redis holds no value for `key` (promotion from disk must
    /// never overwrite a newer write).
    ///
    /// # Errors
    /// [`Unavailable`] when the write did not complete.
    pub async fn set_if_absent(
        &self,
        key: &str,
        envelope: &[u8],
        ttl: Duration,
    ) -> std::result::Result<bool, Unavailable> {
        self.set_px(self.value_key(key), envelope, ttl, SetWhen::Absent)
            .await
    }

    /// Deletes several keys in one call.
    ///
    /// # Errors
    /// [`Unavailable`] when the delete did not complete.
    pub async fn delete_many(&self, keys: &[String]) -> std::result::Result<(), Unavailable> {
        if keys.is_empty() {
            return Ok(());
        }
        if matches!(self.conn, Conn::Cluster(_)) {
            // Keys live on different shards; one UNLINK each.
            for k in keys {
                self.delete(k).await?;
            }
            return Ok(());
        }
        let names: Vec<String> = keys.iter().map(|k| self.value_key(k)).collect();
        let _: u64 = self.call(redis::cmd("UNLINK").arg(names).clone()).await?;
        Ok(())
    }

    /// Deletes `key`; true when Redis held it.
    ///
    /// # Errors
    /// [`Unavailable`] when the delete did not complete.
    pub async fn delete(&self, key: &str) -> std::result::Result<bool, Unavailable> {
        let n: u64 = self
            .call(redis::cmd("UNLINK").arg(self.value_key(key)).clone())
            .await?;
        Ok(n > 0)
    }

    /// Deletes every key starting with `prefix` on every master (SCAN, never KEYS).
    ///
    /// # Errors
    /// [`Unavailable`] when the scan did not complete.
    pub async fn delete_prefix(&self, prefix: &str) -> std::result::Result<u64, Unavailable> {
        if !self.breaker.allow(self.clock.now()) {
            return Err(Unavailable);
        }
        let pattern = format!("{}*", glob_escape(&self.value_key(prefix)));
        match self.scan_unlink(&pattern, self.timeout * 100).await {
            Ok(n) => {
                self.breaker.success();
                Ok(n)
            }
            Err(reason) => {
                self.breaker.failure(self.clock.now());
                tracing::warn!(url = %self.url, reason, "redis prefix invalidation failed");
                Err(Unavailable)
            }
        }
    }

    /// Announces `message` to the other instances.
    ///
    /// # Errors
    /// [`Unavailable`] when the publish did not complete.
    pub async fn publish(&self, message: &str) -> std::result::Result<(), Unavailable> {
        let _: i64 = self
            .call(
                redis::cmd("PUBLISH")
                    .arg(self.channel())
                    .arg(message)
                    .clone(),
            )
            .await?;
        Ok(())
    }

    /// Tries to take the load lease for `key` for `ttl`; true when this caller holds it.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis could not be asked.
    pub async fn try_lease(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> std::result::Result<bool, Unavailable> {
        self.set_px(self.lease_key(key), token.as_bytes(), ttl, SetWhen::Absent)
            .await
    }

    /// Releases the lease if `token` still holds it.
    pub async fn release_lease(&self, key: &str, token: &str) {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        let lease = self.lease_key(key);
        let fut = async {
            match self.conn.clone() {
                Conn::Single(mut c) => {
                    script
                        .key(&lease)
                        .arg(token)
                        .invoke_async::<i64>(&mut c)
                        .await
                }
                Conn::Cluster(mut c) => {
                    script
                        .key(&lease)
                        .arg(token)
                        .invoke_async::<i64>(&mut c)
                        .await
                }
            }
        };
        let _ = tokio::time::timeout(self.timeout, fut).await;
    }

    /// Whether anyone holds the lease for `key`.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis could not be asked.
    pub async fn lease_held(&self, key: &str) -> std::result::Result<bool, Unavailable> {
        let n: u64 = self
            .call(redis::cmd("EXISTS").arg(self.lease_key(key)).clone())
            .await?;
        Ok(n > 0)
    }

    /// A dedicated subscription connection on the events channel.
    ///
    /// # Errors
    /// The reason the subscription could not be made.
    pub async fn subscribe(&self) -> std::result::Result<redis::aio::PubSub, String> {
        let fut = async {
            let mut ps = self.pubsub_client.get_async_pubsub().await?;
            ps.subscribe(self.channel()).await?;
            Ok::<_, RedisError>(ps)
        };
        tokio::time::timeout(self.timeout.max(Duration::from_millis(500)) * 4, fut)
            .await
            .map_err(|_| "subscription timed out".to_owned())?
            .map_err(|e| describe(&e))
    }

    /// The breaker's state.
    #[must_use]
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The URL, redacted.
    #[must_use]
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_become_node_urls_with_shared_credentials() {
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@h1:7000,h2:7001"),
            ["redis://u:p@h1:7000", "redis://u:p@h2:7001"]
        );
        assert_eq!(cluster_nodes("rediss+cluster://h:1"), ["rediss://h:1"]);
        assert_eq!(cluster_nodes("redis://h:1"), ["redis://h:1"]);
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("news:a*b?[c]"), "news:a\\*b\\?\\[c\\]");
        assert_eq!(glob_escape("a\\b^-"), "a\\\\b\\^\\-");
    }
}
