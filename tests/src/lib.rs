//! The end-to-end harness: real `stowage` processes, CNCF Distribution, and OCI image layouts for
//! real clients (skopeo, oras) to push.
//!
//! Tools are never optional here: a missing one fails the test with the command that installs it.

// A harness reports failure by panicking, like the tests that call it.
#![allow(clippy::unwrap_used)]

pub mod emulators;
pub mod garage;
pub mod layout;
pub mod redis;
pub mod tls;

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How long a process gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The directory cargo put this build's binaries in (`target/debug` or `target/release`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary>
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// The `stowage` binary of this build.
pub fn stowage_bin() -> PathBuf {
    let bin = build_dir().join("stowage");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p stowage` (make test does)",
        bin.display()
    );
    bin
}

/// The path of an installed tool; fails the test when it is missing.
pub fn require(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| panic!("{tool} is not installed: run `make test-deps`"))
}

/// `podman` with its own storage under `dir`, so nothing touches the machine's.
pub fn podman(dir: &Path) -> Command {
    let mut command = Command::new(require("podman"));
    command.args([
        "--root",
        dir.join("podman/root").to_str().unwrap(),
        "--runroot",
        dir.join("podman/run").to_str().unwrap(),
        "--storage-driver",
        "vfs",
        "--events-backend",
        "file",
        "--cgroup-manager",
        "cgroupfs",
    ]);
    command
}

/// Runs a command to completion and fails the test, with its output, unless it succeeds.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A port free at the moment of asking, for servers that cannot report the one they bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(address: &str, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(address).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status}:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "{what} did not listen on {address}:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// An HTTP client for the tests. reqwest speaks TLS through rustls with the process's crypto
/// provider, which must be installed before the first client is built.
pub fn http() -> reqwest::Client {
    http_builder().build().unwrap()
}

/// A client builder, with the crypto provider installed.
pub fn http_builder() -> reqwest::ClientBuilder {
    stowage::tls::install_crypto_provider();
    reqwest::Client::builder()
}

/// Polls `url` until it answers `status`; false if it still does not after `within`.
pub async fn eventually_answers(
    http: &reqwest::Client,
    url: &str,
    status: reqwest::StatusCode,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|response| response.status() == status)
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the series `series` (its name and labels exactly as exported) on the metrics
/// listener at `address`; `None` when it is not exported.
pub async fn metric(address: &str, series: &str) -> Option<f64> {
    let text = http()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map(|value| value.trim().parse().unwrap())
}

/// Flags for filesystem storage at `root` (fsync off: tests need no durability), then `extra`.
fn fs_args(root: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--fs-root".into(),
        root.to_str().unwrap().into(),
        "--fs-fsync".into(),
        "false".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// A `stowage serve` process on 127.0.0.1, killed when dropped.
pub struct Stowage {
    child: Child,
    /// `127.0.0.1:<port>`
    pub address: String,
    pub log: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Stowage {
    /// Starts `stowage serve` on filesystem storage at `root`, with extra flags.
    pub fn start(root: &Path, extra: &[&str]) -> Self {
        Self::start_args(&fs_args(root, extra))
    }

    /// Starts `stowage serve` with exactly these flags (plus listen and log settings).
    pub fn start_args(args: &[String]) -> Self {
        Self::start_with_binary(&stowage_bin(), args)
    }

    /// As `start_args`, with a given `stowage` binary (benchmarks use the release build).
    pub fn start_with_binary(binary: &Path, args: &[String]) -> Self {
        Self::start_at(binary, &format!("127.0.0.1:{}", free_port()), args, &[])
    }

    /// Starts again on the same address with the same flags, as a restarted pod would.
    pub fn restart(&mut self) {
        self.kill();
        let binary = self.binary.clone();
        let (address, args) = (self.address.clone(), self.args.clone());
        let env = self.env.clone();
        *self = Self::start_at(&binary, &address, &args, &env);
    }

    /// As [`Stowage::start`], with these environment variables.
    pub fn start_with_env(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let address = format!("127.0.0.1:{}", free_port());
        Self::start_at(&stowage_bin(), &address, &fs_args(root, extra), &env)
    }

    fn start_at(binary: &Path, address: &str, args: &[String], env: &[(String, String)]) -> Self {
        let log =
            std::env::temp_dir().join(format!("stowage-e2e-{:016x}.log", rand::random::<u64>()));
        let log_file = fs::File::create(&log).unwrap();
        let mut child = Command::new(binary)
            .arg("serve")
            .args([
                "--listen",
                address,
                "--log-format",
                "json",
                "--log-level",
                "info",
            ])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        wait_for_port(address, &mut child, "stowage", &log);
        Self {
            child,
            address: address.to_owned(),
            log,
            binary: binary.to_owned(),
            args: args.to_vec(),
            env: env.to_vec(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies mid-whatever, as on a node failure.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as Kubernetes sends before stopping a pod.
    pub fn terminate(&self) {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
    }

    /// Waits for the process to exit, up to `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process's open files and resident memory (KiB), from `/proc`.
    pub fn footprint(&self) -> (usize, u64) {
        let pid = self.pid();
        let files = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        (files, rss)
    }

    /// What the process logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `(method, path)` of each request in its access log so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["target"] == "stowage::access")
            .filter_map(|line| {
                Some((
                    line["method"].as_str()?.to_owned(),
                    line["path"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// The process's peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Stowage {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_file(&self.log);
    }
}

/// CNCF Distribution (`docker-registry` from Debian) on filesystem storage at `root`.
pub struct Distribution {
    child: Child,
    pub address: String,
    log: PathBuf,
    _config: tempfile::TempDir,
}

impl Distribution {
    /// On filesystem storage at `root`.
    pub fn start(root: &Path) -> Self {
        Self::start_with_storage(&Self::fs_storage(root))
    }

    /// Its `storage:` YAML for the filesystem at `root`.
    pub fn fs_storage(root: &Path) -> String {
        format!("  filesystem:\n    rootdirectory: {}\n", root.display())
    }

    /// Its `storage:` YAML for `s3`'s bucket, keys below `prefix`, redirects off.
    pub fn s3_storage(s3: &garage::S3Endpoint, prefix: &str) -> String {
        format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: {}\n    regionendpoint: {}\n    \
             bucket: {}\n    rootdirectory: /{prefix}\n    secure: false\n    v4auth: true\n  \
             redirect:\n    disable: true\n",
            s3.access_key_id, s3.secret_access_key, s3.region, s3.endpoint, s3.bucket
        )
    }

    /// `storage` with the in-memory blob descriptor cache, as Distribution's shipped config has.
    pub fn with_blob_cache(storage: &str) -> String {
        format!("{storage}  cache:\n    blobdescriptor: inmemory\n")
    }

    /// On filesystem storage at `root`, with its `auth.htpasswd` on the accounts in `htpasswd`.
    pub fn start_with_htpasswd(root: &Path, htpasswd: &Path) -> Self {
        Self::start_with_config(
            &format!("  filesystem:\n    rootdirectory: {}\n", root.display()),
            &format!(
                "auth:\n  htpasswd:\n    realm: registry\n    path: {}\n",
                htpasswd.display()
            ),
        )
    }

    /// On filesystem storage at `root`, sending its events to `url` (its `notifications`).
    pub fn start_with_notifications(root: &Path, url: &str) -> Self {
        Self::start_with_config(
            &format!("  filesystem:\n    rootdirectory: {}\n", root.display()),
            &format!(
                "notifications:\n  endpoints:\n    - name: e2e\n      url: {url}\n      \
                 timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
            ),
        )
    }

    /// With its `s3` driver on `s3`'s bucket, keys below `prefix` (its `rootdirectory`).
    pub fn start_s3(s3: &garage::S3Endpoint, prefix: &str) -> Self {
        Self::start_with_storage(&Self::s3_storage(s3, prefix))
    }

    /// With `storage` (indented YAML under `storage:`).
    pub fn start_with_storage(storage: &str) -> Self {
        Self::start_with_config(storage, "")
    }

    /// With `storage` (indented YAML under `storage:`) and `extra` top-level YAML.
    fn start_with_config(storage: &str, extra: &str) -> Self {
        let config_dir = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let config = config_dir.path().join("config.yml");
        let mut file = fs::File::create(&config).unwrap();
        write!(
            file,
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n{storage}  delete:\n    enabled: true\nhttp:\n  addr: {address}\n{extra}"
        )
        .unwrap();
        let log = config_dir.path().join("registry.log");
        let child = Self::spawn(&config, &address, &log);
        Self {
            child,
            address,
            log,
            _config: config_dir,
        }
    }

    fn spawn(config: &Path, address: &str, log: &Path) -> Child {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(require("docker-registry"))
            .args(["serve", config.to_str().unwrap()])
            // Its AWS SDK refuses a custom CA bundle with a plain-HTTP endpoint.
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        wait_for_port(address, &mut child, "docker-registry", log);
        child
    }

    /// Starts again with the same config and address, as a restarted pod would.
    pub fn restart(&mut self) {
        self.stop();
        let config = self._config.path().join("config.yml");
        self.child = Self::spawn(&config, &self.address, &self.log);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `(method, path)` of every request in its access log so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                // Apache combined format: `127.0.0.1 - - [date] "GET /v2/… HTTP/1.1" …`
                let (_, request) = line.split_once("] \"")?;
                let request = request.split('"').next()?;
                let mut parts = request.split(' ');
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
            .collect()
    }

    /// Stops it, as an upstream going down.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// haproxy balancing HTTP requests round-robin over `backends`, skipping any whose `/readyz`
/// fails; killed when dropped.
pub struct HaProxy {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    pub fn start(backends: &[&str]) -> Self {
        let binary = require("haproxy");
        let dir = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, backend)| format!("  server replica{i} {backend}\n"))
            .collect();
        let config = format!(
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
             retries 3\n  option redispatch\n\
             frontend registry\n  bind {address}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             default-server check inter 200ms fall 1 rise 1\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        fs::write(&path, config).unwrap();
        let log = dir.path().join("haproxy.log");
        let log_file = fs::File::create(&log).unwrap();
        let mut child = Command::new(binary)
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        wait_for_port(&address, &mut child, "haproxy", &log);
        Self {
            child,
            address,
            _dir: dir,
        }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stowage copy` with these arguments, its resume records kept under `cache`; the output
/// whatever the exit status.
pub fn stowage_copy(cache: &Path, args: &[&str]) -> Output {
    Command::new(stowage_bin())
        .arg("copy")
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `stowage copy … --output json` that must succeed; its summary.
pub fn stowage_copied(cache: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let output = stowage_copy(cache, &all);
    assert!(
        output.status.success(),
        "stowage copy {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `skopeo` with TLS verification off for the given subcommand (our test registries are HTTP).
pub fn skopeo(args: &[&str]) -> Output {
    let skopeo = require("skopeo");
    let (subcommand, rest) = args.split_first().unwrap();
    let tls: &[&str] = match *subcommand {
        "copy" => &["--src-tls-verify=false", "--dest-tls-verify=false"],
        _ => &["--tls-verify=false"],
    };
    run(Command::new(skopeo)
        .args(["--insecure-policy", subcommand])
        .args(tls)
        .args(rest))
}
