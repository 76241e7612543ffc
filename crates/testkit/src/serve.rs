//! A `freshcache serve` child on a free loopback port.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::Poll;

/// How long `serve` may take to print the address it listens on.
const START_WITHIN: Duration = Duration::from_secs(30);

/// A running `freshcache serve`, killed (by its pid) and reaped on drop.
pub struct Serve {
    /// The child process.
    pub child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Serve {
    /// Spawns `freshcache` — `cmd` carries the binary, `--config` and the environment — as
    /// `serve --listen 127.0.0.1:0`, and reads the address from the first line it prints
    /// (`… http://127.0.0.1:PORT`). Its stderr goes to the test's.
    ///
    /// # Panics
    /// When it cannot be spawned, or prints no address within 30 s (it is killed then).
    #[must_use]
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start freshcache serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        // The first line is read on a thread of its own so that a server that hangs before
        // printing it fails the caller at the deadline instead of blocking it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(BufReader::new(stdout).lines().next());
        });
        let line = match rx.recv_timeout(START_WITHIN) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve printed no address within {START_WITHIN:?}: {other:?}");
            }
        };
        let addr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no address in {line:?}");
        };
        Self { child, addr }
    }

    /// `http://ADDR` followed by `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (at most 10 s) for the exit status.
    ///
    /// # Panics
    /// When the signal cannot be sent or the server is still running after 10 s.
    pub fn terminate(mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM failed");
        Poll::within(Duration::from_secs(10))
            .every(Duration::from_millis(20))
            .until_some("server ignored SIGTERM", || {
                self.child.try_wait().expect("wait for the server")
            })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
