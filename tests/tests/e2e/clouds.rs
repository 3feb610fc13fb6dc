//! The Azure and GCS backends against the clouds' own emulators (Azurite, fake-gcs-server): the
//! storage contract, resumable writes of every shape, racing appends, many-part commits, and
//! aborts that leave nothing.

use bytes::Bytes;
use futures::StreamExt;
use stowage::storage::{
    self, AzureConfig, AzureCredentials, BlobStore, CloudSettings, CloudStore, Error, GcsConfig,
    GcsCredentials, WriteState, conformance,
};
use stowage_e2e::emulators::{
    AZURITE_ACCOUNT, AZURITE_KEY, AzureEndpoint, BUCKET, CONTAINER, GcsEndpoint,
};

use crate::s3::{pattern, read, unique};

const MIB: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
enum Cloud {
    Azure,
    Gcs,
}

fn settings(prefix: &str) -> CloudSettings {
    CloudSettings {
        root_prefix: prefix.to_owned(),
        part_size: MIB as u64,
        upload_concurrency: storage::DEFAULT_UPLOAD_CONCURRENCY,
        redirect: false,
        timeouts: storage::Timeouts::default(),
    }
}

async fn store(cloud: Cloud, prefix: &str) -> CloudStore {
    stowage::tls::install_crypto_provider();
    match cloud {
        Cloud::Azure => CloudStore::open_azure(&AzureConfig {
            account: AZURITE_ACCOUNT.to_owned(),
            container: CONTAINER.to_owned(),
            endpoint: Some(AzureEndpoint::from_env().endpoint),
            credentials: AzureCredentials::AccessKey(AZURITE_KEY.to_owned()),
            settings: settings(prefix),
        })
        .await
        .unwrap(),
        Cloud::Gcs => CloudStore::open_gcs(&GcsConfig {
            bucket: BUCKET.to_owned(),
            endpoint: Some(GcsEndpoint::from_env().endpoint),
            credentials: GcsCredentials::Anonymous,
            settings: settings(prefix),
        })
        .await
        .unwrap(),
    }
}

#[tokio::test]
async fn storage_conformance_on_azurite() {
    conformance::run_all(&store(Cloud::Azure, &unique("conformance")).await).await;
}

#[tokio::test]
async fn storage_conformance_on_fake_gcs_server() {
    conformance::run_all(&store(Cloud::Gcs, &unique("conformance")).await).await;
}

/// Chunks smaller than a part and larger, in any mix, across part boundaries: every earlier
/// state is stale, a state whose parts were changed cannot be published, and the commit holds
/// exactly the bytes appended.
async fn resumable_writes_with_small_and_large_chunks(cloud: Cloud) {
    let store = store(cloud, &unique("resumable")).await;
    let key = "uploads/1/data";
    let sizes = [MIB / 2, 100, 2 * MIB + 3, 1, MIB, 0, 3 * MIB];
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
        assert!(store.is_current(key, &state).await.unwrap());
        states.push(state.clone());
    }
    for old in &states[..states.len() - 1] {
        assert!(!store.is_current(key, old).await.unwrap());
        let replay = store
            .append(key, old, storage::stream_of(Bytes::from_static(b"x")))
            .await;
        assert!(matches!(replay, Err(Error::Stale)), "{replay:?}");
    }
    let forged = tamper(&state, "h", "AAAA");
    assert!(matches!(
        store.commit_resumable(key, &forged, "blobs/forged").await,
        Err(Error::Stale)
    ));
    store
        .commit_resumable(key, &state, "blobs/whole")
        .await
        .unwrap();
    let stored = store.stat("blobs/whole").await.unwrap().size;
    assert_eq!(stored, expected.len() as u64);
    assert!(
        read(&store, "blobs/whole").await == expected,
        "committed bytes differ"
    );
    let range: Vec<Bytes> = store
        .get("blobs/whole", Some(MIB as u64 - 3..MIB as u64 + 10))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(range.concat(), &expected[MIB - 3..MIB + 10]);
    assert!(matches!(
        store.stat("blobs/forged").await,
        Err(Error::NotFound)
    ));
    // The write is over: nothing of it is left beside the blob.
    assert!(
        store.list("uploads/1").await.is_err(),
        "the write left objects behind"
    );
}

fn tamper(state: &WriteState, field: &str, value: &str) -> WriteState {
    let mut backend: serde_json::Value = serde_json::from_slice(&state.backend).unwrap();
    backend[field] = serde_json::Value::String(value.into());
    WriteState {
        size: state.size,
        backend: serde_json::to_vec(&backend).unwrap(),
    }
}

#[tokio::test]
async fn resumable_writes_on_azurite() {
    resumable_writes_with_small_and_large_chunks(Cloud::Azure).await;
}

#[tokio::test]
async fn resumable_writes_on_fake_gcs_server() {
    resumable_writes_with_small_and_large_chunks(Cloud::Gcs).await;
}

/// Two requests appending different bytes from the same state at once (a client retrying while
/// its first request still runs, or a replayed token): whichever commits publishes exactly its
/// own bytes, never a mix of both.
async fn racing_appends_publish_their_own_bytes(cloud: Cloud) {
    let store = store(cloud, &unique("race")).await;
    let key = "uploads/race/data";
    let start = store.create_resumable(key).await.unwrap();
    let start = store
        .append(
            key,
            &start,
            storage::stream_of(Bytes::from(pattern(MIB + 5, 1))),
        )
        .await
        .unwrap();
    let (a, b) = (pattern(3 * MIB + 1, 2), pattern(3 * MIB + 1, 3));
    let (state_a, state_b) = tokio::join!(
        store.append(key, &start, storage::stream_of(Bytes::from(a.clone()))),
        store.append(key, &start, storage::stream_of(Bytes::from(b.clone()))),
    );
    let mut want_a = pattern(MIB + 5, 1);
    want_a.extend_from_slice(&a);
    let mut want_b = pattern(MIB + 5, 1);
    want_b.extend_from_slice(&b);
    let mut published = 0;
    for (state, want, dest) in [(state_a, want_a, "blobs/a"), (state_b, want_b, "blobs/b")] {
        let Ok(state) = state else { continue };
        match store.commit_resumable(key, &state, dest).await {
            Ok(()) => {
                published += 1;
                assert!(read(&store, dest).await == want, "{dest} holds other bytes");
            }
            Err(Error::Stale | Error::NotFound) => {
                assert!(matches!(store.stat(dest).await, Err(Error::NotFound)));
            }
            Err(err) => panic!("commit of a raced state: {err}"),
        }
    }
    assert!(published >= 1, "neither racing request could be published");
}

#[tokio::test]
async fn racing_appends_on_azurite() {
    racing_appends_publish_their_own_bytes(Cloud::Azure).await;
}

#[tokio::test]
async fn racing_appends_on_fake_gcs_server() {
    racing_appends_publish_their_own_bytes(Cloud::Gcs).await;
}

/// More parts than one GCS compose takes (32), so the commit composes in rounds; Azure commits
/// them as one block list.
async fn many_parts_commit_whole(cloud: Cloud) {
    let store = store(cloud, &unique("many")).await;
    let key = "uploads/many/data";
    let data = pattern(70 * MIB + 11, 5);
    let state = store.create_resumable(key).await.unwrap();
    let state = store
        .append(key, &state, storage::stream_of(Bytes::from(data.clone())))
        .await
        .unwrap();
    store
        .commit_resumable(key, &state, "blobs/many")
        .await
        .unwrap();
    assert!(
        read(&store, "blobs/many").await == data,
        "committed bytes differ"
    );
    assert!(
        store.list("uploads/many").await.is_err(),
        "parts were left behind"
    );
}

#[tokio::test]
async fn many_parts_on_azurite() {
    many_parts_commit_whole(Cloud::Azure).await;
}

#[tokio::test]
async fn many_parts_on_fake_gcs_server() {
    many_parts_commit_whole(Cloud::Gcs).await;
}

/// Aborting a write with parts leaves nothing of it.
async fn aborted_writes_leave_nothing(cloud: Cloud) {
    let store = store(cloud, &unique("abort")).await;
    let key = "uploads/2/data";
    let state = store.create_resumable(key).await.unwrap();
    store
        .append(
            key,
            &state,
            storage::stream_of(Bytes::from(pattern(3 * MIB + 7, 1))),
        )
        .await
        .unwrap();
    store.abort_resumable(key).await.unwrap();
    assert!(store.list("uploads/2").await.is_err(), "objects remain");
    assert!(matches!(
        store
            .append(key, &state, storage::stream_of(Bytes::from_static(b"x")))
            .await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn aborted_writes_on_azurite() {
    aborted_writes_leave_nothing(Cloud::Azure).await;
}

#[tokio::test]
async fn aborted_writes_on_fake_gcs_server() {
    aborted_writes_leave_nothing(Cloud::Gcs).await;
}
