//! `get_or_fetch`: one loader per key at a time, its result shared by every waiter.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use tokio::sync::watch;

use std::time::Duration;

use super::{Cache, Hit, Lookup, Outcome, Source, Value};
use crate::clock::Timestamp;
use crate::datatype::{DataTypeSpec, StalePolicy};
use crate::error::{Error, LoaderError, Result, clip};
use crate::freshness::judge::{Allowance, Judgement, deadline, judge};
use crate::key::Key;

impl Cache {
    /// Returns the fresh value for `key`, calling `loader` on a miss — at most one loader per
    /// key at a time in this process: concurrent callers wait for it and share its result.
    /// A loader error reaches every waiter and is not cached.
    ///
    /// # Errors
    /// [`Error::Loader`] when the loader fails; key, size and TTL errors for what it returned;
    /// disk errors.
    pub async fn get_or_fetch<F, Fut, V, E>(&self, key: &Key, loader: F) -> Result<Hit>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
        V: Into<Value>,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.fetch(key, loader, Mode::IfNotFresh).await
    }

    /// The coalesced load: in [`Mode::Refresh`] the loader runs even though a fresh value is
    /// cached (refresh-ahead, revalidation).
    async fn fetch<F, Fut, V, E>(&self, key: &Key, loader: F, mode: Mode) -> Result<Hit>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
        V: Into<Value>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let ty = self.data_type(key)?.clone();
        let mut loader = Some(loader);
        let mut first = true;
        loop {
            if (mode == Mode::IfNotFresh || !first)
                && let Lookup::Fresh(h) = self.get(key).await?
            {
                return Ok(h);
            }
            first = false;
            let role = {
                let mut map = self
                    .inner
                    .inflight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match map.get(key.as_str()) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        map.insert(key.as_arc().clone(), rx);
                        Ok(tx)
                    }
                }
            };
            match role {
                Ok(tx) => {
                    let _guard = InflightGuard {
                        cache: self,
                        key: key.as_arc().clone(),
                    };
                    // Another leader may have finished between our lookup and registration.
                    if mode == Mode::IfNotFresh
                        && let Lookup::Fresh(h) = self.get(key).await?
                    {
                        let _ = tx.send(Some(Ok(h.entry.clone())));
                        return Ok(h);
                    }
                    let replacing = self.replacing(key, mode).await?;
                    // Across instances: one loader per key, through a short lease (Redis
                    // between hosts, the index between processes on one host).
                    let lease = match self.acquire_lease(key, &ty, replacing).await? {
                        Lease::Arrived(h) => {
                            let _ = tx.send(Some(Ok(h.entry.clone())));
                            return Ok(h);
                        }
                        lease => lease,
                    };
                    let Some(load) = loader.take() else {
                        // Unreachable: a caller leads at most once, since it returns after.
                        return Err(Error::corrupt("loader already used"));
                    };
                    let outcome = self.run_loader(key, &ty, load, &tx).await;
                    if let Lease::Held(token) = &lease {
                        self.release_lease(key, &ty, token).await;
                    }
                    return outcome;
                }
                Err(rx) => {
                    if let Some(outcome) = self.follow_leader(key, &ty, rx).await {
                        return outcome;
                    }
                    // The value expired before this caller woke, or the leader was cancelled:
                    // look again, maybe as the leader.
                }
            }
        }
    }

    /// Runs the loader as the key's leader, stores what it returns, and hands the outcome to
    /// every waiter (an error as the same shared error; nothing is cached then).
    async fn run_loader<Fut, V, E>(
        &self,
        key: &Key,
        ty: &DataTypeSpec,
        load: impl FnOnce() -> Fut,
        tx: &watch::Sender<Outcome>,
    ) -> Result<Hit>
    where
        Fut: Future<Output = std::result::Result<V, E>>,
        V: Into<Value>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let counters = self.inner.stats.of_type(ty.id);
        counters.loads.fetch_add(1, Ordering::Relaxed);
        match load().await {
            Ok(v) => {
                let now = self.inner.clock.now();
                match self.store(key, v.into(), now).await {
                    Ok(entry) => {
                        let _ = tx.send(Some(Ok(entry.clone())));
                        Ok(Hit {
                            deadline: deadline(&entry.meta, ty),
                            entry,
                            source: Source::Loader,
                            now,
                        })
                    }
                    Err(e) => {
                        let shared: LoaderError = Arc::new(StoreFailed(e.to_string()));
                        let _ = tx.send(Some(Err(shared)));
                        Err(e)
                    }
                }
            }
            Err(e) => {
                counters.load_errors.fetch_add(1, Ordering::Relaxed);
                let shared: LoaderError = Arc::new(e);
                let _ = tx.send(Some(Err(shared.clone())));
                Err(Error::Loader {
                    key: clip(key.as_str()),
                    source: shared,
                })
            }
        }
    }

    /// Waits for the key's leader; `None` when the caller must look again (the value expired
    /// before this caller woke, or the leader was cancelled before finishing).
    async fn follow_leader(
        &self,
        key: &Key,
        ty: &DataTypeSpec,
        mut rx: watch::Receiver<Outcome>,
    ) -> Option<Result<Hit>> {
        self.inner
            .stats
            .of_type(ty.id)
            .coalesced
            .fetch_add(1, Ordering::Relaxed);
        let outcome = rx.wait_for(Option::is_some).await.map(|v| v.clone());
        match outcome {
            Ok(Some(Ok(entry))) => {
                let now = self.inner.clock.now();
                match judge(&entry.meta, ty, now, Allowance::NONE) {
                    Judgement::Fresh { until } => Some(Ok(Hit {
                        entry,
                        source: Source::Loader,
                        now,
                        deadline: until,
                    })),
                    _ => None,
                }
            }
            Ok(Some(Err(e))) => Some(Err(Error::Loader {
                key: clip(key.as_str()),
                source: e,
            })),
            Ok(None) | Err(_) => None,
        }
    }
}

/// Whether a load is needed only when no fresh value is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Load only on a miss.
    IfNotFresh,
    /// Load even though a fresh value is cached.
    Refresh,
}

impl Cache {
    /// Reads `key` through its data type's freshness policies, calling `loader` as needed:
    ///
    /// - a fresh value within the type's refresh-ahead window is returned and refreshed in
    ///   the background (one refresh per key at a time);
    /// - under `while_revalidate`, a value expired at most `max` ago is returned as
    ///   [`Lookup::Stale`] while one background refresh runs;
    /// - otherwise the loader runs (coalesced); if it fails under `if_error`, a value expired
    ///   at most `max` ago is returned as [`Lookup::Stale`] instead of the error.
    ///
    /// The loader is called again for each refresh, so it is `Fn` and owned by the tasks.
    ///
    /// # Errors
    /// As [`Cache::get_or_fetch`].
    pub async fn get_or_load<F, Fut, V, E>(&self, key: &Key, loader: F) -> Result<Lookup>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        V: Into<Value> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let ty = self.data_type(key)?.clone();
        let loader = Arc::new(loader);
        let window = ty.stale.window();
        let found = self
            .get_with(key, super::ReadOptions { max_stale: window })
            .await?;
        match found {
            Lookup::Fresh(h) => {
                let ttl = h.meta().ttl().min(ty.ttl);
                if ty.refresh_ahead > 0.0
                    && h.remaining().as_secs_f64() < ttl.as_secs_f64() * ty.refresh_ahead
                {
                    self.refresh_in_background(key, &loader);
                }
                Ok(Lookup::Fresh(h))
            }
            Lookup::Stale(h) if matches!(ty.stale, StalePolicy::WhileRevalidate(_)) => {
                self.refresh_in_background(key, &loader);
                Ok(Lookup::Stale(h))
            }
            stale_or_miss => {
                let l = loader.clone();
                match self.fetch(key, move || l(), Mode::IfNotFresh).await {
                    Ok(h) => Ok(Lookup::Fresh(h)),
                    Err(e @ Error::Loader { .. }) => match (ty.stale, stale_or_miss) {
                        (StalePolicy::IfError(_), Lookup::Stale(h)) => {
                            tracing::warn!(key = %key, error = %e, "loader failed; serving a stale value as the type allows");
                            Ok(Lookup::Stale(h))
                        }
                        _ => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Starts one background refresh of `key` unless one is already running.
    fn refresh_in_background<F, Fut, V, E>(&self, key: &Key, loader: &Arc<F>)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        V: Into<Value> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let busy = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key.as_str());
        if busy {
            return;
        }
        let (cache, key, loader) = (self.clone(), key.clone(), loader.clone());
        tokio::spawn(async move {
            if let Err(e) = cache.fetch(&key, move || loader(), Mode::Refresh).await {
                tracing::warn!(key = %key, error = %e, "background refresh failed");
            }
        });
    }
}

/// The cross-process side of a load: through Redis between hosts, through the disk index
/// between processes on one host when there is no Redis.
enum Lease {
    /// Waited too long (or the lease store is unavailable): load here.
    None,
    /// This process holds the lease (token): load, store, release.
    Held(String),
    /// Another process loaded the value while this one waited.
    Arrived(Hit),
}

/// How often a waiting process looks for the value another process is loading.
const LEASE_POLL: Duration = Duration::from_millis(10);

impl Cache {
    /// For a refresh, when the value it replaces was stored: a refresh is answered only by a
    /// value stored after that one (the value being refreshed is still fresh).
    async fn replacing(&self, key: &Key, mode: Mode) -> Result<Option<Timestamp>> {
        Ok(match mode {
            Mode::IfNotFresh => None,
            Mode::Refresh => match self.get(key).await? {
                Lookup::Fresh(h) => Some(h.entry.meta.stored_at),
                _ => None,
            },
        })
    }

    /// Takes the load lease for `key`, or waits for the process holding it to store the value
    /// (or for its lease to lapse: a holder killed mid-load blocks the others at most that long).
    /// With `replacing` (a refresh of the value stored then), only a value stored later counts
    /// as arrived: the value being refreshed is still fresh.
    async fn acquire_lease(
        &self,
        key: &Key,
        ty: &DataTypeSpec,
        replacing: Option<Timestamp>,
    ) -> Result<Lease> {
        let arrived = async || -> Result<Option<Hit>> {
            Ok(match self.get(key).await? {
                Lookup::Fresh(h) if replacing.is_none_or(|r| h.entry.meta.stored_at > r) => Some(h),
                _ => None,
            })
        };
        let lease_for = self.inner.config.redis.lease;
        let token = format!("{}-{:016x}", self.inner.instance_id, crate::random::u64());
        let started = self.inner.clock.monotonic();
        loop {
            match self.try_lease(key, ty, &token, lease_for).await {
                Some(true) => {
                    // The previous holder stores before it releases: a value that arrived
                    // between this process's last look and the lease is served, not reloaded.
                    if let Some(h) = arrived().await? {
                        self.release_lease(key, ty, &token).await;
                        return Ok(Lease::Arrived(h));
                    }
                    return Ok(Lease::Held(token));
                }
                Some(false) => {
                    tokio::time::sleep(LEASE_POLL).await;
                    if let Some(h) = arrived().await? {
                        return Ok(Lease::Arrived(h));
                    }
                    if self.inner.clock.monotonic().saturating_sub(started) > lease_for * 2 {
                        return Ok(Lease::None);
                    }
                }
                None => return Ok(Lease::None),
            }
        }
    }

    /// One attempt at the lease: `None` when the lease store cannot be asked.
    async fn try_lease(
        &self,
        key: &Key,
        ty: &DataTypeSpec,
        token: &str,
        lease_for: Duration,
    ) -> Option<bool> {
        if let Some(redis) = self.redis_for(ty) {
            return redis.try_lease(key.as_str(), token, lease_for).await.ok();
        }
        if self.inner.redis.is_some() || !ty.placement.in_disk() {
            // A type kept out of Redis (with Redis configured) or off disk: other processes
            // could not see the loaded value, so loads are coalesced within this process only.
            return None;
        }
        let now = self.inner.clock.now();
        let disk = &self.inner.disk;
        // A short write transaction; a failure means loading here rather than waiting.
        let process = self.inner.instance_id.as_str();
        disk.try_lease(
            key.as_str(),
            token,
            process,
            now.saturating_add(lease_for),
            now,
        )
        .map_err(|e| tracing::debug!(error = %e, "disk lease unavailable"))
        .ok()
    }

    /// Gives the lease back so a waiting process stops waiting at once.
    async fn release_lease(&self, key: &Key, ty: &DataTypeSpec, token: &str) {
        if let Some(redis) = self.redis_for(ty) {
            redis.release_lease(key.as_str(), token).await;
        } else if self.inner.redis.is_none()
            && let Err(e) = self.inner.disk.release_lease(key.as_str(), token)
        {
            tracing::debug!(error = %e, "disk lease not released; it lapses on its own");
        }
    }
}

/// Removes a key's in-flight registration when its leader finishes or is cancelled.
struct InflightGuard<'a> {
    cache: &'a Cache,
    key: Arc<str>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.cache
            .inner
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// A loaded value that could not be stored, as seen by waiting callers.
#[derive(Debug, thiserror::Error)]
#[error("loaded value could not be stored: {0}")]
struct StoreFailed(String);
