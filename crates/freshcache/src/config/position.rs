//! Source positions: the line of a field in the file, and YAML errors turned into
//! configuration errors that name the file, line, field and reason.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::ConfigError;

/// Best-effort line of a dotted field path in the YAML text (1-based).
pub(super) fn locate(text: &str, path: &str) -> Option<u64> {
    let mut want = path.split('.').peekable();
    let mut min_indent = 0usize;
    let mut current = want.next()?;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let name = trimmed
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        if indent >= min_indent && name == current && trimmed.contains(':') {
            match want.next() {
                Some(next) => {
                    current = next;
                    min_indent = indent + 1;
                }
                None => return Some(i as u64 + 1),
            }
        }
    }
    None
}

pub(super) fn deser_error(file: Option<&Path>, text: &str, e: &serde_saphyr::Error) -> ConfigError {
    let line = e.location().map(|l| l.line()).filter(|&l| l > 0);
    let field = line
        .and_then(|l| text.lines().nth(usize::try_from(l).ok()?.checked_sub(1)?))
        .and_then(|l| l.trim_start().split(':').next())
        .map(|s| s.trim().trim_start_matches("- ").to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(document)".into());
    // The library's message carries its own "error: line L column C:" prefix and a snippet;
    // the location is reported separately, so keep only the reason.
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default();
    let reason = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .split_once(": ")
        .filter(|(loc, _)| loc.starts_with("line "))
        .map_or(first, |(_, rest)| rest)
        .to_owned();
    ConfigError {
        file: file.map(Path::to_path_buf),
        line,
        field,
        reason,
    }
}

pub(super) fn parse_yaml<T: DeserializeOwned>(
    file: Option<&Path>,
    text: &str,
) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| deser_error(file, text, &e))
}
