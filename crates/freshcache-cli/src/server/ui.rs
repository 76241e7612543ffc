//! The freshness console at `GET /ui`: one page, its script and its stylesheet, all embedded in
//! the binary, and the JSON the page polls. Read-only.
//!
//! When `server.auth_token` is set, the page (`/ui`) and its data (`/ui/data`,
//! `/ui/audit/{run_id}`) need it, given either as `Authorization: Bearer <token>` or as the
//! console's cookie. Without it `/ui` answers 401 with a sign-in form that posts the token to
//! `/ui/login`; a right token there sets the cookie — `HttpOnly` (the page's script never sees
//! the token), `SameSite=Strict`, `Path=/ui`, for the browser session — and redirects to `/ui`.
//! The token never travels in a URL. The script and stylesheet are the same for every install
//! and hold no data, so they are served to anyone (the sign-in form uses the stylesheet).
//!
//! A content security policy keeps every page to its own origin: no request leaves for
//! another host, and no inline script runs.

mod feeds;

use super::request::{authorize, constant_time_eq, header_value, read_body};
#[allow(clippy::wildcard_imports)]
use super::*;
pub(super) use feeds::FeedBoard;
use feeds::FeedStatus;
use freshcache::freshness::RunSummary;
use serde::Serialize;

const PAGE: &str = include_str!("ui/console.html");
const SCRIPT: &str = include_str!("ui/console.js");
const STYLE: &str = include_str!("ui/console.css");
const SIGN_IN: &str = include_str!("ui/sign-in.html");
/// Same-origin only: the page can neither load from nor talk to another host.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";
/// The sign-in form's policy: no script at all, and the form may post only to this origin.
const SIGN_IN_POLICY: &str = "default-src 'none'; style-src 'self'; img-src data:; \
                              base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Guard runs listed on the page.
const RECENT_RUNS: usize = 20;
/// The cookie `/ui/login` sets.
const COOKIE: &str = "freshcache_console";
/// Largest sign-in form accepted.
const LOGIN_BODY_MAX: u64 = 4096;

fn with_headers(
    status: StatusCode,
    policy: &'static str,
    ty: &'static str,
    body: Body,
) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, ty),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_headers(StatusCode::OK, POLICY, content_type, Body::from(body))
}

/// The cookie's value for `token`: its bytes in hex, so any token fits a cookie.
fn cookie_value(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

/// True when no token is configured, or the request carries it as a bearer token or cookie.
fn signed_in(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    if authorize(state, headers).is_ok() {
        return true;
    }
    let expected = cookie_value(token);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| {
            name == COOKIE && constant_time_eq(value.as_bytes(), expected.as_bytes())
        })
}

/// The 401 for the console's data routes.
fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the console needs the token: Authorization: Bearer <token>, or sign in at /ui",
    )
}

/// The sign-in form with `status`, saying `note` above it.
fn sign_in_form(status: StatusCode, note: &str) -> Response {
    let body = SIGN_IN.replace("{note}", note);
    with_headers(
        status,
        SIGN_IN_POLICY,
        "text/html; charset=utf-8",
        Body::from(body),
    )
}

pub(super) async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers) {
        asset("text/html; charset=utf-8", PAGE)
    } else {
        sign_in_form(
            StatusCode::UNAUTHORIZED,
            "This service has a token (server.auth_token). Enter it to open the console.",
        )
    }
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `POST /ui/login` with the form field `token`: sets the console's cookie and redirects to
/// `/ui` when it is the configured token; the form again, with 401, when it is not.
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let Some(token) = state.token.clone() else {
        return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/ui")]).into_response());
    };
    let body = read_body(&headers, body, LOGIN_BODY_MAX, "the sign-in form").await?;
    let given = form_field(&body, "token").unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return Ok(sign_in_form(
            StatusCode::UNAUTHORIZED,
            "That is not this service's token. Try again.",
        ));
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict",
        cookie_value(&token)
    );
    let cookie = header_value(&cookie).ok_or_else(unauthorized)?;
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui")]).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(resp)
}

/// The value of `name` in an `application/x-www-form-urlencoded` body, decoded.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|&b| b == b'&')
        .filter_map(|pair| {
            let at = pair.iter().position(|&b| b == b'=')?;
            Some((pair.get(..at)?, pair.get(at + 1..)?))
        })
        .find(|(k, _)| *k == name.as_bytes())
        .and_then(|(_, v)| percent_decode(v))
}

/// Form decoding: `+` is a space, `%XX` a byte; `None` when malformed or not UTF-8.
fn percent_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = char::from(*bytes.next()?).to_digit(16)?;
                let lo = char::from(*bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
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
    if !signed_in(&state, &headers) {
        return Err(unauthorized());
    }
    // The report and the runs are index queries: off the async workers, as the page polls.
    let cache = state.cache.clone();
    let (stats, runs) = tokio::task::spawn_blocking(move || {
        Ok::<_, Error>((cache.stats()?, cache.recent_runs(RECENT_RUNS)?))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the console's data could not be read: {e}"),
        )
    })??;
    let body = ConsoleData {
        now_ms: state.cache.now().as_millis(),
        stats,
        feeds: state.feeds.snapshot(),
        runs,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

pub(super) async fn audit(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !signed_in(&state, &headers) {
        return Err(unauthorized());
    }
    let rows = state.cache.audit(&run_id)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"run_id": run_id, "signals": rows})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&token=s%3Bcr+t%25", "token").as_deref(),
            Some("s;cr t%")
        );
        assert_eq!(form_field(b"token=", "token").as_deref(), Some(""));
        assert_eq!(form_field(b"other=x", "token"), None);
        assert_eq!(form_field(b"token=%4", "token"), None);
        assert_eq!(form_field(b"token=%ff", "token"), None);
    }

    #[test]
    fn cookie_values_are_hex() {
        assert_eq!(cookie_value("a; b"), "613b2062");
    }
}
