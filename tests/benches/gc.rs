//! `stowage gc` over a registry of 10,000 blobs in 500 repositories, on the filesystem and on S3
//! (a Garage started here): how long it takes and how many storage requests it makes.
//!
//! Each repository holds one tagged image (a manifest, a config and nine layers) and nine blobs
//! nothing references: 20 blobs a repository, 10,000 in all, of which a run deletes 4,500.
//!
//! Then the cost of churn as the registry grows: on the memory backend (listings counted as the
//! pages S3 answers them in), registries of 10k, 100k and 1M blobs, each after the same churn
//! (100 images deleted): what one gc run costs. Sizes can be changed with
//! `STOWAGE_BENCH_GC_SIZES` (blobs, comma-separated). Printed, not asserted. Run with `make bench`.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use stowage::gc::{self, Options};
use stowage::oci::{Digest, RepositoryName};
use stowage::storage::{self, BlobStore, S3Config, StorageConfig, layout};
use stowage_e2e::garage::Garage;

const REPOSITORIES: usize = 500;
const LAYERS: usize = 9;
const ORPHANS: usize = 9;

async fn put_blob(store: &dyn BlobStore, repository: &RepositoryName, data: Vec<u8>) -> Digest {
    let digest = Digest::sha256_of(&data);
    store
        .put(&layout::blob_data(&digest), Bytes::from(data))
        .await
        .unwrap();
    store
        .put(
            &layout::layer_link(repository, &digest),
            layout::link_content(&digest),
        )
        .await
        .unwrap();
    digest
}

/// Stores a tagged image in `repository`: `layers` blobs, a config and the manifest naming
/// them, each with its link; the manifest's digest.
async fn put_image(
    store: &dyn BlobStore,
    repository: &RepositoryName,
    name: &str,
    layers: usize,
    tag: &str,
) -> Digest {
    let mut descriptors = Vec::new();
    for layer in 0..layers {
        let digest = put_blob(
            store,
            repository,
            format!("layer {layer} of {name}").into_bytes(),
        )
        .await;
        descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": 1}));
    }
    let config = put_blob(store, repository, format!("config of {name}").into_bytes()).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
        "layers": descriptors,
    });
    let body = Bytes::from(manifest.to_string());
    let digest = Digest::sha256_of(&body);
    store.put(&layout::blob_data(&digest), body).await.unwrap();
    store
        .put(
            &layout::revision_link(repository, &digest),
            layout::link_content(&digest),
        )
        .await
        .unwrap();
    store
        .put(
            &layout::tag_current_link(repository, &tag.parse().unwrap()),
            layout::link_content(&digest),
        )
        .await
        .unwrap();
    digest
}

async fn populate_repository(store: Arc<dyn BlobStore>, index: usize) {
    let repository: RepositoryName = format!("team{}/app{index}", index % 10).parse().unwrap();
    for orphan in 0..ORPHANS {
        put_blob(
            store.as_ref(),
            &repository,
            format!("orphan {orphan} of {index}").into_bytes(),
        )
        .await;
    }
    put_image(
        store.as_ref(),
        &repository,
        &index.to_string(),
        LAYERS,
        "latest",
    )
    .await;
}

async fn measure(name: &str, config: StorageConfig) {
    let store = storage::open(&config).await.unwrap();
    let started = Instant::now();
    futures::stream::iter(0..REPOSITORIES)
        .map(|i| populate_repository(Arc::clone(&store), i))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let populated = started.elapsed();
    // Let the grace period (one second) pass, then measure a dry run and a real one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let options = Options {
        dry_run: true,
        delete_untagged: true,
        grace_period: Duration::from_secs(1),
        sweep_wait: Duration::ZERO,
        mirror_retention: None,
    };
    let dry = gc::run_once(Arc::clone(&store), &options).await.unwrap();
    let real = gc::run_once(
        Arc::clone(&store),
        &Options {
            dry_run: false,
            ..options
        },
    )
    .await
    .unwrap();
    println!("{name} (populated in {:.1}s)", populated.as_secs_f64());
    for (what, report) in [("gc --dry-run", &dry), ("gc", &real)] {
        println!(
            "  {what:<14} {:>8.2}s {:>8} storage requests, {} blobs deleted of {}",
            report.duration_seconds,
            report.storage_requests,
            report.blobs_deleted,
            REPOSITORIES * (LAYERS + ORPHANS + 2),
        );
    }
}

/// Images of ten blobs each (a manifest, a config and eight layers), a hundred to a
/// repository, all tagged.
async fn populate_images(
    store: Arc<dyn BlobStore>,
    images: usize,
) -> Vec<(usize, RepositoryName, Digest)> {
    let image = |n: usize| {
        let store = Arc::clone(&store);
        async move {
            let repository: RepositoryName =
                format!("team{}/app{}", n % 10, n / 100).parse().unwrap();
            let name = format!("image {n}");
            let digest = put_image(store.as_ref(), &repository, &name, 8, &format!("v{n}")).await;
            (n, repository, digest)
        }
    };
    futures::stream::iter(0..images)
        .map(image)
        .buffer_unordered(64)
        .collect()
        .await
}

/// One gc run after 100 images are deleted (their tag and manifest, as the API deletes them),
/// on registries of growing size.
async fn churn_series() {
    let sizes: Vec<usize> = std::env::var("STOWAGE_BENCH_GC_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    println!(
        "gc after 100 images deleted, memory backend (listings counted in S3's pages of 1,000)"
    );
    println!(
        "  {:>10} {:>14} {:>12} {:>18} {:>14}",
        "blobs", "populated (s)", "gc (s)", "storage requests", "blobs deleted"
    );
    for blobs in sizes {
        let store: Arc<dyn BlobStore> = Arc::new(storage::MemoryStore::default());
        let started = Instant::now();
        let images = populate_images(Arc::clone(&store), (blobs / 10).max(100)).await;
        let populated = started.elapsed();
        for (n, repository, digest) in images.iter().step_by(images.len() / 100).take(100) {
            let tag = format!("v{n}").parse().unwrap();
            store
                .delete(&layout::tag_current_link(repository, &tag))
                .await
                .unwrap();
            store
                .delete(&layout::revision_link(repository, digest))
                .await
                .unwrap();
        }
        let options = Options {
            dry_run: false,
            delete_untagged: false,
            grace_period: Duration::ZERO,
            sweep_wait: Duration::ZERO,
            mirror_retention: None,
        };
        let report = gc::run_once(Arc::clone(&store), &options).await.unwrap();
        println!(
            "  {:>10} {:>14.1} {:>12.2} {:>18} {:>14}",
            images.len() * 10,
            populated.as_secs_f64(),
            report.duration_seconds,
            report.storage_requests,
            report.blobs_deleted
        );
    }
}

#[tokio::main]
async fn main() {
    let scratch = tempfile::Builder::new()
        .prefix("stowage-gc-bench")
        .tempdir_in(std::env::current_dir().unwrap())
        .unwrap();
    println!(
        "gc over {} blobs in {REPOSITORIES} repositories (sweep wait left out)",
        REPOSITORIES * (LAYERS + ORPHANS + 2)
    );
    let root = scratch.path().join("fs");
    measure(
        "filesystem",
        StorageConfig::Filesystem { root, fsync: false },
    )
    .await;

    let garage = Garage::start(&scratch.path().join("garage"));
    let s3 = &garage.endpoint;
    let config = S3Config {
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        endpoint: Some(s3.endpoint.clone()),
        path_style: true,
        root_prefix: "gc-bench".into(),
        credentials: Some((s3.access_key_id.clone(), s3.secret_access_key.clone())),
        part_size: storage::MIN_PART_SIZE,
        upload_concurrency: storage::DEFAULT_UPLOAD_CONCURRENCY,
        redirect: false,
        timeouts: storage::Timeouts::default(),
    };
    measure("S3 (Garage on the same machine)", StorageConfig::S3(config)).await;

    churn_series().await;
}
