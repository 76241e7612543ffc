//! The freshness console at `GET /ui`: one page, its script and its stylesheet, all embedded in
//! the binary, and the JSON the page polls.
//!
//! The page itself is the same for every install and holds no data, so it is served without
//! the token; everything it shows comes from `/ui/data` and `/ui/audit/{run_id}`, which need
//! `Authorization: Bearer <token>` when `server.auth_token` is set (the page asks for the token
//! and keeps it in the tab's session storage). A content security policy keeps the page to its
//! own origin: no request leaves for another host.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

#[allow(clippy::wildcard_imports)]
use super::*;
use super::request::authorize;
use freshcache::Timestamp;
use freshcache::freshness::RunSummary;
use serde::Serialize;

const PAGE: &str = include_str!("ui/console.html");
const SCRIPT: &str = include_str!("ui/console.js");
const STYLE: &str = include_str!("ui/console.css");
/// Same-origin only: the page can neither load from nor talk to another host.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";
/// Guard runs listed on the page.
const RECENT_RUNS: usize = 20;

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// What the feed loop last saw of one configured source.
#[derive(Clone, Debug, Serialize)]
pub(super) struct FeedStatus {
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
pub(super) struct FeedBoard(Arc<Mutex<BTreeMap<String, FeedStatus>>>);

impl FeedBoard {
    /// A board listing every configured source as pending.
    pub(super) fn new(sources: &[SourceConfig]) -> Self {
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
    pub(super) fn record(
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

    fn snapshot(&self) -> Vec<FeedStatus> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }
}

/// Everything the console shows, in one response.
#[derive(Serialize)]
struct ConsoleData {
    now_ms: u64,
    stats: freshcache::stats::StatsReport,
    feeds: Vec<FeedStatus>,
    runs: Vec<RunSummary>,
}

pub(super) async fn data(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let body = ConsoleData {
        now_ms: state.cache.now().as_millis(),
        stats: state.cache.stats()?,
        feeds: state.feeds.snapshot(),
        runs: state.cache.recent_runs(RECENT_RUNS)?,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

pub(super) async fn audit(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let rows = state.cache.audit(&run_id)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"run_id": run_id, "signals": rows})),
    )
        .into_response())
}
