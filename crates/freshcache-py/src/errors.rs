//! The exception classes and the one mapping from the library's [`freshcache::Error`] to them.

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use freshcache::Error as LibError;

pyo3::create_exception!(
    freshcache,
    Error,
    PyException,
    "Base class of every freshcache error."
);
pyo3::create_exception!(
    freshcache,
    InvalidKey,
    Error,
    "The key (or run id) breaks the key rules, or no data type matches it; nothing was read or written."
);
pyo3::create_exception!(
    freshcache,
    ValueTooLarge,
    Error,
    "The value is larger than its data type allows; nothing was written."
);
pyo3::create_exception!(
    freshcache,
    StorageError,
    Error,
    "The disk tier failed (attributes `disk_full`, `read_only`) or stored bytes were corrupt."
);
pyo3::create_exception!(
    freshcache,
    RedisUnavailable,
    Error,
    "Redis could not be reached or refused the credentials when the cache was opened."
);
pyo3::create_exception!(
    freshcache,
    ConfigError,
    Error,
    "The configuration is invalid (attributes `file`, `line`, `field`, `reason`)."
);
pyo3::create_exception!(
    freshcache,
    StaleSignals,
    Error,
    "The freshness guard refused: attribute `signals` lists every stale or missing key with its age and TTL."
);
pyo3::create_exception!(
    freshcache,
    CodecError,
    Error,
    "A value could not be encoded or decoded with its codec (freshcache never pickles); nothing was written."
);
pyo3::create_exception!(
    freshcache,
    TtlNotAllowed,
    Error,
    "A per-call TTL the data type's policy refuses; nothing was written."
);
pyo3::create_exception!(
    freshcache,
    AlreadyExpired,
    Error,
    "The producer's `as_of` puts the value past its TTL already; nothing was written."
);
pyo3::create_exception!(
    freshcache,
    FetchError,
    Error,
    "An HTTP fetch failed (attribute `kind`); what was stored is left as it was."
);
pyo3::create_exception!(
    freshcache,
    InputNotFresh,
    Error,
    "A derived value was refused: one of its inputs (attribute `input`) is missing, stale or changed (`problem`); nothing was written."
);
pyo3::create_exception!(
    freshcache,
    LineageCycle,
    Error,
    "A derived value's inputs lead back to the value itself (attribute `path`); nothing was written."
);
pyo3::create_exception!(
    freshcache,
    CacheClosed,
    Error,
    "The cache was closed, or it was opened in another process (after `os.fork()`): open a new one."
);

/// A Python loader's exception, carried through the library's coalescing so that every caller
/// waiting on that load re-raises the very same exception object.
#[derive(Debug)]
pub struct LoaderFailed(pub PyErr);

impl std::fmt::Display for LoaderFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for LoaderFailed {}

fn with_attrs(py: Python<'_>, err: PyErr, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let value = err.value(py);
    for (name, v) in attrs {
        // Setting an attribute on a fresh exception instance cannot fail short of memory
        // exhaustion; the exception is still raised without it then.
        let _ = value.setattr(*name, v.bind(py));
    }
    err
}

fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_py_any(py).unwrap_or_else(|_| py.None())
}

/// The Python exception for a library error.
pub fn to_py(py: Python<'_>, e: LibError) -> PyErr {
    let msg = e.to_string();
    match e {
        LibError::InvalidKey { key, .. } | LibError::UnknownDataType { key, .. } => {
            with_attrs(py, InvalidKey::new_err(msg), &[("key", obj(py, key))])
        }
        LibError::TooLarge {
            key,
            size,
            max,
            data_type,
            ..
        } => with_attrs(
            py,
            ValueTooLarge::new_err(msg),
            &[
                ("key", obj(py, key)),
                ("size", obj(py, size)),
                ("max_size", obj(py, max)),
                ("data_type", obj(py, data_type)),
            ],
        ),
        LibError::TtlNotAllowed { .. } => TtlNotAllowed::new_err(msg),
        LibError::AlreadyExpired { .. } => AlreadyExpired::new_err(msg),
        LibError::Codec { .. } => CodecError::new_err(msg),
        LibError::Config(c) => with_attrs(
            py,
            ConfigError::new_err(msg),
            &[
                (
                    "file",
                    obj(py, c.file.as_ref().map(|p| p.display().to_string())),
                ),
                ("line", obj(py, c.line)),
                ("field", obj(py, c.field.clone())),
                ("reason", obj(py, c.reason)),
            ],
        ),
        LibError::StaleSignals { report } => {
            let signals = PyList::empty(py);
            for s in &report.signals {
                let d = PyDict::new(py);
                let _ = d.set_item("key", &s.key);
                let _ = d.set_item("data_type", &s.data_type);
                let _ = d.set_item("verdict", s.verdict.name());
                let _ = d.set_item("age", s.age.map(|a| a.as_secs_f64()));
                let _ = d.set_item("ttl", s.ttl.as_secs_f64());
                let _ = d.set_item("reason", s.reason.clone());
                let inputs = PyList::empty(py);
                for i in &s.inputs {
                    let di = PyDict::new(py);
                    let _ = di.set_item("key", &i.key);
                    let _ = di.set_item("verdict", i.verdict.name());
                    let _ = di.set_item("age", i.age.map(|a| a.as_secs_f64()));
                    let _ = di.set_item("problem", i.problem.clone());
                    let _ = inputs.append(di);
                }
                let _ = d.set_item("inputs", inputs);
                let _ = signals.append(d);
            }
            let stale: Vec<String> = report.violations().map(|s| s.key.clone()).collect();
            with_attrs(
                py,
                StaleSignals::new_err(msg),
                &[
                    ("run_id", obj(py, report.run_id.clone())),
                    ("signals", signals.into_any().unbind()),
                    ("stale_keys", obj(py, stale)),
                ],
            )
        }
        LibError::InputNotFresh {
            key,
            input,
            problem,
        } => with_attrs(
            py,
            InputNotFresh::new_err(msg),
            &[
                ("key", obj(py, key)),
                ("input", obj(py, input)),
                ("problem", obj(py, problem.to_string())),
            ],
        ),
        LibError::LineageCycle { key, path } => with_attrs(
            py,
            LineageCycle::new_err(msg),
            &[("key", obj(py, key)), ("path", obj(py, path))],
        ),
        LibError::Redis { url, .. } => {
            with_attrs(py, RedisUnavailable::new_err(msg), &[("url", obj(py, url))])
        }
        LibError::Loader { source, .. } => match source.downcast_ref::<LoaderFailed>() {
            Some(LoaderFailed(original)) => original.clone_ref(py),
            None => Error::new_err(msg),
        },
        LibError::Fetch { kind, .. } => with_attrs(
            py,
            FetchError::new_err(msg),
            &[("kind", obj(py, kind.name()))],
        ),
        other => {
            let (disk_full, read_only) = (other.is_disk_full(), other.is_read_only());
            let is_storage = matches!(
                other,
                LibError::Io { .. } | LibError::Index { .. } | LibError::Corrupt { .. }
            ) || disk_full
                || read_only;
            let err = if is_storage {
                StorageError::new_err(msg)
            } else {
                Error::new_err(msg)
            };
            with_attrs(
                py,
                err,
                &[
                    ("disk_full", obj(py, disk_full)),
                    ("read_only", obj(py, read_only)),
                ],
            )
        }
    }
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("InvalidKey", py.get_type::<InvalidKey>())?;
    m.add("ValueTooLarge", py.get_type::<ValueTooLarge>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("RedisUnavailable", py.get_type::<RedisUnavailable>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("StaleSignals", py.get_type::<StaleSignals>())?;
    m.add("CodecError", py.get_type::<CodecError>())?;
    m.add("TtlNotAllowed", py.get_type::<TtlNotAllowed>())?;
    m.add("AlreadyExpired", py.get_type::<AlreadyExpired>())?;
    m.add("FetchError", py.get_type::<FetchError>())?;
    m.add("InputNotFresh", py.get_type::<InputNotFresh>())?;
    m.add("LineageCycle", py.get_type::<LineageCycle>())?;
    m.add("CacheClosed", py.get_type::<CacheClosed>())?;
    Ok(())
}
