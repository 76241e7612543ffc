//! Warm-up manifests (`cache.warm`, and files given to `freshcache warm`): which keys to make
//! fresh and from where, validated like the rest of the configuration.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::key::Key;

/// One manifest line as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWarmItem {
    /// The key to make fresh.
    pub key: String,
    /// Fetch it from this URL (conditional request when a copy exists).
    pub url: Option<String>,
    /// Or load it from this file.
    pub file: Option<PathBuf>,
    /// Readiness of `serve` waits for critical items to be fresh.
    #[serde(default)]
    pub critical: bool,
}

/// Where a warmed value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarmSource {
    /// A URL, fetched with validators.
    Url(String),
    /// A file's bytes (the codec follows the extension: `.json`, `.txt`/`.html`, else bytes).
    File(PathBuf),
    /// Nothing to load: the item is only checked (its producer writes it).
    CheckOnly,
}

/// One validated item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmItem {
    /// The key the item was listed under.
    pub key: Key,
    /// Its source.
    pub source: WarmSource,
    /// Whether readiness waits for it.
    pub critical: bool,
}

/// Validates raw items; `field(i, name)` names a field of item `i` in errors.
///
/// # Errors
/// [`ConfigError`] for a bad key, a bad URL, or both `url` and `file` given.
pub fn validate(
    raw: Vec<RawWarmItem>,
    file: Option<&Path>,
    base: &str,
) -> std::result::Result<Vec<WarmItem>, ConfigError> {
    let err = |i: usize, name: &str, reason: String| ConfigError {
        file: file.map(Path::to_path_buf),
        line: None,
        field: format!("{base}[{i}].{name}"),
        reason,
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let key = Key::parse(&r.key).map_err(|e| err(i, "key", e.to_string()))?;
            let source = match (r.url, r.file) {
                (Some(_), Some(_)) => {
                    return Err(err(i, "url", "give either url or file, not both".into()));
                }
                (Some(url), None) => {
                    crate::url::check_url(&url).map_err(|reason| err(i, "url", reason))?;
                    WarmSource::Url(url)
                }
                (None, Some(path)) => WarmSource::File(path),
                (None, None) => WarmSource::CheckOnly,
            };
            Ok(WarmItem {
                key,
                source,
                critical: r.critical,
            })
        })
        .collect()
}

/// Reads a manifest: a YAML (or JSON) list of `{key, url | file, critical}`.
///
/// # Errors
/// [`ConfigError`] naming the file and the problem.
pub fn load_manifest(path: &Path) -> std::result::Result<Vec<WarmItem>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
    let raw: Vec<RawWarmItem> = serde_saphyr::from_str(&text).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        line: e.location().map(|l| l.line()),
        field: "(manifest)".into(),
        reason: e.to_string().lines().next().unwrap_or_default().to_owned(),
    })?;
    validate(raw, Some(path), "items")
}
