//! A real S3 server for the tests: Garage, one node on 127.0.0.1, with one key and one bucket.
//!
//! `make test` starts one instance for the whole run (through the `with-services` binary, which
//! passes its address to the tests in `STOWAGE_TEST_S3_*` variables and stops it afterwards).
//! Tests that stop and restart S3 start a private instance with [`Garage::start`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require, run};

pub const REGION: &str = "us-east-1";
pub const BUCKET: &str = "stowage";

/// How to reach an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Endpoint {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

const ENV_ENDPOINT: &str = "STOWAGE_TEST_S3_ENDPOINT";
const ENV_REGION: &str = "STOWAGE_TEST_S3_REGION";
const ENV_BUCKET: &str = "STOWAGE_TEST_S3_BUCKET";
const ENV_KEY_ID: &str = "STOWAGE_TEST_S3_ACCESS_KEY_ID";
const ENV_SECRET: &str = "STOWAGE_TEST_S3_SECRET_ACCESS_KEY";

impl S3Endpoint {
    /// The S3 server `make test` started, from the environment it passed down.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests with `make test`, which starts Garage")
            })
        };
        Self {
            endpoint: var(ENV_ENDPOINT),
            region: var(ENV_REGION),
            bucket: var(ENV_BUCKET),
            access_key_id: var(ENV_KEY_ID),
            secret_access_key: var(ENV_SECRET),
        }
    }

    /// The variables `from_env` reads.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV_ENDPOINT, self.endpoint.clone()),
            (ENV_REGION, self.region.clone()),
            (ENV_BUCKET, self.bucket.clone()),
            (ENV_KEY_ID, self.access_key_id.clone()),
            (ENV_SECRET, self.secret_access_key.clone()),
        ]
    }

    /// `stowage serve` flags for this bucket, with keys below `prefix`.
    pub fn stowage_flags(&self, prefix: &str) -> Vec<String> {
        [
            "--storage",
            "s3",
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            &self.region,
            "--s3-bucket",
            &self.bucket,
            "--s3-path-style",
            "true",
            "--s3-access-key-id",
            &self.access_key_id,
            "--s3-secret-access-key",
            &self.secret_access_key,
            "--s3-root-prefix",
            prefix,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// A Garage process with its data directory; killed when dropped.
pub struct Garage {
    child: Option<Child>,
    dir: PathBuf,
    pub s3_port: u16,
    pub endpoint: S3Endpoint,
}

impl Garage {
    /// Starts a one-node Garage under `dir`, with a key and the bucket [`BUCKET`].
    pub fn start(dir: &Path) -> Self {
        require("garage");
        fs::create_dir_all(dir).unwrap();
        let s3_port = free_port();
        let rpc_port = free_port();
        let secret = hex(32);
        let config = format!(
            "metadata_dir = \"{dir}/meta\"\ndata_dir = \"{dir}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n\
             [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            dir = dir.display()
        );
        fs::write(dir.join("garage.toml"), config).unwrap();
        let access_key_id = format!("GK{}", hex(12));
        let secret_access_key = hex(32);
        let mut garage = Self {
            child: None,
            dir: dir.to_owned(),
            s3_port,
            endpoint: S3Endpoint {
                endpoint: format!("http://127.0.0.1:{s3_port}"),
                region: REGION.to_owned(),
                bucket: BUCKET.to_owned(),
                access_key_id,
                secret_access_key,
            },
        };
        garage.spawn();
        garage.configure();
        garage.wait_until_serving();
        garage
    }

    fn cli(&self) -> Command {
        let mut command = Command::new(require("garage"));
        command.arg("-c").arg(self.dir.join("garage.toml"));
        command
    }

    fn configure(&self) {
        let node = run(self.cli().args(["node", "id", "-q"]));
        let node = String::from_utf8(node.stdout).unwrap();
        let node = node.trim().split('@').next().unwrap().to_owned();
        run(self
            .cli()
            .args(["layout", "assign", "-z", "dc1", "-c", "10G", &node]));
        run(self.cli().args(["layout", "apply", "--version", "1"]));
        let key = &self.endpoint;
        run(self.cli().args([
            "key",
            "import",
            "--yes",
            "-n",
            "stowage-tests",
            &key.access_key_id,
            &key.secret_access_key,
        ]));
        run(self.cli().args(["bucket", "create", BUCKET]));
        run(self.cli().args([
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            &key.access_key_id,
        ]));
    }

    /// Waits until the S3 API answers requests for the bucket with anything but a server error.
    fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = http_status(self.s3_port, &format!("/{BUCKET}"))
                && status < 500
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("garage did not start serving S3:\n{}", self.logs());
    }

    /// Stops the process (as a crash would); data stays for [`Garage::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): it keeps its connections and accepts new ones into the
    /// kernel's backlog, but answers nothing, as a hung server or a black-holed network does.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("garage is running").id();
        run(Command::new("kill").args([signal, &pid.to_string()]));
    }

    /// Starts the process again on the same data and ports, and waits until it serves.
    pub fn resume(&mut self) {
        self.spawn();
        self.wait_until_serving();
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "garage is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("garage.log"))
            .unwrap();
        let child = self
            .cli()
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "garage did not listen:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default()
    }
}

/// The status code of a plain GET, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
