//! Human and JSON renderings of command results.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, Table, presets};
use freshcache::entry::Entry;
use freshcache::fetch::FetchOutcome;
use freshcache::freshness::AuditRow;
use freshcache::freshness::FreshnessReport;
use freshcache::maintenance::VerifyReport;
use freshcache::maintenance::{CleanupReport, Phase};
use freshcache::stats::StatsReport;
use freshcache::warm::{WarmReport, WarmResult, WarmStatus};
use freshcache::{Codec, Config, Hit, Inspection, Key};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Left-aligned column (text).
mod progress;
mod reports;

pub(crate) use progress::*;
pub(crate) use reports::*;

const L: CellAlignment = CellAlignment::Left;
/// Right-aligned column (numbers, durations).
const R: CellAlignment = CellAlignment::Right;

/// A borderless table: a header line, then one line per row, columns one space apart and
/// aligned as `columns` says; trailing spaces trimmed, ending in a newline.
fn table(columns: &[(&str, CellAlignment)], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_header(columns.iter().map(|(name, _)| *name).collect::<Vec<_>>())
        .add_rows(rows);
    for (i, (_, align)) in columns.iter().enumerate() {
        if let Some(c) = t.column_mut(i) {
            c.set_padding((0, 1)).set_cell_alignment(*align);
        }
    }
    let mut out = t.trim_fmt();
    out.push('\n');
    out
}

fn value_json(codec: Codec, bytes: &[u8]) -> serde_json::Value {
    if codec == Codec::Json
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes)
    {
        return json!({"value": v});
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => json!({"value_text": s}),
        Err(_) => {
            let mut hex = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                let _ = write!(hex, "{b:02x}");
            }
            json!({"value_hex": hex})
        }
    }
}

fn meta_json(key: &Key, entry: &Entry) -> serde_json::Value {
    let m = &entry.meta;
    json!({
        "key": key.as_str(),
        "data_type": &*m.data_type,
        "size": entry.size(),
        "codec": m.codec.name(),
        "stored_at": m.stored_at.to_string(),
        "expires_at": m.expires_at.to_string(),
        "as_of": m.as_of.map(|t| t.to_string()),
        "etag": m.etag,
        "last_modified": m.last_modified,
        "checksum": format!("{:016x}", m.checksum),
    })
}

pub(crate) fn hit_json(key: &Key, hit: &Hit) {
    let mut v = meta_json(key, &hit.entry);
    v["found"] = json!(true);
    v["tier"] = json!(hit.source.name());
    v["age_seconds"] = json!(hit.age().as_secs_f64());
    v["remaining_seconds"] = json!(hit.remaining().as_secs_f64());
    if let (Some(obj), serde_json::Value::Object(val)) =
        (v.as_object_mut(), value_json(hit.meta().codec, hit.value()))
    {
        obj.extend(val);
    }
    println!("{v}");
}

pub(crate) fn stored_many(n: usize, json: bool) {
    if json {
        println!("{}", json!({"stored": n}));
    } else {
        println!("stored {n} entries");
    }
}

pub(crate) fn stored(key: &Key, entry: &Entry, json: bool) {
    if json {
        println!("{}", meta_json(key, entry));
    } else {
        println!(
            "stored {key} ({} bytes, {}, expires {})",
            entry.size(),
            entry.meta.data_type,
            entry.meta.expires_at
        );
    }
}

pub(crate) fn fetched(key: &Key, url: &str, o: &FetchOutcome, json: bool) {
    let t = o.transfer();
    if json {
        let mut v = match o.hit() {
            Some(hit) => meta_json(key, &hit.entry),
            None => json!({"key": key.as_str()}),
        };
        v["url"] = json!(freshcache::fetch::redact_url(url));
        v["outcome"] = json!(o.name());
        v["stored"] = json!(o.is_stored());
        v["status"] = json!(t.status);
        v["body_bytes"] = json!(t.body_bytes);
        v["requests"] = json!(t.requests);
        v["conditional"] = json!(t.conditional);
        if let FetchOutcome::NotStored { reason, .. } = o {
            v["reason"] = json!(reason.name());
        }
        println!("{v}");
        return;
    }
    match o.hit() {
        Some(hit) => println!(
            "{} {key} (HTTP {}, {} body bytes, {} stored, expires {})",
            o.name(),
            t.status,
            t.body_bytes,
            hit.entry.size(),
            hit.meta().expires_at
        ),
        None => println!(
            "{} {key} (HTTP {}, {} body bytes): the response may not be stored",
            o.name(),
            t.status,
            t.body_bytes
        ),
    }
}

pub(crate) fn deleted(key: &Key, existed: bool, json: bool) {
    if json {
        println!("{}", json!({"key": key.as_str(), "deleted": existed}));
    } else if existed {
        println!("deleted {key}");
    } else {
        println!("not found: {key}");
    }
}

pub(crate) fn invalidated(removed: u64, json: bool) {
    if json {
        println!("{}", json!({"removed": removed}));
    } else {
        println!("removed {removed} entries");
    }
}

pub(crate) fn tag_invalidated(tag: &str, at: freshcache::Timestamp, json: bool) {
    if json {
        println!("{}", json!({"tag": tag, "invalidated_at": at.to_string()}));
    } else {
        println!("tag {tag} invalidated at {at}");
    }
}

fn opt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn bytes_h(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn age_h(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

pub(crate) fn config_summary(c: &Config, json: bool) {
    let source = c.source.as_ref().map_or_else(
        || "(built-in defaults)".to_owned(),
        |p| p.display().to_string(),
    );
    let types: Vec<_> = c
        .data_types
        .types()
        .iter()
        .map(|t| {
            json!({
                "name": &*t.name,
                "prefix": t.prefix,
                "ttl_seconds": t.ttl.as_secs_f64(),
                "max_value_size": t.max_value_size,
                "placement": format!("{:?}", t.placement),
                "compress_above": t.compress_above,
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            json!({
                "valid": true,
                "source": source,
                "cache_dir": c.cache_dir.display().to_string(),
                "metadata_path": c.metadata_path.display().to_string(),
                "redis": c.redis_url.as_ref().map(|u| u.redacted()),
                "listen": c.server.listen.to_string(),
                "data_types": types,
            })
        );
        return;
    }
    println!("config OK: {source}");
    println!("  cache_dir: {}", c.cache_dir.display());
    println!("  index:     {}", c.metadata_path.display());
    println!(
        "  tiers:     memory ({}) + disk{}",
        bytes_h(c.memory.max_bytes),
        c.redis_url
            .as_ref()
            .map(|u| format!(" + redis ({u})"))
            .unwrap_or_default()
    );
    let types = table(
        &[("DATA TYPE", L), ("PREFIX", L), ("TTL", L), ("MAX SIZE", R)],
        c.data_types.types().iter().map(|t| {
            vec![
                t.name.to_string(),
                format!("{:?}", t.prefix),
                humantime::format_duration(t.ttl).to_string(),
                bytes_h(t.max_value_size),
            ]
        }),
    );
    for line in types.lines() {
        println!("  {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_and_age_formatting() {
        assert_eq!(bytes_h(512), "512 B");
        assert_eq!(bytes_h(64 * 1024), "64.0 KiB");
        assert_eq!(age_h(Some(60.0)), "60s");
        assert_eq!(age_h(Some(3600.0)), "60m");
        assert_eq!(age_h(Some(86400.0)), "24.0h");
        assert_eq!(opt_ratio(Some(0.5)), "50.0%");
        assert_eq!(opt_ratio(None), "-");
    }

    #[test]
    fn tables_align_text_left_and_numbers_right_without_borders() {
        let t = table(
            &[("KEY", L), ("HITS", R)],
            [
                vec!["odds:g1:1".to_owned(), "7".to_owned()],
                vec!["x".to_owned(), "1234".to_owned()],
            ],
        );
        assert_eq!(t, "KEY       HITS\nodds:g1:1    7\nx         1234\n");
    }

    #[test]
    fn binary_values_are_shown_as_hex_and_json_values_inline() {
        assert_eq!(
            value_json(Codec::Bytes, &[0xff, 0x00]),
            json!({"value_hex": "ff00"})
        );
        assert_eq!(
            value_json(Codec::Json, b"{\"a\":1}"),
            json!({"value": {"a": 1}})
        );
        assert_eq!(value_json(Codec::Text, b"hi"), json!({"value_text": "hi"}));
    }
}
