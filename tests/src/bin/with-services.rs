//! `with-services <command…>`: starts a one-node Garage, a `redis-server`, Azurite and
//! fake-gcs-server on 127.0.0.1, runs the command with their addresses in `STOWAGE_TEST_S3_*`,
//! `STOWAGE_TEST_REDIS`, `STOWAGE_TEST_AZURE_*` and `STOWAGE_TEST_GCS_*`, stops them all, and
//! exits as the command did.
//!
//! `make test` wraps the test run in it, so every S3, Azure and GCS test shares one real server
//! (or the cloud's own emulator), and the blob cache's shared tier one real Redis, that the run
//! started and stops.

// A harness reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::process::{Command, ExitCode};

use stowage_e2e::emulators::Emulator;
use stowage_e2e::garage::Garage;
use stowage_e2e::redis::RedisServer;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: with-services <command> [args…]");
        return ExitCode::from(2);
    };
    let dir = tempfile::Builder::new()
        .prefix("stowage-services")
        .tempdir()
        .unwrap();
    let garage = Garage::start(dir.path());
    let redis = RedisServer::start(dir.path());
    let (azurite, azure) = Emulator::azurite(dir.path());
    let (fake_gcs, gcs) = Emulator::fake_gcs(dir.path());
    eprintln!(
        "with-services: S3 on {} (bucket {}), Redis on {}, Azurite on {}, fake-gcs-server on {}",
        garage.endpoint.endpoint,
        garage.endpoint.bucket,
        redis.url(),
        azure.endpoint,
        gcs.endpoint
    );
    let status = Command::new(program)
        .args(args)
        .envs(garage.endpoint.env())
        .env("STOWAGE_TEST_REDIS", redis.url())
        .envs(azure.env())
        .envs(gcs.env())
        .status();
    drop(fake_gcs);
    drop(azurite);
    drop(redis);
    drop(garage);
    match status {
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("with-services: {err}");
            ExitCode::FAILURE
        }
    }
}
