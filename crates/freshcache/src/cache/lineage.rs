//! Lineage: a derived entry is fresh only while each declared input is fresh (its own lineage
//! included) and holds the content it was derived from, and no tag it carries was invalidated
//! after it was stored.
//!
//! The rule is checked when the entry is read (`freshness::judge::judge_input` and
//! `tag_invalidates`), not pushed to the derived entries when an input changes: a cascade then
//! needs no fan-out writes, and it holds on every tier, in every process sharing the directory,
//! in every instance sharing Redis and across restarts through the ordinary read path — each of
//! them sees the input's change the way it sees any change. The price is reading the inputs on
//! a derived hit; a memory hit pays it only once per change this process makes or learns of
//! (the check is remembered on the entry with the change count it was made at).
//!
//! Writes read each declared input once: a missing or stale one refuses the write unless the
//! caller opted out, the entry records each input's checksum and `stored_at`, and its expiry is
//! folded down to the earliest input's deadline. Inputs that lead back to the key are refused.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::RwLock;
use std::sync::atomic::Ordering;

use super::{Cache, Hit, InputChecks, Lookup, Purpose, ReadOptions, Value};
use crate::clock::Timestamp;
use crate::entry::{Input, Lineage, Meta};
use crate::error::{Error, InputProblem, Result, clip};
use crate::freshness::judge::{Found, judge_input, tag_invalidates};
use crate::key::Key;
use crate::report::{InputCheck, Verdict};

/// How deep a chain of inputs is followed on a read. Writes refuse cycles, so only a chain built
/// by concurrent writes (or a longer one than any pipeline needs) reaches it: its entries are
/// then not fresh.
pub(crate) const MAX_DEPTH: u8 = 16;

/// How many entries a write's cycle check reads at most before it gives up looking (and accepts
/// the write: reads stop at [`MAX_DEPTH`] anyway).
const CYCLE_CHECK_LIMIT: usize = 4_096;

/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// No deadline.
const NEVER: Timestamp = Timestamp::from_millis(u64::MAX);

/// The reverse index of lineage: which entries were derived from which input, for
/// `inspect`'s dependents. Rows are added with a derived entry's write; ones whose entry no
/// longer names the input are filtered out on reading and pruned by cleanup.
pub(crate) const EDGES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lineage_edges (
    input   TEXT NOT NULL,
    derived TEXT NOT NULL,
    PRIMARY KEY (input, derived)
) WITHOUT ROWID;
";

/// Records, inside a derived entry's write transaction, an edge from each of its inputs.
pub(super) fn record_edges(
    tx: &rusqlite::Transaction<'_>,
    derived: &str,
    meta: &Meta,
) -> rusqlite::Result<()> {
    if meta.inputs().is_empty() {
        return Ok(());
    }
    let mut st =
        tx.prepare_cached("INSERT OR IGNORE INTO lineage_edges (input, derived) VALUES (?1, ?2)")?;
    for input in meta.inputs() {
        st.execute([input.key.as_str(), derived])?;
    }
    Ok(())
}

/// Removes the edges whose derived entry is gone; returns how many.
///
/// # Errors
/// [`Error::Index`] when the delete fails.
pub(crate) fn prune_edges(disk: &crate::tier::disk::DiskTier) -> Result<u64> {
    disk.with_writer(|c| {
        c.execute(
            "DELETE FROM lineage_edges WHERE derived NOT IN (SELECT key FROM entries)",
            [],
        )
        .map(|n| n as u64)
    })
}

/// An input (or tag) that does not vouch for a derived entry, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Broken {
    /// The input's key, or the tag.
    pub input: String,
    /// What is wrong with it.
    pub problem: InputProblem,
}

/// The latest invalidation time of each tag this process knows of.
#[derive(Debug, Default)]
pub(crate) struct TagTimes(RwLock<HashMap<String, Timestamp>>);

impl TagTimes {
    /// When `tag` was last invalidated, if ever.
    pub(crate) fn get(&self, tag: &str) -> Option<Timestamp> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tag)
            .copied()
    }

    /// Every tag with its latest invalidation time.
    pub(crate) fn all(&self) -> Vec<(String, Timestamp)> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(t, at)| (t.clone(), *at))
            .collect()
    }

    /// Records an invalidation of `tag` at `at` (a later one is kept); true when it moved.
    pub(crate) fn raise(&self, tag: &str, at: Timestamp) -> bool {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(tag) {
            Some(t) if *t >= at => false,
            Some(t) => {
                *t = at;
                true
            }
            None => {
                map.insert(tag.to_owned(), at);
                true
            }
        }
    }
}

/// Checks a tag against the tag rules.
///
/// # Errors
/// [`Error::InvalidTag`] naming the rule broken.
pub fn check_tag(tag: &str) -> Result<()> {
    let reason = if tag.is_empty() || tag.len() > MAX_TAG_LEN {
        format!("a tag is 1..={MAX_TAG_LEN} bytes")
    } else if !tag.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        "a tag is printable ASCII without spaces or ','".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::InvalidTag {
        tag: clip(tag),
        reason,
    })
}

/// The lineage a write records and the deadline its inputs impose.
pub(super) struct Resolved {
    pub lineage: Option<Box<Lineage>>,
    pub until: Timestamp,
}

impl Cache {
    /// The change count lineage checks are remembered at.
    #[inline]
    fn change_count(&self) -> u64 {
        self.inner.changes.load(Ordering::Acquire)
    }

    /// Counts a change that may bear on remembered lineage checks.
    pub(super) fn note_change(&self) {
        self.inner.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The deadline a remembered lineage check still vouches for at `now`, if any: the memory
    /// hit path's way to serve a derived value without reading its inputs again.
    #[inline]
    pub(super) fn remembered_lineage(&self, meta: &Meta, now: Timestamp) -> Option<Timestamp> {
        meta.lineage_check
            .checked_until(self.change_count())
            .filter(|until| now < *until)
    }

    /// When `tag` was last invalidated, as far as this process knows.
    pub(crate) fn tag_invalidated_at(&self, tag: &str) -> Option<Timestamp> {
        self.inner.tags.get(tag)
    }

    /// Checks the lineage of the entry `meta` describes at `now`: the earliest deadline of its
    /// inputs (never, for an entry without inputs), or the first input or tag that does not
    /// vouch for it. `depth` is how many derived entries up the chain this check was asked for.
    pub(crate) async fn check_lineage(
        &self,
        meta: &Meta,
        now: Timestamp,
        depth: u8,
    ) -> std::result::Result<Timestamp, Broken> {
        let Some(lineage) = meta.lineage.as_deref() else {
            return Ok(NEVER);
        };
        // Read before the inputs: a change made during the check moves the count past it, so
        // the check is not reused after that change.
        let epoch = self.change_count();
        if let Some(until) = meta.lineage_check.checked_until(epoch).filter(|u| now < *u) {
            return Ok(until);
        }
        for tag in &lineage.tags {
            let at = self.tag_invalidated_at(tag);
            if let (true, Some(at)) = (tag_invalidates(meta, at), at) {
                let problem = InputProblem::TagInvalidated {
                    tag: tag.clone(),
                    at,
                };
                let input = tag.clone();
                return Err(Broken { input, problem });
            }
        }
        let mut until = NEVER;
        for input in &lineage.inputs {
            let broken = |problem| Broken {
                input: input.key.clone(),
                problem,
            };
            if depth >= MAX_DEPTH {
                return Err(broken(InputProblem::TooDeep));
            }
            let found = self.read_input(&input.key, now, depth + 1).await;
            until = until.min(judge_input(input, found_of(&found)).map_err(broken)?);
        }
        meta.lineage_check.remember(epoch, until);
        Ok(until)
    }

    /// The tags of `lineage` (the entry `meta` describes) invalidated after it was stored, as
    /// stale inputs named `#tag`: the first rows of the guard's and `inspect`'s lineage report.
    pub(super) fn invalidated_tags(&self, meta: &Meta, lineage: &Lineage) -> Vec<InputCheck> {
        let mut out = Vec::with_capacity(lineage.inputs.len());
        for tag in &lineage.tags {
            let at = self.tag_invalidated_at(tag);
            if let (true, Some(at)) = (tag_invalidates(meta, at), at) {
                out.push(InputCheck {
                    key: format!("#{tag}"),
                    verdict: Verdict::Stale,
                    age: None,
                    checksum: None,
                    problem: Some(format!("invalidated at {at}")),
                });
            }
        }
        out
    }

    /// Each input of the entry `meta` describes, and each of its tags that was invalidated
    /// after it was stored, as found at `now`: for the guard's report. Reads like a lineage
    /// check, but does not stop at the first problem.
    pub(crate) async fn explain_lineage(&self, meta: &Meta, now: Timestamp) -> Vec<InputCheck> {
        let Some(lineage) = meta.lineage.as_deref() else {
            return Vec::new();
        };
        let mut out = self.invalidated_tags(meta, lineage);
        for input in &lineage.inputs {
            let found = self.read_input(&input.key, now, 1).await;
            let judged = judge_input(input, found_of(&found));
            let hit = match &found {
                Lookup::Fresh(h) | Lookup::Stale(h) => Some(h),
                Lookup::Miss => None,
            };
            out.push(InputCheck {
                key: input.key.clone(),
                verdict: match (&judged, hit) {
                    (Ok(_), _) => Verdict::Fresh,
                    (Err(_), Some(_)) => Verdict::Stale,
                    (Err(_), None) => Verdict::Missing,
                },
                age: hit.map(|h| h.meta().age(now)),
                checksum: hit.map(|h| format!("{:016x}", h.meta().checksum)),
                problem: judged.err().map(|p| p.to_string()),
            });
        }
        out
    }

    /// Reads an input for a lineage check: fresh from memory when it can be, else through every
    /// tier, an expired copy coming back as stale (so its staleness can be named). A read that
    /// fails counts as missing: the derived value is not vouched for.
    async fn read_input(&self, key: &str, now: Timestamp, depth: u8) -> Lookup {
        let Ok(key) = Key::parse(key) else {
            return Lookup::Miss;
        };
        if let Ok(Some(hit)) = self.memory_hit(&key, now) {
            return Lookup::Fresh(hit);
        }
        let opts = ReadOptions::default();
        Box::pin(self.lookup_at(&key, now, opts, Purpose::Audit, depth))
            .await
            .unwrap_or(Lookup::Miss)
    }

    /// Applies the lineage rule to a fresh hit: the hit with its deadline cut to its inputs',
    /// or — when an input or tag does not vouch for it — a miss (a stale hit for the guard).
    pub(super) async fn judge_lineage(&self, hit: Hit, purpose: Purpose, depth: u8) -> Lookup {
        match self.check_lineage(hit.meta(), hit.now, depth).await {
            Ok(until) => Lookup::Fresh(Hit {
                deadline: hit.deadline.min(until),
                ..hit
            }),
            Err(broken) => {
                if let Some(ty) = self.inner.config.data_types.by_name(&hit.meta().data_type) {
                    self.type_counters(ty.id)
                        .cascades
                        .fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(input = %broken.input, problem = %broken.problem, "derived value not fresh: an input changed");
                match purpose {
                    Purpose::Audit => Lookup::Stale(Hit {
                        deadline: hit.deadline.min(hit.now),
                        ..hit
                    }),
                    Purpose::Serve => Lookup::Miss,
                }
            }
        }
    }

    /// Reads the inputs a write of `value` under `key` declares, at `now`, and checks its tags:
    /// the lineage to record and the deadline the inputs impose, or `None` for a plain value.
    ///
    /// # Errors
    /// [`Error::InputNotFresh`] for a missing or stale input (unless unchecked),
    /// [`Error::LineageCycle`] when the inputs lead back to `key`, [`Error::InvalidTag`], and
    /// key errors for inputs of no data type.
    pub(super) async fn resolve_lineage(
        &self,
        key: &Key,
        value: &Value,
        now: Timestamp,
    ) -> Result<Option<Resolved>> {
        if value.derived_from.is_empty() && value.tags.is_empty() {
            return Ok(None);
        }
        let mut tags: Vec<String> = Vec::with_capacity(value.tags.len());
        for tag in &value.tags {
            check_tag(tag)?;
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        let mut inputs: Vec<Input> = Vec::with_capacity(value.derived_from.len());
        let mut metas = Vec::with_capacity(value.derived_from.len());
        let mut until = NEVER;
        for input in &value.derived_from {
            if input == key {
                return Err(cycle(key, &[key.as_str(), key.as_str()]));
            }
            self.data_type(input)?;
            if inputs.iter().any(|i| i.key == input.as_str()) {
                continue;
            }
            let refuse = |problem| Error::InputNotFresh {
                key: clip(key.as_str()),
                input: clip(input.as_str()),
                problem,
            };
            let found = self.read_input(input.as_str(), now, 0).await;
            let hit = match (found, value.input_checks) {
                (Lookup::Fresh(hit), _) => {
                    until = until.min(hit.deadline);
                    hit
                }
                (Lookup::Stale(hit), InputChecks::Unchecked) => hit,
                (Lookup::Miss, InputChecks::Unchecked) => continue,
                (Lookup::Stale(hit), _) => {
                    let since = hit.deadline;
                    let recorded = Input {
                        key: input.to_string(),
                        checksum: hit.meta().checksum,
                        stored_at: hit.meta().stored_at,
                    };
                    let found = Found::Stale {
                        meta: hit.meta(),
                        since,
                    };
                    let problem = judge_input(&recorded, found)
                        .err()
                        .unwrap_or(InputProblem::Stale { since });
                    return Err(refuse(problem));
                }
                (Lookup::Miss, _) => return Err(refuse(InputProblem::Missing)),
            };
            inputs.push(Input {
                key: input.to_string(),
                checksum: hit.meta().checksum,
                stored_at: hit.meta().stored_at,
            });
            metas.push((input.to_string(), hit.entry));
        }
        self.refuse_cycles(key, metas, now).await?;
        let lineage = Lineage::new(inputs, tags);
        Ok(Some(Resolved {
            lineage: (!lineage.is_empty()).then(|| Box::new(lineage)),
            until,
        }))
    }

    /// Walks the inputs of the inputs (breadth first, up to [`CYCLE_CHECK_LIMIT`] entries) and
    /// refuses the write when one of them is `key`.
    async fn refuse_cycles(
        &self,
        key: &Key,
        start: Vec<(String, std::sync::Arc<crate::entry::Entry>)>,
        now: Timestamp,
    ) -> Result<()> {
        // Child -> the entry that named it as an input, to print the chain.
        let mut named_by: HashMap<String, String> = HashMap::new();
        let mut seen: HashSet<String> = start.iter().map(|(k, _)| k.clone()).collect();
        let mut queue: VecDeque<(String, std::sync::Arc<crate::entry::Entry>)> =
            start.into_iter().collect();
        while let Some((at, entry)) = queue.pop_front() {
            for input in entry.meta.inputs() {
                if input.key == key.as_str() {
                    // `at` back to the direct input that led to it, then key first and last.
                    let mut chain = vec![at.clone()];
                    let mut cur = &at;
                    while let Some(parent) = named_by.get(cur) {
                        chain.push(parent.clone());
                        cur = parent;
                    }
                    chain.push(key.as_str().to_owned());
                    chain.reverse();
                    chain.push(key.as_str().to_owned());
                    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
                    return Err(cycle(key, &chain));
                }
                if seen.len() >= CYCLE_CHECK_LIMIT || !seen.insert(input.key.clone()) {
                    continue;
                }
                named_by.insert(input.key.clone(), at.clone());
                if let Lookup::Fresh(h) | Lookup::Stale(h) =
                    self.read_input(&input.key, now, 0).await
                {
                    queue.push_back((input.key.clone(), h.entry));
                }
            }
        }
        Ok(())
    }
}

/// The error for a write whose inputs lead back to it through `chain` (key first and last).
fn cycle(key: &Key, chain: &[&str]) -> Error {
    Error::LineageCycle {
        key: clip(key.as_str()),
        path: clip(&chain.join(" <- ")),
    }
}

/// A lookup of an input as the lineage rule sees it.
fn found_of(found: &Lookup) -> Found<'_> {
    match found {
        Lookup::Fresh(h) => Found::Fresh {
            meta: h.meta(),
            until: h.deadline,
        },
        Lookup::Stale(h) => Found::Stale {
            meta: h.meta(),
            since: h.deadline,
        },
        Lookup::Miss => Found::Missing,
    }
}
