//! Reports: stats, cleanup, doctor, inspect, the freshness guard, the audit and warm-ups, as
//! tables on a terminal and JSON with `--json`.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    v["verdict"] = json!(if ins.fresh { "fresh" } else { "stale" });
    v["stale_since"] = json!(ins.stale_since.map(|t| t.to_string()));
    v["inputs"] = json!(ins.inputs);
    v["tags"] = json!(m.tags());
    v["dependents"] = json!(ins.dependents);
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
    match ins.stale_since {
        _ if ins.fresh => println!("status:     fresh"),
        Some(t) => println!("status:     STALE since {t}"),
        None => println!("status:     STALE"),
    }
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
    inspect_lineage(ins, m);
}

/// `inspect`'s tags, inputs and dependents, as text.
fn inspect_lineage(ins: &Inspection, m: &freshcache::Meta) {
    if !m.tags().is_empty() {
        println!("tags:       {}", m.tags().join(", "));
    }
    for i in &ins.inputs {
        println!(
            "input:      {} {} (age {}){}",
            i.key,
            i.verdict,
            age_h(i.age.map(|a| a.as_secs_f64())),
            i.problem
                .as_deref()
                .map_or_else(String::new, |p| format!(": {p}"))
        );
    }
    if !ins.dependents.is_empty() {
        println!("dependents: {}", ins.dependents.join(", "));
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
            r.signals.iter().flat_map(|s| {
                let signal = vec![
                    s.key.to_string(),
                    s.verdict.name().to_owned(),
                    age_h(s.age.map(|a| a.as_secs_f64())),
                    age_h(Some(s.ttl.as_secs_f64())),
                ];
                std::iter::once(signal).chain(input_rows(&s.inputs, 4))
            }),
        )
    );
    for s in r.signals.iter().filter(|s| s.reason.is_some()) {
        println!(
            "{} {}: {}",
            s.key,
            s.verdict,
            s.reason.as_deref().unwrap_or("")
        );
    }
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
            rows.iter().flat_map(|r| {
                let signal = vec![
                    r.checked_at.to_string(),
                    r.key.to_string(),
                    r.verdict.to_string(),
                    age_h(r.age_ms.map(|a| a as f64 / 1000.0)),
                    age_h(Some(r.ttl_ms as f64 / 1000.0)),
                    r.checksum.as_deref().unwrap_or("-").to_owned(),
                ];
                let inputs = input_rows(&r.inputs, 6).map(|mut row| {
                    // Under the signal: no time of its own; its checksum where the signal's is.
                    row.rotate_right(1);
                    row.swap(4, 5);
                    row
                });
                std::iter::once(signal).chain(inputs)
            }),
        )
    );
    for r in rows.iter().filter(|r| r.reason.is_some()) {
        println!(
            "{} {}: {}",
            r.key,
            r.verdict,
            r.reason.as_deref().unwrap_or("")
        );
    }
}

/// A derived signal's inputs as rows of `width` cells under it: `└ key`, verdict, age, the
/// problem (or `-`), then empty cells.
fn input_rows(
    inputs: &[freshcache::freshness::InputCheck],
    width: usize,
) -> impl Iterator<Item = Vec<String>> + '_ {
    inputs.iter().map(move |i| {
        let mut row = vec![
            format!("└ {}", i.key),
            i.verdict.name().to_owned(),
            age_h(i.age.map(|a| a.as_secs_f64())),
            i.problem.clone().unwrap_or_else(|| "-".to_owned()),
        ];
        row.resize(width, String::new());
        row
    })
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
