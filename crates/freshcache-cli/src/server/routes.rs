//! The HTTP routes: entries, invalidation, the freshness guard and its audit, stats, metrics,
//! health and readiness.

use super::request::*;
#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn get_entry(
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

pub(super) async fn put_entry(
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
    value = with_lineage(value, &q)?;
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

/// `derived_from=k1,k2`, `tags=t1,t2` and `inputs=unchecked` from a PUT's query.
fn with_lineage(mut value: Value, q: &HashMap<String, String>) -> ApiResult<Value> {
    let list = |name: &str| {
        q.get(name)
            .map(|s| s.split(',').filter(|p| !p.is_empty()).map(str::to_owned))
            .into_iter()
            .flatten()
            .collect::<Vec<String>>()
    };
    let inputs = list("derived_from")
        .iter()
        .map(|k| parse_key(k))
        .collect::<ApiResult<Vec<Key>>>()?;
    if !inputs.is_empty() {
        value = value.derived_from(inputs);
    }
    let tags = list("tags");
    if !tags.is_empty() {
        value = value.tags(tags);
    }
    match q.get("inputs").map(String::as_str) {
        None | Some("checked") => {}
        Some("unchecked") => value = value.unchecked_inputs(),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "inputs is checked or unchecked",
            ));
        }
    }
    Ok(value)
}

pub(super) async fn delete_entry(
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
pub(super) struct InvalidateBody {
    prefix: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    all: bool,
}

pub(super) async fn invalidate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let req: InvalidateBody = read_json(
        &state,
        &headers,
        body,
        r#"{"prefix": "news:espn:"}, {"tag": "espn"} or {"all": true}"#,
    )
    .await?;
    let removed = match (req.prefix, req.tag, req.all) {
        (None, Some(tag), false) => {
            let at = state.cache.invalidate_tag(&tag).await?;
            return Ok(Json(json!({"tag": tag, "invalidated_at": at.to_string()})).into_response());
        }
        (Some(p), None, false) => {
            state
                .cache
                .invalidate_prefix(&KeyPrefix::parse(&p)?)
                .await?
        }
        (None, None, true) => state.cache.invalidate_all().await?,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "give exactly one of \"prefix\", \"tag\" or \"all\": true",
            ));
        }
    };
    Ok(Json(json!({"removed": removed})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FreshnessBody {
    keys: Vec<String>,
    run_id: Option<String>,
}

/// Checks an inference run's signals: 200 when all are fresh, 409 otherwise. It writes audit
/// rows under the caller's run id, so it is a mutating route and needs the token when one is set.
pub(super) async fn freshness_check(
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

pub(super) async fn freshness_audit(
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

pub(super) async fn stats(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(state.cache.stats()?).into_response())
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
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

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
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
