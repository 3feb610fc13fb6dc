//! `stowage gc` over a registry of 10,000 blobs in 500 repositories, on the filesystem and on S3
//! (a Garage started here): how long it takes and how many storage requests it makes.
//!
//! Each repository holds one tagged image (a manifest, a config and nine layers) and nine blobs
//! nothing references: 20 blobs a repository, 10,000 in all, of which a full run deletes 4,500.
//! Then 100 images are deleted (as the API deletes them: journaled, then unlinked) and one
//! incremental run reclaims them.
//!
//! Then the cost of churn as the registry grows: on the memory backend (listings counted as the
//! pages S3 answers them in), registries of 10k, 100k and 1M blobs, each after the same churn
//! (100 images deleted): what one incremental run costs, beside a full one. Then the same on
//! Garage, at 10k and 100k blobs. Sizes can be changed with `STOWAGE_BENCH_GC_SIZES` and
//! `STOWAGE_BENCH_GC_GARAGE_SIZES` (blobs, comma-separated), and parts run alone with
//! `STOWAGE_BENCH_GC_PARTS`. Printed, not asserted. Run with `make bench`.
//!
//! Content is written as the registry writes it: index entries first, then the links.
//!
//! Last, what the index costs a push: manifest `PUT`s (the registry's own code, one at a time)
//! on Garage, recording in the index as always, and with an index that records nothing.

// A benchmark reports failure by panicking.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use stowage::gc::{self, Options};
use stowage::index::{self, Entry, LinkKind, ReferenceIndex, Review, StoredIndex};
use stowage::oci::{Digest, RepositoryName};
use stowage::storage::{self, BlobStore, S3Config, StorageConfig, layout};
use stowage_e2e::garage::Garage;

const REPOSITORIES: usize = 500;
const LAYERS: usize = 9;
const ORPHANS: usize = 9;
/// The churn every run measures after: images deleted.
const CHURN: usize = 100;

fn indexed(store: &Arc<dyn BlobStore>) -> StoredIndex {
    StoredIndex::new(Arc::clone(store))
}

async fn put_blob(
    store: &Arc<dyn BlobStore>,
    repository: &RepositoryName,
    data: Vec<u8>,
) -> Digest {
    let digest = Digest::sha256_of(&data);
    let entries = [
        Entry::Links {
            blob: digest.clone(),
            repository: repository.clone(),
        },
        Entry::stores(repository, LinkKind::Layer, &digest, data.len() as u64),
    ];
    indexed(store).record(&entries).await.unwrap();
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
    store: &Arc<dyn BlobStore>,
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
    let parsed = stowage::manifest::parse(&body, None).unwrap();
    let mut entries = index::entries_of_manifest(repository, &digest, &parsed);
    entries.push(Entry::stores(
        repository,
        LinkKind::Manifest,
        &digest,
        body.len() as u64,
    ));
    entries.push(Entry::Tags {
        manifest: digest.clone(),
        repository: repository.clone(),
        tag: tag.to_owned(),
    });
    indexed(store).record(&entries).await.unwrap();
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
            &store,
            &repository,
            format!("orphan {orphan} of {index}").into_bytes(),
        )
        .await;
    }
    put_image(&store, &repository, &index.to_string(), LAYERS, "latest").await;
}

/// Deletes `images` as the API does (their deletion journaled first, then tag and revision
/// link unlinked): the churn a run follows.
async fn delete_images(store: &Arc<dyn BlobStore>, images: &[(String, RepositoryName, Digest)]) {
    let index = indexed(store);
    for (tag, repository, digest) in images {
        index
            .append(&[Review::Manifest(repository.clone(), digest.clone())])
            .await
            .unwrap();
        let tag = tag.parse().unwrap();
        store
            .delete(&layout::tag_dir(repository, &tag))
            .await
            .unwrap();
        store
            .delete(&layout::revision_link(repository, digest))
            .await
            .unwrap();
    }
}

fn options(full: bool, grace_period: Duration) -> Options {
    Options {
        dry_run: false,
        full,
        full_every: None,
        delete_untagged: true,
        grace_period,
        sweep_wait: Duration::ZERO,
        mirror_retention: None,
        quotas: Vec::new(),
    }
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
    let full = options(true, Duration::from_secs(1));
    let dry = gc::run_once(
        Arc::clone(&store),
        &Options {
            dry_run: true,
            ..full.clone()
        },
    )
    .await
    .unwrap();
    let real = gc::run_once(Arc::clone(&store), &full).await.unwrap();
    // The same registry after churn: 100 of its images deleted, one incremental run.
    let churn: Vec<(String, RepositoryName, Digest)> = futures::stream::iter(0..CHURN)
        .then(|n| {
            let store = Arc::clone(&store);
            async move {
                let repository: RepositoryName = format!("team{}/app{n}", n % 10).parse().unwrap();
                let tag = layout::tag_current_link(&repository, &"latest".parse().unwrap());
                let link = storage::read_if_present(store.as_ref(), &tag, 1024)
                    .await
                    .unwrap()
                    .unwrap();
                let digest = layout::parse_link(&link).unwrap();
                ("latest".to_owned(), repository, digest)
            }
        })
        .collect()
        .await;
    delete_images(&store, &churn).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let incremental = gc::run_once(Arc::clone(&store), &options(false, Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(incremental.mode, gc::Mode::Incremental);
    println!("{name} (populated in {:.1}s)", populated.as_secs_f64());
    for (what, report) in [
        ("gc --full --dry-run", &dry),
        ("gc --full", &real),
        ("gc (100 deleted)", &incremental),
    ] {
        println!(
            "  {what:<20} {:>8.2}s {:>8} storage requests, {} blobs deleted of {}",
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
            let digest = put_image(&store, &repository, &name, 8, &format!("v{n}")).await;
            (n, repository, digest)
        }
    };
    futures::stream::iter(0..images)
        .map(image)
        .buffer_unordered(64)
        .collect()
        .await
}

/// Registry sizes (in blobs) from `variable`, or `default`.
fn sizes(variable: &str, default: &str) -> Vec<usize> {
    std::env::var(variable)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// One gc run after 100 images are deleted (their tag and manifest, as the API deletes them),
/// on registries of each of `sizes` (in blobs), each in a store of its own from `open`:
/// incremental, then (on a copy of the same churn) full.
async fn churn_series<F, O>(title: &str, sizes: Vec<usize>, open: F)
where
    F: Fn(usize) -> O,
    O: std::future::Future<Output = Arc<dyn BlobStore>>,
{
    println!("gc after 100 images deleted, {title}");
    println!(
        "  {:>10} {:>14} {:>12} {:>10} {:>12} {:>10} {:>8}",
        "blobs", "populated (s)", "incr. (s)", "requests", "full (s)", "requests", "deleted"
    );
    for blobs in sizes {
        let store = open(blobs).await;
        let started = Instant::now();
        let images = populate_images(Arc::clone(&store), (blobs / 10).max(CHURN)).await;
        let populated = started.elapsed();
        // Written before the index was marked whole: as if a full run had audited it.
        indexed(&store)
            .mark_complete(std::time::SystemTime::now())
            .await
            .unwrap();
        let churn: Vec<(String, RepositoryName, Digest)> = images
            .iter()
            .step_by(images.len() / CHURN)
            .take(CHURN)
            .map(|(n, repository, digest)| (format!("v{n}"), repository.clone(), digest.clone()))
            .collect();
        delete_images(&store, &churn).await;
        // Content written within a second of a run counts as written during it.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let incremental = gc::run_once(Arc::clone(&store), &options(false, Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(incremental.mode, gc::Mode::Incremental);
        // The same churn again on the same registry, collected by a full run.
        let again: Vec<(String, RepositoryName, Digest)> = images
            .iter()
            .skip(1)
            .step_by(images.len() / CHURN)
            .take(CHURN)
            .map(|(n, repository, digest)| (format!("v{n}"), repository.clone(), digest.clone()))
            .collect();
        delete_images(&store, &again).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let full = gc::run_once(Arc::clone(&store), &options(true, Duration::ZERO))
            .await
            .unwrap();
        println!(
            "  {:>10} {:>14.1} {:>12.3} {:>10} {:>12.2} {:>10} {:>8}",
            images.len() * 10,
            populated.as_secs_f64(),
            incremental.duration_seconds,
            incremental.storage_requests,
            full.duration_seconds,
            full.storage_requests,
            incremental.blobs_deleted,
        );
        assert_eq!(incremental.blobs_deleted, full.blobs_deleted);
    }
}

/// An index that records nothing: the registry as it was before it had one.
#[derive(Debug)]
struct Unindexed;

#[async_trait::async_trait]
impl ReferenceIndex for Unindexed {
    async fn record(&self, _: &[Entry]) -> storage::Result<()> {
        Ok(())
    }
    async fn forget(&self, _: &[Entry]) -> storage::Result<()> {
        Ok(())
    }
    async fn users_of(&self, _: &Digest) -> storage::Result<Vec<index::Recorded>> {
        Ok(Vec::new())
    }
    async fn holders_of(
        &self,
        _: &RepositoryName,
        _: &Digest,
    ) -> storage::Result<Vec<index::Recorded>> {
        Ok(Vec::new())
    }
    async fn stored_in(
        &self,
        _: &RepositoryName,
        _: LinkKind,
        _: &Digest,
    ) -> storage::Result<Vec<index::Recorded>> {
        Ok(Vec::new())
    }
    async fn stored(&self, _: Option<&RepositoryName>) -> storage::Result<Vec<index::Recorded>> {
        Ok(Vec::new())
    }
    async fn all(&self) -> storage::Result<Vec<index::Recorded>> {
        Ok(Vec::new())
    }
    async fn complete_since(&self) -> storage::Result<Option<std::time::SystemTime>> {
        Ok(None)
    }
    async fn mark_complete(&self, _: std::time::SystemTime) -> storage::Result<()> {
        Ok(())
    }
    async fn append_page(&self, _: &[Review], _: &[Entry]) -> storage::Result<()> {
        Ok(())
    }
    async fn pages_except(
        &self,
        _: &std::collections::HashSet<String>,
    ) -> storage::Result<Vec<index::JournalPage>> {
        Ok(Vec::new())
    }
    async fn due(
        &self,
        _: std::time::SystemTime,
    ) -> storage::Result<(Vec<index::JournalPage>, usize)> {
        Ok((Vec::new(), 0))
    }
    async fn consume(&self, _: &[String]) -> storage::Result<()> {
        Ok(())
    }
}

/// p50 and p99 of `PUTS` tagged manifest pushes through `registry`, each of a config and
/// eight layers already in the repository, alternating with the other variant's pushes so
/// both see the same storage.
async fn manifest_put_latency(config: StorageConfig) {
    const PUTS: usize = 200;
    let store = storage::open(&config).await.unwrap();
    let limits = stowage::registry::Limits {
        max_manifest_size: 4 * 1024 * 1024,
        manifest_cache_bytes: 0,
    };
    let indexed = stowage::registry::Registry::new(Arc::clone(&store), limits.clone());
    let unindexed = stowage::registry::Registry::new(Arc::clone(&store), limits)
        .with_index(Arc::new(Unindexed));
    let repository: RepositoryName = "latency/app".parse().unwrap();
    let mut layers = Vec::new();
    for layer in 0..8 {
        let digest = put_blob(
            &store,
            &repository,
            format!("latency layer {layer}").into_bytes(),
        )
        .await;
        layers.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": 1}));
    }
    let config_digest = put_blob(&store, &repository, b"latency config".to_vec()).await;
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for n in 0..PUTS {
        for (which, registry) in [&indexed, &unindexed].into_iter().enumerate() {
            let manifest = serde_json::json!({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": 1},
                "layers": layers,
                "annotations": {"n": format!("{which}-{n}")},
            });
            let tag: stowage::oci::Reference = format!("v{which}-{n}").parse().unwrap();
            let started = Instant::now();
            registry
                .put_manifest(
                    &repository,
                    &tag,
                    Some("application/vnd.oci.image.manifest.v1+json"),
                    Bytes::from(manifest.to_string()),
                )
                .await
                .unwrap();
            times[which].push(started.elapsed());
        }
    }
    println!("manifest PUT latency on S3 (Garage), {PUTS} pushes each, one at a time");
    for (which, name) in [(0, "with the index"), (1, "without")] {
        let mut sorted = times[which].clone();
        sorted.sort();
        let ms = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        println!(
            "  {name:<16} p50 {:>6.2} ms  p99 {:>6.2} ms",
            ms(0.5),
            ms(0.99)
        );
    }
}

/// Whether `part` of the benchmark is to run: all of them, unless `STOWAGE_BENCH_GC_PARTS`
/// names some (`filesystem`, `garage`, `latency`, `churn`, `garage-churn`, comma-separated).
fn runs(part: &str) -> bool {
    std::env::var("STOWAGE_BENCH_GC_PARTS")
        .map_or(true, |parts| parts.split(',').any(|p| p.trim() == part))
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
    if runs("filesystem") {
        let root = scratch.path().join("fs");
        measure(
            "filesystem",
            StorageConfig::Filesystem { root, fsync: false },
        )
        .await;
    }
    if runs("churn") {
        churn_series(
            "memory backend (listings counted in S3's pages of 1,000)",
            sizes("STOWAGE_BENCH_GC_SIZES", "10000,100000,1000000"),
            |_| async { Arc::new(storage::MemoryStore::default()) as Arc<dyn BlobStore> },
        )
        .await;
    }
    if runs("garage") || runs("latency") || runs("garage-churn") {
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
        if runs("garage") {
            measure(
                "S3 (Garage on the same machine)",
                StorageConfig::S3(config.clone()),
            )
            .await;
        }
        if runs("latency") {
            manifest_put_latency(StorageConfig::S3(S3Config {
                root_prefix: "latency-bench".into(),
                ..config.clone()
            }))
            .await;
        }
        if runs("garage-churn") {
            churn_series(
                "S3 (Garage on the same machine)",
                sizes("STOWAGE_BENCH_GC_GARAGE_SIZES", "10000,100000"),
                |blobs| {
                    let config = StorageConfig::S3(S3Config {
                        root_prefix: format!("churn-{blobs}"),
                        ..config.clone()
                    });
                    async move { storage::open(&config).await.unwrap() }
                },
            )
            .await;
        }
    }
}
