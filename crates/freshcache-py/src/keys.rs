//! Keys already validated, remembered by their text.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use freshcache::Key;

use crate::errors::to_py;

/// A parsed key, as the memo holds it.
#[pyclass(frozen, module = "freshcache._native", name = "_ParsedKey")]
pub(crate) struct ParsedKey(pub(crate) Key);

/// The most keys remembered; the memo starts over when full.
const MAX_KEYS: usize = 4096;

/// Parsed keys by their `str`: parsing one (character checks, the segment split, an
/// allocation) costs about a fifth of a memory hit, and a pipeline reads the same keys over
/// and over. Python caches a `str`'s hash, so a remembered key costs one dict probe. Only
/// exact `str` objects are remembered: a subclass may redefine equality. Validity is a
/// function of the text alone, so a remembered key is never wrong.
pub(crate) struct KeyMemo(Py<PyDict>);

impl KeyMemo {
    pub(crate) fn new(py: Python<'_>) -> Self {
        Self(PyDict::new(py).unbind())
    }

    /// `key` parsed, from the memo when it is there; raises `InvalidKey`.
    pub(crate) fn parse<'py>(&self, key: &Bound<'py, PyString>) -> PyResult<Bound<'py, ParsedKey>> {
        let py = key.py();
        let memo = self.0.bind(py);
        let exact = key.is_exact_instance_of::<PyString>();
        if exact
            && let Some(found) = memo.get_item(key)?
            && let Ok(parsed) = found.cast_into::<ParsedKey>()
        {
            return Ok(parsed);
        }
        let parsed = Key::parse(key.to_str()?).map_err(|e| to_py(py, e))?;
        let parsed = Bound::new(py, ParsedKey(parsed))?;
        if exact {
            if memo.len() >= MAX_KEYS {
                memo.clear();
            }
            memo.set_item(key, &parsed)?;
        }
        Ok(parsed)
    }
}
