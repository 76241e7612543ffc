//! `freshcache serve`: the HTTP API over a [`Cache`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use axum::Json;
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use freshcache::config::SourceConfig;
use freshcache::fetch::{FetchOptions, Fetcher};
use freshcache::maintenance::{CleanupOptions, Schedule};
use freshcache::metrics::{Breach, ThresholdWatch};
use freshcache::warm::WarmStatus;
use freshcache::{Cache, Codec, Error, Key, KeyPrefix, Lookup, ReadOptions, Value};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;

use crate::{CmdResult, Failure};

/// How often counters and access times are written to the index.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Window over which alert thresholds are checked.
const WATCH_EVERY: Duration = Duration::from_secs(60);
/// Largest JSON request body (`/v1/invalidate`, `/v1/freshness/check`).
const JSON_BODY_LIMIT: u64 = 1 << 20;
/// Most memory reserved up front for a body that announces its length; more grows as it comes.
const PREALLOCATE_MAX: u64 = 1 << 20;

#[derive(Clone)]
struct AppState {
    cache: Cache,
    token: Option<Arc<str>>,
    registry: Arc<Registry>,
}

/// An error as the API reports it: a status and a JSON body `{error, message}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        // The status follows the library's one classification; the code names the error.
        let status = StatusCode::from_u16(e.class().http_status())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let code = match &e {
            Error::InvalidKey { .. } => "invalid_key",
            Error::UnknownDataType { .. } => "unknown_data_type",
            Error::TtlNotAllowed { .. } => "ttl_not_allowed",
            Error::AlreadyExpired { .. } => "already_expired",
            Error::Codec { .. } => "codec",
            Error::Loader { .. } => "loader",
            _ => e.class().name(),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Compares without an early exit, so response time does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs Authorization: Bearer <token>",
        ))
    }
}

fn parse_key(raw: &str) -> ApiResult<Key> {
    Key::parse(raw).map_err(ApiError::from)
}

/// Refuses a request body in any content coding but `identity`. The service stores bodies as
/// sent and never decodes them, so a compressed body would be stored compressed — and a
/// decoder here would be a decompression bomb's way in.
fn check_content_encoding(headers: &HeaderMap) -> ApiResult<()> {
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let identity = v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
        });
        if !identity {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!(
                    "Content-Encoding {:?} is not accepted: send the body uncompressed \
                     (values are stored as sent; the service does not decode request bodies)",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            ));
        }
    }
    Ok(())
}

fn too_large(what: &str, limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("{what} is larger than the {limit} bytes allowed"),
    )
}

/// Reads a request body of at most `limit` bytes, after its headers are checked: a declared
/// `Content-Length` over the limit is refused before any of it is read, and a chunked body as
/// soon as it passes the limit, so a refused upload costs at most `limit` bytes of memory.
/// The JSON body of a mutating route: the token is checked first, then at most
/// [`JSON_BODY_LIMIT`] bytes are read and parsed; a body of another shape is a 400 saying what
/// was `expected`.
async fn read_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    expected: &str,
) -> ApiResult<T> {
    authorize(state, headers)?;
    let body = read_body(headers, body, JSON_BODY_LIMIT, "the request body").await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("expected {expected}: {e}"),
        )
    })
}

async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: u64,
    what: &str,
) -> ApiResult<Bytes> {
    check_content_encoding(headers)?;
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        "invalid Content-Length",
                    )
                })?,
        ),
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(what, limit));
    }
    let reserve = declared.unwrap_or(0).min(limit).min(PREALLOCATE_MAX);
    let mut buf = BytesMut::with_capacity(usize::try_from(reserve).unwrap_or(0));
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("could not read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = u64::try_from(buf.len().saturating_add(data.len())).unwrap_or(u64::MAX);
        if total > limit {
            return Err(too_large(what, limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

async fn get_entry(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let key = parse_key(&raw)?;
    let mut opts = ReadOptions::default();
    if let Some(s) = q.get("max_stale") {
        opts.max_stale = freshcache::config::parse_duration(s)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e))?;
    }
    let (hit, stale) = match state.cache.get_with(&key, opts).await? {
        Lookup::Fresh(h) => (h, false),
        Lookup::Stale(h) => (h, true),
        Lookup::Miss => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "miss",
                format!("no fresh value for {key}"),
            ));
        }
    };
    let m = hit.meta();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(m.codec.media_type()),
    );
    headers.insert("x-cache-tier", HeaderValue::from_static(hit.source.name()));
    headers.insert(header::AGE, HeaderValue::from(hit.age().as_secs()));
    if let Some(v) = header_value(&httpdate::fmt_http_date(m.expires_at.to_system_time())) {
        headers.insert(header::EXPIRES, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        header_value(&format!("max-age={}", hit.remaining().as_secs()))
            .unwrap_or(HeaderValue::from_static("no-cache")),
    );
    if let Some(v) = m.etag.as_deref().and_then(header_value) {
        headers.insert(header::ETAG, v);
    }
    if let Some(v) = m.last_modified.as_deref().and_then(header_value) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    if stale {
        headers.insert("x-cache-stale", HeaderValue::from_static("true"));
        headers.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
    }
    Ok((StatusCode::OK, headers, hit.value().clone()).into_response())
}

async fn put_entry(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let key = parse_key(&raw)?;
    // The key's own limit, known before a byte of the body is read.
    let limit = state.cache.data_type(&key)?.max_value_size;
    let body = read_body(&headers, body, limit, "the value").await?;
    let codec = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or(Codec::Bytes, Codec::from_media_type);
    let mut value = Value::bytes(body).codec(codec);
    if let Some(s) = q.get("ttl") {
        let ttl = freshcache::config::parse_duration(s)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e))?;
        value = value.ttl(ttl);
    }
    if let Some(s) = q.get("as_of") {
        let secs: u64 = s.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "as_of is Unix seconds",
            )
        })?;
        value = value.as_of(freshcache::Timestamp::from_secs(secs));
    }
    let entry = state.cache.set(&key, value).await?;
    let m = &entry.meta;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "key": key.as_str(),
            "data_type": &*m.data_type,
            "size": entry.size(),
            "stored_at": m.stored_at.to_string(),
            "expires_at": m.expires_at.to_string(),
        })),
    )
        .into_response())
}

async fn delete_entry(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let key = parse_key(&raw)?;
    if state.cache.delete(&key).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "miss",
            format!("{key} was not cached"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    prefix: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn invalidate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req: InvalidateBody = read_json(
        &state,
        &headers,
        body,
        r#"{"prefix": "news:espn:"} or {"all": true}"#,
    )
    .await?;
    let removed = match (req.prefix, req.all) {
        (Some(p), false) => {
            state
                .cache
                .invalidate_prefix(&KeyPrefix::parse(&p)?)
                .await?
        }
        (None, true) => state.cache.invalidate_all().await?,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "give exactly one of \"prefix\" or \"all\": true",
            ));
        }
    };
    Ok(Json(json!({"removed": removed})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreshnessBody {
    keys: Vec<String>,
    run_id: Option<String>,
}

/// Checks an inference run's signals: 200 when all are fresh, 409 otherwise. It writes audit
/// rows under the caller's run id, so it is a mutating route and needs the token when one is set.
async fn freshness_check(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req: FreshnessBody = read_json(
        &state,
        &headers,
        body,
        r#"{"keys": [...], "run_id": "..."}"#,
    )
    .await?;
    let keys = req
        .keys
        .iter()
        .map(|k| Key::parse(k))
        .collect::<Result<Vec<_>, _>>()?;
    let run_id = req
        .run_id
        .unwrap_or_else(|| format!("http-{}", state.cache.now().as_millis()));
    let (report, _) = state.cache.check_freshness(&run_id, &keys).await?;
    let status = if report.all_fresh() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    let mut v = serde_json::to_value(&report).unwrap_or_default();
    v["all_fresh"] = json!(report.all_fresh());
    Ok((status, Json(v)).into_response())
}

async fn freshness_audit(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
) -> ApiResult<Response> {
    let rows = state.cache.audit(&run_id)?;
    if rows.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "miss",
            format!("no audit rows for run {run_id}"),
        ));
    }
    Ok(Json(json!({"run_id": run_id, "signals": rows})).into_response())
}

async fn stats(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(state.cache.stats()?).into_response())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = String::new();
    match prometheus_text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    // A Redis outage degrades the service (memory + disk carry on); a broken disk index, or
    // critical warm-up signals not yet fresh, make it not ready.
    let redis = state.cache.redis_state_name();
    let tiers = |disk: &str| json!({"memory": "up", "disk": disk, "redis": redis});
    if let Err(e) = state.cache.ping() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "tiers": tiers("down"), "message": e.to_string()})),
        )
            .into_response();
    }
    let warm = &state.cache.config().warm;
    if !matches!(state.cache.critical_fresh(warm).await, Ok(true)) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "tiers": tiers("up"),
                "message": "critical warm-up signals are not fresh yet",
            })),
        )
            .into_response();
    }
    Json(json!({
        "status": if redis == "degraded" { "degraded" } else { "ready" },
        "tiers": tiers("up"),
    }))
    .into_response()
}

/// The API routes over `cache`.
///
/// Handlers read request bodies themselves ([`read_body`]), after authorization and with the
/// route's own limit, so no body extractor (and no global body limit) is involved.
fn router(cache: Cache) -> Router {
    let token = cache.config().server.auth_token.as_deref().map(Arc::from);
    let mut registry = Registry::default();
    freshcache::metrics::register(&mut registry, &cache);
    let state = AppState {
        cache,
        token,
        registry: Arc::new(registry),
    };
    Router::new()
        .route(
            "/v1/cache/{key}",
            get(get_entry).put(put_entry).delete(delete_entry),
        )
        .route("/v1/invalidate", post(invalidate))
        .route("/v1/freshness/check", post(freshness_check))
        .route("/v1/freshness/audit/{run_id}", get(freshness_audit))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Logs a warning whenever a `monitoring:` threshold is crossed within a minute's traffic.
async fn threshold_loop(cache: Cache) {
    let mut watch = ThresholdWatch::new(&cache);
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        for breach in watch.check(&cache, 100) {
            match breach {
                Breach::HitRatio {
                    ratio,
                    threshold,
                    lookups,
                } => tracing::warn!(
                    ratio,
                    threshold,
                    lookups,
                    "hit ratio below cache.monitoring.cache_hit_ratio_threshold"
                ),
                Breach::ViolationRate {
                    rate,
                    threshold,
                    checks,
                } => tracing::warn!(
                    rate,
                    threshold,
                    checks,
                    "TTL violation rate above cache.monitoring.ttl_violation_threshold"
                ),
                _ => {}
            }
        }
    }
}

/// Runs a cleanup pass at every time the schedule names, off the async workers.
async fn cleanup_loop(cache: Cache, schedule: Schedule) {
    loop {
        let now = cache.now();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!(
                schedule = schedule.as_str(),
                "cleanup schedule has no next run"
            );
            return;
        };
        tokio::time::sleep(next.duration_since(now)).await;
        let c = cache.clone();
        match tokio::task::spawn_blocking(move || c.cleanup(CleanupOptions::default())).await {
            Ok(Ok(r)) => tracing::info!(
                expired = r.expired.entries,
                evicted = r.evicted.entries,
                orphans = r.repaired.orphan_blobs,
                bytes_freed = r.bytes_freed,
                duration_ms = r.duration_ms,
                "scheduled cleanup done"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "scheduled cleanup failed"),
            Err(e) => tracing::warn!(error = %e, "scheduled cleanup panicked"),
        }
    }
}

/// Keeps one configured feed fresh: a fetch on start, then one every `refresh`, conditional
/// on the stored validators. Outcomes are logged (URL without credentials or query, never the
/// body); a failed fetch leaves the stored entry alone and is retried on the next tick.
async fn source_loop(cache: Cache, fetcher: Fetcher, source: SourceConfig) {
    let url = freshcache::fetch::redact_url(&source.url);
    let mut tick = tokio::time::interval(source.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let fetched = fetcher
            .fetch_with(&cache, &source.key, &source.url, source.cache_control)
            .await;
        match fetched {
            Ok(o) => tracing::info!(
                key = %source.key,
                url,
                outcome = o.name(),
                status = o.status(),
                body_bytes = o.transfer().body_bytes,
                "source refreshed"
            ),
            Err(e) => tracing::warn!(
                key = %source.key,
                url,
                kind = e.fetch_kind().map_or("cache", |k| k.name()),
                error = %e,
                "source refresh failed"
            ),
        }
    }
}

/// Runs the service until SIGTERM / Ctrl-C.
pub(crate) async fn serve(cache: Cache, listen: Option<SocketAddr>) -> CmdResult {
    let addr = listen.unwrap_or(cache.config().server.listen);
    if !addr.ip().is_loopback() && cache.config().server.auth_token.is_none() {
        return Err(Failure::Invalid(anyhow!(
            "refusing to listen on non-loopback {addr} without server.auth_token \
             (or FRESHCACHE_SERVER__AUTH_TOKEN)"
        )));
    }
    let schedule = Schedule::from_config(cache.config())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Runtime(anyhow!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, cache_dir = %cache.config().cache_dir.display(), "freshcache serving");
    println!("freshcache listening on http://{local}");

    let flusher = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = cache.flush() {
                    tracing::warn!(error = %e, "could not persist counters");
                }
            }
        })
    };
    let cleaner = tokio::spawn(cleanup_loop(cache.clone(), schedule));
    let watcher = tokio::spawn(threshold_loop(cache.clone()));
    let fetcher = Fetcher::new(FetchOptions::default())?;
    let feeds: Vec<_> = cache
        .config()
        .sources
        .iter()
        .map(|s| tokio::spawn(source_loop(cache.clone(), fetcher.clone(), s.clone())))
        .collect();
    let warmer = {
        let (cache, fetcher) = (cache.clone(), fetcher.clone());
        tokio::spawn(async move {
            let items = cache.config().warm.clone();
            if items.is_empty() {
                return;
            }
            match cache.warm(&items, &fetcher, |_, _, _| {}).await {
                Ok(r) => tracing::info!(
                    fresh = r.count(WarmStatus::Fresh),
                    loaded = r.count(WarmStatus::Loaded),
                    failed = r.count(WarmStatus::Failed),
                    "start-up warming done"
                ),
                Err(e) => tracing::warn!(error = %e, "start-up warming failed"),
            }
        })
    };
    let result = axum::serve(listener, router(cache.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    flusher.abort();
    cleaner.abort();
    watcher.abort();
    feeds.iter().for_each(tokio::task::JoinHandle::abort);
    warmer.abort();
    if let Err(e) = cache.flush() {
        tracing::warn!(error = %e, "could not persist counters at shutdown");
    }
    result.map_err(|e| Failure::Runtime(anyhow!("server error: {e}")))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_exact_equality() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret!"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
