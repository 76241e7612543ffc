//! A circuit breaker on the injected clock: after repeated failures a tier is skipped for a
//! while, then probed by one call; a success closes it again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::Timestamp;

/// What the breaker lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are skipped until the probe time.
    Open,
    /// One probe call is in flight; others are skipped.
    HalfOpen,
}

impl BreakerState {
    /// Lowercase name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Timestamp },
    HalfOpen { since: Timestamp },
}

/// Counts consecutive failures; once open, lets no call through until `open_for` has passed,
/// then one probe (half-open) decides whether it closes again.
#[derive(Debug)]
pub struct Breaker {
    /// True while closed with no failures counted: the common case skips the lock.
    healthy: AtomicBool,
    inner: Mutex<Inner>,
    failures_to_open: u32,
    open_for: Duration,
}

impl Breaker {
    /// Opens after `failures_to_open` consecutive failures, for `open_for` each time.
    #[must_use]
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            healthy: AtomicBool::new(true),
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            failures_to_open: failures_to_open.max(1),
            open_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call may go through at `now`. When the open period has passed, the first
    /// caller becomes the probe; a probe that never reports back is replaced after `open_for`.
    pub fn allow(&self, now: Timestamp) -> bool {
        if self.healthy.load(Ordering::Acquire) {
            return true;
        }
        let mut g = self.lock();
        match *g {
            Inner::Closed { .. } => true,
            // Open for no longer than `open_for` even if the clock stepped back meanwhile.
            Inner::Open { until } if now < until && until.duration_since(now) <= self.open_for => {
                false
            }
            Inner::Open { .. } => {
                *g = Inner::HalfOpen { since: now };
                true
            }
            Inner::HalfOpen { since }
                if now >= since.saturating_add(self.open_for) || now < since =>
            {
                *g = Inner::HalfOpen { since: now };
                true
            }
            Inner::HalfOpen { .. } => false,
        }
    }

    /// Records a successful call: the breaker closes.
    pub fn success(&self) {
        if self.healthy.load(Ordering::Acquire) {
            return;
        }
        let mut g = self.lock();
        *g = Inner::Closed { failures: 0 };
        self.healthy.store(true, Ordering::Release);
    }

    /// Records a failed call at `now`; true when this failure opened the breaker.
    pub fn failure(&self, now: Timestamp) -> bool {
        let mut g = self.lock();
        self.healthy.store(false, Ordering::Release);
        match *g {
            Inner::Closed { failures } if failures + 1 < self.failures_to_open => {
                *g = Inner::Closed {
                    failures: failures + 1,
                };
                false
            }
            Inner::Open { .. } => false,
            _ => {
                *g = Inner::Open {
                    until: now.saturating_add(self.open_for),
                };
                true
            }
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let b = Breaker::new(3, Duration::from_secs(1));
        assert!(!b.failure(t(0)));
        assert!(!b.failure(t(1)));
        b.success();
        assert!(!b.failure(t(2)));
        assert!(!b.failure(t(3)));
        assert!(b.failure(t(4)));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(t(1003)));
    }

    #[test]
    fn one_probe_after_the_open_period_then_close_or_reopen() {
        let b = Breaker::new(1, Duration::from_secs(1));
        assert!(b.failure(t(0)));
        assert!(b.allow(t(1000)), "first caller after the period probes");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(t(1001)), "others are skipped while the probe runs");
        assert!(b.failure(t(1050)));
        assert!(!b.allow(t(1500)));
        assert!(b.allow(t(2050)));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(t(2051)));
    }

    #[test]
    fn a_clock_stepping_back_does_not_keep_the_breaker_open_longer() {
        let hour = 3_600_000;
        let b = Breaker::new(1, Duration::from_secs(1));
        assert!(b.failure(t(hour)));
        assert!(!b.allow(t(hour + 500)));
        // The clock steps back an hour: the open period is not stretched to an hour.
        assert!(b.allow(t(600)), "a probe goes through after the step");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(t(700)));
        // A half-open probe stamped in the future is replaced rather than waited for.
        let b = Breaker::new(1, Duration::from_secs(1));
        b.failure(t(0));
        assert!(b.allow(t(hour)));
        assert!(b.allow(t(1000)));
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let b = Breaker::new(1, Duration::from_millis(100));
        b.failure(t(0));
        assert!(b.allow(t(100)));
        assert!(!b.allow(t(150)));
        assert!(b.allow(t(200)));
    }
}
