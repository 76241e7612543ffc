//! `ManualClock`: the library's manual clock, for tests that move time instead of sleeping.

use std::time::{Duration, SystemTime};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use freshcache::{Clock as _, ManualClock as LibClock, Timestamp};

/// A clock that moves only when told to; pass it as `Cache(clock=...)`.
#[pyclass(frozen, module = "freshcache._native", name = "ManualClock")]
pub struct ManualClock {
    pub(crate) inner: LibClock,
}

pub(crate) fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a finite number of seconds >= 0, got {seconds}"
        ))
    })
}

pub(crate) fn timestamp(unix_seconds: f64, what: &str) -> PyResult<Timestamp> {
    let d = duration(unix_seconds, what)?;
    Ok(Timestamp::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
}

#[pymethods]
impl ManualClock {
    /// A manual clock standing at `start` (Unix seconds; default: the current time).
    #[new]
    #[pyo3(signature = (start=None))]
    fn new(start: Option<f64>) -> PyResult<Self> {
        let start = match start {
            Some(s) => timestamp(s, "start")?,
            None => Timestamp::from_system_time(SystemTime::now()),
        };
        Ok(Self {
            inner: LibClock::new(start),
        })
    }

    /// Moves the clock forward by `seconds`.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        self.inner.advance(duration(seconds, "seconds")?);
        Ok(())
    }

    /// Sets the clock to `unix_seconds` (may be earlier than now).
    fn set(&self, unix_seconds: f64) -> PyResult<()> {
        self.inner.set(timestamp(unix_seconds, "unix_seconds")?);
        Ok(())
    }

    /// The clock's reading, in Unix seconds.
    fn now(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let ms = self.inner.now().as_millis() as f64;
        ms / 1000.0
    }
}
