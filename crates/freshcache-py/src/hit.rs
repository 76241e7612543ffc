//! `Hit`: a value found in the cache, its bytes shared with the Rust entry (never copied
//! until Python asks for a copy).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use freshcache::{Hit as LibHit, RecallStamp, Recallable, Timestamp};

/// Values at least this long are handed to Python as a zero-copy view; shorter ones are
/// copied into `bytes`, which is cheaper than building a view up to about this size (a view
/// costs about 1 µs whatever the length; a copy of 64 KiB about 0.6 µs, of 128 KiB about 1 µs,
/// of 1 MiB about 18 µs, on the 2-core test machine).
const VIEW_MIN: usize = 128 * 1024;

/// Python functions the package registers at import: the codec decoder and the zero-copy view.
static DECODER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static VIEWER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Called once by the Python package to hand over its decoder and viewer.
#[pyfunction]
pub fn _register_codecs(py: Python<'_>, decoder: Py<PyAny>, viewer: Py<PyAny>) {
    let _ = DECODER.set(py, decoder);
    let _ = VIEWER.set(py, viewer);
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn unix(t: Timestamp) -> f64 {
    // Milliseconds since the epoch fit an f64 exactly for the next 285 000 years.
    #[allow(clippy::cast_precision_loss)]
    let ms = t.as_millis() as f64;
    ms / 1000.0
}

/// A value found in the cache, with its freshness facts. Cheap to make: the entry is shared
/// (an `Arc`), the key is the caller's `str` object, and every property is computed when read.
/// A free list recycles the objects of a hot `get` loop.
#[pyclass(frozen, module = "freshcache._native", name = "Hit")]
pub struct Hit {
    pub(crate) hit: LibHit,
    pub(crate) key: Py<PyString>,
    pub(crate) stale: bool,
    /// For a memory hit, what it was read under: `get` may hand the same object out again
    /// while it still stands (see `recent`).
    pub(crate) stamp: Option<RecallStamp>,
    /// Times `get` handed this hit out again, not yet in the library's counters (changed
    /// only with the GIL held; see `recent`).
    pub(crate) served: AtomicU64,
    /// The clock reading (milliseconds) of the lookup that last returned it, which `age` and
    /// `remaining` are measured at: the library hit's own, or a later one when `get` moved a
    /// kept hit nobody else held to a new reading (changed only with the GIL held; see
    /// `recent`).
    seen: AtomicU64,
    /// `value` as `bytes`, made on first use (only for values short enough to be copied).
    bytes: PyOnceLock<Py<PyBytes>>,
}

impl Hit {
    pub(crate) fn new(hit: LibHit, key: Py<PyString>, stale: bool) -> Self {
        Self {
            seen: AtomicU64::new(hit.now.as_millis()),
            hit,
            key,
            stale,
            stamp: None,
            served: AtomicU64::new(0),
            bytes: PyOnceLock::new(),
        }
    }

    /// A memory hit that may be handed out again.
    pub(crate) fn recallable(found: Recallable, key: &Bound<'_, PyString>) -> Self {
        Self::stamped(found.hit, found.stamp, key)
    }

    /// This memory hit read again at a later reading (`later`: the same entry): a new Hit,
    /// sharing the `bytes` already made of the value.
    pub(crate) fn renewed(&self, py: Python<'_>, later: LibHit) -> Self {
        let me = Self {
            stamp: self.stamp,
            ..Self::new(later, self.key.clone_ref(py), false)
        };
        if let Some(b) = self.bytes.get(py) {
            let _ = me.bytes.set(py, b.clone_ref(py));
        }
        me
    }

    /// The clock reading `age` and `remaining` are measured at.
    pub(crate) fn seen(&self) -> Timestamp {
        Timestamp::from_millis(self.seen.load(Ordering::Relaxed))
    }

    /// Moves this hit to a later reading: only when nothing but the kept-hits map holds it,
    /// so nobody sees its age change.
    pub(crate) fn move_to(&self, now: Timestamp) {
        self.seen.store(now.as_millis(), Ordering::Relaxed);
    }

    /// A memory hit read under `stamp`.
    pub(crate) fn stamped(hit: LibHit, stamp: RecallStamp, key: &Bound<'_, PyString>) -> Self {
        Self {
            stamp: Some(stamp),
            ..Self::new(hit, key.clone().unbind(), false)
        }
    }

    /// A hit for a key held as Rust text (the calls that take several keys or a URL).
    pub(crate) fn with_key(py: Python<'_>, hit: LibHit, key: &str, stale: bool) -> Self {
        Self::new(hit, PyString::new(py, key).unbind(), stale)
    }
}

#[pymethods]
impl Hit {
    /// The key.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.key.bind(py).clone()
    }

    /// The stored bytes: a read-only `memoryview` over the cached bytes for large values when
    /// numpy is available, else `bytes` (the same object each time it is asked for).
    #[getter]
    fn value<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let bytes = me.hit.value();
        if bytes.len() >= VIEW_MIN
            && let Some(viewer) = VIEWER.get(py)
        {
            // Not kept: the view refers to this Hit, and a Hit holding its view would be a
            // cycle the collector cannot see.
            return viewer.bind(py).call1((slf,));
        }
        let kept = me
            .bytes
            .get_or_init(py, || PyBytes::new(py, bytes).unbind());
        Ok(kept.bind(py).clone().into_any())
    }

    /// A copy of the stored bytes as `bytes`.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.hit.value())
    }

    /// Length of the stored bytes.
    fn __len__(&self) -> usize {
        self.hit.value().len()
    }

    /// The value decoded by its codec (bytes, str, JSON, MessagePack, numpy array).
    fn decode<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        match DECODER.get(py) {
            Some(d) => d.bind(py).call1((slf,)),
            None => Err(crate::errors::CodecError::new_err(
                "freshcache codecs are not registered: import freshcache, not freshcache._native",
            )),
        }
    }

    /// numpy's array interface over the stored bytes (read-only, shared, never copied).
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let bytes = self.hit.value();
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", PyTuple::new(py, [bytes.len()])?)?;
        d.set_item("typestr", "|u1")?;
        // The address of the entry's bytes: they are immutable and live as long as this Hit,
        // which numpy keeps alive as the array's base.
        d.set_item("data", (bytes.as_ptr() as usize, true))?;
        Ok(d)
    }

    /// The codec name: `bytes`, `text`, `json` or `msgpack`.
    #[getter]
    fn codec(&self) -> &'static str {
        self.hit.meta().codec.name()
    }

    /// Age of the signal at lookup time, in seconds (from its `as_of` when known).
    #[getter]
    fn age(&self) -> f64 {
        secs(self.hit.meta().age(self.seen()))
    }

    /// Lifetime left at lookup time, in seconds (0 for a stale hit).
    #[getter]
    fn remaining(&self) -> f64 {
        secs(self.hit.deadline.duration_since(self.seen()))
    }

    /// The instant (Unix seconds) from which the value is no longer served.
    #[getter]
    fn expires_at(&self) -> f64 {
        unix(self.hit.deadline)
    }

    /// When the cache stored it (Unix seconds).
    #[getter]
    fn stored_at(&self) -> f64 {
        unix(self.hit.meta().stored_at)
    }

    /// When the producer says the signal was true (Unix seconds), if it said.
    #[getter]
    fn as_of(&self) -> Option<f64> {
        self.hit.meta().as_of.map(unix)
    }

    /// The TTL the entry is held to, in seconds.
    #[getter]
    fn ttl(&self) -> f64 {
        secs(self.hit.meta().ttl())
    }

    /// Where it came from: `memory`, `redis`, `disk` or `loader`.
    #[getter]
    fn tier(&self) -> &'static str {
        self.hit.source.name()
    }

    /// True when the value is past its TTL and was returned only because the call allowed it.
    #[getter]
    fn stale(&self) -> bool {
        self.stale
    }

    /// The origin's ETag, when known.
    #[getter]
    fn etag(&self) -> Option<&str> {
        self.hit.meta().etag.as_deref()
    }

    /// xxh3-64 of the value, hex (as in the audit).
    #[getter]
    fn checksum(&self) -> String {
        format!("{:016x}", self.hit.meta().checksum)
    }

    /// The data type name.
    #[getter]
    fn data_type(&self) -> &str {
        &self.hit.meta().data_type
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Hit(key={:?}, tier={}, codec={}, len={}, age={:.3}s, remaining={:.3}s{})",
            self.key.bind(py).to_str()?,
            self.tier(),
            self.codec(),
            self.hit.value().len(),
            self.age(),
            self.remaining(),
            if self.stale { ", stale" } else { "" }
        ))
    }
}
