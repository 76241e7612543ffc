//! Coherence across instances: every write, delete and invalidation is announced on a Redis
//! channel; other instances drop their memory copies (and outdated disk rows). While the
//! subscription is down, memory copies cannot be trusted, so the memory tier is bypassed until
//! it is back (and cleared when it is).

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Cache, Inner};
use crate::clock::Timestamp;

/// How long to wait before resubscribing after the subscription dropped.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(100);
/// How often keys whose Redis copy may be outdated (and unsent announcements) are retried.
const DIRTY_RETRY_EVERY: Duration = Duration::from_millis(100);
/// How often the subscription connection is checked with a PING.
const PING_EVERY: Duration = Duration::from_millis(250);

/// `instance \t kind \t stored_at_ms \t subject`.
pub(super) fn encode(instance: &str, kind: char, stored_at: Timestamp, subject: &str) -> String {
    format!("{instance}\t{kind}\t{}\t{subject}", stored_at.as_millis())
}

fn decode(msg: &str) -> Option<(&str, char, Timestamp, &str)> {
    let mut parts = msg.splitn(4, '\t');
    let instance = parts.next()?;
    let kind = parts.next()?.chars().next()?;
    let stored_at = Timestamp::from_millis(parts.next()?.parse().ok()?);
    let subject = parts.next()?;
    Some((instance, kind, stored_at, subject))
}

/// Applies another instance's announcement to this one.
async fn apply(cache: &Cache, msg: &str) {
    let Some((instance, kind, stored_at, subject)) = decode(msg) else {
        tracing::debug!("ignored a malformed coherence message");
        return;
    };
    if instance == cache.inner.instance_id {
        return;
    }
    let disk = &cache.inner.disk;
    // Disk first, memory second: the memory drop moves the stripe epoch after the disk change,
    // so a read racing this cannot promote the old disk row back into memory.
    let outcome = match kind {
        's' => {
            let r = disk.remove_if_older(subject, stored_at).map(|_| ());
            cache.forget(subject).await;
            r
        }
        'd' => {
            // Only rows written up to the delete: a newer write on a shared disk survives.
            let r = disk
                .remove_if_older(subject, stored_at.saturating_add(Duration::from_millis(1)))
                .map(|_| ());
            cache.forget(subject).await;
            r
        }
        'p' if !subject.is_empty() => {
            let upper = crate::key::KeyPrefix::parse(subject)
                .ok()
                .and_then(|p| p.upper_bound());
            let r = disk.remove_prefix(subject, upper.as_deref()).map(|_| ());
            cache.forget_prefix(subject).await;
            r
        }
        'a' => {
            let r = disk.remove_prefix("", None).map(|_| ());
            cache.forget_prefix("").await;
            r
        }
        _ => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not apply another instance's invalidation to disk");
    }
}

/// Removes the Redis copies of keys whose write or delete did not reach Redis, then sends the
/// announcements that could not be published (in that order, so an instance that drops its
/// memory copy cannot re-read the old value from Redis).
// One function on purpose (~90 lines): the three passes (keys, prefixes, announcements) must
// run in this order, and reading them together is how that order is checked.
async fn retry_dirty(cache: &Cache) {
    if !cache.inner.redis_dirty_any.load(Ordering::Acquire) {
        return;
    }
    let Some(redis) = &cache.inner.redis else {
        return;
    };
    let prefixes: Vec<String> = cache
        .inner
        .redis_dirty_prefixes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for p in &prefixes {
        if redis.delete_prefix(p).await.is_err() {
            return;
        }
        cache
            .inner
            .redis_dirty_prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|q| q != p);
    }
    let keys: Vec<String> = {
        let dirty = cache
            .inner
            .redis_dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dirty.iter().take(500).cloned().collect()
    };
    if !keys.is_empty() {
        if redis.delete_many(&keys).await.is_err() {
            return;
        }
        let mut dirty = cache
            .inner
            .redis_dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in &keys {
            dirty.remove(k);
        }
        if !dirty.is_empty() {
            return;
        }
    }
    let unsent: Vec<String> = std::mem::take(
        &mut *cache
            .inner
            .unsent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for (i, msg) in unsent.iter().enumerate() {
        if redis.publish(msg).await.is_err() {
            // Put back what was not sent, ahead of anything queued meanwhile.
            let mut queue = cache
                .inner
                .unsent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut rest = unsent[i..].to_vec();
            rest.append(&mut queue);
            *queue = rest;
            return;
        }
    }
    let dirty_empty = cache
        .inner
        .redis_dirty
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_empty()
        && cache
            .inner
            .redis_dirty_prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty();
    let unsent_empty = cache
        .inner
        .unsent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_empty();
    if dirty_empty && unsent_empty {
        cache.inner.redis_dirty_any.store(false, Ordering::Release);
    }
}

/// Retries dirty keys and unsent announcements every [`DIRTY_RETRY_EVERY`], whether or not the
/// subscription is up; ends when the cache is dropped.
pub(super) async fn repair_loop(weak: Weak<Inner>) {
    let Some(mut closed) = weak.upgrade().map(|i| i.closed.clone()) else {
        return;
    };
    let mut tick = tokio::time::interval(DIRTY_RETRY_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(inner) = weak.upgrade() else { return };
                if let Some(redis) = &inner.redis {
                    let _ = redis.recover().await;
                }
                retry_dirty(&Cache { inner }).await;
            }
            _ = closed.changed() => return,
        }
    }
}

/// The subscription loop; ends when the cache is dropped.
pub(super) async fn run(weak: Weak<Inner>) {
    let Some(mut closed) = weak.upgrade().map(|i| i.closed.clone()) else {
        return;
    };
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let cache = Cache { inner };
        let Some(redis) = cache.inner.redis.as_ref() else {
            return;
        };
        match redis.subscribe().await {
            Ok(pubsub) => {
                // Anything announced while unsubscribed was missed: start from empty memory
                // (but for values kept in this process's memory alone).
                cache.forget_shared().await;
                cache.inner.l1_trusted.store(true, Ordering::Release);
                tracing::info!("coherence subscription established");
                drop(cache);
                let (mut sink, mut stream) = pubsub.split();
                let mut liveness = tokio::time::interval(PING_EVERY);
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let Some(inner) = weak.upgrade() else { return };
                            let cache = Cache { inner };
                            if let Ok(text) = msg.get_payload::<String>() {
                                apply(&cache, &text).await;
                            }
                        }
                        _ = liveness.tick() => {
                            // A half-open connection delivers nothing and never closes: a
                            // subscription that cannot answer a PING is treated as lost.
                            let pong = tokio::time::timeout(PING_EVERY * 2, sink.ping::<redis::Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                        }
                        _ = closed.changed() => return,
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                inner.l1_trusted.store(false, Ordering::Release);
                Cache { inner }.forget_shared().await;
                tracing::warn!(
                    "coherence subscription lost; memory tier bypassed until it is back"
                );
            }
            Err(reason) => {
                cache.inner.l1_trusted.store(false, Ordering::Release);
                cache.forget_shared().await;
                tracing::debug!(%reason, "coherence subscription failed");
                drop(cache);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            _ = closed.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_rejected() {
        let m = encode("abc", 's', Timestamp::from_millis(42), "news:espn:1");
        assert_eq!(
            decode(&m),
            Some(("abc", 's', Timestamp::from_millis(42), "news:espn:1"))
        );
        assert_eq!(
            decode("x\tp\t1\t"),
            Some(("x", 'p', Timestamp::from_millis(1), ""))
        );
        for bad in ["", "x", "x\ts", "x\ts\tnope\tk"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
