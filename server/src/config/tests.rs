//! `serve`'s settings from flags, environment and file, layered and checked.

use clap::Parser;

use std::time::Duration;

use super::*;
use crate::storage::StorageConfig;

/// `serve`'s flags on a command line of their own, as `stowage serve` takes them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

impl Cli {
    fn try_parse_from<'a>(
        argv: impl IntoIterator<Item = &'a str>,
    ) -> Result<ServeArgs, clap::Error> {
        // `stowage serve …`: the subcommand's name is not one of its flags.
        let argv = argv.into_iter().filter(|arg| *arg != "serve");
        <Self as Parser>::try_parse_from(argv).map(|cli| cli.serve)
    }
}

fn parse(args: &[&str]) -> ServeArgs {
    let mut argv = vec!["stowage", "serve"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap()
}

#[test]
fn defaults() {
    let config = parse(&[]).resolve().unwrap();
    assert_eq!(config.listen.port(), 5000);
    assert!(config.keys.is_none());
    assert!(config.api.deletes_enabled);
    assert_eq!(config.limits.max_manifest_size, 4 * 1024 * 1024);
    assert!(matches!(
        config.storage,
        StorageConfig::Filesystem { fsync: true, .. }
    ));
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stowage.toml");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{}\n", "k".repeat(40))).unwrap();
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:6000\"\nread-only = true\nupload-token-ttl = \"2h\"\n\
             upload-secret-file = {:?}\nmax-manifest-size = 100\n",
            key_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = parse(&[
        "--config",
        file.to_str().unwrap(),
        "--max-manifest-size",
        "200",
    ])
    .resolve()
    .unwrap();
    assert_eq!(config.listen, "127.0.0.1:6000".parse().unwrap());
    assert!(config.api.read_only);
    assert_eq!(config.upload_token_ttl, Duration::from_secs(7200));
    assert_eq!(config.limits.max_manifest_size, 200);
    assert!(config.keys.is_some());
}

#[test]
fn s3_settings() {
    let config = parse(&[
        "--storage",
        "s3",
        "--s3-bucket",
        "registry",
        "--s3-endpoint",
        "http://127.0.0.1:3900",
        "--s3-path-style",
        "true",
        "--s3-root-prefix",
        "/team",
        "--s3-access-key-id",
        "id",
        "--s3-secret-access-key",
        "secret",
        "--s3-part-size",
        "6291456",
    ])
    .resolve()
    .unwrap();
    let StorageConfig::S3(s3) = config.storage else {
        panic!("not s3")
    };
    assert_eq!(
        (s3.bucket.as_str(), s3.region.as_str()),
        ("registry", "us-east-1")
    );
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
    assert!(s3.path_style && !s3.redirect);
    assert_eq!(s3.credentials, Some(("id".into(), "secret".into())));
    assert_eq!(s3.part_size, 6 * 1024 * 1024);
    assert!(!format!("{s3:?}").contains("secret\""));
    assert!(matches!(
        parse(&["--storage", "s3"]).resolve(),
        Err(ConfigError::Missing(_))
    ));
    let small = [
        "--storage",
        "s3",
        "--s3-bucket",
        "b",
        "--s3-part-size",
        "1024",
    ];
    assert!(matches!(
        parse(&small).resolve(),
        Err(ConfigError::Invalid(_))
    ));
    let half = [
        "--storage",
        "s3",
        "--s3-bucket",
        "b",
        "--s3-access-key-id",
        "id",
    ];
    assert!(matches!(
        parse(&half).resolve(),
        Err(ConfigError::Invalid(_))
    ));
}

#[test]
fn refuses_bad_configuration() {
    assert!(matches!(
        parse(&["--upload-secret", "short"]).resolve(),
        Err(ConfigError::ShortKey(_))
    ));
    let long = "x".repeat(32);
    assert!(matches!(
        parse(&["--upload-secret-previous", &long]).resolve(),
        Err(ConfigError::PreviousWithoutCurrent(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "no-such-setting = 1\n").unwrap();
    assert!(matches!(
        parse(&["--config", file.to_str().unwrap()]).resolve(),
        Err(ConfigError::Parse { .. })
    ));
    assert!(
        Cli::try_parse_from([
            "stowage",
            "serve",
            "--upload-secret",
            "a",
            "--upload-secret-file",
            "b"
        ])
        .is_err()
    );
    for bad in [
        vec!["--rate-limit", "0"],
        vec![
            "--rate-limit",
            "5",
            "--trusted-proxies",
            "10.0.0.0/8,not-a-proxy",
        ],
        vec!["--storage-timeout", "10ms"],
    ] {
        assert!(
            matches!(parse(&bad).resolve(), Err(ConfigError::Invalid(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn load_limits_have_defaults_and_take_addresses_or_ranges() {
    let config = parse(&[]).resolve().unwrap();
    assert_eq!(config.connections.max_connections, 4096);
    assert_eq!(config.connections.header_read_timeout.as_secs(), 20);
    assert_eq!(config.requests.max_concurrent_requests, 512);
    assert_eq!(config.requests.body_idle_timeout.as_secs(), 60);
    assert!(config.requests.rate_limit.is_none());
    let config = parse(&[
        "--rate-limit",
        "10",
        "--trusted-proxies",
        "192.0.2.1, 10.0.0.0/8,2001:db8::/32",
    ])
    .resolve()
    .unwrap();
    let rate = config.requests.rate_limit.unwrap();
    assert_eq!((rate.per_second.get(), rate.burst.get()), (10, 20));
    let proxies: Vec<String> = rate
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["192.0.2.1/32", "10.0.0.0/8", "2001:db8::/32"]);
}

#[test]
fn azure_settings_from_flags_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stowage.toml");
    let key = dir.path().join("azure-key");
    std::fs::write(&key, "a-shared-key\n").unwrap();
    std::fs::write(
        &file,
        format!(
            "storage = \"azure\"\n[azure]\naccount = \"registrydata\"\ncontainer = \"registry\"\n\
             access-key-file = \"{}\"\nroot-prefix = \"team\"\n",
            key.display()
        ),
    )
    .unwrap();
    let config = parse(&[
        "--config",
        file.to_str().unwrap(),
        "--azure-redirect",
        "true",
    ])
    .resolve()
    .unwrap();
    let StorageConfig::Azure(azure) = config.storage else {
        panic!("not azure")
    };
    assert_eq!(
        (azure.account.as_str(), azure.container.as_str()),
        ("registrydata", "registry")
    );
    assert!(
        matches!(&azure.credentials, crate::storage::AzureCredentials::AccessKey(k) if k == "a-shared-key")
    );
    assert_eq!(azure.settings.root_prefix, "team");
    assert!(azure.settings.redirect);
    assert!(
        !format!("{azure:?}").contains("a-shared-key"),
        "the key is never printed"
    );

    // Without a key, SAS or client secret: the environment's identity (AKS workload identity).
    let config = parse(&[
        "--storage",
        "azure",
        "--azure-account",
        "a",
        "--azure-container",
        "c",
    ])
    .resolve()
    .unwrap();
    let StorageConfig::Azure(azure) = config.storage else {
        panic!("not azure")
    };
    assert!(matches!(
        azure.credentials,
        crate::storage::AzureCredentials::Environment
    ));

    let missing = parse(&["--storage", "azure", "--azure-account", "a"]).resolve();
    assert!(matches!(
        missing,
        Err(ConfigError::Missing("--azure-container"))
    ));
    let sas = dir.path().join("sas");
    std::fs::write(&sas, "sv=2021&sig=x").unwrap();
    let two_ways = parse(&[
        "--storage",
        "azure",
        "--azure-account",
        "a",
        "--azure-container",
        "c",
        "--azure-access-key",
        "k",
        "--azure-sas-token-file",
        sas.to_str().unwrap(),
    ])
    .resolve();
    assert!(
        matches!(two_ways, Err(ConfigError::Invalid(_))),
        "{two_ways:?}"
    );
}

#[test]
fn gcs_settings_and_their_checks() {
    let config = parse(&[
        "--storage",
        "gcs",
        "--gcs-bucket",
        "registry-data",
        "--gcs-endpoint",
        "http://127.0.0.1:4443",
        "--gcs-anonymous",
        "true",
        "--gcs-part-size",
        "2097152",
    ])
    .resolve()
    .unwrap();
    let StorageConfig::Gcs(gcs) = config.storage else {
        panic!("not gcs")
    };
    assert_eq!(gcs.bucket, "registry-data");
    assert!(matches!(
        gcs.credentials,
        crate::storage::GcsCredentials::Anonymous
    ));
    assert_eq!(gcs.settings.part_size, 2 * 1024 * 1024);
    let small = parse(&[
        "--storage",
        "gcs",
        "--gcs-bucket",
        "b",
        "--gcs-part-size",
        "1000",
    ])
    .resolve();
    assert!(matches!(small, Err(ConfigError::Invalid(_))));
    let both = parse(&[
        "--storage",
        "gcs",
        "--gcs-bucket",
        "b",
        "--gcs-anonymous",
        "true",
        "--gcs-credentials-file",
        "/key.json",
    ])
    .resolve();
    assert!(matches!(both, Err(ConfigError::Invalid(_))));
    assert!(matches!(
        parse(&["--storage", "gcs"]).resolve(),
        Err(ConfigError::Missing("--gcs-bucket"))
    ));
}
