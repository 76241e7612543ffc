//! The inference freshness guard: all signals fresh, or a typed refusal — and an audit row for
//! every signal checked, so a later query can prove what a run used.
//!
//! `judge` is the one rule every read path and the guard apply; `audit` keeps the trail in
//! a table of its own in the index database.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::cache::{Cache, Hit, Lookup, Purpose, ReadOptions};
use crate::error::{Error, Result, clip};
use crate::key::Key;

pub mod audit;
pub(crate) mod judge;

pub use audit::AuditRow;
use judge::{Allowance, Judgement, judge};

/// Longest accepted run id, in bytes.
pub const MAX_RUN_ID_LEN: usize = 128;

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
    /// The key.
    pub key: String,
    /// Its data type.
    pub data_type: String,
    /// The verdict.
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

impl fmt::Display for FreshnessReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bad: Vec<String> = self
            .violations()
            .map(|s| match s.age {
                Some(age) => format!(
                    "{} {} (age {:.1}s, ttl {:.1}s)",
                    clip(&s.key),
                    s.verdict.name(),
                    age.as_secs_f64(),
                    s.ttl.as_secs_f64()
                ),
                None => format!("{} missing (ttl {:.1}s)", clip(&s.key), s.ttl.as_secs_f64()),
            })
            .collect();
        write!(
            f,
            "run {}: {} of {} signals refused: {}",
            self.run_id,
            bad.len(),
            self.signals.len(),
            bad.join("; ")
        )
    }
}

/// Every requested signal, fresh, with the report that proves it.
#[derive(Clone, Debug)]
pub struct FreshSignals {
    /// The audit report.
    pub report: FreshnessReport,
    /// One hit per requested key, in request order.
    pub values: Vec<Hit>,
}

fn check_run_id(run_id: &str) -> Result<()> {
    let ok = !run_id.is_empty()
        && run_id.len() <= MAX_RUN_ID_LEN
        && run_id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKey {
            key: clip(run_id),
            reason: format!("run id must be 1..={MAX_RUN_ID_LEN} printable ASCII characters"),
        })
    }
}

impl Cache {
    /// Checks `keys` for run `run_id` and records an audit row per key. Never serves stale
    /// data: stale entries are reported with their age, not returned.
    ///
    /// # Errors
    /// Key errors (nothing is checked then); [`Error::Index`] when the audit cannot be
    /// recorded — a check that cannot be proven is not reported as passed.
    pub async fn check_freshness(
        &self,
        run_id: &str,
        keys: &[Key],
    ) -> Result<(FreshnessReport, Vec<Option<Hit>>)> {
        check_run_id(run_id)?;
        let types = keys
            .iter()
            .map(|k| self.data_type(k).cloned())
            .collect::<Result<Vec<_>>>()?;
        let skew = self.config().freshness.clock_skew_tolerance;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let now = self.now();
            found.push(
                self.lookup(key, now, ReadOptions::default(), Purpose::Audit)
                    .await?,
            );
        }
        // Verdicts are judged at one instant taken after every read: a signal that expired
        // while later keys were being read (a slow Redis, a busy disk) is refused, not passed.
        let now = self.now();
        let mut signals = Vec::with_capacity(keys.len());
        let mut hits = Vec::with_capacity(keys.len());
        for ((key, ty), lookup) in keys.iter().zip(&types).zip(found) {
            let hit = match lookup {
                Lookup::Fresh(h) | Lookup::Stale(h) => Some(Hit { now, ..h }),
                Lookup::Miss => None,
            };
            // Judged at that instant, with the configured tolerance for clock skew between
            // hosts (zero by default). A copy stamped after it (the clock stepped back during
            // the reads) has no knowable age: it is treated as missing, as every lookup does.
            let allow = Allowance {
                skew,
                ..Allowance::NONE
            };
            let verdict = match hit.as_ref().map(|h| judge(h.meta(), ty, now, allow)) {
                Some(Judgement::Fresh { .. }) => Verdict::Fresh,
                Some(Judgement::Stale { .. } | Judgement::Expired { .. }) => Verdict::Stale,
                Some(Judgement::FutureStamped) => {
                    let c = self.type_counters(ty.id);
                    c.future_stamped.fetch_add(1, Ordering::Relaxed);
                    Verdict::Missing
                }
                None => Verdict::Missing,
            };
            let hit = hit.filter(|_| verdict != Verdict::Missing);
            let ttl = hit.as_ref().map_or(ty.ttl, |h| h.meta().ttl().min(ty.ttl));
            let counters = self.type_counters(ty.id);
            counters.checks.fetch_add(1, Ordering::Relaxed);
            if verdict != Verdict::Fresh {
                counters.violations.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(run_id, key = %key, verdict = verdict.name(), "freshness guard refused a signal");
            }
            signals.push(SignalCheck {
                key: key.to_string(),
                data_type: ty.name.to_string(),
                verdict,
                age: hit.as_ref().map(Hit::age),
                ttl,
                checksum: hit.as_ref().map(|h| format!("{:016x}", h.meta().checksum)),
                etag: hit.as_ref().and_then(|h| h.meta().etag.clone()),
            });
            hits.push(hit.filter(|_| verdict == Verdict::Fresh));
        }
        let report = FreshnessReport {
            run_id: run_id.to_owned(),
            checked_at: now.to_string(),
            signals,
        };
        audit::record(self.disk(), now, &report)?;
        Ok((report, hits))
    }

    /// The inference guard: every signal in `keys`, or [`Error::StaleSignals`] naming each
    /// stale or missing one with its age and TTL. Every check is audited under `run_id`.
    ///
    /// # Errors
    /// [`Error::StaleSignals`] when any signal is stale or missing; key and index errors as
    /// [`Cache::check_freshness`].
    pub async fn require_fresh(&self, run_id: &str, keys: &[Key]) -> Result<FreshSignals> {
        let (report, hits) = self.check_freshness(run_id, keys).await?;
        if !report.all_fresh() {
            return Err(Error::StaleSignals {
                report: Box::new(report),
            });
        }
        let values = hits.into_iter().flatten().collect();
        Ok(FreshSignals { report, values })
    }

    /// The audit trail of `run_id`: what it checked, when, and the verdicts.
    ///
    /// # Errors
    /// [`Error::Index`] when the query fails.
    pub fn audit(&self, run_id: &str) -> Result<Vec<AuditRow>> {
        audit::rows(self.disk(), run_id)
    }
}

/// The report as carried by [`Error::StaleSignals`] (boxed to keep `Error` small).
pub type BoxedReport = Box<FreshnessReport>;
