//! `/metrics`, the alert rules and the dashboard against a real server.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use freshcache_testkit::Poll;

use crate::support::{Api, Env};

fn repo_file(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Metric family names in an exposition (without `_bucket`/`_sum`/`_count`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Metric names used in PromQL text: identifiers that start like ours, minus label names.
fn used_names(promql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = promql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            // Skip string literals (label values, annotations).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &promql[start..i];
            let next = promql[i..].trim_start().chars().next();
            let is_label = matches!(next, Some('=' | '!' | ',' | ')'))
                || matches!(word, "cache_type" | "data_type");
            if !is_label
                && ["cache_", "ttl_", "freshcache_"]
                    .iter()
                    .any(|p| word.starts_with(p))
            {
                out.insert(word.trim_end_matches("_bucket").to_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn metrics_pass_promtool_and_every_dashboard_and_rule_metric_exists() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    api.put("/v1/cache/odds:g1:1", "1.9").await;
    api.get("/v1/cache/odds:g1:1").await;
    api.get("/v1/cache/odds:g2:1").await;
    let r = api.get("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("cache_hit_total{cache_type=\"memory\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("cache_miss_total{cache_type=\"disk\"} 1\n"),
        "{text}"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package `prometheus`; ./scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let exposed: BTreeSet<String> = families(&text)
        .into_iter()
        .flat_map(|f| {
            let base = f.trim_end_matches("_total").to_owned();
            [
                f,
                base.clone(),
                format!("{base}_sum"),
                format!("{base}_count"),
            ]
        })
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/freshcache-dashboard.json")).unwrap();
    let mut dash_names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            dash_names.extend(used_names(t["expr"].as_str().unwrap()));
        }
    }
    assert!(dash_names.len() >= 10, "{dash_names:?}");
    let missing: Vec<_> = dash_names.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "dashboard uses metrics that do not exist: {missing:?}"
    );

    let rules = repo_file("deploy/prometheus/freshcache-rules.yml");
    let rule_names = used_names(&rules);
    let missing: Vec<_> = rule_names.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "alert rules use metrics that do not exist: {missing:?}"
    );
    assert!(
        rule_names.contains("ttl_violation_total") && rule_names.contains("cache_circuit_open")
    );
}

#[tokio::test]
async fn freshness_check_route_answers_200_or_409_and_records_the_audit() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    api.put("/v1/cache/odds:g1:1", "1.9").await;
    let r = api
        .post(
            "/v1/freshness/check",
            r#"{"keys": ["odds:g1:1"], "run_id": "r1"}"#,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .post(
            "/v1/freshness/check",
            r#"{"keys": ["odds:g1:1", "news:espn:404"], "run_id": "r2"}"#,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["signals"][1]["verdict"], "missing");
    let audit: serde_json::Value = api.json("/v1/freshness/audit/r2").await;
    assert_eq!(audit["signals"].as_array().unwrap().len(), 2);
    let r = api
        .post("/v1/freshness/check", r#"{"keys": ["bad key"]}"#)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ttl_violation_total{data_type=\"news_articles\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ttl_check_total{data_type=\"odds_data\"} 2\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readiness_waits_for_critical_warm_up_signals() {
    let dir = tempfile::tempdir().unwrap();
    let odds = dir.path().join("odds.json");
    std::fs::write(&odds, b"1.9").unwrap();
    let env = Env::with_extra(&format!(
        "  warm:\n    - key: odds:g1:1\n      file: {}\n      critical: true\n",
        odds.display()
    ));
    let server = env.serve();
    let api = Api::new(&server);
    Poll::within(Duration::from_secs(5))
        .every(Duration::from_millis(20))
        .until_async("never ready", async || {
            api.get("/readyz").await.status() == StatusCode::OK
        })
        .await;
    assert_eq!(
        api.get("/v1/cache/odds:g1:1").await.status(),
        StatusCode::OK
    );

    let missing = Env::with_extra("  warm:\n    - key: odds:g9:1\n      critical: true\n");
    let server = missing.serve();
    let api = Api::new(&server);
    let r = api.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("critical"));
}
