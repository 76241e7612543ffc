//! Lineage for `inspect`, which must not block, promote, remove or count: inputs are looked at
//! in this process's memory and on disk only (not in Redis), with the same rules as a read
//! (`freshness::judge`), and dependents come from the reverse index kept with derived writes.

use std::sync::Arc;

use super::Cache;
use super::lineage::MAX_DEPTH;
use crate::clock::Timestamp;
use crate::entry::{Entry, Meta};
use crate::error::{InputProblem, Result};
use crate::freshness::judge::{Allowance, Found, Judgement, judge, judge_input, tag_invalidates};
use crate::key::Key;
use crate::report::{InputCheck, Verdict};

/// An input as looked at: with its deadline when fresh (lineage included), or since when not.
enum Peeked {
    Fresh(Arc<Entry>, Timestamp),
    Stale(Arc<Entry>, Timestamp),
    Missing,
}

impl Peeked {
    fn found(&self) -> Found<'_> {
        match self {
            Self::Fresh(e, until) => Found::Fresh {
                meta: &e.meta,
                until: *until,
            },
            Self::Stale(e, since) => Found::Stale {
                meta: &e.meta,
                since: *since,
            },
            Self::Missing => Found::Missing,
        }
    }

    fn entry(&self) -> Option<&Arc<Entry>> {
        match self {
            Self::Fresh(e, _) | Self::Stale(e, _) => Some(e),
            Self::Missing => None,
        }
    }
}

impl Cache {
    /// The copy of `key` in memory, else on disk, judged at `now` with its lineage.
    fn peek(&self, key: &str, now: Timestamp, depth: u8) -> Peeked {
        let Ok(parsed) = Key::parse(key) else {
            return Peeked::Missing;
        };
        let Ok(ty) = self.data_type(&parsed) else {
            return Peeked::Missing;
        };
        let entry = match self.inner.memory.get(key) {
            Some(e) => Some(e),
            None => self.inner.disk.get(key, now).ok().flatten().map(Arc::new),
        };
        let Some(entry) = entry else {
            return Peeked::Missing;
        };
        match judge(&entry.meta, ty, now, Allowance::NONE) {
            Judgement::Fresh { until } => match self.lineage_at(&entry.meta, now, depth) {
                Ok(inputs_until) => Peeked::Fresh(entry, until.min(inputs_until)),
                Err(_) => Peeked::Stale(entry, now),
            },
            Judgement::Stale { until } | Judgement::Expired { until } => {
                Peeked::Stale(entry, until)
            }
            Judgement::FutureStamped => Peeked::Missing,
        }
    }

    /// The lineage rule on looked-at copies: the inputs' earliest deadline, or the problem.
    fn lineage_at(
        &self,
        meta: &Meta,
        now: Timestamp,
        depth: u8,
    ) -> std::result::Result<Timestamp, InputProblem> {
        let mut until = Timestamp::from_millis(u64::MAX);
        let Some(lineage) = meta.lineage.as_deref() else {
            return Ok(until);
        };
        for tag in &lineage.tags {
            let at = self.tag_invalidated_at(tag);
            if let (true, Some(at)) = (tag_invalidates(meta, at), at) {
                let tag = tag.clone();
                return Err(InputProblem::TagInvalidated { tag, at });
            }
        }
        for input in &lineage.inputs {
            if depth >= MAX_DEPTH {
                return Err(InputProblem::TooDeep);
            }
            let peeked = self.peek(&input.key, now, depth + 1);
            until = until.min(judge_input(input, peeked.found())?);
        }
        Ok(until)
    }

    /// What `inspect` says of an entry's lineage at `now`: each invalidated tag and each
    /// input, and whether they all vouch for it.
    pub(super) fn inspect_lineage(&self, meta: &Meta, now: Timestamp) -> (Vec<InputCheck>, bool) {
        let Some(lineage) = meta.lineage.as_deref() else {
            return (Vec::new(), true);
        };
        let mut out = self.invalidated_tags(meta, lineage);
        for input in &lineage.inputs {
            let peeked = self.peek(&input.key, now, 1);
            let judged = judge_input(input, peeked.found());
            let entry = peeked.entry();
            out.push(InputCheck {
                key: input.key.clone(),
                verdict: match (&judged, entry) {
                    (Ok(_), _) => Verdict::Fresh,
                    (Err(_), Some(_)) => Verdict::Stale,
                    (Err(_), None) => Verdict::Missing,
                },
                age: entry.map(|e| e.meta.age(now)),
                checksum: entry.map(|e| format!("{:016x}", e.meta.checksum)),
                problem: judged.err().map(|p| p.to_string()),
            });
        }
        let sound = out.iter().all(|i| i.verdict == Verdict::Fresh);
        (out, sound)
    }

    /// The keys whose current entry (in memory or on disk) was derived from `key`.
    ///
    /// # Errors
    /// [`Error::Index`](crate::Error::Index) when the reverse index cannot be read.
    pub(super) fn dependents(&self, key: &str) -> Result<Vec<String>> {
        let named: Vec<String> = self.inner.disk.with_reader(|c| {
            c.prepare_cached("SELECT derived FROM lineage_edges WHERE input = ?1 ORDER BY derived")?
                .query_map([key], |r| r.get(0))?
                .collect()
        })?;
        let now = self.now();
        Ok(named
            .into_iter()
            .filter(|d| {
                let entry = match self.inner.memory.get(d) {
                    Some(e) => Some(e),
                    None => self.inner.disk.get(d, now).ok().flatten().map(Arc::new),
                };
                entry.is_some_and(|e| e.meta.inputs().iter().any(|i| i.key == key))
            })
            .collect())
    }
}
