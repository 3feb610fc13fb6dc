//! `stowage copy` against `skopeo copy`, the same multi-layer image from an OCI layout into a
//! release-build Stowage: once into an empty registry, once into one that already holds an
//! image sharing all layers but one. Printed side by side: wall time, and the bytes the
//! registry received (its own `stowage_http_received_bytes_total`), not asserted.
//!
//! Layer size and count can be changed with `STOWAGE_BENCH_COPY_LAYER_BYTES` and
//! `STOWAGE_BENCH_COPY_LAYERS`.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stowage_e2e::layout::{Layout, filler};
use stowage_e2e::{Stowage, free_port, require, run};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A registry with its metrics listener.
struct Registry {
    server: Stowage,
    metrics: String,
}

impl Registry {
    fn start(root: &Path) -> Self {
        let binary = stowage_e2e::build_dir().join("stowage");
        assert!(
            binary.exists(),
            "build the server first: cargo build --release -p stowage"
        );
        let metrics = format!("127.0.0.1:{}", free_port());
        let args: Vec<String> = [
            "--fs-root",
            root.to_str().unwrap(),
            "--metrics-listen",
            &metrics,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        Self {
            server: Stowage::start_with_binary(&binary, &args),
            metrics,
        }
    }

    fn received(&self) -> f64 {
        let output =
            run(Command::new("curl").args(["-sf", &format!("http://{}/metrics", self.metrics)]));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("stowage_http_received_bytes_total "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// A copy tool, as the benchmark runs it.
#[derive(Clone, Copy)]
enum Tool {
    Stowage,
    Skopeo,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Stowage => "stowage copy",
            Self::Skopeo => "skopeo copy",
        }
    }

    fn copy(self, source: &str, destination: &str, cache: &Path) -> Duration {
        let mut command = match self {
            Self::Stowage => {
                let mut command = Command::new(stowage_e2e::build_dir().join("stowage"));
                command
                    .args(["copy", "-q", "--dest-tls-verify=false"])
                    .env("XDG_CACHE_HOME", cache);
                command
            }
            Self::Skopeo => {
                let mut command = Command::new(require("skopeo"));
                command.args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"]);
                command
            }
        };
        let started = Instant::now();
        run(command.args([source, destination]));
        started.elapsed()
    }
}

fn main() {
    let layer_bytes = env_number("STOWAGE_BENCH_COPY_LAYER_BYTES", 32 << 20);
    let layers = env_number("STOWAGE_BENCH_COPY_LAYERS", 8).max(2);
    let scratch = tempfile::Builder::new()
        .prefix("stowage-bench-copy")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    let mut source = Layout::new(&scratch.path().join("layout"));
    let shared: Vec<Vec<u8>> = (0..layers - 1)
        .map(|i| filler(layer_bytes, i as u64 + 1))
        .collect();
    let old_top = filler(layer_bytes, 1000);
    let new_top = filler(layer_bytes, 2000);
    let mut layers_of_old: Vec<&[u8]> = shared.iter().map(Vec::as_slice).collect();
    let mut layers_of_new = layers_of_old.clone();
    layers_of_old.push(&old_top);
    layers_of_new.push(&new_top);
    let old = source.raw_image(&layers_of_old);
    let new = source.raw_image(&layers_of_new);
    source.tag("old", &old);
    source.tag("new", &new);

    println!(
        "copy: an image of {layers} layers of {} MiB from an OCI layout into Stowage (release)",
        layer_bytes >> 20
    );
    println!(
        "  {:<40} {:<14} {:>10} {:>16}",
        "", "tool", "wall (s)", "MB received"
    );
    for (scenario, holds_old) in [
        ("into an empty registry", false),
        ("into one holding all but one layer", true),
    ] {
        for tool in [Tool::Skopeo, Tool::Stowage] {
            let root = scratch
                .path()
                .join(format!("{}-{holds_old}", tool.name().replace(' ', "-")));
            let registry = Registry::start(&root);
            let target =
                |tag: &str| format!("docker://{}/bench/app:{tag}", registry.server.address);
            if holds_old {
                tool.copy(&source.reference("old"), &target("old"), scratch.path());
            }
            let before = registry.received();
            let took = tool.copy(&source.reference("new"), &target("new"), scratch.path());
            let received = registry.received() - before;
            println!(
                "  {scenario:<40} {:<14} {:>10.2} {:>16.1}",
                tool.name(),
                took.as_secs_f64(),
                received / 1e6
            );
        }
    }
}
