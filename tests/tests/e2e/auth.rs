//! Access control with real clients: skopeo (`--creds` and `login`), podman, and the oras SDK
//! push and pull through the token flow and through Basic auth; a token from one replica
//! process works on another; and CNCF Distribution with `auth.htpasswd` on the same accounts
//! gives clients the same answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use stowage_e2e::layout::Layout;
use stowage_e2e::{Distribution, Stowage, podman, require, run};

/// Accounts and a policy: alice may do everything, bob may only pull.
pub(crate) struct Accounts {
    pub htpasswd: PathBuf,
    pub policy: PathBuf,
}

pub(crate) const TOKEN_SECRET: &str = "an-e2e-token-key-shared-by-replicas";

impl Accounts {
    pub(crate) fn write(dir: &Path) -> Self {
        let htpasswd = dir.join("htpasswd");
        let entries: String = [("alice", "alice-secret"), ("bob", "bob-secret")]
            .iter()
            .map(|(user, pw)| format!("{user}:{}\n", bcrypt::hash(pw, 5).unwrap()))
            .collect();
        std::fs::write(&htpasswd, entries).unwrap();
        let policy = dir.join("policy.toml");
        std::fs::write(
            &policy,
            "[[rules]]\nrepositories = [\"**\"]\nsubjects = [\"user:alice\"]\nactions = [\"*\"]\n\n\
             [[rules]]\nrepositories = [\"**\"]\nsubjects = [\"user:bob\"]\nactions = [\"pull\"]\n",
        )
        .unwrap();
        Self { htpasswd, policy }
    }

    pub(crate) fn flags(&self, challenge: &str) -> Vec<String> {
        [
            "--htpasswd",
            self.htpasswd.to_str().unwrap(),
            "--auth-policy",
            self.policy.to_str().unwrap(),
            "--auth-challenge",
            challenge,
            "--auth-token-secret",
            TOKEN_SECRET,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// Runs a command and returns its output, whether or not it succeeded.
fn attempt(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"))
}

fn skopeo_cmd() -> Command {
    let mut command = Command::new(require("skopeo"));
    command.arg("--insecure-policy");
    command
}

fn start(dir: &Path, accounts: &Accounts, challenge: &str) -> Stowage {
    let mut args: Vec<String> = vec![
        "--fs-root".into(),
        dir.join(format!("data-{challenge}")).display().to_string(),
        "--fs-fsync".into(),
        "false".into(),
    ];
    args.extend(accounts.flags(challenge));
    Stowage::start_args(&args)
}

#[test]
fn real_clients_through_the_token_flow_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = Accounts::write(dir.path());
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image(
        "amd64",
        &[&[("etc/hello", b"hello from an authorized push")]],
    );
    source.tag("v1", &image);

    for challenge in ["bearer", "basic"] {
        let registry = start(dir.path(), &accounts, challenge);
        let remote = format!("docker://{}/e2e/auth", registry.address);

        // The challenge clients see first.
        let response = blocking::get(&registry.url("/v2/"));
        assert_eq!(response.0, 401, "{challenge}");
        let expected = match challenge {
            "bearer" => format!(
                "Bearer realm=\"http://{}/auth/token\",service=\"stowage\"",
                registry.address
            ),
            _ => "Basic realm=\"stowage\"".to_owned(),
        };
        assert_eq!(response.1, expected);

        // skopeo with --creds: alice pushes, bob pulls, bob may not push, nobody may pull.
        run(skopeo_cmd().args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:alice-secret",
            &source.reference("v1"),
            &format!("{remote}:v1"),
        ]));
        let inspect = run(skopeo_cmd().args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            "bob:bob-secret",
            &format!("{remote}:v1"),
        ]));
        let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(inspect["Digest"], image.digest, "{challenge}");
        let denied = attempt(skopeo_cmd().args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "bob:bob-secret",
            &source.reference("v1"),
            &format!("{remote}:bob"),
        ]));
        assert!(!denied.status.success(), "{challenge}: bob pushed");
        let anonymous = attempt(skopeo_cmd().args([
            "inspect",
            "--tls-verify=false",
            "--no-creds",
            &format!("{remote}:v1"),
        ]));
        assert!(!anonymous.status.success(), "{challenge}: anonymous pulled");
        let stderr = String::from_utf8_lossy(&anonymous.stderr).to_lowercase();
        assert!(
            stderr.contains("unauthorized") || stderr.contains("authentication required"),
            "{stderr}"
        );

        // skopeo login, then copies with only the auth file.
        let authfile = dir.path().join(format!("skopeo-auth-{challenge}.json"));
        run(skopeo_cmd().args([
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            "-u",
            "alice",
            "-p",
            "alice-secret",
            &registry.address,
        ]));
        let wrong = attempt(skopeo_cmd().args([
            "login",
            "--tls-verify=false",
            "--authfile",
            dir.path().join("unused.json").to_str().unwrap(),
            "-u",
            "alice",
            "-p",
            "not-her-password",
            &registry.address,
        ]));
        assert!(
            !wrong.status.success(),
            "{challenge}: a wrong password logged in"
        );
        run(skopeo_cmd().args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-authfile",
            authfile.to_str().unwrap(),
            &source.reference("v1"),
            &format!("{remote}:from-login"),
        ]));

        // podman: login, push, pull.
        let podman_dir = dir.path().join(format!("podman-{challenge}"));
        let podman_auth = podman_dir.join("auth.json");
        std::fs::create_dir_all(&podman_dir).unwrap();
        run(podman(&podman_dir).args([
            "login",
            "--tls-verify=false",
            "--authfile",
            podman_auth.to_str().unwrap(),
            "-u",
            "alice",
            "-p",
            "alice-secret",
            &registry.address,
        ]));
        // Pull what alice pushed, push it under another name, pull that back.
        let authfile_args = [
            "--tls-verify=false",
            "--authfile",
            podman_auth.to_str().unwrap(),
        ];
        let pulled = run(podman(&podman_dir)
            .args(["pull", "-q"])
            .args(authfile_args)
            .arg(format!("{}/e2e/auth:v1", registry.address)));
        let id = String::from_utf8(pulled.stdout).unwrap().trim().to_owned();
        let pushed = format!("{}/e2e/podman:v1", registry.address);
        run(podman(&podman_dir).args(["tag", &id, &pushed]));
        run(podman(&podman_dir).args([
            "push",
            "--tls-verify=false",
            "--authfile",
            podman_auth.to_str().unwrap(),
            &pushed,
        ]));
        run(podman(&podman_dir).args(["rmi", "-a", "-f"]));
        run(podman(&podman_dir).args([
            "pull",
            "-q",
            "--tls-verify=false",
            "--authfile",
            podman_auth.to_str().unwrap(),
            &pushed,
        ]));

        // The oras SDK, with its token backend or its Basic one.
        let backend = if challenge == "bearer" {
            "token"
        } else {
            "basic"
        };
        let work = dir.path().join(format!("oras-{challenge}"));
        std::fs::create_dir_all(&work).unwrap();
        let seen = oras(&registry.address, backend, &work, &[]);
        assert_eq!(seen["pulled_same"], true, "{challenge}: {seen}");
        assert_eq!(seen["wrong_password_refused"], true, "{challenge}: {seen}");
    }
}

/// Runs the oras SDK flow; `env` adds environment variables (a CA bundle).
pub(crate) fn oras(
    registry: &str,
    backend: &str,
    work: &Path,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/oras_auth.py");
    let https = env.iter().any(|(k, _)| *k == "REQUESTS_CA_BUNDLE");
    let output = run(Command::new("python3")
        .arg(script)
        .args([
            "--registry",
            registry,
            "--repository",
            "e2e/oras-auth",
            "--user",
            "alice",
            "--password",
            "alice-secret",
            "--auth-backend",
            backend,
            "--workdir",
            work.to_str().unwrap(),
        ])
        .args(https.then_some("--https"))
        .envs(env.iter().copied()));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_token_from_one_replica_process_works_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = Accounts::write(dir.path());
    let mut args: Vec<String> = vec![
        "--fs-root".into(),
        dir.path().join("shared").display().to_string(),
        "--fs-fsync".into(),
        "false".into(),
    ];
    args.extend(accounts.flags("bearer"));
    let a = Stowage::start_args(&args);
    let b = Stowage::start_args(&args);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:alice-secret")
    );
    let token = blocking::token(
        &a.url("/auth/token?service=stowage&scope=repository:e2e/x:pull,push"),
        &basic,
    );
    let (status, _) = blocking::request("POST", &b.url("/v2/e2e/x/blobs/uploads/"), &token);
    assert_eq!(status, 202, "replica B refused replica A's token");
    // A replica with another key refuses it.
    let mut other = args.clone();
    let key = other.iter().position(|a| a == TOKEN_SECRET).unwrap();
    other[key] = "a-different-key-of-enough-length-1234".into();
    let c = Stowage::start_args(&other);
    let (status, _) = blocking::request("POST", &c.url("/v2/e2e/x/blobs/uploads/"), &token);
    assert_eq!(status, 401);
}

#[test]
fn distribution_with_htpasswd_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = Accounts::write(dir.path());
    let distribution =
        Distribution::start_with_htpasswd(&dir.path().join("dist"), &accounts.htpasswd);
    // Distribution's htpasswd auth lets any account do anything: the same as Stowage's default
    // policy, which applies when no policy file is given.
    let stowage = Stowage::start_args(&[
        "--fs-root".into(),
        dir.path().join("stowage").display().to_string(),
        "--htpasswd".into(),
        accounts.htpasswd.display().to_string(),
        "--auth-challenge".into(),
        "basic".into(),
    ]);
    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image("amd64", &[&[("file", b"same answers")]]);
    source.tag("v1", &image);

    let credentials: [(&str, Option<&str>); 4] = [
        ("right password", Some("alice:alice-secret")),
        ("wrong password", Some("alice:wrong")),
        ("unknown user", Some("mallory:alice-secret")),
        ("no credentials", None),
    ];
    let mut answers = Vec::new();
    for address in [&distribution.address, &stowage.address] {
        let mut seen = Vec::new();
        for (what, creds) in credentials {
            let remote = format!("docker://{address}/compat/auth:v1");
            let creds_args: Vec<&str> = match creds {
                Some(creds) => vec!["--dest-creds", creds],
                None => vec!["--dest-no-creds"],
            };
            let push = attempt(
                skopeo_cmd()
                    .args(["copy", "--dest-tls-verify=false"])
                    .args(&creds_args)
                    .args([&source.reference("v1"), &remote]),
            );
            let pull_creds: Vec<&str> = match creds {
                Some(creds) => vec!["--creds", creds],
                None => vec!["--no-creds"],
            };
            let pull = attempt(
                skopeo_cmd()
                    .args(["inspect", "--tls-verify=false"])
                    .args(&pull_creds)
                    .args([&remote]),
            );
            let basic = creds.map(|c| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(c)
                )
            });
            let (base, challenge) =
                blocking::request_with("GET", &format!("http://{address}/v2/"), basic.as_deref());
            let scheme = challenge.split(' ').next().unwrap_or_default().to_owned();
            seen.push((
                what,
                push.status.success(),
                pull.status.success(),
                base,
                scheme,
            ));
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1], "Distribution, then Stowage");
    assert_eq!(
        answers[1][0],
        ("right password", true, true, 200, String::new())
    );
    assert_eq!(
        answers[1][1],
        ("wrong password", false, false, 401, "Basic".to_owned())
    );
}

/// Small blocking HTTP helpers for tests that otherwise drive command-line clients.
mod blocking {
    /// Status and `WWW-Authenticate` of a GET.
    pub fn get(url: &str) -> (u16, String) {
        request_with("GET", url, None)
    }

    pub fn request(method: &str, url: &str, bearer: &str) -> (u16, String) {
        request_with(method, url, Some(&format!("Bearer {bearer}")))
    }

    pub fn request_with(method: &str, url: &str, authorization: Option<&str>) -> (u16, String) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let http = stowage_e2e::http();
            let mut request = http.request(method.parse().unwrap(), url);
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization);
            }
            let response = request.send().await.unwrap();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (response.status().as_u16(), challenge)
        })
    }

    /// The token `/auth/token` answers for `authorization`.
    pub fn token(url: &str, authorization: &str) -> String {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let response = stowage_e2e::http()
                .get(url)
                .header("authorization", authorization)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            body["token"].as_str().unwrap().to_owned()
        })
    }
}
