//! `POST /v1/batch`: many writes validated together and stored in one transaction, and many
//! reads answered together. Body: `{"set": [item, ...], "get": ["key", ...]}` (items as in
//! `set --jsonl`); the sets are applied first. Needs the token when one is configured.

use super::request::*;
#[allow(clippy::wildcard_imports)]
use super::*;
use crate::items::Item;

/// Largest batch body.
const BATCH_BODY_LIMIT: u64 = 64 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    #[serde(default)]
    set: Vec<Item>,
    #[serde(default)]
    get: Vec<String>,
}

pub(super) async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let body = read_body(&headers, body, BATCH_BODY_LIMIT, "the batch").await?;
    let batch: BatchBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("expected {{\"set\": [...], \"get\": [...]}}: {e}"),
        )
    })?;
    let total = batch.set.len();
    let mut items = Vec::with_capacity(total);
    let mut refused = Vec::new();
    for (index, item) in batch.set.into_iter().enumerate() {
        match item.into_entry() {
            Ok(kv) => items.push(kv),
            Err(message) => {
                refused.push(json!({"index": index, "error": "invalid_item", "message": message}))
            }
        }
    }
    if !refused.is_empty() {
        return Ok(refusal(total, refused));
    }
    let stored = match state.cache.set_many(items).await {
        Ok(stored) => stored.len(),
        Err(Error::InvalidBatch { refused, total }) => {
            let refused = refused
                .iter()
                .map(|r| {
                    json!({
                        "index": r.index,
                        "key": r.key,
                        "error": r.error.class().name(),
                        "message": r.error.to_string(),
                    })
                })
                .collect();
            return Ok(refusal(total, refused));
        }
        Err(e) => return Err(e.into()),
    };
    let mut values = Vec::with_capacity(batch.get.len());
    for raw in &batch.get {
        let key = parse_key(raw)?;
        values.push(match state.cache.get(&key).await? {
            Lookup::Fresh(h) => {
                let m = h.meta();
                let mut v = json!({
                    "key": raw,
                    "found": true,
                    "tier": h.source.name(),
                    "age_seconds": h.age().as_secs_f64(),
                    "remaining_seconds": h.remaining().as_secs_f64(),
                    "codec": m.codec.name(),
                });
                match m.codec {
                    Codec::Json => {
                        v["value"] = serde_json::from_slice(h.value()).unwrap_or_default();
                    }
                    Codec::Text => v["value"] = json!(String::from_utf8_lossy(h.value())),
                    _ => v["value_hex"] = json!(hex(h.value())),
                }
                v
            }
            _ => json!({"key": raw, "found": false}),
        });
    }
    Ok(Json(json!({"stored": stored, "values": values})).into_response())
}

/// 400 naming every refused item; nothing of the batch was written.
fn refusal(total: usize, refused: Vec<serde_json::Value>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "invalid_batch",
            "message": format!("{} of {total} items refused; nothing was written", refused.len()),
            "refused": refused,
        })),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
