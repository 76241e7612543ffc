//! The inference freshness guard: all signals fresh, or a typed refusal — and an audit row for
//! every signal checked, so a later query can prove what a run used.
//!
//! `judge` is the one rule every read path and the guard apply; `audit` keeps the trail in
//! a table of its own in the index database.

use std::fmt;
use std::sync::atomic::Ordering;

use crate::cache::{Cache, Hit, Lookup, Purpose, ReadOptions};
use crate::error::{Error, Result, clip};
use crate::key::Key;

pub mod audit;
pub(crate) mod judge;

pub use crate::report::{FreshnessReport, SignalCheck, Verdict};
pub use audit::{AuditRow, RunSummary};
use judge::{Allowance, Judgement, judge};

/// Longest accepted run id, in bytes.
pub const MAX_RUN_ID_LEN: usize = 128;

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
    /// The report recorded in the audit under the run id.
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

    /// The `limit` guard runs checked most recently, newest first, with their verdict counts;
    /// [`Cache::audit`] gives a run's rows.
    ///
    /// # Errors
    /// [`Error::Index`] when the query fails.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunSummary>> {
        audit::recent(self.disk(), limit)
    }
}

/// The report as carried by [`Error::StaleSignals`] (boxed to keep `Error` small).
pub type BoxedReport = crate::report::BoxedReport;
