//! Polls with a deadline: the condition is checked first, then the deadline, then the poll
//! sleeps for its interval, so a condition already true costs no sleep.

use std::time::{Duration, Instant};

/// How long to wait for a condition and how often to check it.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct Poll {
    timeout: Duration,
    every: Duration,
}

impl Poll {
    /// Waits at most `timeout`, checking every 10 ms.
    pub fn within(timeout: Duration) -> Self {
        Self {
            timeout,
            every: Duration::from_millis(10),
        }
    }

    /// Checks every `every` instead (shorter where the wait itself is being measured).
    pub fn every(self, every: Duration) -> Self {
        Self { every, ..self }
    }

    /// Blocks until `ready` returns true.
    ///
    /// # Panics
    /// With `what` when the deadline passes first.
    #[track_caller]
    pub fn until(self, what: &str, mut ready: impl FnMut() -> bool) {
        self.until_some(what, || ready().then_some(()));
    }

    /// Blocks until `ready` returns a value, and returns it.
    ///
    /// # Panics
    /// With `what` when the deadline passes first.
    #[track_caller]
    pub fn until_some<T>(self, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(v) = ready() {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(self.every);
        }
    }

    /// Waits, without blocking the runtime's thread, until `ready` resolves to true.
    ///
    /// # Panics
    /// With `what` when the deadline passes first.
    pub async fn until_async(self, what: &str, mut ready: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + self.timeout;
        loop {
            if ready().await {
                return;
            }
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(self.every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_met_on_the_third_check_returns_its_value() {
        let mut n = 0;
        let got = Poll::within(Duration::from_secs(1))
            .every(Duration::from_millis(1))
            .until_some("never", || {
                n += 1;
                (n == 3).then_some(n)
            });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "the event never came")]
    fn a_condition_never_met_panics_with_its_message_at_the_deadline() {
        Poll::within(Duration::from_millis(30)).until("the event never came", || false);
    }
}
