//! The Python face of freshcache: the extension module `freshcache._native`.
//!
//! The Python package (`python/freshcache`) wraps it with the codecs, the decorator, the
//! asyncio twin and the guard's context manager; this crate holds only what must be Rust.
//!
//! # Layout
//! - `cache`: `NativeCache`, one library cache and its runtime; the GIL is released around
//!   every call that can block.
//! - `hit`: `Hit`, a found value whose bytes numpy can view without a copy.
//! - `keys`: keys already validated, remembered by their text.
//! - `recent`: the memory hits `get` handed out lately, handed out again while they stand.
//! - `clock`: `ManualClock` for tests.
//! - `errors`: the exception classes and the mapping from the library's errors.

mod cache;
mod clock;
mod errors;
mod fork;
mod hit;
mod keys;
mod recent;
mod shared;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cache::NativeCache>()?;
    m.add_class::<hit::Hit>()?;
    m.add_class::<clock::ManualClock>()?;
    m.add_function(wrap_pyfunction!(hit::_register_codecs, m)?)?;
    m.add_function(wrap_pyfunction!(fork::_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(fork::_after_fork_in_parent, m)?)?;
    m.add_function(wrap_pyfunction!(fork::_after_fork_in_child, m)?)?;
    errors::register(m)?;
    Ok(())
}
