//! Requests and answers: the API's error shape, the bearer token, keys from paths, and bodies
//! read within their limits (announced or not, compressed or not).

#[allow(clippy::wildcard_imports)]
use super::*;

/// An error as the API reports it: a status and a JSON body `{error, message}`.
pub(super) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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
            Error::InputNotFresh { .. } => "input_not_fresh",
            Error::LineageCycle { .. } => "lineage_cycle",
            Error::InvalidTag { .. } => "invalid_tag",
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

/// Compares without an early exit, so response time does not reveal a matching prefix.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
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

pub(super) fn parse_key(raw: &str) -> ApiResult<Key> {
    Key::parse(raw).map_err(ApiError::from)
}

/// Refuses a request body in any content coding but `identity`. The service stores bodies as
/// sent and never decodes them, so a compressed body would be stored compressed — and a
/// decoder here would be a decompression bomb's way in.
pub(super) fn check_content_encoding(headers: &HeaderMap) -> ApiResult<()> {
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

pub(super) fn too_large(what: &str, limit: u64) -> ApiError {
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
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
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

pub(super) async fn read_body(
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

pub(super) fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
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
