//! A scripted HTTP/1.1 origin on `127.0.0.1:0`, written on raw TCP so tests can send exactly
//! the bytes they want (malformed headers included). It records every request and counts the
//! body bytes it managed to send.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the origin saw it; header names are lowercase.
#[derive(Clone, Debug)]
pub struct Req {
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_conditional(&self) -> bool {
        self.header("if-none-match").is_some() || self.header("if-modified-since").is_some()
    }
}

/// How the body is sent.
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes, with a `Content-Length` unless [`Resp::no_length`].
    Bytes(Vec<u8>),
    /// `total` zero bytes in 64 KiB writes, no length: the end is the connection's close.
    Endless { total: u64 },
    /// These bytes first, then nothing for a long time (with a larger declared length).
    Stall(Vec<u8>),
}

/// A response to script.
#[derive(Clone, Debug)]
pub struct Resp {
    status: u16,
    lines: Vec<Vec<u8>>,
    body: Body,
    length: bool,
}

impl Resp {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            lines: Vec::new(),
            body: Body::Bytes(Vec::new()),
            length: true,
        }
    }

    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self::new(200).body(body)
    }

    pub fn not_modified() -> Self {
        Self::new(304)
    }

    pub fn header(self, name: &str, value: &str) -> Self {
        self.raw_line(format!("{name}: {value}").as_bytes())
    }

    /// A header line exactly as given (without the final CRLF).
    pub fn raw_line(mut self, line: &[u8]) -> Self {
        self.lines.push(line.to_vec());
        self
    }

    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Bytes(b.into());
        self
    }

    pub fn plan(mut self, b: Body) -> Self {
        self.body = b;
        self
    }

    /// Sends no `Content-Length`.
    pub fn no_length(mut self) -> Self {
        self.length = false;
        self
    }
}

type Handler = Arc<dyn Fn(Req) -> Pin<Box<dyn Future<Output = Resp> + Send>> + Send + Sync>;

/// A running origin.
pub struct Origin {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Req>>>,
    body_bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Serves every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let body_bytes = Arc::new(AtomicU64::new(0));
        let (reqs, bytes) = (requests.clone(), body_bytes.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve_one(
                    sock,
                    handler.clone(),
                    reqs.clone(),
                    bytes.clone(),
                ));
            }
        });
        Self {
            addr,
            requests,
            body_bytes,
            task,
        }
    }

    /// Answers every request with a clone of `resp`.
    pub async fn fixed(resp: Resp) -> Self {
        Self::start(move |_| {
            let r = resp.clone();
            async move { r }
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> Req {
        self.requests()
            .pop()
            .expect("no request reached the origin")
    }

    /// Body bytes written to sockets so far.
    pub fn body_bytes_sent(&self) -> u64 {
        self.body_bytes.load(Ordering::SeqCst)
    }
}

async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

fn parse(head: &str) -> Req {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let target = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Req { target, headers }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

async fn serve_one(
    mut sock: TcpStream,
    handler: Handler,
    requests: Arc<Mutex<Vec<Req>>>,
    body_bytes: Arc<AtomicU64>,
) {
    let Some(head) = read_head(&mut sock).await else {
        return;
    };
    let req = parse(&head);
    requests.lock().unwrap().push(req.clone());
    let resp = handler(req).await;
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)).into_bytes();
    for line in &resp.lines {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n");
    match (&resp.body, resp.length) {
        (Body::Bytes(b), true) if resp.status != 304 => {
            out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
        }
        (Body::Stall(b), true) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n", b.len() * 100).as_bytes());
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    if sock.write_all(&out).await.is_err() {
        return;
    }
    let count = |n: usize| body_bytes.fetch_add(n as u64, Ordering::SeqCst);
    match resp.body {
        Body::Bytes(b) => {
            if sock.write_all(&b).await.is_ok() {
                count(b.len());
            }
        }
        Body::Endless { total } => {
            let block = vec![0u8; 64 * 1024];
            let mut sent = 0u64;
            while sent < total {
                if sock.write_all(&block).await.is_err() {
                    break;
                }
                count(block.len());
                sent += block.len() as u64;
            }
        }
        Body::Stall(b) => {
            if sock.write_all(&b).await.is_ok() {
                count(b.len());
            }
            let _ = sock.flush().await;
            // Deliberate: a stalled body, longer than any fetch timeout under test.
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
    let _ = sock.shutdown().await;
}
