//! `cache.sources`: the feeds `serve` keeps fresh with conditional requests, validated.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::position::locate;
use super::{ConfigError, RawSource, parse_duration};
use crate::datatype::Registry;
use crate::key::Key;

/// Whether a feed's `Cache-Control` may change how long its body is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CacheControl {
    /// The data type's TTL applies; the feed's `Cache-Control` is not read.
    Ignore,
    /// `max-age` / `s-maxage` (less `Age`) may shorten the data type's TTL, never lengthen
    /// it; `no-store` means the body is returned but not stored; `no-cache` or a lifetime of
    /// zero means it is already stale and is not stored either.
    #[default]
    MayShorten,
}

impl CacheControl {
    /// Lowercase name as written in the configuration.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            CacheControl::Ignore => "ignore",
            CacheControl::MayShorten => "may_shorten",
        }
    }
}

/// A feed that `serve` keeps fresh: fetched on start, then every `refresh`, with conditional
/// requests.
#[derive(Clone, PartialEq)]
pub struct SourceConfig {
    /// The feed's `http://` or `https://` URL.
    pub url: String,
    /// The key its body is stored under (resolves to a data type).
    pub key: Key,
    /// Time between fetches (at least 1 s).
    pub refresh: Duration,
    /// What the feed's `Cache-Control` may do to the TTL.
    pub cache_control: CacheControl,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &crate::url::redact_url(&self.url))
            .field("key", &self.key.as_str())
            .field("refresh", &self.refresh)
            .field("cache_control", &self.cache_control)
            .finish()
    }
}

/// Validates `cache.sources`; `err(field, reason)` builds the error for a field path.
pub(super) fn sources(
    raw: Vec<RawSource>,
    types: &Registry,
    err: impl Fn(usize, &str, String) -> ConfigError,
) -> Result<Vec<SourceConfig>, ConfigError> {
    let mut out: Vec<SourceConfig> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        crate::url::check_url(&s.url).map_err(|reason| err(i, "url", reason))?;
        let key = Key::parse(&s.key).map_err(|e| err(i, "key", e.to_string()))?;
        types
            .resolve(&key)
            .map_err(|e| err(i, "key", e.to_string()))?;
        if let Some(j) = out.iter().position(|o| o.key == key) {
            return Err(err(
                i,
                "key",
                format!("{key} is already fed by cache.sources[{j}]"),
            ));
        }
        let refresh = parse_duration(&s.refresh).map_err(|reason| err(i, "refresh", reason))?;
        if refresh < Duration::from_secs(1) {
            return Err(err(
                i,
                "refresh",
                format!("{:?} is shorter than 1s", s.refresh),
            ));
        }
        out.push(SourceConfig {
            url: s.url,
            key,
            refresh,
            cache_control: s.cache_control.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Best-effort line of `field` in item `index` of the `cache.sources` list (1-based), or of the
/// list itself.
pub(super) fn locate_source(text: &str, index: usize, field: &str) -> Option<u64> {
    let start = locate(text, "cache.sources")?;
    let lines: Vec<&str> = text.lines().collect();
    let base = {
        let l = lines.get(usize::try_from(start).ok()?.checked_sub(1)?)?;
        l.len() - l.trim_start().len()
    };
    let mut item: Option<usize> = None;
    for (i, line) in lines.iter().enumerate().skip(usize::try_from(start).ok()?) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent <= base && !trimmed.starts_with('-') {
            break;
        }
        let mut rest = trimmed;
        if let Some(r) = trimmed.strip_prefix('-') {
            item = Some(item.map_or(0, |n| n + 1));
            rest = r.trim_start();
        }
        if item == Some(index) {
            let name = rest.split(':').next().unwrap_or("").trim();
            if name == field {
                return Some(i as u64 + 1);
            }
        } else if item.is_some_and(|n| n > index) {
            break;
        }
    }
    Some(start)
}
