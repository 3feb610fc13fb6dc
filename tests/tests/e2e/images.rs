//! Stowage ships through Stowage: the images `make images` builds (OCI layouts, made with umoci
//! and no Docker engine) are pushed into a running Stowage with skopeo, pulled back, unpacked,
//! and the binaries in them run inside the image's own root filesystem, as a container runtime
//! would run them, far enough to open their TLS clients.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use stowage_e2e::tls::{HandshakeCounter, TestCa};
use stowage_e2e::{Stowage, free_port, layout, require, run, skopeo};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where Debian, distroless and our images keep the CA bundle that TLS clients load.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

fn repository_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn images_push_to_stowage_and_run() {
    require("umoci");
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    run(
        Command::new(repository_root().join("scripts/build-images.sh"))
            .args(["debug", images.to_str().unwrap()]),
    );

    // The TLS server both binaries are pointed at, with a certificate from a CA of the test's.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca = TestCa::new();
    let tls = runtime.block_on(HandshakeCounter::start(&ca.issue()));

    let registry = Stowage::start(&dir.path().join("data"), &[]);
    for (name, binary, entrypoint_args) in [
        ("stowage", "stowage", vec!["serve"]),
        ("stowage-operator", "stowage-operator", vec![]),
    ] {
        let source = images.join(name);
        let source_ref = format!("oci:{}:{VERSION}", source.display());
        let remote = format!("docker://{}/stowage/{name}:{VERSION}", registry.address);
        skopeo(&["copy", &source_ref, &remote]);

        // The image config says how it runs: non-root, its entrypoint and default command.
        let config = skopeo(&["inspect", "--config", &remote]);
        let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532", "{name}");
        assert_eq!(
            config["config"]["Entrypoint"][0],
            format!("/usr/local/bin/{binary}"),
            "{name}"
        );
        let cmd: Vec<&str> = config["config"]["Cmd"]
            .as_array()
            .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(cmd, entrypoint_args, "{name}");

        // Pulled back bit for bit.
        let back = dir.path().join(format!("{name}-back"));
        skopeo(&[
            "copy",
            &remote,
            &format!("oci:{}:{VERSION}", back.display()),
        ]);
        assert_eq!(
            layout::tagged_digest(&back, VERSION),
            layout::tagged_digest(&source, VERSION),
            "{name}"
        );

        let bundle = dir.path().join(format!("{name}-bundle"));
        run(Command::new(require("umoci")).args([
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:{VERSION}", back.display()),
            bundle.to_str().unwrap(),
        ]));
        let rootfs = bundle.join("rootfs");
        let image = ImageRoot {
            rootfs: rootfs.clone(),
            binary: format!("/usr/local/bin/{binary}"),
        };

        let printed = run(&mut image.command(&["--version"])).stdout;
        let printed = String::from_utf8_lossy(&printed);
        assert!(printed.contains(VERSION), "{name}: {printed}");

        // The image carries a CA bundle, so https endpoints (AWS S3, the API server) verify.
        let bundle_path = rootfs.join(CA_BUNDLE);
        let roots = CertificateDer::pem_file_iter(&bundle_path)
            .unwrap_or_else(|err| panic!("{name}: {}: {err}", bundle_path.display()))
            .filter(Result::is_ok)
            .count();
        assert!(roots >= 100, "{name}: only {roots} CA certificates");
        // Trusting the test CA through that same file, the binary completes a handshake: it
        // has a crypto provider (rustls panics at the first client without one) and it loads
        // its roots from the image's bundle.
        let mut trusted = fs::OpenOptions::new()
            .append(true)
            .open(&bundle_path)
            .unwrap();
        trusted.write_all(ca.cert_pem().as_bytes()).unwrap();
        drop(trusted);

        let before = tls.completed();
        let mut child = match name {
            "stowage" => start_server_against(&image, &tls.address.to_string()),
            _ => start_operator_against(&image, &tls.address.to_string()),
        };
        let shook_hands = runtime.block_on(tls.wait_for_handshake_after(
            before,
            Duration::from_secs(30),
            &mut child.nudge,
        ));
        let exited = child.process.try_wait().unwrap();
        let _ = child.process.kill();
        let _ = child.process.wait();
        let log = fs::read_to_string(&child.log).unwrap_or_default();
        assert!(
            exited.is_none(),
            "{name} exited ({exited:?}) instead of running:\n{log}"
        );
        assert!(
            shook_hands,
            "{name} never completed a TLS handshake with the test server:\n{log}"
        );
        for bad in [
            "panicked",
            "CryptoProvider",
            "no native root CA certificates",
        ] {
            assert!(!log.contains(bad), "{name} logged {bad:?}:\n{log}");
        }
    }
}

/// An unpacked image whose binary runs with the image's root as `/` (a user namespace maps the
/// caller to root there), so it sees only the files the image carries.
struct ImageRoot {
    rootfs: PathBuf,
    binary: String,
}

impl ImageRoot {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(require("unshare"));
        command
            .args(["--user", "--map-root-user"])
            .arg(format!("--root={}", self.rootfs.display()))
            .arg(&self.binary)
            .args(args)
            .env_clear()
            .stdin(Stdio::null());
        command
    }
}

/// A binary started from an image, with something that makes it open a TLS connection.
struct Started {
    process: Child,
    log: PathBuf,
    /// Called while waiting: prods the process into connecting, if it needs prodding.
    nudge: Box<dyn FnMut()>,
}

fn spawn_logged(mut command: Command, image: &ImageRoot) -> (Child, PathBuf) {
    let log = image.rootfs.join("tmp/test.log");
    let file = fs::File::create(&log).unwrap();
    let process = command
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    (process, log)
}

/// `stowage serve` on an https S3 endpoint: each `/readyz` calls the bucket.
fn start_server_against(image: &ImageRoot, endpoint: &str) -> Started {
    let listen = format!("127.0.0.1:{}", free_port());
    let command = image.command(&[
        "serve",
        "--listen",
        &listen,
        "--storage",
        "s3",
        "--s3-bucket",
        "images",
        "--s3-endpoint",
        &format!("https://{endpoint}"),
        "--s3-path-style",
        "true",
        "--s3-access-key-id",
        "test",
        "--s3-secret-access-key",
        "test-secret",
        "--upload-secret",
        "an-upload-key-of-at-least-32-bytes!",
    ]);
    let (process, log) = spawn_logged(command, image);
    Started {
        process,
        log,
        nudge: Box::new(move || {
            if let Ok(mut stream) = TcpStream::connect(&listen) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream
                    .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }),
    }
}

/// The operator with a kubeconfig naming an https API server and no CA of its own, so the
/// client verifies with the system roots.
fn start_operator_against(image: &ImageRoot, server: &str) -> Started {
    fs::write(
        image.rootfs.join("tmp/kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://{server}\n\
             users:\n- name: test\n  user:\n    token: not-a-real-token\ncontexts:\n- name: test\n  \
             context:\n    cluster: test\n    user: test\ncurrent-context: test\n"
        ),
    )
    .unwrap();
    let mut command = image.command(&[
        "--metrics-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--log-format",
        "text",
    ]);
    command.env("KUBECONFIG", "/tmp/kubeconfig");
    let (process, log) = spawn_logged(command, image);
    Started {
        process,
        log,
        // It watches Registries at once, and keeps retrying.
        nudge: Box::new(|| {}),
    }
}
