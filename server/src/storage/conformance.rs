//! The storage contract as executable checks. Every backend runs [`run_all`]: the filesystem and
//! memory stores in their unit tests, remote stores against a real server.

// A failed check panics: that is how a test suite reports.
#![allow(clippy::unwrap_used)]

use std::io;

use bytes::Bytes;
use futures::{StreamExt, stream};

use super::{BlobStore, ByteStream, Checkpoint, Error, WriteState, stream_of};

/// Runs every check against `store`, which should be empty. Panics on the first violation.
pub async fn run_all(store: &dyn BlobStore) {
    put_get_stat(store).await;
    ranged_reads(store).await;
    list_and_delete(store).await;
    renames(store).await;
    walk_lists_everything_below(store).await;
    resumable_writes(store).await;
    stale_states_are_refused(store).await;
    checkpoints_come_before_the_commit_point(store).await;
    failed_append_can_be_retried(store).await;
    aborted_writes_are_gone(store).await;
    store.ping().await.expect("ping");
}

async fn read(store: &dyn BlobStore, key: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = store.get(key, range).await.expect("get");
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

fn chunks(parts: &[&'static [u8]]) -> ByteStream {
    stream::iter(
        parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p)))
            .collect::<Vec<_>>(),
    )
    .boxed()
}

async fn put_get_stat(store: &dyn BlobStore) {
    assert!(matches!(store.stat("c/put/a").await, Err(Error::NotFound)));
    assert!(matches!(
        store.get("c/put/a", None).await,
        Err(Error::NotFound)
    ));
    store
        .put("c/put/a", Bytes::from_static(b"first"))
        .await
        .unwrap();
    store
        .put("c/put/a", Bytes::from_static(b"second"))
        .await
        .unwrap();
    assert_eq!(read(store, "c/put/a", None).await, b"second");
    assert_eq!(store.stat("c/put/a").await.unwrap().size, 6);
    store.put("c/put/empty", Bytes::new()).await.unwrap();
    assert_eq!(store.stat("c/put/empty").await.unwrap().size, 0);
    assert!(read(store, "c/put/empty", None).await.is_empty());
    // A "directory" is not an object.
    assert!(matches!(store.stat("c/put").await, Err(Error::NotFound)));
}

async fn ranged_reads(store: &dyn BlobStore) {
    let data: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    store
        .put("c/range/blob", Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(read(store, "c/range/blob", Some(0..1)).await, &data[0..1]);
    assert_eq!(
        read(store, "c/range/blob", Some(1000..300_000)).await,
        &data[1000..300_000]
    );
    let len = data.len() as u64;
    assert_eq!(
        read(store, "c/range/blob", Some(len - 3..len)).await,
        &data[data.len() - 3..]
    );
    assert_eq!(read(store, "c/range/blob", None).await, data);
}

async fn list_and_delete(store: &dyn BlobStore) {
    assert!(matches!(store.list("c/list").await, Err(Error::NotFound)));
    for key in ["c/list/b/x", "c/list/a/y/z", "c/list/c"] {
        store.put(key, Bytes::from_static(b"1")).await.unwrap();
    }
    assert_eq!(store.list("c/list").await.unwrap(), ["a", "b", "c"]);
    assert_eq!(store.list("c/list/a").await.unwrap(), ["y"]);
    store.delete("c/list/a").await.unwrap();
    assert_eq!(store.list("c/list").await.unwrap(), ["b", "c"]);
    store.delete("c/list/c").await.unwrap();
    store.delete("c/list/missing").await.unwrap();
    assert!(matches!(store.stat("c/list/c").await, Err(Error::NotFound)));
    assert!(matches!(
        store.stat("c/list/a/y/z").await,
        Err(Error::NotFound)
    ));
    assert_eq!(store.list("c/list").await.unwrap(), ["b"]);
}

async fn renames(store: &dyn BlobStore) {
    store
        .put("c/rename/from", Bytes::from_static(b"moved"))
        .await
        .unwrap();
    store
        .put("c/rename/to/x", Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    store
        .rename("c/rename/from", "c/rename/to/x")
        .await
        .unwrap();
    assert_eq!(read(store, "c/rename/to/x", None).await, b"moved");
    assert!(matches!(
        store.stat("c/rename/from").await,
        Err(Error::NotFound)
    ));
    // Into a new directory, too.
    store
        .rename("c/rename/to/x", "c/rename/new/dir/y")
        .await
        .unwrap();
    assert_eq!(read(store, "c/rename/new/dir/y", None).await, b"moved");
    assert!(matches!(
        store.rename("c/rename/from", "c/rename/z").await,
        Err(Error::NotFound)
    ));
    store.delete("c/rename").await.unwrap();
}

async fn walk_lists_everything_below(store: &dyn BlobStore) {
    assert!(store.walk("c/walk").await.unwrap().is_empty());
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for (key, data) in [
        ("c/walk/a", &b"1"[..]),
        ("c/walk/b/c", b"22"),
        ("c/walk/b/d/e", b"333"),
    ] {
        store.put(key, Bytes::from_static(data)).await.unwrap();
    }
    store
        .put("c/walkother", Bytes::from_static(b"not below"))
        .await
        .unwrap();
    let mut found: Vec<(String, u64)> = store
        .walk("c/walk")
        .await
        .unwrap()
        .into_iter()
        .inspect(|o| assert!(o.modified > before, "{o:?}"))
        .map(|o| (o.key, o.size))
        .collect();
    found.sort();
    let expected = [("a", 1), ("b/c", 2), ("b/d/e", 3)].map(|(k, n)| (k.to_owned(), n));
    assert_eq!(found, expected);
    let batch = vec![
        "c/walk/a".to_owned(),
        "c/walk/b/c".to_owned(),
        "c/walk/missing".to_owned(),
    ];
    store.delete_objects(&batch).await.unwrap();
    let left: Vec<String> = store
        .walk("c/walk")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, ["b/d/e"]);
    store.delete("c/walk").await.unwrap();
    store.delete("c/walkother").await.unwrap();
}

async fn resumable_writes(store: &dyn BlobStore) {
    let key = "c/upload/1/data";
    let state = store.create_resumable(key).await.unwrap();
    assert_eq!(state.size, 0);
    let state = store
        .append(key, &state, chunks(&[b"hello ", b"wor"]))
        .await
        .unwrap();
    assert_eq!(state.size, 9);
    let state = store.append(key, &state, chunks(&[])).await.unwrap();
    assert_eq!(state.size, 9);
    let state = store.append(key, &state, chunks(&[b"ld"])).await.unwrap();
    assert_eq!(state.size, 11);
    // Not visible until committed.
    assert!(matches!(
        store.stat("c/blobs/hello").await,
        Err(Error::NotFound)
    ));
    store
        .commit_resumable(key, &state, "c/blobs/hello")
        .await
        .unwrap();
    assert_eq!(read(store, "c/blobs/hello", None).await, b"hello world");
    // The write is over: its last state can do nothing more.
    assert!(store.append(key, &state, chunks(&[b"!"])).await.is_err());
    assert!(
        store
            .commit_resumable(key, &state, "c/blobs/other")
            .await
            .is_err()
    );
    assert!(matches!(
        store.stat("c/blobs/other").await,
        Err(Error::NotFound)
    ));
    store.delete("c/upload/1").await.unwrap();
}

async fn stale_states_are_refused(store: &dyn BlobStore) {
    let key = "c/upload/2/data";
    let start = store.create_resumable(key).await.unwrap();
    let first = store
        .append(key, &start, chunks(&[b"genuine"]))
        .await
        .unwrap();
    // Reusing the older state must not rewrite what the newer state vouches for.
    assert!(matches!(
        store.append(key, &start, chunks(&[b"forged!"])).await,
        Err(Error::Stale)
    ));
    assert!(matches!(
        store.commit_resumable(key, &start, "c/blobs/stale").await,
        Err(Error::Stale)
    ));
    let forged = WriteStateExt::forged(&first);
    assert!(store.append(key, &forged, chunks(&[b"x"])).await.is_err());
    // Only the latest state is current.
    assert!(store.is_current(key, &first).await.unwrap());
    assert!(!store.is_current(key, &start).await.unwrap());
    assert!(!store.is_current(key, &forged).await.unwrap());
    assert!(
        !store
            .is_current("c/upload/none/data", &first)
            .await
            .unwrap()
    );
    store
        .commit_resumable(key, &first, "c/blobs/genuine")
        .await
        .unwrap();
    assert_eq!(read(store, "c/blobs/genuine", None).await, b"genuine");
    assert!(!store.is_current(key, &first).await.unwrap(), "committed");
    assert!(matches!(
        store.stat("c/blobs/stale").await,
        Err(Error::NotFound)
    ));
    store.delete("c/upload/2").await.unwrap();
}

/// Records what a checkpoint saw: the state it was given, and whether the previous state was
/// still current then. Fails when told to.
struct Witness<'a> {
    store: &'a dyn BlobStore,
    key: &'a str,
    previous: WriteState,
    fail: bool,
    seen: std::sync::Mutex<Option<(WriteState, bool)>>,
}

#[async_trait::async_trait]
impl Checkpoint for Witness<'_> {
    async fn save(&self, next: &WriteState) -> super::Result<()> {
        let previous_current = self.store.is_current(self.key, &self.previous).await?;
        *self.seen.lock().unwrap() = Some((next.clone(), previous_current));
        if self.fail {
            return Err(Error::Unavailable("checkpoint refused".into()));
        }
        Ok(())
    }
}

async fn checkpoints_come_before_the_commit_point(store: &dyn BlobStore) {
    let key = "c/upload/5/data";
    let start = store.create_resumable(key).await.unwrap();
    let witness = |previous: &WriteState, fail| Witness {
        store,
        key,
        previous: previous.clone(),
        fail,
        seen: std::sync::Mutex::new(None),
    };
    let ok = witness(&start, false);
    let next = store
        .append_with_checkpoint(key, &start, chunks(&[b"first"]), Some(&ok))
        .await
        .unwrap();
    let (seen, previous_current) = ok.seen.lock().unwrap().clone().expect("called");
    assert_eq!(seen, next, "the checkpoint saw the state the append made");
    assert!(previous_current, "before the commit point");
    assert!(store.is_current(key, &next).await.unwrap());

    // A failed checkpoint fails the append, and the state before it stays current.
    let refusing = witness(&next, true);
    assert!(
        store
            .append_with_checkpoint(key, &next, chunks(&[b"lost"]), Some(&refusing))
            .await
            .is_err()
    );
    assert!(refusing.seen.lock().unwrap().is_some());
    assert!(store.is_current(key, &next).await.unwrap());
    let last = store
        .append(key, &next, chunks(&[b" second"]))
        .await
        .unwrap();
    store
        .commit_resumable(key, &last, "c/blobs/checkpointed")
        .await
        .unwrap();
    assert_eq!(
        read(store, "c/blobs/checkpointed", None).await,
        b"first second"
    );
    store.delete("c/upload/5").await.unwrap();
}

async fn failed_append_can_be_retried(store: &dyn BlobStore) {
    let key = "c/upload/3/data";
    let start = store.create_resumable(key).await.unwrap();
    let state = store.append(key, &start, chunks(&[b"abc"])).await.unwrap();
    let broken: ByteStream = stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ])
    .boxed();
    assert!(matches!(
        store.append(key, &state, broken).await,
        Err(Error::Body(_))
    ));
    let state = store
        .append(key, &state, stream_of(Bytes::from_static(b"def")))
        .await
        .unwrap();
    assert_eq!(state.size, 6);
    store
        .commit_resumable(key, &state, "c/blobs/retried")
        .await
        .unwrap();
    assert_eq!(read(store, "c/blobs/retried", None).await, b"abcdef");
    store.delete("c/upload/3").await.unwrap();
}

async fn aborted_writes_are_gone(store: &dyn BlobStore) {
    let key = "c/upload/4/data";
    let start = store.create_resumable(key).await.unwrap();
    let state = store
        .append(key, &start, chunks(&[b"to be dropped"]))
        .await
        .unwrap();
    store.abort_resumable(key).await.unwrap();
    assert!(store.append(key, &state, chunks(&[b"more"])).await.is_err());
    assert!(
        store
            .commit_resumable(key, &state, "c/blobs/aborted")
            .await
            .is_err()
    );
    assert!(matches!(
        store.stat("c/blobs/aborted").await,
        Err(Error::NotFound)
    ));
    store.abort_resumable("c/upload/never/data").await.unwrap();
    store.delete("c/upload/4").await.unwrap();
}

/// States a client could try to make up.
trait WriteStateExt {
    fn forged(&self) -> Self;
}

impl WriteStateExt for super::WriteState {
    fn forged(&self) -> Self {
        let mut backend = self.backend.clone();
        if let Some(first) = backend.first_mut() {
            *first ^= 0xff;
        }
        Self {
            size: self.size,
            backend,
        }
    }
}
