//! Hostile clients against `serve`: oversized chunked uploads, compressed bodies that inflate
//! to gigabytes, and mutating requests without the right token. The server's memory is read
//! from `/proc/<pid>/status` of the `serve` child.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::{Env, Server};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// Most the server's memory may grow while it refuses one hostile request.
const GROWTH_LIMIT: u64 = 50 * MIB;

fn client() -> reqwest::Client {
    crate::support::http_client()
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {line:?}"));
    kb * KIB
}

/// Memory before a hostile request and the peak after it: the growth is measured against the
/// high-water mark, so a spike that was freed again still counts.
struct MemoryWatch {
    pid: u32,
    rss_before: u64,
}

impl MemoryWatch {
    fn start(server: &Server) -> Self {
        let pid = server.child.id();
        // "5" resets the high-water mark to the current RSS (proc(5), Linux 4.0+), so an earlier
        // peak is not charged to this request; where it cannot, the bound is only looser.
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        Self {
            pid,
            rss_before: proc_status_bytes(pid, "VmRSS"),
        }
    }

    /// Peak resident memory since the start of the process, less the resident memory when the
    /// watch started (an upper bound on what the request cost).
    fn growth(&self) -> u64 {
        proc_status_bytes(self.pid, "VmHWM").saturating_sub(self.rss_before)
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// What a raw upload saw: the bytes of body it got onto the wire and the server's answer.
struct RawOutcome {
    body_bytes_sent: u64,
    response: String,
}

impl RawOutcome {
    fn status(&self) -> u16 {
        self.response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {:?}", self.response))
    }
}

/// How a raw upload frames its body.
#[derive(Clone, Copy)]
enum Framing {
    Chunked,
    AsIs,
}

/// 64 KiB pieces of filler adding up to `total` bytes, made as they are sent.
fn filler(total: u64) -> impl Iterator<Item = Vec<u8>> {
    let piece = 64 * KIB;
    (0..total.div_ceil(piece))
        .map(move |i| vec![b'x'; usize::try_from(piece.min(total - i * piece)).unwrap()])
}

/// Sends `head` (request line and headers, without the blank line), then the body `pieces`,
/// each one chunk when `framing` is chunked. A client such as reqwest gives up on a broken pipe
/// before reading the answer; this one stops writing when the server answers or closes, and
/// reads the answer concurrently, so a reset after the answer does not lose it.
fn raw_upload(
    addr: SocketAddr,
    head: &str,
    pieces: impl Iterator<Item = Vec<u8>>,
    framing: Framing,
) -> RawOutcome {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let answered = Arc::new(AtomicBool::new(false));
    let reading = {
        let answered = Arc::clone(&answered);
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        answered.store(true, Ordering::SeqCst);
                        // Headers and a short JSON error body are all there is to read.
                        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                            break;
                        }
                    }
                }
            }
            String::from_utf8_lossy(&got).into_owned()
        })
    };
    let mut sent = 0u64;
    let mut ok = stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .is_ok();
    for piece in pieces {
        if !ok || answered.load(Ordering::SeqCst) {
            break;
        }
        ok = match framing {
            Framing::Chunked => stream
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|()| stream.write_all(&piece))
                .and_then(|()| stream.write_all(b"\r\n"))
                .is_ok(),
            Framing::AsIs => stream.write_all(&piece).is_ok(),
        };
        if ok {
            sent += piece.len() as u64;
        }
    }
    if ok && matches!(framing, Framing::Chunked) && !answered.load(Ordering::SeqCst) {
        let _ = stream.write_all(b"0\r\n\r\n");
    }
    let response = reading.join().unwrap();
    RawOutcome {
        body_bytes_sent: sent,
        response,
    }
}

async fn disk_entries(c: &reqwest::Client, server: &Server) -> u64 {
    let stats: serde_json::Value = crate::support::get_json(c, server, "/v1/stats").await;
    stats["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "disk")
        .unwrap()["entries"]
        .as_u64()
        .unwrap()
}

/// Signals checked by the freshness guard, from `/metrics`.
async fn ttl_checks(c: &reqwest::Client, server: &Server) -> u64 {
    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ttl_check_total"))
        .collect();
    assert!(!lines.is_empty(), "no ttl_check_total in /metrics");
    lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The service still answers and still stores: a hostile request left it usable.
async fn assert_healthy(c: &reqwest::Client, server: &Server, token: Option<&str>) {
    let r = c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let url = server.url("/v1/cache/odds:after:1");
    let mut put = c.put(&url).body("still here");
    if let Some(t) = token {
        put = put.bearer_auth(t);
    }
    assert_eq!(put.send().await.unwrap().status(), StatusCode::CREATED);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), "still here");
}

#[tokio::test]
async fn a_gigabyte_upload_is_refused_at_the_key_limit_without_buffering_it() {
    let env = Env::new();
    let server = env.serve();
    let c = client();
    // One ordinary round trip first, so the baseline includes a warmed-up service.
    let r = c
        .put(server.url("/v1/cache/news:warm:1"))
        .body(vec![1u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let entries_before = disk_entries(&c, &server).await;

    // Chunked: no length up front, so the server has to count as it reads. A `news:` value
    // may be 16 MiB.
    let watch = MemoryWatch::start(&server);
    let addr = server.addr;
    let chunked = tokio::task::spawn_blocking(move || {
        raw_upload(
            addr,
            &format!(
                "PUT /v1/cache/news:hostile:big HTTP/1.1\r\nHost: {addr}\r\n\
                 Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked"
            ),
            filler(GIB),
            Framing::Chunked,
        )
    })
    .await
    .unwrap();
    let growth = watch.growth();
    println!(
        "hostile: 1 GiB chunked upload refused with HTTP {} after {:.1} MiB sent, \
         RSS {:.1} MiB before, growth (peak) {:.1} MiB",
        chunked.status(),
        mb(chunked.body_bytes_sent),
        mb(watch.rss_before),
        mb(growth)
    );
    assert_eq!(chunked.status(), 413, "{}", chunked.response);
    assert!(
        chunked.response.contains("\"too_large\""),
        "{}",
        chunked.response
    );
    // The server stopped at the key's limit; what is left is what the socket buffers held.
    assert!(
        chunked.body_bytes_sent < 16 * MIB + 64 * MIB,
        "the server read on: {} bytes",
        chunked.body_bytes_sent
    );
    assert!(growth < GROWTH_LIMIT, "memory grew {growth} bytes");

    // Declared length: refused before a byte of the body is read.
    let watch = MemoryWatch::start(&server);
    let declared = tokio::task::spawn_blocking(move || {
        raw_upload(
            addr,
            &format!(
                "PUT /v1/cache/news:hostile:big HTTP/1.1\r\nHost: {addr}\r\n\
                 Content-Length: {GIB}"
            ),
            filler(GIB),
            Framing::AsIs,
        )
    })
    .await
    .unwrap();
    let growth = watch.growth();
    println!(
        "hostile: 1 GiB Content-Length upload refused with HTTP {} after {:.1} MiB sent, \
         growth (peak) {:.1} MiB",
        declared.status(),
        mb(declared.body_bytes_sent),
        mb(growth)
    );
    assert_eq!(declared.status(), 413, "{}", declared.response);
    assert!(growth < GROWTH_LIMIT, "memory grew {growth} bytes");

    let r = c
        .get(server.url("/v1/cache/news:hostile:big"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a refused upload was stored"
    );
    assert_eq!(disk_entries(&c, &server).await, entries_before);
    assert_healthy(&c, &server, None).await;
}

/// A gzip body of `members` copies of one member that inflates to `member_size` zero bytes
/// (RFC 1952 allows a file of several members; a decoder inflates them all).
fn gzip_bomb(member_size: usize, members: usize) -> Vec<u8> {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(&vec![0u8; member_size]).unwrap();
    let member = enc.finish().unwrap();
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&member[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(
        inflated.len(),
        member_size,
        "the bomb's member is valid gzip"
    );
    member.repeat(members)
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_as_an_unsupported_encoding_without_being_inflated() {
    let env = Env::new();
    let server = env.serve();
    let c = client();
    let r = c
        .put(server.url("/v1/cache/news:warm:1"))
        .body("warm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let entries_before = disk_entries(&c, &server).await;

    let (member_size, members) = (8 * MIB as usize, 512);
    let bomb = gzip_bomb(member_size, members);
    let inflated = (member_size * members) as u64;
    assert!(
        bomb.len() < 16 * MIB as usize,
        "under the news limit as sent"
    );

    let bomb = Arc::new(bomb);
    let watch = MemoryWatch::start(&server);
    let mut refused = 0;
    let addr = server.addr;
    for (method, path) in [
        ("PUT", "/v1/cache/news:hostile:bomb"),
        ("POST", "/v1/invalidate"),
        ("POST", "/v1/freshness/check"),
    ] {
        for encoding in ["gzip", "GZIP", "deflate", "br", "gzip, identity", "x-gzip"] {
            for framing in [Framing::AsIs, Framing::Chunked] {
                let length = match framing {
                    Framing::AsIs => format!("Content-Length: {}", bomb.len()),
                    Framing::Chunked => "Transfer-Encoding: chunked".to_owned(),
                };
                let head = format!(
                    "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\
                     Content-Type: application/json\r\nContent-Encoding: {encoding}\r\n{length}"
                );
                let bomb = Arc::clone(&bomb);
                let out = tokio::task::spawn_blocking(move || {
                    let pieces = bomb.chunks(64 * KIB as usize).map(<[u8]>::to_vec);
                    raw_upload(addr, &head, pieces, framing)
                })
                .await
                .unwrap();
                assert_eq!(out.status(), 415, "{method} {path} with {encoding}");
                let body = out.response.split("\r\n\r\n").nth(1).unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("{e}: {:?}", out.response));
                assert_eq!(v["error"], "unsupported_encoding");
                assert!(
                    v["message"]
                        .as_str()
                        .unwrap()
                        .contains("does not decode request bodies"),
                    "{v}"
                );
                refused += 1;
            }
        }
    }
    let growth = watch.growth();
    println!(
        "hostile: gzip bomb of {:.1} MiB (inflates to {:.1} GiB) refused {refused} times with 415, \
         RSS {:.1} MiB before, growth (peak) {:.1} MiB",
        mb(bomb.len() as u64),
        inflated as f64 / GIB as f64,
        mb(watch.rss_before),
        mb(growth)
    );
    assert!(growth < GROWTH_LIMIT, "memory grew {growth} bytes");
    let r = c
        .get(server.url("/v1/cache/news:hostile:bomb"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the bomb was stored");
    assert_eq!(disk_entries(&c, &server).await, entries_before);

    // `identity` is no coding at all and is accepted.
    let r = c
        .put(server.url("/v1/cache/news:plain:1"))
        .header("content-encoding", "identity")
        .body("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_healthy(&c, &server, None).await;
}

#[tokio::test]
async fn unauthenticated_mutations_get_401_and_change_nothing() {
    let token = "s3cret-t0ken";
    let env = Env::with_extra(&format!("server:\n  auth_token: \"{token}\"\n"));
    let server = env.serve();
    let c = client();
    for (k, v) in [("odds:g1:1", "one"), ("news:espn:1", "two")] {
        let r = c
            .put(server.url(&format!("/v1/cache/{k}")))
            .bearer_auth(token)
            .body(v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let entries_before = disk_entries(&c, &server).await;
    assert_eq!(entries_before, 2);

    let requests: [(reqwest::Method, &str, &str); 8] = [
        (reqwest::Method::PUT, "/v1/cache/odds:g1:1", "overwritten"),
        (reqwest::Method::PUT, "/v1/cache/odds:g9:1", "new"),
        (reqwest::Method::PUT, "/v1/cache/not a key", "x"),
        (reqwest::Method::DELETE, "/v1/cache/odds:g1:1", ""),
        (
            reqwest::Method::POST,
            "/v1/invalidate",
            "{\"prefix\": \"news:\"}",
        ),
        (reqwest::Method::POST, "/v1/invalidate", "{\"all\": true}"),
        (
            reqwest::Method::POST,
            "/v1/freshness/check",
            "{\"keys\": [\"odds:g1:1\"], \"run_id\": \"forged-run\"}",
        ),
        (
            reqwest::Method::POST,
            "/v1/freshness/check",
            "{\"keys\": [\"odds:g1:1\"]}",
        ),
    ];
    // No header, the wrong token (same length, a prefix, longer), an empty one, another scheme.
    let credentials: [Option<String>; 7] = [
        None,
        Some("Bearer s3cret-t0keN".into()),
        Some("Bearer s3cret".into()),
        Some(format!("Bearer {token}x")),
        Some("Bearer ".into()),
        Some(format!("Basic {token}")),
        Some(token.into()),
    ];
    let mut refused = 0;
    for (method, path, body) in &requests {
        for auth in &credentials {
            let mut req = c
                .request(method.clone(), server.url(path))
                .body(body.to_string());
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"], "unauthorized");
            assert!(!v.to_string().contains(token), "the error leaks the token");
            refused += 1;
        }
    }

    // An unauthenticated 1 GiB upload is refused on its headers, before its body is read.
    let watch = MemoryWatch::start(&server);
    let addr = server.addr;
    let upload = tokio::task::spawn_blocking(move || {
        raw_upload(
            addr,
            &format!(
                "PUT /v1/cache/news:espn:1 HTTP/1.1\r\nHost: {addr}\r\n\
                 Transfer-Encoding: chunked"
            ),
            filler(GIB),
            Framing::Chunked,
        )
    })
    .await
    .unwrap();
    let growth = watch.growth();
    println!(
        "hostile: {refused} unauthenticated mutations refused with 401; an unauthenticated \
         1 GiB chunked upload got HTTP {} after {:.1} MiB sent, growth (peak) {:.1} MiB",
        upload.status(),
        mb(upload.body_bytes_sent),
        mb(growth)
    );
    assert_eq!(upload.status(), 401, "{}", upload.response);
    assert!(upload.body_bytes_sent < GIB);
    assert!(growth < GROWTH_LIMIT, "memory grew {growth} bytes");

    // Nothing changed: the values, the entry count, no audit rows for the forged run.
    for (k, v) in [("odds:g1:1", "one"), ("news:espn:1", "two")] {
        let r = c
            .get(server.url(&format!("/v1/cache/{k}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        assert_eq!(r.bytes().await.unwrap(), v, "{k}");
    }
    let r = c
        .get(server.url("/v1/cache/odds:g9:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(disk_entries(&c, &server).await, entries_before);
    let r = c
        .get(server.url("/v1/freshness/audit/forged-run"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a refused check was audited"
    );
    assert_eq!(
        ttl_checks(&c, &server).await,
        0,
        "a refused check was counted"
    );
    let s: serde_json::Value = crate::support::get_json(&c, &server, "/v1/stats").await;
    let sets: u64 = s["data_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["sets"].as_u64().unwrap())
        .sum();
    assert_eq!(sets, 2, "a refused write was counted as a set: {s}");

    // With the token the same check is served and audited, so the 404 above means something.
    let r = c
        .post(server.url("/v1/freshness/check"))
        .bearer_auth(token)
        .body("{\"keys\": [\"odds:g1:1\"], \"run_id\": \"real-run\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(server.url("/v1/freshness/audit/real-run"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ttl_checks(&c, &server).await, 1);
    assert_healthy(&c, &server, Some(token)).await;
}
