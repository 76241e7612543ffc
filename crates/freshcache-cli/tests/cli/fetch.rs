//! `freshcache fetch` against a local origin, then `freshcache get`; `serve` keeping a
//! configured source fresh.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freshcache_testkit::Poll;

use crate::support::{Env, stderr, stdout};

/// A tiny origin on a thread: `/feed` serves a JSON body with ETag `"f1"` and answers a
/// matching `If-None-Match` with 304; `/down` answers 500. It records the `If-None-Match` of
/// every request.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Origin {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut inm = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((n, v)) = line.split_once(':')
                        && n.eq_ignore_ascii_case("if-none-match")
                    {
                        inm = Some(v.trim().to_owned());
                    }
                }
                log.lock().unwrap().push(inm.clone());
                let body = b"{\"home\":1.91}";
                let head = if request_line.contains("/down") {
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n".to_owned()
                } else if inm.as_deref() == Some("\"f1\"") {
                    "HTTP/1.1 304 Not Modified\r\nETag: \"f1\"\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nETag: \"f1\"\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n",
                        body.len()
                    )
                };
                let mut out = head.into_bytes();
                out.extend_from_slice(b"Connection: close\r\n\r\n");
                if out.starts_with(b"HTTP/1.1 200") {
                    out.extend_from_slice(body);
                }
                let _ = stream.write_all(&out);
            }
        });
        Self { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn fetch_stores_the_body_then_get_prints_it_and_a_refetch_revalidates() {
    let env = Env::new();
    let origin = Origin::start();
    let url = origin.url("/feed");
    let o = env.run(&["fetch", &url, "--key", "odds:g1:1700000000", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "fetched");
    assert_eq!(v["status"], 200);
    assert_eq!(v["etag"], "\"f1\"");
    assert_eq!(v["codec"], "json");
    assert_eq!(v["body_bytes"], 13);

    let o = env.run(&["get", "odds:g1:1700000000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, b"{\"home\":1.91}");

    let o = env.run(&["fetch", &url, "--key", "odds:g1:1700000000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("revalidated odds:g1:1700000000 (HTTP 304, 0 body bytes"),
        "{}",
        stdout(&o)
    );
    assert_eq!(origin.seen(), vec![None, Some("\"f1\"".to_owned())]);
    assert_eq!(
        env.run(&["get", "odds:g1:1700000000"]).stdout,
        b"{\"home\":1.91}"
    );
}

#[test]
fn fetch_exit_codes_tell_bad_input_from_a_failing_origin() {
    let env = Env::new();
    let origin = Origin::start();
    let o = env.run(&["fetch", "ftp://127.0.0.1/x", "--key", "news:a:b"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = env.run(&["fetch", &origin.url("/feed"), "--key", "bad key"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = env.run(&[
        "fetch",
        &origin.url("/down?token=s3cret"),
        "--key",
        "news:a:b",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("500"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    assert_eq!(env.run(&["get", "news:a:b"]).status.code(), Some(1));
}

#[test]
fn serve_fetches_configured_sources_on_start() {
    let origin = Origin::start();
    let env = Env::with_extra(&format!(
        "  sources:\n    - url: \"{}\"\n      key: \"odds:g7:1700000000\"\n      refresh: 1h\n",
        origin.url("/feed")
    ));
    let server = env.serve();
    let deadline = Instant::now() + Duration::from_secs(10);
    Poll::within(Duration::from_secs(10))
        .every(Duration::from_millis(20))
        .until("serve never fetched its source", || {
            !origin.seen().is_empty()
        });
    // The fetch and the store finish just after the origin saw the request.
    let o = loop {
        let o = env.run(&["get", "odds:g7:1700000000"]);
        if o.status.success() || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(o.stdout, b"{\"home\":1.91}", "{}", stderr(&o));
    drop(server);
}
