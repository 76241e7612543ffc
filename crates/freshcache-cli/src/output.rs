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
    s.push_str(&table(
        &[
            ("TIER", L),
            ("STATE", L),
            ("ENTRIES", R),
            ("BYTES", R),
            ("HITS", R),
            ("MISSES", R),
            ("HIT%", R),
            ("EXPIRED", R),
            ("EVICTED", R),
        ],
        r.tiers.iter().map(|t| {
            vec![
                t.tier.to_string(),
                t.state.to_string(),
                t.entries.to_string(),
                bytes_h(t.bytes),
                t.hits.to_string(),
                t.misses.to_string(),
                opt_ratio(t.hit_ratio),
                t.expirations.to_string(),
                t.evictions.to_string(),
            ]
        }),
    ));
    let _ = writeln!(s);
    s.push_str(&table(
        &[
            ("DATA TYPE", L),
            ("TTL", R),
            ("ENTRIES", R),
            ("BYTES", R),
            ("HITS", R),
            ("MISSES", R),
            ("HIT%", R),
            ("EXPIRED", R),
            ("OLDEST", R),
        ],
        r.data_types.iter().map(|t| {
            vec![
                t.data_type.to_string(),
                age_h(Some(t.ttl_seconds)),
                t.entries.to_string(),
                bytes_h(t.bytes),
                t.hits.to_string(),
                t.misses.to_string(),
                opt_ratio(t.hit_ratio),
                (t.expirations + t.expired_on_disk).to_string(),
                age_h(t.oldest_entry_age_seconds),
            ]
        }),
    ));
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

/// How a long command reports progress on stderr.
pub(crate) enum Progress {
    /// A bar redrawn in place: stderr is a terminal and the result is not `--json`.
    Bar(ProgressBar),
    /// One plain line per step, for logs and pipes.
    Lines,
    /// Nothing.
    Off,
}

impl Progress {
    /// A bar of `len` steps on a terminal without `--json`; otherwise plain lines when
    /// `lines` is true, else nothing.
    pub(crate) fn new(len: u64, json: bool, lines: bool) -> Self {
        use std::io::IsTerminal as _;
        if std::io::stderr().is_terminal() && !json {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template("[{pos}/{len}] {wide_bar} {msg}") {
                bar.set_style(style);
            }
            Progress::Bar(bar)
        } else if lines {
            Progress::Lines
        } else {
            Progress::Off
        }
    }

    /// Removes the bar, if one was drawn.
    pub(crate) fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Cleanup's phases: the bar's position and message, or one line per phase.
pub(crate) fn progress(p: &Progress, phase: Phase) {
    let (step, text) = match phase {
        Phase::Expired => (1, "removing expired entries…"),
        Phase::SizeLimit => (2, "enforcing the size limit…"),
        Phase::Repair => (3, "repairing rows and files…"),
        _ => (3, "done"),
    };
    match p {
        Progress::Bar(bar) => {
            bar.set_position(step - 1);
            bar.set_message(text);
        }
        Progress::Lines if text == "done" => eprintln!("{text}"),
        Progress::Lines => eprintln!("[{step}/3] {text}"),
        Progress::Off => {}
    }
}

pub(crate) fn cleanup(r: &CleanupReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    println!("cleanup{}:", if r.dry_run { " (dry run)" } else { "" });
    println!(
        "  expired:  {verb} {} entries ({})",
        r.expired.entries,
        bytes_h(r.expired.bytes)
    );
    println!(
        "  evicted:  {verb} {} entries ({}) for the {} limit",
        r.evicted.entries,
        bytes_h(r.evicted.bytes),
        bytes_h(r.size_limit)
    );
    println!(
        "  repaired: {} rows without blob, {} orphan blobs ({}), {} temp files{}",
        r.repaired.rows_without_blob,
        r.repaired.orphan_blobs,
        bytes_h(r.repaired.orphan_bytes),
        r.repaired.temp_files,
        if r.repaired.totals_rebuilt {
            ", totals rebuilt"
        } else {
            ""
        }
    );
    println!(
        "  freed {} in {} ms; {} stored now",
        bytes_h(r.bytes_freed),
        r.duration_ms,
        bytes_h(r.bytes_after)
    );
}

pub(crate) fn doctor(r: &VerifyReport, repaired: bool, json: bool) {
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["clean"] = json!(r.is_clean());
        v["repaired"] = json!(repaired);
        println!("{v}");
        return;
    }
    println!("index integrity: {}", r.index_integrity);
    println!("entries checked: {}", r.rows);
    println!(
        "corrupt entries: {}{}",
        r.corrupt_entries,
        if r.corrupt_keys.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.corrupt_keys.join(", "))
        }
    );
    println!("rows without blob: {}", r.repair.rows_without_blob);
    println!(
        "orphan blobs: {} ({})",
        r.repair.orphan_blobs,
        bytes_h(r.repair.orphan_bytes)
    );
    println!("leftover temp files: {}", r.repair.temp_files);
    println!(
        "totals drift: {}",
        if r.repair.totals_rebuilt { "yes" } else { "no" }
    );
    if r.is_clean() {
        println!("clean");
    } else if repaired {
        println!("repaired");
    } else {
        println!("problems found; run `freshcache doctor --repair` to fix");
    }
}

pub(crate) fn inspect(key: &Key, ins: &Inspection, json: bool) {
    let Some(entry) = &ins.entry else {
        if json {
            println!("{}", json!({"key": key.as_str(), "found": false}));
        } else {
            eprintln!("not cached: {key}");
        }
        return;
    };
    let m = &entry.meta;
    let mut v = meta_json(key, entry);
    v["found"] = json!(true);
    v["fresh"] = json!(ins.fresh);
    v["in_memory"] = json!(ins.in_memory);
    v["on_disk"] = json!(ins.disk.is_some());
    v["age_seconds"] = json!(m.age(ins.now).as_secs_f64());
    v["remaining_seconds"] = json!(m.remaining(ins.now).as_secs_f64());
    if let Some(d) = &ins.disk {
        v["disk"] = json!({
            "stored_size": d.stored_size,
            "location": d.file.as_deref().map_or_else(|| "inline".to_owned(), |f| format!("blobs/{f}")),
            "last_access": d.access_at.to_string(),
            "access_count": d.access_count,
        });
    }
    if json {
        println!("{v}");
        return;
    }
    println!("key:        {key}");
    println!("data type:  {}", m.data_type);
    println!(
        "status:     {}",
        if ins.fresh { "fresh" } else { "EXPIRED" }
    );
    let tiers: Vec<&str> = [
        (ins.in_memory, "memory (this process)"),
        (ins.disk.is_some(), "disk"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    println!("tiers:      {}", tiers.join(", "));
    println!("stored at:  {}", m.stored_at);
    if let Some(a) = m.as_of {
        println!("as of:      {a}");
    }
    println!("expires at: {}", m.expires_at);
    println!("age:        {}", age_h(Some(m.age(ins.now).as_secs_f64())));
    println!(
        "remaining:  {}",
        age_h(Some(m.remaining(ins.now).as_secs_f64()))
    );
    println!("size:       {} ({})", bytes_h(entry.size()), m.codec.name());
    if let Some(d) = &ins.disk {
        println!(
            "on disk:    {} as {}, {} reads, last {}",
            bytes_h(d.stored_size),
            d.file
                .as_deref()
                .map_or_else(|| "inline row".to_owned(), |f| format!("blobs/{f}")),
            d.access_count,
            d.access_at
        );
    }
    println!("checksum:   {:016x}", m.checksum);
    if let Some(e) = &m.etag {
        println!("etag:       {e}");
    }
    if let Some(lm) = &m.last_modified {
        println!("last-modified: {lm}");
    }
}

pub(crate) fn freshness(r: &FreshnessReport, json: bool) {
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["all_fresh"] = json!(r.all_fresh());
        println!("{v}");
        return;
    }
    println!("run {} at {}", r.run_id, r.checked_at);
    print!(
        "{}",
        table(
            &[("KEY", L), ("VERDICT", L), ("AGE", R), ("TTL", R)],
            r.signals.iter().map(|s| {
                vec![
                    s.key.to_string(),
                    s.verdict.name().to_owned(),
                    age_h(s.age.map(|a| a.as_secs_f64())),
                    age_h(Some(s.ttl.as_secs_f64())),
                ]
            }),
        )
    );
    let bad = r.violations().count();
    if bad == 0 {
        println!("all {} signals fresh", r.signals.len());
    } else {
        println!("{bad} of {} signals stale or missing", r.signals.len());
    }
}

pub(crate) fn audit(run_id: &str, rows: &[AuditRow], json: bool) {
    if json {
        println!("{}", json!({"run_id": run_id, "signals": rows}));
        return;
    }
    if rows.is_empty() {
        eprintln!("no audit rows for run {run_id}");
        return;
    }
    print!(
        "{}",
        table(
            &[
                ("CHECKED AT", L),
                ("KEY", L),
                ("VERDICT", L),
                ("AGE", R),
                ("TTL", R),
                ("CHECKSUM", L),
            ],
            rows.iter().map(|r| {
                vec![
                    r.checked_at.to_string(),
                    r.key.to_string(),
                    r.verdict.to_string(),
                    age_h(r.age_ms.map(|a| a as f64 / 1000.0)),
                    age_h(Some(r.ttl_ms as f64 / 1000.0)),
                    r.checksum.as_deref().unwrap_or("-").to_owned(),
                ]
            }),
        )
    );
}

/// One warmed item: the bar advances (failures are printed above it), or one line per item.
pub(crate) fn warm_progress(p: &Progress, done: usize, total: usize, r: &WarmResult) {
    let status = match r.status {
        WarmStatus::Fresh => "fresh",
        WarmStatus::Loaded => "loaded",
        _ => "FAILED",
    };
    let line = match &r.reason {
        Some(why) => format!("[{done}/{total}] {} {status}: {why}", r.key),
        None => format!("[{done}/{total}] {} {status}", r.key),
    };
    match p {
        Progress::Bar(bar) => {
            if r.status == WarmStatus::Failed {
                bar.println(line);
            }
            bar.set_position(done as u64);
            bar.set_message(format!("{} {status}", r.key));
        }
        Progress::Lines => eprintln!("{line}"),
        Progress::Off => {}
    }
}

pub(crate) fn warm_summary(r: &WarmReport, json: bool) {
    let (fresh, loaded, failed) = (
        r.count(WarmStatus::Fresh),
        r.count(WarmStatus::Loaded),
        r.count(WarmStatus::Failed),
    );
    if json {
        println!(
            "{}",
            json!({"fresh": fresh, "loaded": loaded, "failed": failed, "items": r.items})
        );
    } else {
        println!(
            "warmed {} keys: {fresh} already fresh, {loaded} loaded, {failed} failed",
            r.items.len()
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
