//! Batch items as JSON, the one format of the HTTP batch route and `set --jsonl`:
//! `{"key": "odds:g1:1", "value": 1.91, "ttl": "30s", "as_of": 1700000000}`.
//!
//! A string `value` is stored as text; any other JSON value (number, object, array, boolean,
//! null) as JSON. `ttl` (a duration) and `as_of` (Unix seconds) are optional.

use freshcache::{Codec, Key, Timestamp, Value};
use serde::Deserialize;

/// One item as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Item {
    key: String,
    value: serde_json::Value,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    as_of: Option<u64>,
}

impl Item {
    /// The key and value to store, or why the item is unusable.
    pub(crate) fn into_entry(self) -> Result<(Key, Value), String> {
        let key = Key::parse(&self.key).map_err(|e| e.to_string())?;
        let mut value = match self.value {
            serde_json::Value::String(s) => Value::from(s),
            other => Value::bytes(other.to_string().into_bytes()).codec(Codec::Json),
        };
        if let Some(ttl) = &self.ttl {
            value = value.ttl(freshcache::config::parse_duration(ttl)?);
        }
        if let Some(secs) = self.as_of {
            value = value.as_of(Timestamp::from_secs(secs));
        }
        Ok((key, value))
    }
}

/// The items of newline-delimited JSON text (blank lines skipped), each with its line number,
/// or every line that is not an item.
pub(crate) fn parse_lines(text: &str) -> Result<Vec<(Key, Value)>, Vec<String>> {
    let mut items = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Item>(line)
            .map_err(|e| e.to_string())
            .and_then(Item::into_entry);
        match parsed {
            Ok(item) => items.push(item),
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    if bad.is_empty() { Ok(items) } else { Err(bad) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_text_and_other_json_is_json_and_bad_lines_are_named() {
        let ok = parse_lines(
            "{\"key\": \"odds:g1:1\", \"value\": \"1.91\"}\n\n\
             {\"key\": \"odds:g2:1\", \"value\": {\"home\": 1.5}, \"ttl\": \"30s\"}\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].1.codec, Codec::Text);
        assert_eq!(&ok[0].1.bytes[..], b"1.91");
        assert_eq!(ok[1].1.codec, Codec::Json);
        assert_eq!(&ok[1].1.bytes[..], br#"{"home":1.5}"#);
        assert_eq!(ok[1].1.ttl, Some(std::time::Duration::from_secs(30)));
        let bad = parse_lines(
            "{\"key\": \"odds:g1:1\"}\nnot json\n{\"key\": \"bad key\", \"value\": 1}\n",
        )
        .unwrap_err();
        assert_eq!(bad.len(), 3);
        assert!(
            bad[0].starts_with("line 1:") && bad[2].starts_with("line 3:"),
            "{bad:?}"
        );
    }
}
