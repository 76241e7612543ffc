//! `redis-server` processes of the caller's own, on free loopback ports, signalled and stopped
//! by their pid. Never the shared server on 6379.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::Poll;

/// A free loopback port (bound, read, released).
///
/// # Panics
/// When no loopback port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// Sends `sig` (such as `-STOP`) to `pid` with `kill(1)`.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid} failed");
}

/// One `redis-server` child process without persistence, its files in a temp dir of its own.
pub struct RedisServer {
    child: Option<Child>,
    /// The loopback port it listens on (its TLS port when started with [`RedisServer::start_tls`]).
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// The directory holding `server.crt`, `server.key` and `ca.crt`, for a TLS-only server.
    tls: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a server.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not answer within 10 s.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `--requirepass`).
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not answer within 10 s.
    #[must_use]
    pub fn start_with(extra: &[&str]) -> Self {
        Self::try_start(extra, None).expect(
            "redis-server is needed (Debian package redis-server; ./scripts/test.sh installs it)",
        )
    }

    /// Starts a TLS-only server with the certificates in `certs` (`server.crt`, `server.key`,
    /// and `ca.crt`, the CA `redis-cli` checks it against); clients need no certificate.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not answer within 10 s.
    #[must_use]
    pub fn start_tls(certs: &Path) -> Self {
        Self::try_start(&[], Some(certs.to_path_buf()))
            .expect("redis-server is needed (Debian package redis-server)")
    }

    /// Starts a server, or `None` when `redis-server` is not installed (benches skip then).
    ///
    /// # Panics
    /// When it starts but does not answer within 10 s.
    #[must_use]
    pub fn start_if_installed() -> Option<Self> {
        Self::try_start(&[], None)
    }

    fn try_start(extra: &[&str], tls: Option<PathBuf>) -> Option<Self> {
        let mut s = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temp dir"),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            tls,
        };
        s.spawn().then_some(s)
    }

    /// Spawns the process and waits until it answers; false when it cannot be spawned.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(certs) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(certs.join("server.crt"))
                .arg("--tls-key-file")
                .arg(certs.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            return false;
        };
        self.child = Some(child);
        self.wait_ready();
        true
    }

    /// Waits until the server answers `PING` (or asks for a password): it has loaded any dump.
    fn wait_ready(&self) {
        let what = format!("redis-server on {} did not start", self.port);
        Poll::within(Duration::from_secs(10))
            .every(Duration::from_millis(20))
            .until(&what, || {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && {
                    let t = self.cli(&["PING"]);
                    t.contains("PONG") || t.contains("NOAUTH")
                }
            });
    }

    /// `redis-cli` with this server's port, TLS and password arguments.
    #[must_use]
    pub fn cli_command(&self) -> Command {
        let mut c = Command::new("redis-cli");
        if let Some(certs) = &self.tls {
            c.args(["--tls", "--cacert"]).arg(certs.join("ca.crt"));
        }
        c.args(["-p", &self.port.to_string()]);
        if let Some(i) = self.extra.iter().position(|a| a == "--requirepass") {
            c.args(["-a", &self.extra[i + 1], "--no-auth-warning"]);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs `redis-cli` against this server and returns its trimmed output.
    ///
    /// # Panics
    /// When `redis-cli` cannot be run.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self
            .cli_command()
            .args(args)
            .output()
            .expect("redis-cli is needed (Debian package redis-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `redis://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's working directory (`dump.rdb`, `redis.log`).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where `SAVE` writes its snapshot.
    #[must_use]
    pub fn dump_path(&self) -> PathBuf {
        self.dir.path().join("dump.rdb")
    }

    /// The running child's pid.
    ///
    /// # Panics
    /// After [`RedisServer::kill9`] without a restart.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "-KILL");
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory (loading `dump.rdb` if there is one).
    pub fn restart(&mut self) {
        self.kill9();
        assert!(self.spawn(), "redis-server could not be started again");
    }

    /// Starts again with the snapshot `dump` copied in as its `dump.rdb`.
    ///
    /// # Panics
    /// When `dump` cannot be copied.
    pub fn restart_with_dump(&mut self, dump: &Path) {
        self.kill9();
        std::fs::copy(dump, self.dump_path()).expect("copy the snapshot");
        assert!(self.spawn(), "redis-server could not be started again");
    }

    /// SIGSTOP: the server keeps its connections open and stops answering.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server must be continued for SIGKILL to reap it promptly.
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
    }
}

/// A 3-master Redis Cluster of the caller's own.
pub struct RedisCluster {
    /// The three masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them and waits for `cluster_state:ok`.
    ///
    /// # Panics
    /// When the cluster cannot be created or is not ok within 15 s.
    #[must_use]
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is needed");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Poll::within(Duration::from_secs(15))
            .every(Duration::from_millis(100))
            .until("cluster did not become ok", || {
                nodes
                    .iter()
                    .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            });
        Self { nodes }
    }

    /// `redis+cluster://` with every master.
    #[must_use]
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}
