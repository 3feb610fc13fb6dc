//! The `stowage` binary on Azure (Azurite) and GCS (fake-gcs-server) with real clients: skopeo
//! and podman round trips, and CNCF Distribution 2.8.2 serving what Stowage stored in the cloud
//! and the other way round.
//!
//! Debian's Distribution 2.8.2 is built without its `azure` and `gcs` drivers, so the two meet
//! through the layout those drivers write: an object's name is the root directory and the
//! driver's path (`<root>/docker/registry/v2/…`), the same tree the `filesystem` driver keeps
//! under its root. Stowage's objects are copied into a folder Distribution serves, and
//! Distribution's folder into objects Stowage serves.

use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use stowage::storage::{BlobStore, StorageConfig};
use stowage_e2e::emulators::{AzureEndpoint, GcsEndpoint};
use stowage_e2e::{Distribution, Stowage, podman, run};

use crate::distribution_compat::{images, pull_and_compare, push_all};
use crate::s3::unique;

#[derive(Debug, Clone, Copy)]
enum Cloud {
    Azure,
    Gcs,
}

fn flags(cloud: Cloud, prefix: &str) -> Vec<String> {
    match cloud {
        Cloud::Azure => AzureEndpoint::from_env().stowage_flags(prefix),
        Cloud::Gcs => GcsEndpoint::from_env().stowage_flags(prefix),
    }
}

/// The storage the flags reach, opened as `stowage serve` would.
pub(crate) async fn open(flags: &[String]) -> std::sync::Arc<dyn BlobStore> {
    use clap::Parser;
    let argv = ["stowage", "serve"]
        .into_iter()
        .map(str::to_owned)
        .chain(flags.iter().cloned());
    let stowage::cli::Command::Serve(args) =
        stowage::cli::Cli::try_parse_from(argv).unwrap().command
    else {
        unreachable!("parsed a serve command line")
    };
    let config: StorageConfig = args.resolve().unwrap().storage;
    stowage::tls::install_crypto_provider();
    stowage::storage::open(&config).await.unwrap()
}

async fn skopeo_and_podman_round_trip(cloud: Cloud) {
    let dir = tempfile::tempdir().unwrap();
    let (source, tagged) = images(&dir.path().join("source"));
    let stowage = Stowage::start_args(&flags(cloud, &unique("clients")));
    push_all(&source, &tagged, &stowage.address, "clients/app");
    pull_and_compare(
        &source,
        &tagged,
        &stowage.address,
        "clients/app",
        dir.path(),
    );

    // podman pulls what skopeo pushed, pushes it under another name, and pulls that back.
    let podman_dir = dir.path().join("podman");
    std::fs::create_dir_all(&podman_dir).unwrap();
    let pulled = run(podman(&podman_dir)
        .args(["pull", "-q", "--tls-verify=false"])
        .arg(format!("{}/clients/app:v2", stowage.address)));
    let id = String::from_utf8(pulled.stdout).unwrap().trim().to_owned();
    let pushed = format!("{}/clients/podman:v2", stowage.address);
    run(podman(&podman_dir).args(["tag", &id, &pushed]));
    run(podman(&podman_dir).args(["push", "--tls-verify=false", &pushed]));
    run(podman(&podman_dir).args(["rmi", "-a", "-f"]));
    let again = run(podman(&podman_dir).args(["pull", "-q", "--tls-verify=false", &pushed]));
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_on_azurite() {
    skopeo_and_podman_round_trip(Cloud::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_on_fake_gcs_server() {
    skopeo_and_podman_round_trip(Cloud::Gcs).await;
}

/// Copies every object below `docker/` of `store` into files under `root`, by name.
pub(crate) async fn objects_to_folder(store: &dyn BlobStore, root: &Path) {
    for object in store.walk("docker").await.unwrap() {
        let file = root.join("docker").join(&object.key);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let mut bytes = Vec::new();
        let mut stream = store
            .get(&format!("docker/{}", object.key), None)
            .await
            .unwrap();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        std::fs::write(file, bytes).unwrap();
    }
}

/// Stores every file under `root` as the object of the same name.
async fn folder_to_objects(root: &Path, store: &dyn BlobStore) {
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let key = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                let data = std::fs::read(&path).unwrap();
                store.put(&key, Bytes::from(data)).await.unwrap();
            }
        }
    }
}

async fn distribution_layout_both_ways(cloud: Cloud) {
    let dir = tempfile::tempdir().unwrap();
    let (source, tagged) = images(&dir.path().join("source"));

    // Stowage pushes to the cloud; its objects, as a folder, are what Distribution serves.
    let prefix = unique("by-stowage");
    let stowage_flags = flags(cloud, &prefix);
    let stowage = Stowage::start_args(&stowage_flags);
    push_all(&source, &tagged, &stowage.address, "by/stowage");
    let folder = dir.path().join("from-cloud");
    objects_to_folder(open(&stowage_flags).await.as_ref(), &folder).await;
    let distribution = Distribution::start(&folder);
    pull_and_compare(
        &source,
        &tagged,
        &distribution.address,
        "by/stowage",
        dir.path(),
    );

    // Distribution pushes to its folder; the folder, as objects, is what Stowage serves.
    let distribution_root = dir.path().join("distribution");
    let distribution = Distribution::start(&distribution_root);
    push_all(&source, &tagged, &distribution.address, "by/distribution");
    let prefix = unique("by-distribution");
    let stowage_flags = flags(cloud, &prefix);
    folder_to_objects(&distribution_root, open(&stowage_flags).await.as_ref()).await;
    let stowage = Stowage::start_args(&stowage_flags);
    pull_and_compare(
        &source,
        &tagged,
        &stowage.address,
        "by/distribution",
        dir.path(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_layout_on_azurite() {
    distribution_layout_both_ways(Cloud::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_layout_on_fake_gcs_server() {
    distribution_layout_both_ways(Cloud::Gcs).await;
}
