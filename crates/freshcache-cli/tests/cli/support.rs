//! Running the binary against a temporary cache directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_freshcache");

/// A temp dir with a config file whose cache lives inside it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        Self::with_extra("")
    }

    /// `extra` is appended under the top level (e.g. a `server:` section).
    pub fn with_extra(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("runtime.yml");
        let cache_dir = dir.path().join("cache");
        std::fs::write(
            &config,
            format!("cache:\n  cache_dir: \"{}\"\n{extra}", cache_dir.display()),
        )
        .unwrap();
        Self { dir, config }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config);
        c.env_remove("FRESHCACHE_CONFIG");
        c.env("RUST_LOG", "warn");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).stdin(Stdio::null()).output().unwrap()
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that refuses its arguments exits without reading stdin: a broken pipe then
        // is expected, and the exit status tells the rest.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    }

    /// Starts `serve` on a free loopback port and waits until it prints its address.
    pub fn serve(&self) -> Server {
        Server::start(self.cmd())
    }
}

/// A `freshcache serve` child of the test's own (the shared kit's).
pub use freshcache_testkit::Serve as Server;

/// GETs `path` on `server` and parses the answer as JSON, whatever its status.
pub async fn get_json(c: &reqwest::Client, server: &Server, path: &str) -> serde_json::Value {
    c.get(server.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One test's requests to one server: each call sends and unwraps the transport result, so a
/// test reads as the requests it makes and the statuses it expects.
pub struct Api {
    pub client: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(server: &Server) -> Self {
        Self {
            client: http_client(),
            base: server.url(""),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    /// GETs `path` and parses the answer as JSON, whatever its status.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every path under `root`, recursively.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// An HTTP client for the tests (installs the process-wide TLS crypto provider first, as the
/// `freshcache` binary does at start).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}
