//! What Redis and the other instances still have to be told: keys and prefixes whose Redis
//! copy may be outdated (never read from Redis meanwhile), and announcements not yet sent.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use super::{Cache, coherence};
use crate::clock::Timestamp;

impl Cache {
    /// Whether Redis may hold an outdated copy of `key` (a write, delete or prefix
    /// invalidation did not reach it): such keys are never read from Redis.
    pub(super) fn is_redis_dirty(&self, key: &str) -> bool {
        if !self.inner.redis_dirty_any.load(Ordering::Acquire) {
            return false;
        }
        let dirty_prefix = self
            .inner
            .redis_dirty_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|p| key.starts_with(p.as_str()));
        dirty_prefix
            || self
                .inner
                .redis_dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(key)
    }

    /// Records something Redis still has to be told (under `pending`'s lock), then raises the
    /// flag readers and the repair loop check without locking.
    fn note_pending<T>(&self, pending: &Mutex<T>, add: impl FnOnce(&mut T)) {
        add(&mut pending.lock().unwrap_or_else(PoisonError::into_inner));
        self.inner.redis_dirty_any.store(true, Ordering::Release);
    }

    pub(super) fn mark_redis_dirty(&self, key: &str) {
        self.note_pending(&self.inner.redis_dirty, |d| {
            d.insert(key.to_owned());
        });
    }

    pub(super) fn mark_redis_dirty_prefix(&self, prefix: &str) {
        self.note_pending(&self.inner.redis_dirty_prefixes, |p| {
            p.push(prefix.to_owned());
        });
    }

    pub(super) fn queue_announcement(&self, msg: String) {
        self.note_pending(&self.inner.unsent, |u| u.push(msg));
    }

    /// Announces a change to the other instances. When Redis may still hold the old value
    /// (`redis_fixed` is false) or the publish fails, the announcement is queued and sent once
    /// the Redis copy is fixed — otherwise other instances would drop their memory copy and
    /// re-read the old value from Redis.
    pub(super) async fn announce(
        &self,
        kind: char,
        stored_at: Timestamp,
        subject: &str,
        redis_fixed: bool,
    ) {
        if let Some(redis) = &self.inner.redis {
            let msg = coherence::encode(&self.inner.instance_id, kind, stored_at, subject);
            if !redis_fixed {
                self.queue_announcement(msg);
            } else if redis.publish(&msg).await.is_err() {
                tracing::debug!(kind = %kind, "announcement not delivered; queued for retry");
                self.queue_announcement(msg);
            }
        }
    }
}
