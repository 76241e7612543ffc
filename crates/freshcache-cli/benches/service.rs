//! W4 (issue 7): `freshcache serve` answering HTTP GET hits over loopback, beside Redis's own
//! GET rate on the same machine, in the same run.
//!
//! Both sides are driven by C load generators with 64 connections: `wrk` against the service
//! (a Lua script picks one of `--keys` keys at random per request) and `redis-benchmark -t get
//! -r <keys> -c 64` against a `redis-server` of the bench's own on a free port. Values are
//! 256 B; every contender runs `--runs` times (alternating) and the median run is reported.
//! Both load generators share the machine's cores with their server, as they would in any
//! single-host test.
//!
//! `cargo bench -p freshcache-cli --bench service` for the full run; `-- --smoke` runs a
//! second per contender to check the bench works (it asserts no timing). Flags: `--secs N`
//! (per wrk run), `--requests N` (per redis-benchmark run), `--runs N`, `--keys N`,
//! `--connections N`, `--json PATH`. wrk and redis-benchmark come from Debian's `wrk` and
//! `redis-tools`; without them the contender is skipped with a loud message.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use freshcache_testkit::{RedisServer, Serve};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_freshcache");
const VALUE_SIZE: usize = 256;

struct Args {
    secs: u64,
    requests: u64,
    runs: usize,
    keys: usize,
    connections: usize,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        secs: 5,
        requests: 400_000,
        runs: 3,
        keys: 1000,
        connections: 64,
        json: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--smoke" => {
                a.secs = 1;
                a.requests = 5_000;
                a.runs = 1;
                a.keys = 50;
            }
            "--secs" => (a.secs, i) = (next().parse().unwrap(), i + 1),
            "--requests" => (a.requests, i) = (next().parse().unwrap(), i + 1),
            "--runs" => (a.runs, i) = (next().parse().unwrap(), i + 1),
            "--keys" => (a.keys, i) = (next().parse().unwrap(), i + 1),
            "--connections" => (a.connections, i) = (next().parse().unwrap(), i + 1),
            "--json" => (a.json, i) = (Some(next()), i + 1),
            // `cargo bench` passes `--bench`; flags meant for the other bench are ignored.
            _ => {}
        }
        i += 1;
    }
    a
}

/// One load-generator run: requests per second and latency percentiles in milliseconds.
#[derive(Clone, Debug)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    sorted[sorted.len() / 2].clone()
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts `freshcache serve` on a free loopback port with every entry fresh for an hour (the
/// kit's server is killed on drop, so the bench never leaves it behind, even when it panics).
fn start_service(dir: &Path) -> Serve {
    let config = dir.join("runtime.yml");
    std::fs::write(
        &config,
        format!(
            "cache:\n  cache_dir: \"{}\"\n  ttl: {{odds_data: 1h}}\n",
            dir.join("cache").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env_remove("FRESHCACHE_CONFIG")
        .env("RUST_LOG", "warn");
    Serve::start(cmd)
}

fn key(i: usize) -> String {
    format!("odds:g{i}:1700000000")
}

/// Stores every key through the service's own PUT (one keep-alive connection).
fn populate_service(addr: SocketAddr, keys: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    let value = vec![b'v'; VALUE_SIZE];
    for i in 0..keys {
        let head = format!(
            "PUT /v1/cache/{} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: {VALUE_SIZE}\r\n\r\n",
            key(i)
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&value).unwrap();
        let status = read_response(&mut s);
        assert!(
            (200..300).contains(&status),
            "PUT {} answered {status}",
            key(i)
        );
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its status.
fn read_response(s: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let len: usize = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    status
}

/// Milliseconds from a wrk duration such as `812.00us`, `1.23ms` or `2.01s`.
fn wrk_ms(text: &str) -> f64 {
    let (num, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let n: f64 = num.parse().unwrap();
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        other => panic!("unknown wrk unit {other}"),
    }
}

fn run_wrk(addr: SocketAddr, a: &Args, script: &Path) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", a.connections),
            &format!("-d{}s", a.secs),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://{addr}/"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed:\n{text}");
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let rps: f64 = field("Requests/sec:").unwrap().parse().unwrap();
    let p50 = wrk_ms(&field("50%").unwrap());
    let p99 = wrk_ms(&field("99%").unwrap());
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    // wrk reports answers outside 2xx/3xx and socket errors on lines of their own.
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").map_or(0, |n| n.parse().unwrap());
    let socket: u64 = field("Socket errors:").map_or(0, |l| {
        l.split(',')
            .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    });
    Run {
        rps,
        p50_ms: p50,
        p99_ms: p99,
        requests,
        errors: non_2xx + socket,
    }
}

fn run_redis_benchmark(port: u16, a: &Args, test: &str, requests: u64) -> Run {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", test, "-r", &a.keys.to_string()])
        .args(["-n", &requests.to_string()])
        .args(["-c", &a.connections.to_string()])
        .args(["-d", &VALUE_SIZE.to_string(), "--csv"])
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "redis-benchmark failed:\n{text}");
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("\"{}\"", test.to_uppercase())))
        .unwrap_or_else(|| panic!("no {test} row in:\n{text}"));
    let cols: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|c| c.trim_matches('"').parse().unwrap())
        .collect();
    Run {
        rps: cols[0],
        p50_ms: cols[3],
        p99_ms: cols[5],
        requests,
        errors: 0,
    }
}

fn main() {
    let a = args();
    println!(
        "freshcache service benchmark (W4): HTTP GET hits, {} B values, {} keys, {} connections, median of {} run(s)",
        VALUE_SIZE, a.keys, a.connections, a.runs
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("get.lua");
    std::fs::write(
        &script,
        format!(
            "math.randomseed(42)\nrequest = function()\n  return wrk.format(\"GET\", \"/v1/cache/odds:g\" .. math.random(0, {}) .. \":1700000000\")\nend\n",
            a.keys - 1
        ),
    )
    .unwrap();

    let service = start_service(dir.path());
    let addr = service.addr;
    populate_service(addr, a.keys);
    // A redis-server of the bench's own on a free port, stopped by pid on drop.
    let redis = RedisServer::start_if_installed();
    if let Some(redis) = &redis {
        // The same keys and value size on Redis's side: redis-benchmark's own SETs.
        run_redis_benchmark(redis.port, &a, "set", a.keys as u64 * 20);
    } else {
        println!("  !! redis-server not installed: the Redis reference is SKIPPED");
    }
    let wrk = have("wrk");
    if !wrk {
        println!("  !! wrk not installed (Debian package `wrk`): the service run is SKIPPED");
    }
    let bench = have("redis-benchmark");

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..a.runs {
        if wrk {
            ours.push(run_wrk(addr, &a, &script));
        }
        if let (Some(redis), true) = (&redis, bench) {
            theirs.push(run_redis_benchmark(redis.port, &a, "get", a.requests));
        }
    }
    drop(service);
    drop(redis);

    let mut rows = Vec::new();
    if !ours.is_empty() {
        rows.push(("freshcache serve (wrk, HTTP GET)", median(&ours), &ours));
    }
    if !theirs.is_empty() {
        rows.push((
            "redis-server (redis-benchmark GET)",
            median(&theirs),
            &theirs,
        ));
    }
    let redis_rps = if theirs.is_empty() {
        f64::NAN
    } else {
        median(&theirs).rps
    };
    println!(
        "\n  {:<36} {:>10} {:>9} {:>9} {:>8} {:>10}  runs (req/s)",
        "contender", "req/s", "p50 ms", "p99 ms", "errors", "vs Redis"
    );
    for (name, m, all) in &rows {
        let each: Vec<String> = all.iter().map(|r| format!("{:.0}", r.rps)).collect();
        println!(
            "  {:<36} {:>10.0} {:>9.3} {:>9.3} {:>8} {:>9.2}x  {}",
            name,
            m.rps,
            m.p50_ms,
            m.p99_ms,
            all.iter().map(|r| r.errors).sum::<u64>(),
            m.rps / redis_rps,
            each.join(" / ")
        );
    }
    for r in &ours {
        assert_eq!(r.errors, 0, "the service answered errors under load: {r:?}");
        assert!(r.requests > 0, "wrk made no requests");
    }
    let doc = json!({
        "workload": "W4",
        "value_size": VALUE_SIZE,
        "keys": a.keys,
        "connections": a.connections,
        "runs": a.runs,
        "rows": rows.iter().map(|(name, m, all)| json!({
            "contender": name,
            "median_rps": m.rps,
            "p50_ms": m.p50_ms,
            "p99_ms": m.p99_ms,
            "runs_rps": all.iter().map(|r| r.rps).collect::<Vec<_>>(),
            "requests": all.iter().map(|r| r.requests).sum::<u64>(),
            "errors": all.iter().map(|r| r.errors).sum::<u64>(),
            "vs_redis": m.rps / redis_rps,
        })).collect::<Vec<_>>(),
    });
    println!("JSON: {doc}");
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
}
