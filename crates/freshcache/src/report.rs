//! The guard's vocabulary — verdicts and reports — as plain data, so that errors can carry a
//! report without the error module depending on the guard.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What the guard concluded about one signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Within its TTL.
    Fresh,
    /// Found, but older than its TTL.
    Stale,
    /// Not in the cache.
    Missing,
}

impl Verdict {
    /// Lowercase name, as stored in the audit and printed.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Fresh => "fresh",
            Verdict::Stale => "stale",
            Verdict::Missing => "missing",
        }
    }

    /// The same as [`Verdict::name`].
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.name()
    }

    /// The verdict named `name` (as stored in the audit).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "fresh" => Some(Verdict::Fresh),
            "stale" => Some(Verdict::Stale),
            "missing" => Some(Verdict::Missing),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl PartialEq<&str> for Verdict {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// One signal as checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignalCheck {
    /// The key as requested.
    pub key: String,
    /// Its data type.
    pub data_type: String,
    /// Fresh, stale or missing, as judged at the report's one instant.
    pub verdict: Verdict,
    /// Age of the signal (from its `as_of` when known), if found.
    #[serde(serialize_with = "ser_opt_secs", rename = "age_seconds")]
    pub age: Option<Duration>,
    /// The TTL it is held to: its own lifetime, capped by its type's configured TTL.
    #[serde(serialize_with = "ser_secs", rename = "ttl_seconds")]
    pub ttl: Duration,
    /// xxh3-64 of the value, hex, if found.
    pub checksum: Option<String>,
    /// Origin ETag, if known.
    pub etag: Option<String>,
    /// For a derived or tagged signal: each declared input (and each invalidated tag, as
    /// `#tag`) with its verdict and age at the check.
    pub inputs: Vec<InputCheck>,
    /// Why a signal found within its own TTL was refused (`input news:espn:a1 changed at T`).
    pub reason: Option<String>,
}

/// One input of a derived signal as the guard found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputCheck {
    /// The input's key (or `#tag` for an invalidated tag).
    pub key: String,
    /// Fresh and unchanged, or stale (changed, expired, invalidated), or missing.
    pub verdict: Verdict,
    /// Age of the input at the check, if found.
    #[serde(serialize_with = "ser_opt_secs", rename = "age_seconds")]
    pub age: Option<Duration>,
    /// xxh3-64 of the input's current value, hex, if found.
    pub checksum: Option<String>,
    /// What is wrong with it, if anything (`changed at T`, `stale since T`, `missing`).
    pub problem: Option<String>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_opt_secs<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// The guard's findings for one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FreshnessReport {
    /// The run id given by the caller.
    pub run_id: String,
    /// When the check was made (RFC 3339).
    pub checked_at: String,
    /// One entry per requested key, in request order.
    pub signals: Vec<SignalCheck>,
}

impl FreshnessReport {
    /// True when every signal is fresh.
    #[must_use]
    pub fn all_fresh(&self) -> bool {
        self.signals.iter().all(|s| s.verdict == Verdict::Fresh)
    }

    /// The stale or missing signals.
    pub fn violations(&self) -> impl Iterator<Item = &SignalCheck> {
        self.signals.iter().filter(|s| s.verdict != Verdict::Fresh)
    }
}

/// A report as carried by [`crate::Error::StaleSignals`] (boxed to keep `Error` small).
pub type BoxedReport = Box<FreshnessReport>;
