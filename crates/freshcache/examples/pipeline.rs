//! A prediction pipeline on freshcache, end to end, in about fifteen seconds:
//!
//! - live odds for game g42 update every second (60 s TTL in production; 3 s per write here so
//!   the demo moves);
//! - a local news feed is fetched every 2 s with ETags: unchanged articles cost a 304 and no
//!   body; the article changes every 5 s;
//! - LLM features for a cluster are derived from the article and the game's opening line
//!   (`Value::derived_from`); the opening line is re-published every second with the same
//!   price, which changes nothing, but a corrected article cascades: the features stop being
//!   fresh at once;
//! - every second an inference run asks the freshness guard for its signals — and is refused
//!   while the odds producer is stalled (seconds 6–9), naming the stale key, and after a
//!   corrected article until the features are recomputed, naming the changed input;
//! - at the end, the audit trails prove what one run used and why another was refused.
//!
//! Run: `cargo run -p freshcache --example pipeline` (`-- --seconds N` to shorten it).

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use freshcache::fetch::{FetchOptions, FetchOutcome, Fetcher};
use freshcache::{Cache, Config, Error, Key, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CONFIG: &str = r#"
cache:
  ttl:
    odds_data: 30s
    news_articles: 10s
    llm_features: 30s
"#;

/// A news feed whose article (and ETag) changes every 5 s; answers 304 to a matching
/// If-None-Match. Counts full responses and body bytes sent.
async fn news_feed(started: Instant, full: Arc<AtomicU64>, bytes: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (full, bytes) = (full.clone(), bytes.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let version = started.elapsed().as_secs() / 5;
                let etag = format!("\"article-v{version}\"");
                let response = if request.contains(&format!("if-none-match: {etag}")) {
                    format!(
                        "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
                    )
                } else {
                    let body = format!(r#"{{"headline":"Injury update, version {version}"}}"#);
                    full.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/espn.json")
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_yaml_str(CONFIG, None, Vec::new())
        .unwrap()
        .with_cache_dir(dir.path());
    let cache = Cache::open(config).unwrap();
    let started = Instant::now();
    println!(
        "freshcache pipeline demo: cache in {}",
        dir.path().display()
    );

    // Odds producer: a new price every second, stalled between seconds 6 and 9.
    let odds = Key::odds("g42", "live").unwrap();
    let stalled = Arc::new(AtomicBool::new(false));
    {
        let (cache, odds, stalled) = (cache.clone(), odds.clone(), stalled.clone());
        tokio::spawn(async move {
            let mut price = 1.90f64;
            loop {
                if !stalled.load(Ordering::Relaxed) {
                    price += 0.01;
                    let value = Value::json(&price).unwrap().ttl(Duration::from_secs(3));
                    cache.set(&odds, value).await.unwrap();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    // News: conditional fetches every 2 s.
    let (full, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let feed = news_feed(started, full.clone(), bytes.clone()).await;
    let news = Key::news("espn", "latest").unwrap();
    {
        let (cache, news) = (cache.clone(), news.clone());
        let fetcher = Fetcher::new(FetchOptions::default()).unwrap();
        tokio::spawn(async move {
            loop {
                match fetcher.fetch(&cache, &news, &feed).await {
                    Ok(FetchOutcome::Fetched { transfer, .. }) => {
                        println!("  news: 200, downloaded {} bytes", transfer.body_bytes);
                    }
                    Ok(FetchOutcome::Revalidated { .. }) => {
                        println!("  news: 304 Not Modified — re-validated, nothing downloaded");
                    }
                    Ok(other) => println!("  news: {other:?}"),
                    Err(e) => println!("  news: fetch failed: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    // The opening line: re-published every second with the same price (a re-validation: same
    // content, so nothing derived from it is touched).
    let opening = Key::odds("g42", "open").unwrap();
    {
        let (cache, opening) = (cache.clone(), opening.clone());
        tokio::spawn(async move {
            loop {
                cache.set_json(&opening, &1.85f64).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    // LLM features for cluster c7, derived from the article and the opening line.
    let features = Key::llm_features("c7", "2026-11-24").unwrap();
    let computed = Arc::new(AtomicU64::new(0));
    let compute = async || {
        computed.fetch_add(1, Ordering::Relaxed);
        let value = Value::msgpack(&vec![0.12f32, -0.4, 0.93])
            .unwrap()
            .derived_from([news.clone(), opening.clone()]);
        cache.set(&features, value).await
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Err(e) = compute().await {
        println!("  features not computed yet: {e}");
    }
    let mut last_run = String::new();
    let mut refused_by_lineage = String::new();
    for second in 0..seconds {
        if second == 6 {
            println!("  odds producer stalls (simulated outage)");
            stalled.store(true, Ordering::Relaxed);
        }
        if second == 10 {
            println!("  odds producer is back");
            stalled.store(false, Ordering::Relaxed);
        }
        let run = format!("run-{second:02}");
        let keys = [odds.clone(), news.clone(), features.clone()];
        match cache.require_fresh(&run, &keys).await {
            Ok(signals) => {
                let ages: Vec<String> = signals
                    .report
                    .signals
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {:.1}s",
                            s.key.split(':').next().unwrap_or(""),
                            s.age.unwrap_or_default().as_secs_f64()
                        )
                    })
                    .collect();
                println!(
                    "t={second:>2}s {run}: inference OK   (ages: {})",
                    ages.join(", ")
                );
                last_run = run;
            }
            Err(Error::StaleSignals { report }) => {
                let bad: Vec<String> = report
                    .violations()
                    .map(|s| match &s.reason {
                        Some(reason) => format!("{} {}: {reason}", s.key, s.verdict),
                        None => format!("{} {}", s.key, s.verdict),
                    })
                    .collect();
                println!("t={second:>2}s {run}: REFUSED        ({})", bad.join("; "));
                // Features whose input changed are recomputed from the corrected article.
                if report.violations().any(|s| s.key == features.as_str()) {
                    if report.violations().any(|s| s.reason.is_some()) {
                        refused_by_lineage.clone_from(&run);
                    }
                    match compute().await {
                        Ok(_) => println!("        features recomputed from the current inputs"),
                        Err(e) => println!("        features not recomputed: {e}"),
                    }
                }
            }
            Err(e) => println!("t={second:>2}s {run}: error {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    println!();
    println!(
        "features computed {} time(s) (again only when an input changed); news: {} full downloads ({} bytes), the rest were 304s",
        computed.load(Ordering::Relaxed),
        full.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed)
    );
    if !last_run.is_empty() {
        println!("audit of {last_run} (what the model was given):");
        for row in cache.audit(&last_run).unwrap() {
            println!(
                "  {:<30} {:<6} age {:>6} ms  ttl {:>6} ms  checksum {}",
                row.key,
                row.verdict,
                row.age_ms.unwrap_or_default(),
                row.ttl_ms,
                row.checksum.unwrap_or_default()
            );
        }
    }
    if !refused_by_lineage.is_empty() {
        println!("audit of {refused_by_lineage} (why it was refused):");
        for row in cache.audit(&refused_by_lineage).unwrap() {
            println!(
                "  {:<30} {:<6} {}",
                row.key,
                row.verdict,
                row.reason.unwrap_or_default()
            );
            for input in row.inputs {
                println!(
                    "    └ {:<26} {:<6} age {:>6} ms  {}",
                    input.key,
                    input.verdict,
                    input.age.map_or(0, |a| a.as_millis()),
                    input.problem.unwrap_or_default()
                );
            }
        }
    }
    let stats = cache.stats().unwrap();
    for t in stats.data_types {
        println!(
            "  {:<14} hits {:>3}  misses {:>3}  sets {:>3}",
            t.data_type, t.hits, t.misses, t.sets
        );
    }
}
