//! Tags: `invalidate_tag` makes every entry carrying a tag not fresh in one step, whatever the
//! number of tagged entries. It records the tag's invalidation time — one row in the index
//! (with a change-feed row in the same transaction, for the other processes on the host), one
//! field of a Redis hash and one announcement for the other instances — and readers hold each
//! tagged entry to it (an entry stored at or before the time is not fresh; see
//! `freshness::judge::tag_invalidates`). Nothing is deleted: entries stored later with the tag
//! are fresh, and the stale ones go with the sweep or when rewritten.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::params;

use super::Cache;
use super::lineage::{TagTimes, check_tag};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::tier::disk::{ChangeOp, DiskTier, i64_of};

/// The table of tag invalidation times, created with the index.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tag_invalidations (
    tag TEXT PRIMARY KEY NOT NULL,
    at  INTEGER NOT NULL
);
";

/// The Redis hash (under the namespace) holding each tag's invalidation time in milliseconds.
const REDIS_HASH: &str = "tags";

/// The change feed's subject for a tag invalidation: `tag at_ms` (tags hold no spaces).
pub(super) fn feed_subject(tag: &str, at: Timestamp) -> String {
    format!("{tag} {}", at.as_millis())
}

/// The tag and time of a change-feed subject made by [`feed_subject`].
pub(super) fn parse_feed_subject(subject: &str) -> Option<(&str, Timestamp)> {
    let (tag, at) = subject.rsplit_once(' ')?;
    Some((tag, Timestamp::from_millis(at.parse().ok()?)))
}

/// Loads every recorded tag invalidation from the index into `tags`.
pub(super) fn load(disk: &DiskTier, tags: &TagTimes) -> Result<()> {
    let rows = disk.with_reader(|c| {
        c.prepare("SELECT tag, at FROM tag_invalidations")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    for (tag, at) in rows {
        tags.raise(&tag, Timestamp::from_millis(u64::try_from(at).unwrap_or(0)));
    }
    Ok(())
}

impl Cache {
    /// Invalidates `tag`: every entry carrying it, stored up to now, stops being fresh — on every
    /// tier, in every process on the host and every instance sharing Redis — and so does every
    /// entry derived from one of them. Costs the same whatever the number of tagged entries;
    /// returns the invalidation time.
    ///
    /// # Errors
    /// [`Error::InvalidTag`](crate::Error::InvalidTag); [`Error::Index`](crate::Error::Index)
    /// when the time cannot be recorded in the index (this process honours it regardless).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<Timestamp> {
        check_tag(tag)?;
        let at = self.now();
        let recorded = self.record_tag(tag, at);
        let redis_fixed = match &self.inner.redis {
            Some(redis) => redis
                .hash_set(REDIS_HASH, tag, at.as_millis())
                .await
                .is_ok(),
            None => true,
        };
        self.announce('t', at, tag, redis_fixed).await;
        self.inner.tag_invalidations.fetch_add(1, Ordering::Relaxed);
        recorded.map(|()| at)
    }

    /// Records an invalidation of `tag` at `at` here: in memory (honoured at once), then in the
    /// index with its change-feed row.
    pub(super) fn record_tag(&self, tag: &str, at: Timestamp) -> Result<()> {
        if !self.inner.tags.raise(tag, at) {
            return Ok(());
        }
        self.note_change();
        let subject = feed_subject(tag, at);
        self.inner
            .disk
            .write_with_change(ChangeOp::Tag, &subject, |tx| {
                tx.prepare_cached(
                    "INSERT INTO tag_invalidations (tag, at) VALUES (?1, ?2)
                     ON CONFLICT (tag) DO UPDATE SET at = max(at, excluded.at)",
                )?
                .execute(params![tag, i64_of(at.as_millis())])
                .map(|_| ())
            })
    }

    /// Brings the tag invalidation times here and in Redis together (after a (re)subscription:
    /// announcements made meanwhile were missed, and an invalidation made while Redis was
    /// down did not reach its hash): Redis's later times are recorded here, this instance's
    /// later ones are written to Redis.
    pub(super) async fn load_redis_tags(&self) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let fields = match redis.hash_all(REDIS_HASH).await {
            Ok(fields) => fields,
            Err(e) => {
                tracing::debug!(?e, "tag invalidation times not read from redis");
                return;
            }
        };
        for (tag, at) in &fields {
            if let Err(e) = self.record_tag(tag, Timestamp::from_millis(*at)) {
                tracing::warn!(error = %e, "could not record a tag invalidation");
            }
        }
        for (tag, at) in self.inner.tags.all() {
            let known = fields.iter().find(|(t, _)| *t == tag).map(|(_, a)| *a);
            if known.is_none_or(|k| k < at.as_millis()) {
                let _ = redis.hash_set(REDIS_HASH, &tag, at.as_millis()).await;
            }
        }
    }

    /// Tag invalidations made through this instance.
    #[must_use]
    pub fn tag_invalidations(&self) -> u64 {
        self.inner.tag_invalidations.load(Ordering::Relaxed)
    }

    /// The shared tag times, for the change follower.
    pub(super) fn tag_times(&self) -> Arc<TagTimes> {
        Arc::clone(&self.inner.tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_subjects_round_trip() {
        let s = feed_subject("cluster-7", Timestamp::from_millis(42));
        assert_eq!(
            parse_feed_subject(&s),
            Some(("cluster-7", Timestamp::from_millis(42)))
        );
        assert_eq!(parse_feed_subject("nospace"), None);
        assert_eq!(parse_feed_subject("t x"), None);
    }
}
