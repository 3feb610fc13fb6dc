//! The S3 backend against a real S3 server (Garage): the storage contract, multipart uploads,
//! and CNCF Distribution's `s3` driver on the same bucket.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use stowage::storage::{self, BlobStore, Error, S3Config, S3Store, WriteState, conformance};
use stowage_e2e::garage::S3Endpoint;
use stowage_e2e::{Distribution, Stowage};

use crate::distribution_compat::{images, pull_and_compare, push_all};

const MIB: usize = 1024 * 1024;

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

async fn store(prefix: &str) -> S3Store {
    let s3 = S3Endpoint::from_env();
    S3Store::open(&S3Config {
        bucket: s3.bucket,
        region: s3.region,
        endpoint: Some(s3.endpoint),
        path_style: true,
        root_prefix: prefix.to_owned(),
        credentials: Some((s3.access_key_id, s3.secret_access_key)),
        part_size: storage::MIN_PART_SIZE,
        upload_concurrency: storage::DEFAULT_UPLOAD_CONCURRENCY,
        redirect: false,
        timeouts: storage::Timeouts::default(),
    })
    .await
    .unwrap()
}

pub(crate) async fn read(store: &dyn BlobStore, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = store.get(key, None).await.unwrap();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn storage_conformance_on_garage() {
    conformance::run_all(&store(&unique("conformance")).await).await;
}

/// Chunks smaller than S3's 5 MiB minimum part, and larger, in any mix, across part boundaries.
#[tokio::test]
async fn multipart_resumable_writes_with_small_and_large_chunks() {
    let store = store(&unique("multipart")).await;
    let key = "uploads/1/data";
    let sizes = [3 * MIB, 100, 7 * MIB + 3, 1, 2 * MIB, 0, 4 * MIB];
    let mut expected = Vec::new();
    let mut state = store.create_resumable(key).await.unwrap();
    let mut states = vec![state.clone()];
    for (i, size) in sizes.iter().enumerate() {
        let data = pattern(*size, i as u8);
        expected.extend_from_slice(&data);
        state = store
            .append(key, &state, storage::stream_of(Bytes::from(data)))
            .await
            .unwrap();
        assert_eq!(state.size, expected.len() as u64);
        states.push(state.clone());
    }
    // Every earlier state is stale now, whether it had parts or only a tail.
    for old in &states[..states.len() - 1] {
        let replay = store
            .append(key, old, storage::stream_of(Bytes::from_static(b"x")))
            .await;
        assert!(matches!(replay, Err(Error::Stale)), "{replay:?}");
    }
    // A state whose chain does not match the stored parts cannot be published.
    let forged = tamper_chain(&state);
    assert!(matches!(
        store.commit_resumable(key, &forged, "blobs/forged").await,
        Err(Error::Stale)
    ));
    store
        .commit_resumable(key, &state, "blobs/whole")
        .await
        .unwrap();
    assert_eq!(
        store.stat("blobs/whole").await.unwrap().size,
        expected.len() as u64
    );
    assert!(
        read(&store, "blobs/whole").await == expected,
        "committed bytes differ"
    );
    let range = store
        .get("blobs/whole", Some(5 * MIB as u64..5 * MIB as u64 + 10))
        .await
        .unwrap();
    let range: Vec<Bytes> = range.map(Result::unwrap).collect().await;
    assert_eq!(range.concat(), &expected[5 * MIB..5 * MIB + 10]);
    assert!(matches!(
        store.stat("blobs/forged").await,
        Err(Error::NotFound)
    ));
}

fn tamper_chain(state: &WriteState) -> WriteState {
    let mut backend: serde_json::Value = serde_json::from_slice(&state.backend).unwrap();
    backend["c"] = serde_json::Value::String("AAAA".into());
    WriteState {
        size: state.size,
        backend: serde_json::to_vec(&backend).unwrap(),
    }
}

/// A finished upload larger than the copy limit reaches its content address by a multipart
/// server-side copy (above 5 GiB in production; lowered here to 5 MiB).
#[tokio::test]
async fn large_uploads_are_published_by_multipart_copy() {
    let store = store(&unique("bigcopy"))
        .await
        .with_copy_limit(storage::MIN_PART_SIZE);
    let key = "uploads/3/data";
    // A tail of a few bytes after the parts, and a copy whose even split leaves no tiny part.
    let data = pattern(15 * MIB + 7, 3);
    let state = store.create_resumable(key).await.unwrap();
    let state = store
        .append(key, &state, storage::stream_of(Bytes::from(data.clone())))
        .await
        .unwrap();
    store
        .commit_resumable(key, &state, "blobs/big")
        .await
        .unwrap();
    assert_eq!(
        store.stat("blobs/big").await.unwrap().size,
        data.len() as u64
    );
    assert!(
        read(&store, "blobs/big").await == data,
        "copied bytes differ"
    );
}

/// A large read goes as several ranged GETs at once; the bytes come back whole and in order,
/// for the whole object and for ranges that start and end inside blocks, and a missing object
/// fails the call itself.
#[tokio::test]
async fn large_reads_in_parallel_ranges_come_back_whole() {
    let store = store(&unique("ranges")).await;
    let data = pattern(45 * MIB + 3, 9);
    let state = store.create_resumable("uploads/r/data").await.unwrap();
    let state = store
        .append(
            "uploads/r/data",
            &state,
            storage::stream_of(Bytes::from(data.clone())),
        )
        .await
        .unwrap();
    store
        .commit_resumable("uploads/r/data", &state, "blobs/ranged")
        .await
        .unwrap();
    let len = data.len() as u64;
    for range in [0..len, 1..len - 1, 8 * MIB as u64 - 5..40 * MIB as u64 + 11] {
        let mut got = Vec::new();
        let mut stream = store
            .get("blobs/ranged", Some(range.clone()))
            .await
            .unwrap();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        let want = &data[range.start as usize..range.end as usize];
        assert!(got == want, "range {range:?}: {} bytes back", got.len());
    }
    assert!(matches!(
        store.get("blobs/missing", Some(0..len)).await,
        Err(storage::Error::NotFound)
    ));
}

/// Aborting an upload with parts removes its multipart upload from the bucket.
#[tokio::test]
async fn aborted_multipart_uploads_leave_nothing() {
    let prefix = unique("abort");
    let store = store(&prefix).await;
    let key = "uploads/2/data";
    let state = store.create_resumable(key).await.unwrap();
    store
        .append(
            key,
            &state,
            storage::stream_of(Bytes::from(pattern(6 * MIB, 1))),
        )
        .await
        .unwrap();
    store.abort_resumable(key).await.unwrap();
    assert!(
        store.list("uploads/2").await.is_err(),
        "tail objects remain"
    );
    let shared: Arc<dyn BlobStore> = Arc::new(store);
    assert!(shared.list("uploads").await.is_err());
}

/// Stowage and Distribution 2.8.2 (its `s3` driver) on one bucket and root directory.
#[tokio::test]
async fn distribution_s3_driver_serves_what_stowage_pushed_and_back() {
    let s3 = S3Endpoint::from_env();
    let prefix = unique("compat");
    let dir = tempfile::tempdir().unwrap();
    let (source, tagged) = images(&dir.path().join("source"));
    let stowage = Stowage::start_args(&s3.stowage_flags(&prefix));
    let distribution = Distribution::start_s3(&s3, &prefix);
    push_all(&source, &tagged, &stowage.address, "by/stowage");
    pull_and_compare(
        &source,
        &tagged,
        &distribution.address,
        "by/stowage",
        dir.path(),
    );
    push_all(&source, &tagged, &distribution.address, "by/distribution");
    pull_and_compare(
        &source,
        &tagged,
        &stowage.address,
        "by/distribution",
        dir.path(),
    );
}

/// With redirects on, a blob GET answers 307 to a presigned URL the client can fetch from S3
/// directly; with them off (the default), the registry streams the bytes itself.
#[tokio::test]
async fn blob_downloads_redirect_to_presigned_urls_when_enabled() {
    let s3 = S3Endpoint::from_env();
    let prefix = unique("redirect");
    let data = pattern(3 * MIB, 4);
    let digest = stowage_e2e::sha256(&data);
    let no_redirects = stowage_e2e::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let mut flags = s3.stowage_flags(&prefix);
    flags.extend(["--s3-redirect".to_owned(), "true".to_owned()]);
    let redirecting = Stowage::start_args(&flags);
    let pushed = no_redirects
        .post(redirecting.url(&format!("/v2/r/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let url = redirecting.url(&format!("/v2/r/blobs/{digest}"));
    let response = no_redirects.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&s3.endpoint) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let direct = stowage_e2e::http().get(&location).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    assert!(
        direct.bytes().await.unwrap() == data,
        "presigned URL served other bytes"
    );
    // HEAD is answered by the registry itself; a blob not in the repository is never redirected.
    let head = no_redirects.head(&url).send().await.unwrap();
    assert_eq!(
        (
            head.status().as_u16(),
            head.headers()["content-length"].to_str().unwrap()
        ),
        (200, "3145728")
    );
    let elsewhere = no_redirects
        .get(redirecting.url(&format!("/v2/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);

    let streaming = Stowage::start_args(&s3.stowage_flags(&prefix));
    let response = no_redirects
        .get(streaming.url(&format!("/v2/r/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap() == data);
}
