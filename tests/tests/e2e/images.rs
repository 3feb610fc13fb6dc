//! Stowage ships through Stowage: the images `make images` builds (OCI layouts, made with umoci
//! and no Docker engine) are pushed into a running Stowage with skopeo, pulled back, unpacked,
//! and the binaries in them run.

use std::path::Path;
use std::process::Command;

use stowage_e2e::layout;
use stowage_e2e::{Stowage, require, run, skopeo};

const VERSION: &str = env!("CARGO_PKG_VERSION");

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

        // Unpacked, the binary runs with the libraries the image carries.
        let bundle = dir.path().join(format!("{name}-bundle"));
        run(Command::new(require("umoci")).args([
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:{VERSION}", back.display()),
            bundle.to_str().unwrap(),
        ]));
        let rootfs = bundle.join("rootfs");
        let version = run(Command::new(rootfs.join("lib64/ld-linux-x86-64.so.2"))
            .arg("--library-path")
            .arg(rootfs.join("lib/x86_64-linux-gnu"))
            .arg(rootfs.join(format!("usr/local/bin/{binary}")))
            .arg("--version"));
        let printed = String::from_utf8_lossy(&version.stdout);
        assert!(printed.contains(VERSION), "{name}: {printed}");
    }
}
