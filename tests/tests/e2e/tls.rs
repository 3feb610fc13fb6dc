//! HTTPS: skopeo and the oras SDK over TLS with a test CA, through the token flow; and a
//! certificate replaced on disk during a run of pulls, which new connections get with no
//! failed request.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stowage_e2e::layout::Layout;
use stowage_e2e::tls::{IssuedCert, TestCa};
use stowage_e2e::{Stowage, require, run};

use crate::auth::{Accounts, oras};

fn write_cert(dir: &Path, cert: &IssuedCert) {
    // As a Secret update lands: the key first, then the certificate.
    std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
}

#[test]
fn https_with_real_clients_and_a_certificate_replaced_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let first = ca.issue();
    write_cert(dir.path(), &first);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let cert_dir = dir.path().join("certs.d");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::write(cert_dir.join("ca.crt"), ca.cert_pem()).unwrap();
    let accounts = Accounts::write(dir.path());
    let mut args: Vec<String> = vec![
        "--fs-root".into(),
        dir.path().join("data").display().to_string(),
        "--tls-cert-file".into(),
        dir.path().join("tls.crt").display().to_string(),
        "--tls-key-file".into(),
        dir.path().join("tls.key").display().to_string(),
        "--reload-interval".into(),
        "200ms".into(),
    ];
    args.extend(accounts.flags("bearer"));
    let registry = Stowage::start_args(&args);

    let mut source = Layout::new(&dir.path().join("source"));
    let image = source.image("amd64", &[&[("over", b"tls")]]);
    source.tag("v1", &image);
    let remote = format!("docker://{}/e2e/tls:v1", registry.address);
    run(Command::new(require("skopeo")).args([
        "--insecure-policy",
        "copy",
        "--dest-cert-dir",
        cert_dir.to_str().unwrap(),
        "--dest-creds",
        "alice:alice-secret",
        &source.reference("v1"),
        &remote,
    ]));
    let inspect = run(Command::new(require("skopeo")).args([
        "inspect",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        "--creds",
        "bob:bob-secret",
        &remote,
    ]));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["Digest"], image.digest);
    // Without the CA, skopeo refuses the certificate.
    let untrusted = Command::new(require("skopeo"))
        .args(["inspect", "--creds", "bob:bob-secret", &remote])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());

    let work = dir.path().join("oras");
    std::fs::create_dir_all(&work).unwrap();
    let seen = oras(
        &registry.address,
        "token",
        &work,
        &[("REQUESTS_CA_BUNDLE", ca_file.to_str().unwrap())],
    );
    assert_eq!(seen["pulled_same"], true, "{seen}");

    let second = ca.issue();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(pulls_across_a_rotation(
        &registry,
        &ca,
        dir.path(),
        &first,
        &second,
        &image.digest,
    ));
}

/// Pulls the manifest over new connections while the certificate is replaced: every request
/// succeeds, over HTTP/2, and new connections move to the new certificate and stay there.
async fn pulls_across_a_rotation(
    registry: &Stowage,
    ca: &TestCa,
    dir: &Path,
    first: &IssuedCert,
    second: &IssuedCert,
    digest: &str,
) {
    // A client per request: each request is a new connection and a new handshake (an HTTP/2
    // client would otherwise keep multiplexing over its first connection).
    let client = || {
        let ca = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap();
        stowage_e2e::http_builder()
            .add_root_certificate(ca)
            .tls_info(true)
            .build()
            .unwrap()
    };
    let http = client();
    let base = format!("https://{}", registry.address);
    let token: serde_json::Value = http
        .get(format!(
            "{base}/auth/token?service=stowage&scope=repository:e2e/tls:pull"
        ))
        .basic_auth("bob", Some("bob-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let mut served = Vec::new();
    let mut replaced_at = None;
    for round in 0..400 {
        if round == 10 {
            write_cert(dir, second);
            replaced_at = Some(served.len());
        }
        let response = client()
            .get(format!("{base}/v2/e2e/tls/manifests/v1"))
            .bearer_auth(&token)
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap_or_else(|err| panic!("request {round} failed during the rotation: {err}"));
        assert_eq!(response.status(), 200, "request {round}");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.headers()["docker-content-digest"], digest);
        let peer = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate().map(<[u8]>::to_vec))
            .unwrap();
        served.push(peer);
        let moved = served
            .iter()
            .rev()
            .take(20)
            .all(|cert| cert == second.der());
        if served.len() >= 40 && moved {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replaced_at = replaced_at.unwrap();
    assert!(served[..replaced_at].iter().all(|cert| cert == first.der()));
    let switched = served
        .iter()
        .position(|cert| cert == second.der())
        .expect("the new certificate was never served");
    assert!(
        served[switched..].iter().all(|cert| cert == second.der()),
        "a connection after the switch got the old certificate"
    );
}
