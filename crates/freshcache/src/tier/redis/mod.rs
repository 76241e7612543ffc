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

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Client, RedisError};

use super::breaker::{Breaker, BreakerState};
use crate::clock::SharedClock;

mod connect;
mod failure;
mod options;

use failure::Failure;
pub use failure::Unavailable;
pub(crate) use options::RedisOptions;

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
    /// The URL with its password redacted, for logs.
    url: String,
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

impl RedisTier {
    pub(super) async fn raw<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
        deadline: Duration,
    ) -> std::result::Result<T, Failure> {
        let fut = async {
            match self.conn.clone() {
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
            }
        };
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::from(&e)),
            Err(_) => Err(Failure::timeout(deadline)),
        }
    }

    /// Runs `cmd` through the breaker with the call deadline.
    async fn call<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
    ) -> std::result::Result<T, Unavailable> {
        let now = self.clock.now();
        if !self.breaker.allow(now) {
            return Err(Unavailable::NOT_ASKED);
        }
        match self.raw(cmd, self.timeout).await {
            Ok(v) => {
                self.breaker.success();
                Ok(v)
            }
            Err(failure) => {
                self.trusted.store(false, Ordering::Release);
                if self.breaker.failure(self.clock.now()) {
                    tracing::warn!(url = %self.url, %failure, "redis circuit breaker opened");
                } else {
                    tracing::debug!(url = %self.url, %failure, "redis call failed");
                }
                Err(Unavailable { kind: failure.kind })
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
            return Err(Unavailable::NOT_ASKED);
        }
        let Ok(_guard) = self.verifying.try_lock() else {
            return Err(Unavailable::NOT_ASKED);
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
            Err(failure) => {
                self.breaker.failure(self.clock.now());
                tracing::debug!(url = %self.url, %failure, "redis owner check failed");
                Err(Unavailable { kind: failure.kind })
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
    pub(super) async fn verify_owner(
        &self,
        deadline: Duration,
    ) -> std::result::Result<(), Failure> {
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
    ) -> std::result::Result<u64, Failure> {
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
                .map_err(|_| Failure::timeout(deadline))?
                .map_err(Failure::from)?;
        }
        Ok(removed)
    }

    /// Clients for every cluster master, from `CLUSTER NODES`.
    async fn cluster_masters(
        &self,
        deadline: Duration,
    ) -> std::result::Result<Vec<Client>, Failure> {
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
            out.push(Client::open(url.as_str()).map_err(Failure::from)?);
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
            return Err(Unavailable::NOT_ASKED);
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
            return Err(Unavailable::NOT_ASKED);
        }
        let pattern = format!("{}*", glob_escape(&self.value_key(prefix)));
        match self.scan_unlink(&pattern, self.timeout * 100).await {
            Ok(n) => {
                self.breaker.success();
                Ok(n)
            }
            Err(failure) => {
                self.breaker.failure(self.clock.now());
                tracing::warn!(url = %self.url, %failure, "redis prefix invalidation failed");
                Err(Unavailable { kind: failure.kind })
            }
        }
    }

    /// Sets `field` of the hash `name` (under the namespace) to `value`.
    ///
    /// # Errors
    /// [`Unavailable`] when the write did not complete.
    pub async fn hash_set(
        &self,
        name: &str,
        field: &str,
        value: u64,
    ) -> std::result::Result<(), Unavailable> {
        let key = format!("{}{name}", self.namespace);
        let _: i64 = self
            .call(redis::cmd("HSET").arg(key).arg(field).arg(value).clone())
            .await?;
        Ok(())
    }

    /// Every field of the hash `name` (under the namespace) whose value is a number.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis could not be asked.
    pub async fn hash_all(
        &self,
        name: &str,
    ) -> std::result::Result<Vec<(String, u64)>, Unavailable> {
        let key = format!("{}{name}", self.namespace);
        let fields: Vec<(String, String)> =
            self.call(redis::cmd("HGETALL").arg(key).clone()).await?;
        Ok(fields
            .into_iter()
            .filter_map(|(f, v)| v.parse().ok().map(|v| (f, v)))
            .collect())
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

    /// A dedicated subscription connection on the events channel.
    ///
    /// # Errors
    /// The reason the subscription could not be made.
    pub async fn subscribe(&self) -> std::result::Result<redis::aio::PubSub, Failure> {
        let fut = async {
            let mut ps = self.pubsub_client.get_async_pubsub().await?;
            ps.subscribe(self.channel()).await?;
            Ok::<_, RedisError>(ps)
        };
        tokio::time::timeout(self.timeout.max(Duration::from_millis(500)) * 4, fut)
            .await
            .map_err(|_| Failure::timeout(self.timeout.max(Duration::from_millis(500)) * 4))?
            .map_err(Failure::from)
    }

    /// The breaker's state.
    #[must_use]
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }
}

#[cfg(test)]
mod tests {
    use super::connect::cluster_nodes;
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
