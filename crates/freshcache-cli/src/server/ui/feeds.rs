//! The feeds' latest outcomes: written by the feed loops, read by the console.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use freshcache::Timestamp;
use freshcache::config::SourceConfig;
use serde::Serialize;

/// What the feed loop last saw of one configured source.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FeedStatus {
    key: String,
    /// The URL without credentials or query.
    url: String,
    refresh_seconds: f64,
    /// `pending` before the first fetch, then `fetched`, `revalidated`, `not_stored` or `error`.
    outcome: &'static str,
    /// HTTP status of the last response, when there was one.
    status: Option<u16>,
    error: Option<String>,
    last_fetch_ms: Option<u64>,
    next_refresh_ms: Option<u64>,
}

/// The feeds' latest outcomes, written by the feed loops and read by the console.
///
/// A `std` mutex: each lock is held for one map update or one clone, never across an await.
#[derive(Clone, Default)]
pub(crate) struct FeedBoard(Arc<Mutex<BTreeMap<String, FeedStatus>>>);

impl FeedBoard {
    /// A board listing every configured source as pending.
    pub(crate) fn new(sources: &[SourceConfig]) -> Self {
        let map = sources
            .iter()
            .map(|s| {
                let status = FeedStatus {
                    key: s.key.to_string(),
                    url: freshcache::fetch::redact_url(&s.url),
                    refresh_seconds: s.refresh.as_secs_f64(),
                    outcome: "pending",
                    status: None,
                    error: None,
                    last_fetch_ms: None,
                    next_refresh_ms: None,
                };
                (s.key.to_string(), status)
            })
            .collect();
        Self(Arc::new(Mutex::new(map)))
    }

    /// Records a fetch of `source` made at `at`: its outcome name, status, or error.
    pub(crate) fn record(
        &self,
        source: &SourceConfig,
        at: Timestamp,
        outcome: Result<(&'static str, u16), String>,
    ) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.get_mut(source.key.as_str()) {
            s.last_fetch_ms = Some(at.as_millis());
            s.next_refresh_ms = Some(at.saturating_add(source.refresh).as_millis());
            match outcome {
                Ok((name, status)) => {
                    s.outcome = name;
                    s.status = Some(status);
                    s.error = None;
                }
                Err(e) => {
                    s.outcome = "error";
                    s.status = None;
                    s.error = Some(e);
                }
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<FeedStatus> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshcache::Key;
    use freshcache::config::CacheControl;
    use std::time::Duration;

    #[test]
    fn a_source_is_pending_until_fetched_and_keeps_only_its_latest_outcome() {
        let source = SourceConfig {
            url: "http://user:pw@feeds.local/a.json?sig=x".into(),
            key: Key::parse("news:feed:a").unwrap(),
            refresh: Duration::from_secs(60),
            cache_control: CacheControl::default(),
        };
        let board = FeedBoard::new(std::slice::from_ref(&source));
        let s = &board.snapshot()[0];
        assert_eq!((s.outcome, s.last_fetch_ms), ("pending", None));
        assert!(!s.url.contains("pw") && !s.url.contains("sig"), "{}", s.url);

        board.record(
            &source,
            Timestamp::from_millis(1_000),
            Err("refused".into()),
        );
        let s = &board.snapshot()[0];
        assert_eq!(
            (s.outcome, s.status, s.error.as_deref()),
            ("error", None, Some("refused"))
        );
        assert_eq!(
            (s.last_fetch_ms, s.next_refresh_ms),
            (Some(1_000), Some(61_000))
        );

        board.record(
            &source,
            Timestamp::from_millis(61_000),
            Ok(("revalidated", 304)),
        );
        let s = &board.snapshot()[0];
        assert_eq!(
            (s.outcome, s.status, s.error.as_deref()),
            ("revalidated", Some(304), None)
        );
        assert_eq!(s.next_refresh_ms, Some(121_000));
    }
}
