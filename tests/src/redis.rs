//! A real `redis-server` (Debian's) on a free loopback port, with no persistence: what the blob
//! cache's shared tier runs against in the tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, require, wait_for_port};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server whose files (its log) live in `dir`.
    pub fn start(dir: &Path) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: dir.to_owned(),
            child: None,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (as a crash would: at once, keeping nothing).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let mut child = Command::new(require("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", log.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(
            &format!("127.0.0.1:{}", self.port),
            &mut child,
            "redis-server",
            &log,
        );
        self.child = Some(child);
    }

    /// The keys the server holds that match `pattern`, through `redis-cli`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let output = super::run(Command::new(require("redis-cli")).args([
            "-p",
            &self.port.to_string(),
            "--raw",
            "KEYS",
            pattern,
        ]));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
