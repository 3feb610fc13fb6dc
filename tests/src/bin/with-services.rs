//! `with-services <command…>`: starts a one-node Garage and a `redis-server` on 127.0.0.1, runs
//! the command with the bucket's address and key in `STOWAGE_TEST_S3_*` and Redis's URL in
//! `STOWAGE_TEST_REDIS`, stops both, and exits as the command did.
//!
//! `make test` wraps the test run in it, so every S3 test shares one real S3 server, and the
//! blob cache's shared tier one real Redis, that the run started and stops.

// A harness reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::process::{Command, ExitCode};

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
    eprintln!(
        "with-services: S3 on {} (bucket {}), Redis on {}",
        garage.endpoint.endpoint,
        garage.endpoint.bucket,
        redis.url()
    );
    let status = Command::new(program)
        .args(args)
        .envs(garage.endpoint.env())
        .env("STOWAGE_TEST_REDIS", redis.url())
        .status();
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
