//! `with-garage <command…>`: starts a one-node Garage on 127.0.0.1, runs the command with the
//! bucket's address and key in `STOWAGE_TEST_S3_*`, stops Garage, and exits as the command did.
//!
//! `make test` wraps the test run in it, so every S3 test shares one real S3 server that the run
//! started and stops.

// A harness reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::process::{Command, ExitCode};

use stowage_e2e::garage::Garage;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: with-garage <command> [args…]");
        return ExitCode::from(2);
    };
    let dir = tempfile::Builder::new()
        .prefix("stowage-garage")
        .tempdir()
        .unwrap();
    let garage = Garage::start(dir.path());
    eprintln!(
        "with-garage: S3 on {} (bucket {})",
        garage.endpoint.endpoint, garage.endpoint.bucket
    );
    let status = Command::new(program)
        .args(args)
        .envs(garage.endpoint.env())
        .status();
    drop(garage);
    match status {
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("with-garage: {err}");
            ExitCode::FAILURE
        }
    }
}
