//! Conditional HTTP fetch into the cache (RFC 9111): a body is stored with its `ETag` /
//! `Last-Modified`; a refresh sends them back as `If-None-Match` / `If-Modified-Since`, and a
//! `304 Not Modified` that names the stored entry re-validates it without a download.
//!
//! - **200** stores the body (codec from `Content-Type`), replacing the entry.
//! - **304** re-stores the stored body with a new stored time and expiry and the same
//!   validators; a 304 that does not match what is stored (or finds nothing stored) is
//!   followed by one unconditional fetch.
//! - **Anything else** — another status, a timeout, a body over its bounds, a wrong
//!   `Content-Type`, a header with CR/LF, a redirect to another host or port — returns an
//!   [`Error::Fetch`] with its [`FetchErrorKind`] and leaves the stored entry alone.
//! - `Cache-Control` may shorten the data type's TTL, never lengthen it
//!   ([`CacheControl::MayShorten`]); `no-store` bodies come back as
//!   [`FetchOutcome::NotStored`].
//!
//! Stored times come from the cache's clock; the origin's `Date` is not used.
//!
//! `http://` is always supported. `https://` needs the crate's `https` feature (rustls with the
//! *ring* provider and the system's trust roots, configured per client, nothing installed
//! process-wide); without it an `https://` URL is refused as [`FetchErrorKind::InvalidUrl`].
//!
//! ```no_run
//! # async fn demo() -> freshcache::Result<()> {
//! use freshcache::fetch::{FetchOptions, Fetcher};
//! use freshcache::{Cache, Config, Key};
//!
//! let cache = Cache::open(Config::default())?;
//! let fetcher = Fetcher::new(FetchOptions::default())?;
//! let key = Key::news("espn", "front")?;
//! let outcome = fetcher.fetch(&cache, &key, "https://feeds.example/espn.json").await?;
//! println!("{} (HTTP {}, {} bytes)", outcome.name(), outcome.status(), outcome.transfer().body_bytes);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};

use crate::cache::{Cache, Hit, Source, Value};
use crate::datatype::DataTypeSpec;
use crate::entry::{Codec, Entry};
pub use crate::error::FetchErrorKind;
use crate::error::{Error, Result};
use crate::key::Key;

mod body;
mod exchange;
mod policy;
mod url;

pub use crate::url::redact_url;
use crate::url::{authority, check_url, redact};
pub use url::parse_url;

use body::{BodyError, BodyReader, Encoding};
#[doc(hidden)]
pub use policy::fuzzing;
pub use policy::{CacheControl, NotStoredReason};
use policy::{Directives, HeaderProblem, Storage};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// How a [`Fetcher`] talks to origins. The defaults suit feeds of a few megabytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct FetchOptions {
    /// Deadline for establishing a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Deadline for a whole fetch, redirects and body included (default 30 s).
    pub timeout: Duration,
    /// Most body bytes accepted on the wire, counted as they arrive (default 16 MiB).
    pub max_body_bytes: u64,
    /// Most bytes accepted after decompression (default 64 MiB); the key's data type's
    /// `max_value_size` caps it further.
    pub max_decoded_bytes: u64,
    /// Longest value accepted for a header the fetcher reads: `ETag`, `Last-Modified`,
    /// `Content-Type`, `Cache-Control`, ... (default 4 KiB).
    pub max_header_bytes: usize,
    /// Most header lines in a response (default 100).
    pub max_headers: usize,
    /// Most redirects followed in one fetch (default 5).
    pub max_redirects: usize,
    /// Authorities (`host:port`) redirects may lead to besides the requested URL's own host
    /// and port, e.g. `cdn.example:443`. Empty (the default): same host and port only.
    pub redirect_hosts: Vec<String>,
    /// Media types accepted (`application/json`, `text/*`); empty (the default) accepts any.
    pub content_types: Vec<String>,
    /// What `Cache-Control` may do to the TTL, unless a call says otherwise.
    pub cache_control: CacheControl,
    /// The `User-Agent` sent.
    pub user_agent: String,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_body_bytes: 16 * MIB,
            max_decoded_bytes: 64 * MIB,
            max_header_bytes: 4 * KIB as usize,
            max_headers: 100,
            max_redirects: 5,
            redirect_hosts: Vec::new(),
            content_types: Vec::new(),
            cache_control: CacheControl::default(),
            user_agent: concat!("freshcache/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// What one fetch cost on the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Status of the last response (after redirects).
    pub status: u16,
    /// Body bytes received on the wire (compressed, when gzip), over every request made.
    pub body_bytes: u64,
    /// Requests made: 1, or 2 when a 304 had to be followed by an unconditional fetch.
    pub requests: u32,
    /// Whether the first request carried validators (`If-None-Match` / `If-Modified-Since`).
    pub conditional: bool,
}

/// What a fetch did. Stored hits report [`Source::Loader`]: the value came from the origin just
/// now.
#[derive(Clone, Debug)]
#[non_exhaustive]
#[must_use]
pub enum FetchOutcome {
    /// A 200: the body was downloaded and stored, replacing any previous entry.
    Fetched {
        /// The stored entry.
        hit: Hit,
        /// Network cost.
        transfer: Transfer,
    },
    /// A 304 that named the stored entry: its body was stored again with a new stored time and
    /// expiry and the same validators; nothing was downloaded.
    Revalidated {
        /// The re-stored entry.
        hit: Hit,
        /// Network cost.
        transfer: Transfer,
    },
    /// The response may not be stored (`no-store`, or stale on arrival): here is its body.
    /// Whatever was stored before is left as it was.
    NotStored {
        /// The body (the stored one, for a 304).
        body: Bytes,
        /// Its codec, from `Content-Type`.
        codec: Codec,
        /// Why it was not stored.
        reason: NotStoredReason,
        /// Network cost.
        transfer: Transfer,
    },
}

impl FetchOutcome {
    /// Network cost.
    #[must_use]
    pub fn transfer(&self) -> &Transfer {
        match self {
            FetchOutcome::Fetched { transfer, .. }
            | FetchOutcome::Revalidated { transfer, .. }
            | FetchOutcome::NotStored { transfer, .. } => transfer,
        }
    }

    /// Status of the last response.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.transfer().status
    }

    /// The stored entry, unless the response was not stored.
    #[must_use]
    pub fn hit(&self) -> Option<&Hit> {
        match self {
            FetchOutcome::Fetched { hit, .. } | FetchOutcome::Revalidated { hit, .. } => Some(hit),
            FetchOutcome::NotStored { .. } => None,
        }
    }

    /// The body, stored or not.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        match self {
            FetchOutcome::Fetched { hit, .. } | FetchOutcome::Revalidated { hit, .. } => {
                hit.value()
            }
            FetchOutcome::NotStored { body, .. } => body,
        }
    }

    /// True when the body is in the cache now.
    #[must_use]
    pub fn is_stored(&self) -> bool {
        self.hit().is_some()
    }

    /// `fetched`, `revalidated` or `not_stored`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            FetchOutcome::Fetched { .. } => "fetched",
            FetchOutcome::Revalidated { .. } => "revalidated",
            FetchOutcome::NotStored { .. } => "not_stored",
        }
    }
}

/// The validators of a stored entry, as sent back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validators {
    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// A body ready to store, and what its response said about storing it.
struct Body {
    bytes: Bytes,
    codec: Codec,
    validators: Validators,
    storage: Storage,
}

/// A response the fetcher accepted.
enum Answer {
    /// 200 with its body read.
    Full(Body),
    /// 304.
    NotModified {
        validators: Validators,
        storage: Storage,
    },
}

/// One request's result with its cost.
struct Exchange {
    answer: Answer,
    status: u16,
    body_bytes: u64,
}

/// Fetches URLs into a [`Cache`] with conditional requests. Cheap to clone: the HTTP client
/// and its connection pool are shared.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    opts: Arc<FetchOptions>,
}

#[cfg(feature = "https")]
fn tls_config() -> std::result::Result<rustls::ClientConfig, String> {
    // The ring provider is named here rather than installed process-wide, so this works
    // whatever other rustls users in the process chose.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("certificate verifier: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn redirect_policy(max: usize, allowed: Vec<String>) -> reqwest::redirect::Policy {
    let allowed: Vec<String> = allowed
        .iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error(format!("more than {max} redirects"));
        }
        let to = authority(attempt.url());
        let scheme_ok = matches!(attempt.url().scheme(), "http" | "https");
        let same = attempt
            .previous()
            .first()
            .is_some_and(|origin| authority(origin) == to);
        if scheme_ok && (same || allowed.contains(&to)) {
            attempt.follow()
        } else {
            attempt.error(format!(
                "redirect to {to} is not allowed (same host and port only, or \
                 FetchOptions::redirect_hosts)"
            ))
        }
    })
}

/// Every message in an error's source chain, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

impl Fetcher {
    /// A fetcher with its own HTTP client.
    ///
    /// # Errors
    /// [`Error::Fetch`] with [`FetchErrorKind::Setup`] when the client (or, with the `https`
    /// feature, its TLS configuration) cannot be built.
    pub fn new(opts: FetchOptions) -> Result<Self> {
        let setup = |reason: String| Error::Fetch {
            url: String::new(),
            kind: FetchErrorKind::Setup,
            reason,
        };
        let builder = reqwest::Client::builder();
        #[cfg(feature = "https")]
        let builder = builder.tls_backend_preconfigured(tls_config().map_err(setup)?);
        let client = builder
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .redirect(redirect_policy(
                opts.max_redirects,
                opts.redirect_hosts.clone(),
            ))
            .http1_max_headers(opts.max_headers)
            .user_agent(opts.user_agent.clone())
            .referer(false)
            .build()
            .map_err(|e| setup(chain(&e)))?;
        Ok(Self {
            client,
            opts: Arc::new(opts),
        })
    }

    /// The options in use.
    pub fn options(&self) -> &FetchOptions {
        &self.opts
    }

    /// Fetches `url` into `key`, conditionally when something is stored under `key` (even an
    /// expired entry), with the fetcher's [`FetchOptions::cache_control`].
    ///
    /// # Errors
    /// [`Error::Fetch`] (see [`FetchErrorKind`]) — the stored entry is left as it was; key
    /// errors; [`Error::TooLarge`] / [`Error::TtlNotAllowed`] and disk errors from storing.
    pub async fn fetch(&self, cache: &Cache, key: &Key, url: &str) -> Result<FetchOutcome> {
        self.fetch_with(cache, key, url, self.opts.cache_control)
            .await
    }

    /// [`Fetcher::fetch`] with this call's own [`CacheControl`].
    ///
    /// # Errors
    /// See [`Fetcher::fetch`].
    pub async fn fetch_with(
        &self,
        cache: &Cache,
        key: &Key,
        url: &str,
        cache_control: CacheControl,
    ) -> Result<FetchOutcome> {
        let url = parse_url(url)?;
        let ty = cache.data_type(key)?.clone();
        let timeout = self.opts.timeout;
        let work = self.fetch_inner(cache, key, &url, &ty, cache_control);
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Fetch {
                url: redact(&url),
                kind: FetchErrorKind::Timeout,
                reason: format!("no complete response within {timeout:?}"),
            }),
        }
    }

    async fn fetch_inner(
        &self,
        cache: &Cache,
        key: &Key,
        url: &Url,
        ty: &DataTypeSpec,
        mode: CacheControl,
    ) -> Result<FetchOutcome> {
        // `inspect` returns the entry even when expired and does not count a read.
        let sent = cache
            .inspect(key)?
            .entry
            .map(|e| self.validators_of(&e))
            .filter(|v| !v.is_empty());
        let first = self.exchange(url, sent.as_ref(), ty, mode).await?;
        let mut transfer = Transfer {
            status: first.status,
            body_bytes: first.body_bytes,
            requests: 1,
            conditional: sent.is_some(),
        };
        match first.answer {
            Answer::Full(body) => store(cache, key, body, transfer, fetched).await,
            Answer::NotModified {
                validators,
                storage,
            } => {
                // Read again: the entry may have changed or gone while the request was out.
                let current = cache.inspect(key)?.entry;
                if let (Some(_), Some(cur)) = (&sent, current)
                    && policy::not_modified_matches(
                        cur.meta.etag.as_deref(),
                        cur.meta.last_modified.as_deref(),
                        validators.etag.as_deref(),
                        validators.last_modified.as_deref(),
                    )
                {
                    let again = Body {
                        bytes: cur.value.clone(),
                        codec: cur.meta.codec,
                        validators: Validators {
                            etag: cur.meta.etag.clone(),
                            last_modified: cur.meta.last_modified.clone(),
                        },
                        storage,
                    };
                    return store(cache, key, again, transfer, revalidated).await;
                }
                tracing::debug!(
                    url = %redact(url),
                    key = %key,
                    "304 does not match a stored entry; fetching unconditionally"
                );
                let second = self.exchange(url, None, ty, mode).await?;
                transfer.status = second.status;
                transfer.body_bytes += second.body_bytes;
                transfer.requests += 1;
                match second.answer {
                    Answer::Full(body) => store(cache, key, body, transfer, fetched).await,
                    Answer::NotModified { .. } => Err(Error::Fetch {
                        url: redact(url),
                        kind: FetchErrorKind::Protocol,
                        reason: "the origin answered 304 to an unconditional request".into(),
                    }),
                }
            }
        }
    }

    /// The stored validators that are safe to send back (a value set through the library that
    /// could not be a header is left out).
    fn validators_of(&self, e: &Entry) -> Validators {
        let ok = |v: &Option<String>| {
            v.as_deref()
                .filter(|s| {
                    !s.is_empty()
                        && policy::check_header_value(s.as_bytes(), self.opts.max_header_bytes)
                            .is_ok()
                })
                .map(str::to_owned)
        };
        Validators {
            etag: ok(&e.meta.etag),
            last_modified: ok(&e.meta.last_modified),
        }
    }

    fn error(&self, url: &Url, kind: FetchErrorKind, reason: impl Into<String>) -> Error {
        Error::Fetch {
            url: redact(url),
            kind,
            reason: reason.into(),
        }
    }

    fn map_reqwest(&self, url: &Url, e: reqwest::Error) -> Error {
        let kind = if e.is_timeout() {
            FetchErrorKind::Timeout
        } else if e.is_redirect() {
            FetchErrorKind::Redirect
        } else if e.is_connect() {
            FetchErrorKind::Connect
        } else {
            FetchErrorKind::Protocol
        };
        // Without the URL: it may carry credentials or a query string.
        self.error(url, kind, chain(&e.without_url()))
    }
}

fn fetched(hit: Hit, transfer: Transfer) -> FetchOutcome {
    FetchOutcome::Fetched { hit, transfer }
}

fn revalidated(hit: Hit, transfer: Transfer) -> FetchOutcome {
    FetchOutcome::Revalidated { hit, transfer }
}

/// Stores a body (or, per its `storage`, returns it without storing); `outcome` says what the
/// stored hit was.
async fn store(
    cache: &Cache,
    key: &Key,
    body: Body,
    transfer: Transfer,
    outcome: fn(Hit, Transfer) -> FetchOutcome,
) -> Result<FetchOutcome> {
    let ttl = match body.storage {
        Storage::Skip(reason) => {
            return Ok(FetchOutcome::NotStored {
                body: body.bytes,
                codec: body.codec,
                reason,
                transfer,
            });
        }
        Storage::Store(ttl) => ttl,
    };
    let mut value = Value::bytes(body.bytes).codec(body.codec);
    if let Some(e) = body.validators.etag {
        value = value.etag(e);
    }
    if let Some(lm) = body.validators.last_modified {
        value = value.last_modified(lm);
    }
    if let Some(t) = ttl {
        value = value.ttl(t);
    }
    let entry = cache.set(key, value).await?;
    let hit = Hit {
        now: entry.meta.stored_at,
        deadline: entry.meta.expires_at,
        source: Source::Loader,
        entry,
    };
    Ok(outcome(hit, transfer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetcher_builds_without_a_process_wide_tls_provider() {
        let f = Fetcher::new(FetchOptions::default()).unwrap();
        assert_eq!(f.options().max_redirects, 5);
    }
}
