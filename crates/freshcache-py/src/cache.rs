//! `NativeCache`: one library [`Cache`] plus the tokio runtime that drives it. Every call that
//! may touch disk, Redis or the network runs with the GIL released.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use freshcache::fetch::{FetchOptions, Fetcher};
use freshcache::{Codec, Config, Key, KeyPrefix, Lookup, ReadOptions, Value};

use crate::clock::{ManualClock, duration, timestamp};
use crate::errors::{CacheClosed, LoaderFailed, to_py};
use crate::fork::{FORKS, Gate, Opening};
use crate::hit::Hit;
use crate::keys::KeyMemo;
use crate::recent::RecentHits;
use crate::shared::{Open, OpenError, Shared};

/// The cache as the Python package sees it.
#[pyclass(frozen, subclass, module = "freshcache._native", name = "NativeCache")]
pub struct NativeCache {
    shared: Arc<Shared>,
    /// [`FORKS`] when opened: a cheap check on every call (`getpid` is a system call).
    forks: u64,
    /// Keys `get` has already validated.
    keys: KeyMemo,
}

impl Drop for NativeCache {
    fn drop(&mut self) {
        if std::process::id() != self.shared.pid {
            // In a forked child: the runtime's threads and the index's locks belong to the
            // parent. Dropping them here could block or write through the parent's handles.
            match self.shared.open.try_write() {
                Ok(mut open) => std::mem::forget(open.take()),
                // Held by a thread of the parent: whatever it holds stays (never dropped).
                Err(_) => std::mem::forget(Arc::clone(&self.shared)),
            }
        }
    }
}

fn codec(name: &str) -> PyResult<Codec> {
    match name {
        "bytes" => Ok(Codec::Bytes),
        "text" => Ok(Codec::Text),
        "json" => Ok(Codec::Json),
        "msgpack" => Ok(Codec::MsgPack),
        other => Err(crate::errors::CodecError::new_err(format!(
            "unknown codec {other:?}: expected bytes, text, json or msgpack"
        ))),
    }
}

/// Seconds from a number or a `datetime.timedelta`.
fn seconds_of(v: &Bound<'_, PyAny>) -> PyResult<f64> {
    if v.hasattr("total_seconds")? {
        return v.call_method0("total_seconds")?.extract();
    }
    v.extract()
}

fn parse_key(py: Python<'_>, k: &str) -> PyResult<Key> {
    Key::parse(k).map_err(|e| to_py(py, e))
}

/// A value handed over from Python: its encoded bytes and what the producer knows.
fn value(
    data: &Bound<'_, PyBytes>,
    codec_name: &str,
    ttl: Option<f64>,
    as_of: Option<f64>,
    etag: Option<String>,
) -> PyResult<Value> {
    let mut v =
        Value::bytes(bytes::Bytes::copy_from_slice(data.as_bytes())).codec(codec(codec_name)?);
    if let Some(t) = ttl {
        v = v.ttl(duration(t, "ttl")?);
    }
    if let Some(a) = as_of {
        v = v.as_of(timestamp(a, "as_of")?);
    }
    if let Some(e) = etag {
        v = v.etag(e);
    }
    Ok(v)
}

impl NativeCache {
    /// Refuses a cache inherited over `fork()`.
    #[inline]
    fn here(&self) -> PyResult<()> {
        if FORKS.load(Ordering::Relaxed) != self.forks {
            return Err(self.forked());
        }
        Ok(())
    }

    fn forked(&self) -> PyErr {
        let now = std::process::id();
        CacheClosed::new_err(format!(
            "this cache was opened in process {} and cannot be used after fork() (this is process {now}): open a new Cache in the child",
            self.shared.pid
        ))
    }

    /// The memory tier's fresh hit for `key`, looked up with the GIL held (releasing it would
    /// cost more than the lookup): first among the hits handed out lately, then under the
    /// state lock's read guard, without cloning the state's `Arc` or entering the runtime.
    fn memory_hit<'py>(&self, key: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, Hit>>> {
        self.here()?;
        let shared = &*self.shared;
        if let Some(hit) = shared.recent.find(key) {
            return Ok(Some(hit));
        }
        let py = key.py();
        let parsed = self.keys.parse(key)?;
        let found = {
            let guard = shared.open.read().unwrap_or_else(PoisonError::into_inner);
            let Some(st) = guard.as_ref() else {
                if shared.gate.is_parked() || !shared.closed.load(Ordering::SeqCst) {
                    // Parked for a fork, or not opened again after one: the lookup waits for
                    // the fork, or tries to open it again, or says why it cannot (in `get`,
                    // off the GIL).
                    return Ok(None);
                }
                return Err(CacheClosed::new_err(shared.why_closed()));
            };
            st.cache
                .get_from_memory_recallable(&parsed.get().0)
                .map_err(|e| to_py(py, e))?
        };
        let Some(found) = found else { return Ok(None) };
        let hit = Bound::new(py, Hit::recallable(found, key))?;
        shared.recent.keep(key, &hit);
        Ok(Some(hit))
    }

    /// Runs `f(cache)` to completion on the cache's runtime with the GIL released (waiting
    /// first while the cache is parked for a fork).
    fn run<T, F, Fut>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(Arc<Open>) -> Fut + Send,
        Fut: Future<Output = freshcache::Result<T>>,
    {
        self.here()?;
        // Also for a fork the package's hook did not see (one made from C): every call that
        // reaches the index or Redis checks the pid itself.
        if std::process::id() != self.shared.pid {
            return Err(self.forked());
        }
        let shared = &*self.shared;
        let out = py.detach(move || {
            let _call = shared.gate.enter();
            let st = shared.current().map_err(Stop::Closed)?;
            let handle = st.runtime.handle().clone();
            // Most calls finish on their first poll (a disk read, a memory hit): polled once
            // here, in the runtime's context, before paying for a full `block_on`.
            let entered = handle.enter();
            let mut fut = std::pin::pin!(f(st));
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out.map_err(Stop::Lib);
            }
            drop(entered);
            handle.block_on(fut).map_err(Stop::Lib)
        });
        out.map_err(|e| match e {
            Stop::Closed(why) => CacheClosed::new_err(why),
            Stop::Lib(e) => to_py(py, e),
        })
    }
}

/// Why a call did not reach the library, or the library's error.
enum Stop {
    Closed(String),
    Lib(freshcache::Error),
}

#[pymethods]
impl NativeCache {
    /// Opens the cache. `env` holds `FRESHCACHE_…` overrides applied after the file (or the
    /// built-in defaults); `cache_dir` moves the directory and its index.
    #[new]
    #[pyo3(signature = (config_path=None, env=Vec::new(), cache_dir=None, clock=None, process_env=true))]
    fn new(
        py: Python<'_>,
        config_path: Option<PathBuf>,
        env: Vec<(String, String)>,
        cache_dir: Option<PathBuf>,
        clock: Option<PyRef<'_, ManualClock>>,
        process_env: bool,
    ) -> PyResult<Self> {
        let mut vars: Vec<(String, String)> = if process_env {
            std::env::vars()
                .filter(|(k, _)| k.starts_with("FRESHCACHE_"))
                .collect()
        } else {
            Vec::new()
        };
        vars.extend(env);
        let config = match &config_path {
            Some(p) => Config::load_with_env(p, vars),
            None => Config::from_yaml_str("", None, vars),
        }
        .map_err(|e| to_py(py, freshcache::Error::Config(e)))?;
        let mut config = match cache_dir {
            Some(d) => config.with_cache_dir(d),
            None => config,
        };
        // Absolute now: a cache opened again after a fork must find the same directory after
        // a change of the working directory.
        for path in [&mut config.cache_dir, &mut config.metadata_path] {
            if let Ok(abs) = std::path::absolute(&*path) {
                *path = abs;
            }
        }
        let clock = clock.map(|c| c.inner.clone());
        let (cfg, clk) = (config.clone(), clock.clone());
        let opened = py.detach(move || {
            let opening = Opening::start().map_err(OpenError::Other)?;
            Open::start(cfg, clk).map(|o| (opening, o))
        });
        let (opening, open) = match opened {
            Ok(o) => o,
            Err(OpenError::Lib(e)) => return Err(to_py(py, e)),
            Err(OpenError::Other(s)) => return Err(crate::errors::Error::new_err(s)),
        };
        let recent = RecentHits::new(
            py,
            open.cache.memory_recall(),
            open.cache.config().memory.max_bytes,
        );
        let shared = Arc::new(Shared {
            open: RwLock::new(Some(Arc::new(open))),
            gate: Gate::default(),
            recent,
            pid: std::process::id(),
            config,
            clock,
            closed: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            reopen_failed: Mutex::new(None),
        });
        opening.register(&shared);
        Ok(Self {
            shared,
            forks: FORKS.load(Ordering::SeqCst),
            keys: KeyMemo::new(py),
        })
    }

    /// Flushes and closes; later calls raise `CacheClosed`. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let shared = &*self.shared;
        if std::process::id() != shared.pid {
            return Ok(());
        }
        shared.closed.store(true, Ordering::SeqCst);
        // Before the state goes: a kept hit must not outlive the cache it came from.
        shared.recent.clear(py);
        // The runtime and cache drop off the GIL, once no call holds them; as a call, so a
        // fork waits for the threads it stops and the connections it closes.
        py.detach(|| {
            let _call = shared.gate.enter();
            shared.take_open().map_or(Ok(()), Open::shut_down)
        })
        .map_err(|e| to_py(py, e))
    }

    /// True until closed.
    #[getter]
    fn is_open(&self) -> bool {
        let shared = &*self.shared;
        std::process::id() == shared.pid
            && !shared.closed.load(Ordering::SeqCst)
            && (shared.gate.is_parked() || shared.may_be_open())
    }

    /// The value under `key`: fresh, or stale within `max_stale` (seconds or a `timedelta`)
    /// when given. A memory-tier hit is answered at once; anything that may touch Redis or
    /// the disk runs with the GIL released.
    #[pyo3(signature = (key, *, max_stale=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyString>,
        max_stale: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, Hit>>> {
        let max_stale = match max_stale {
            None => std::time::Duration::ZERO,
            Some(v) => duration(seconds_of(v)?, "max_stale")?,
        };
        if max_stale.is_zero()
            && let Some(h) = self.memory_hit(key)?
        {
            return Ok(Some(h));
        }
        let parsed = self.keys.parse(key)?;
        let opts = ReadOptions { max_stale };
        let kk = parsed.get().0.clone();
        let found = self.run(py, |st| async move { st.cache.get_with(&kk, opts).await })?;
        let hit = match found {
            Lookup::Fresh(h) => Hit::new(h, key.clone().unbind(), false),
            Lookup::Stale(h) => Hit::new(h, key.clone().unbind(), true),
            _ => return Ok(None),
        };
        Bound::new(py, hit).map(Some)
    }

    /// The fresh value under `key` if this process's memory tier holds it; never blocks (the
    /// asyncio twin answers memory hits on the event loop with it).
    #[pyo3(name = "_get_memory")]
    fn get_memory<'py>(&self, k: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, Hit>>> {
        self.memory_hit(k)
    }

    /// Stores already-encoded bytes under `key` with their codec.
    #[pyo3(
        name = "_set_raw",
        signature = (k, data, codec_name, ttl=None, as_of=None, etag=None, derived_from=None, tags=None, unchecked_inputs=false)
    )]
    #[allow(clippy::too_many_arguments)] // mirrors the Python call's keyword arguments
    fn set(
        &self,
        py: Python<'_>,
        k: &str,
        data: &Bound<'_, PyBytes>,
        codec_name: &str,
        ttl: Option<f64>,
        as_of: Option<f64>,
        etag: Option<String>,
        derived_from: Option<Vec<String>>,
        tags: Option<Vec<String>>,
        unchecked_inputs: bool,
    ) -> PyResult<()> {
        let kk = parse_key(py, k)?;
        let mut v = value(data, codec_name, ttl, as_of, etag)?;
        if let Some(inputs) = derived_from {
            let keys = inputs
                .iter()
                .map(|i| parse_key(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            v = v.derived_from(keys);
        }
        if let Some(tags) = tags {
            v = v.tags(tags);
        }
        if unchecked_inputs {
            v = v.unchecked_inputs();
        }
        self.run(
            py,
            |st| async move { st.cache.set(&kk, v).await.map(|_| ()) },
        )
    }

    /// Removes `key` from every tier; true when something was removed.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let kk = parse_key(py, key)?;
        self.run(py, |st| async move { st.cache.delete(&kk).await })
    }

    /// Drops every key under `prefix`; returns how many were removed.
    fn invalidate_prefix(&self, py: Python<'_>, prefix: &str) -> PyResult<u64> {
        let p = KeyPrefix::parse(prefix).map_err(|e| to_py(py, e))?;
        self.run(py, |st| async move { st.cache.invalidate_prefix(&p).await })
    }

    /// Makes every value tagged `tag` (and every value derived from one) not fresh, on every
    /// tier, process and instance; returns the invalidation time (Unix seconds).
    fn invalidate_tag(&self, py: Python<'_>, tag: String) -> PyResult<f64> {
        let at = self.run(py, |st| async move { st.cache.invalidate_tag(&tag).await })?;
        Ok(at.as_millis() as f64 / 1000.0)
    }

    /// Drops everything; returns how many entries were removed.
    fn invalidate_all(&self, py: Python<'_>) -> PyResult<u64> {
        self.run(py, |st| async move { st.cache.invalidate_all().await })
    }

    /// The stats report as JSON text.
    #[pyo3(name = "_stats_json")]
    fn stats_json(&self, py: Python<'_>) -> PyResult<String> {
        // Hits handed out again are counted in the kept hits until now.
        self.shared.recent.settle_all(py);
        let report = self.run(py, |st| async move { st.cache.stats() })?;
        serde_json::to_string(&report)
            .map_err(|e| crate::errors::Error::new_err(format!("stats: {e}")))
    }

    /// Where `key` lives and how it stands, without counting a read.
    fn inspect<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyDict>> {
        let k = key;
        let kk = parse_key(py, k)?;
        let ins = self.run(py, |st| async move { st.cache.inspect(&kk) })?;
        let d = PyDict::new(py);
        d.set_item("key", k)?;
        d.set_item("fresh", ins.fresh)?;
        d.set_item("in_memory", ins.in_memory)?;
        d.set_item("on_disk", ins.disk.is_some())?;
        if let Some(disk) = &ins.disk {
            d.set_item("stored_size", disk.stored_size)?;
            d.set_item("inline", disk.file.is_none())?;
            d.set_item("access_count", disk.access_count)?;
        }
        if let Some(e) = &ins.entry {
            let unix = |t: freshcache::Timestamp| t.as_millis() as f64 / 1000.0;
            d.set_item("size", e.value.len())?;
            d.set_item("codec", e.meta.codec.name())?;
            d.set_item("data_type", &*e.meta.data_type)?;
            d.set_item("stored_at", unix(e.meta.stored_at))?;
            d.set_item("expires_at", unix(e.meta.expires_at))?;
            d.set_item("as_of", e.meta.as_of.map(unix))?;
            d.set_item("etag", e.meta.etag.as_deref())?;
            d.set_item("checksum", format!("{:016x}", e.meta.checksum))?;
        }
        Ok(d)
    }

    /// The guard: every key's fresh hit, in order, or `StaleSignals`. Audited under `run_id`.
    #[pyo3(name = "_require_fresh_raw")]
    fn require_fresh(&self, py: Python<'_>, run_id: &str, keys: Vec<String>) -> PyResult<Vec<Hit>> {
        let parsed = keys
            .iter()
            .map(|k| parse_key(py, k))
            .collect::<PyResult<Vec<Key>>>()?;
        let run_id = run_id.to_owned();
        let fresh = self.run(py, |st| async move {
            st.cache.require_fresh(&run_id, &parsed).await
        })?;
        Ok(fresh
            .values
            .into_iter()
            .zip(keys)
            .map(|(h, k)| Hit::with_key(py, h, &k, false))
            .collect())
    }

    /// The audit rows of `run_id` as JSON text.
    #[pyo3(name = "_audit_json")]
    fn audit_json(&self, py: Python<'_>, run_id: &str) -> PyResult<String> {
        let run_id = run_id.to_owned();
        let rows = self.run(py, |st| async move { st.cache.audit(&run_id) })?;
        serde_json::to_string(&rows)
            .map_err(|e| crate::errors::Error::new_err(format!("audit: {e}")))
    }

    /// Conditional HTTP fetch of `url` into `key`: `(outcome, status, hit)`.
    #[pyo3(name = "_fetch_raw")]
    fn fetch(&self, py: Python<'_>, url: &str, k: &str) -> PyResult<(String, u16, Option<Hit>)> {
        let kk = parse_key(py, k)?;
        let url = url.to_owned();
        let out = self.run(py, |st| async move {
            let fetcher = match st.fetcher.get() {
                Some(f) => f,
                None => {
                    let f = Fetcher::new(FetchOptions::default())?;
                    st.fetcher.get_or_init(|| f)
                }
            };
            fetcher.fetch(&st.cache, &kk, &url).await
        })?;
        Ok((
            out.name().to_owned(),
            out.status(),
            out.hit().map(|h| Hit::with_key(py, h.clone(), k, false)),
        ))
    }

    /// The fresh value under `key`, or `loader()` called once per key at a time (across
    /// threads, and across instances sharing Redis). `loader` returns
    /// `(bytes, codec, ttl_or_None, as_of_or_None)`; its exception reaches every waiter.
    #[pyo3(name = "_get_or_fetch_raw")]
    fn get_or_fetch(&self, py: Python<'_>, k: &str, loader: Py<PyAny>) -> PyResult<Hit> {
        let kk = parse_key(py, k)?;
        let hit = self.run(py, |st| async move {
            st.cache
                .get_or_fetch(&kk, move || async move {
                    Python::attach(|py| -> Result<Value, LoaderFailed> {
                        let r = loader.bind(py).call0().map_err(LoaderFailed)?;
                        let (data, codec_name, ttl, as_of): (
                            Bound<'_, PyBytes>,
                            String,
                            Option<f64>,
                            Option<f64>,
                        ) = r.extract().map_err(|e: PyErr| LoaderFailed(e))?;
                        value(&data, &codec_name, ttl, as_of, None).map_err(LoaderFailed)
                    })
                })
                .await
        })?;
        Ok(Hit::with_key(py, hit, k, false))
    }

    /// The redis tier's state name (`closed`, `open`, … or `none` when embedded).
    fn redis_state(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.run(py, |st| async move { Ok(st.cache.redis_state_name()) })
    }
}
