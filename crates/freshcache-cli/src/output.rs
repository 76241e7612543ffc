//! Human and JSON renderings of command results.

use std::fmt::Write as _;

use freshcache::entry::Entry;
use freshcache::stats::StatsReport;
use freshcache::{Codec, Config, Hit, Key};
use serde_json::json;

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

/// Renders the stats report as two plain tables.
pub(crate) fn render_stats(r: &StatsReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "cache dir: {}   (at {})", r.cache_dir, r.generated_at);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<8} {:<9} {:>9} {:>11} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "TIER", "STATE", "ENTRIES", "BYTES", "HITS", "MISSES", "HIT%", "EXPIRED", "EVICTED"
    );
    for t in &r.tiers {
        let _ = writeln!(
            s,
            "{:<8} {:<9} {:>9} {:>11} {:>10} {:>10} {:>9} {:>9} {:>9}",
            t.tier,
            t.state,
            t.entries,
            bytes_h(t.bytes),
            t.hits,
            t.misses,
            opt_ratio(t.hit_ratio),
            t.expirations,
            t.evictions
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<16} {:>8} {:>9} {:>11} {:>10} {:>10} {:>9} {:>9} {:>8}",
        "DATA TYPE", "TTL", "ENTRIES", "BYTES", "HITS", "MISSES", "HIT%", "EXPIRED", "OLDEST"
    );
    for t in &r.data_types {
        let _ = writeln!(
            s,
            "{:<16} {:>8} {:>9} {:>11} {:>10} {:>10} {:>9} {:>9} {:>8}",
            t.data_type,
            age_h(Some(t.ttl_seconds)),
            t.entries,
            bytes_h(t.bytes),
            t.hits,
            t.misses,
            opt_ratio(t.hit_ratio),
            t.expirations + t.expired_on_disk,
            age_h(t.oldest_entry_age_seconds)
        );
    }
    if r.corrupt_entries > 0 {
        let _ = writeln!(s, "\ncorrupt entries removed: {}", r.corrupt_entries);
    }
    s
}

pub(crate) fn stats(r: &StatsReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    } else {
        print!("{}", render_stats(r));
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
                "redis": c.redis_url.is_some(),
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
        if c.redis_url.is_some() {
            " + redis (configured)"
        } else {
            ""
        }
    );
    for t in c.data_types.types() {
        println!(
            "  {:<16} prefix {:<16} ttl {:<8} max {}",
            t.name,
            format!("{:?}", t.prefix),
            humantime::format_duration(t.ttl).to_string(),
            bytes_h(t.max_value_size)
        );
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
