//! `cache.cleanup.interval`: when cleanup runs, as a 5- or 6-field cron expression in UTC
//! (the seed's `"0 2 * * *"` is daily at 02:00). Validated with the configuration; the service's
//! cleanup loop asks it for the next run.

use std::str::FromStr;

use super::ConfigError;
use crate::clock::Timestamp;

/// When cleanup runs: a 5- or 6-field cron expression in UTC.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: croner::Cron,
    text: String,
}

impl Schedule {
    /// Parses a cron expression such as `"0 2 * * *"` (daily at 02:00 UTC).
    ///
    /// # Errors
    /// A message saying why the expression is invalid.
    pub fn parse(expr: &str) -> std::result::Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!("{expr:?} is not a 5- or 6-field cron expression"));
        }
        let cron = croner::Cron::from_str(expr)
            .map_err(|e| format!("{expr:?} is not a valid cron expression: {e}"))?;
        Ok(Self {
            cron,
            text: expr.to_owned(),
        })
    }

    /// Parses the configured `cache.cleanup.interval`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field.
    pub fn from_config(config: &super::Config) -> std::result::Result<Self, ConfigError> {
        Self::parse(&config.cleanup.interval).map_err(|reason| ConfigError {
            file: config.source.clone(),
            line: None,
            field: "cache.cleanup.interval".into(),
            reason,
        })
    }

    /// The first run strictly after `t`.
    #[must_use]
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let ms = i64::try_from(t.as_millis()).ok()?;
        let dt = chrono::DateTime::from_timestamp_millis(ms)?;
        let next = self.cron.find_next_occurrence(&dt, false).ok()?;
        u64::try_from(next.timestamp_millis())
            .ok()
            .map(Timestamp::from_millis)
    }

    /// The expression as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seed_schedule_runs_daily_at_two_utc() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        // 2023-11-14T22:13:20Z -> next is 2023-11-15T02:00:00Z
        let next = s.next_after(Timestamp::from_secs(1_700_000_000)).unwrap();
        assert_eq!(next, Timestamp::from_secs(1_700_013_600));
        let after = s.next_after(next).unwrap();
        assert_eq!(after.duration_since(next), Duration::from_secs(86_400));
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in [
            "daily",
            "0 2 * *",
            "61 2 * * *",
            "0 25 * * *",
            "* * * * * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
        assert!(Schedule::parse("*/5 * * * *").is_ok());
    }
}
