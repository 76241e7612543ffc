//! The freshness console (`GET /ui`): its token rules over HTTP, then the page itself in a real
//! headless Chromium driven by `tests/ui/console.mjs` (playwright-core, installed by
//! `npm ci` in `tests/ui`, which `scripts/test.sh` runs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use freshcache_testkit::Poll;
use reqwest::StatusCode;

use crate::support::{Env, Server};

/// A token with characters a form and a cookie must both carry safely.
const TOKEN: &str = "s3cret; +token%";

/// Types with TTLs, one (`blink`) lasting a second so that its entry goes stale; no scheduled
/// cleanup to sweep it while the test runs; one feed whose origin refuses connections.
const CONFIG: &str = r#"  ttl: {llm_features: 24h, news_articles: 1h, odds_data: 60s}
  data_types:
    blink:
      prefix: "blink:"
      ttl: 1s
  cleanup: {interval: "0 0 1 1 *"}
  sources:
    - {url: "http://127.0.0.1:9/feed.json", key: "news:feed:latest", refresh: 5m}
server:
  auth_token: "s3cret; +token%"
"#;

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

fn run_ok(env: &Env, args: &[&str]) {
    let o = env.run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Stores fresh entries of three types and one `blink` entry; once that one is past its TTL,
/// records two guard runs: `run-fresh` (all fresh) and `run-stale` (a stale and a missing
/// signal; the guard's read removes the stale entry). Then stores a second `blink` entry and
/// leaves it to go stale unread, so that the type itself has an entry past its TTL.
fn seed(env: &Env) {
    for (key, value) in [
        ("odds:g1:1700000000", "1.91"),
        ("news:espn:a1", "headline"),
        ("llm:features:cluster7:v1", "[0.1, 0.2]"),
        ("blink:sensor:1", "42"),
    ] {
        set(env, key, value);
    }
    wait_until_blink_is_stale(env);
    run_ok(
        env,
        &["check", "odds:g1:1700000000", "--run-id", "run-fresh"],
    );
    let o = env.run(&[
        "check",
        "odds:g1:1700000000",
        "blink:sensor:1",
        "news:espn:gone",
        "--run-id",
        "run-stale",
    ]);
    assert_eq!(o.status.code(), Some(1), "the guard refuses run-stale");
    set(env, "blink:sensor:2", "43");
    wait_until_blink_is_stale(env);
}

fn set(env: &Env, key: &str, value: &str) {
    let o = env.run_with_stdin(&["set", key, "-"], value.as_bytes());
    assert!(
        o.status.success(),
        "{key}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Polls the `stats` report until one `blink` entry on disk is past its TTL.
fn wait_until_blink_is_stale(env: &Env) {
    Poll::within(Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .until("the blink entry never went stale", || {
            let o = env.run(&["stats", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v["data_types"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["data_type"] == "blink" && t["expired_on_disk"] == 1)
        });
}

/// Without the token the page and its data are 401; the sign-in form sets a cookie that opens
/// both; a bearer token opens them too; the script and stylesheet hold no data and are public.
async fn token_rules(server: &Server) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| c.get(server.url(path));
    let page = get("/ui").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("action=\"/ui/login\""));
    for path in ["/ui/data", "/ui/audit/run-stale"] {
        assert_eq!(get(path).send().await.unwrap().status(), 401, "{path}");
    }
    for path in ["/ui/console.js", "/ui/console.css"] {
        assert_eq!(get(path).send().await.unwrap().status(), 200, "{path}");
    }
    let login = |token: &str| {
        c.post(server.url("/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", form_encode(token)))
            .send()
    };
    assert_eq!(login("s3cret").await.unwrap().status(), 401);
    let ok = login(TOKEN).await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains(TOKEN), "the raw token is not the cookie");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = get("/ui").header("cookie", &pair).send().await.unwrap();
    assert_eq!(with_cookie.status(), 200);
    assert!(with_cookie.text().await.unwrap().contains("/ui/console.js"));
    let data = get("/ui/data").bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(data.status(), 200);
    let v: serde_json::Value = data.json().await.unwrap();
    let runs: Vec<_> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["run_id"])
        .collect();
    assert_eq!(runs, ["run-stale", "run-fresh"]);
    let feed = &v["feeds"][0];
    assert_eq!(feed["key"], "news:feed:latest");
    let wrong = get("/ui/data")
        .header("cookie", "freshcache_console=00")
        .send();
    assert_eq!(wrong.await.unwrap().status(), 401);
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs the browser script; fails with how to install what is missing.
fn drive_browser(server: &Server) {
    let modules = ui_dir().join("node_modules/playwright-core");
    assert!(
        modules.is_dir(),
        "playwright-core is not installed: run `npm ci --no-audit --no-fund` in {} \
         (scripts/test.sh does; it needs Debian's nodejs and npm)",
        ui_dir().display()
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "no /usr/bin/chromium: `apt-get install chromium` (scripts/test.sh does)"
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(ui_dir().join("console.mjs"))
        .arg(server.url(""))
        .arg(&shots)
        .env("CONSOLE_TOKEN", TOKEN)
        .env(
            "CONSOLE_TYPES",
            "llm_features,news_articles,odds_data,blink",
        )
        .env("CONSOLE_STALE_TYPE", "blink")
        .env("CONSOLE_RUN", "run-stale")
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): `apt-get install nodejs npm`"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("console test: passed"), "{stdout}");
    for shot in ["console.png", "console-phone.png"] {
        let len = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot} is {len} bytes");
    }
}

#[tokio::test]
async fn the_console_needs_the_token_and_shows_stale_signals_in_a_real_browser() {
    let env = Env::with_extra(CONFIG);
    seed(&env);
    let server = env.serve();
    token_rules(&server).await;
    let server = tokio::task::spawn_blocking(move || {
        drive_browser(&server);
        server
    })
    .await
    .unwrap();
    drop(server);
}

#[tokio::test]
async fn without_a_token_the_console_is_open_and_its_pages_stay_on_their_origin() {
    let env = Env::new();
    let server = env.serve();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = c.get(server.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    for rule in [
        "default-src 'none'",
        "connect-src 'self'",
        "script-src 'self'",
    ] {
        assert!(csp.contains(rule), "{csp}");
    }
    let data = c.get(server.url("/ui/data")).send().await.unwrap();
    assert_eq!(data.status(), 200);
    let v: serde_json::Value = data.json().await.unwrap();
    let types: Vec<_> = v["stats"]["data_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["data_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["llm_features", "news_articles", "odds_data"]);
    assert_eq!(v["runs"], serde_json::json!([]));
    let audit = c.get(server.url("/ui/audit/nope")).send().await.unwrap();
    assert_eq!(audit.status(), 200);
    let login = c.post(server.url("/ui/login")).body("token=x").send();
    assert_eq!(login.await.unwrap().status(), StatusCode::SEE_OTHER);
}
