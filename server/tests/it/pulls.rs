//! When manifests were last pulled: a `GET` records the day, at most once a day per replica and
//! manifest, off the pull's path; a `HEAD` does not; the record goes with its manifest; the web
//! interface shows it.

use std::time::Duration;

use reqwest::StatusCode;

use crate::common::{Server, data};

/// Waits until a key containing `part` is stored (the record is written after the response).
pub async fn eventually_stored(server: &Server, part: &str) -> String {
    for _ in 0..100 {
        if let Some(key) = server.stored_keys(part).await.into_iter().next() {
            return key;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing stored under {part}");
}

fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400
}

#[tokio::test]
async fn a_pull_is_recorded_once_a_day_and_goes_with_its_manifest() {
    // The day's marks are each replica's own: at most one write a day per replica.
    let server = Server::start_one_replica_with(&["--ui", "true"]).await;
    let (_, digest) = server.push_image("team/app", "v1", &data(1, 10)).await;
    let record = format!("_pulls/sha256/{}", digest.hex());
    let page = server.url("/ui/r/team/app");
    let tags_page = || async {
        server
            .http
            .get(&page)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(tags_page().await.contains(">never<"));

    let manifest = server.url("/v2/team/app/manifests/v1");
    let head = server.http.head(&manifest).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.stored_keys(&record).await.is_empty(),
        "a HEAD is no pull"
    );

    assert_eq!(
        server.http.get(&manifest).send().await.unwrap().status(),
        StatusCode::OK
    );
    let key = eventually_stored(&server, &record).await;
    let stored = stowage::storage::read_small(server.store().as_ref(), &key, 64)
        .await
        .unwrap();
    assert_eq!(std::str::from_utf8(&stored).unwrap(), today().to_string());
    let shown = tags_page().await;
    assert!(!shown.contains(">never<"), "{shown}");

    // Another pull today writes nothing: a record changed behind the replica's back stays.
    server
        .store()
        .put(&key, bytes::Bytes::from_static(b"0"))
        .await
        .unwrap();
    let by_digest = server.url(&format!("/v2/team/app/manifests/{digest}"));
    assert_eq!(
        server.http.get(&by_digest).send().await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stored = stowage::storage::read_small(server.store().as_ref(), &key, 64)
        .await
        .unwrap();
    assert_eq!(
        &stored[..],
        b"0",
        "pulled again the same day, and written again"
    );
    // Another replica has not marked it today, so its first pull does.
    let replica = server.replica().await;
    let url = replica.url("/v2/team/app/manifests/v1");
    assert_eq!(
        replica.http.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    for _ in 0..100 {
        let stored = stowage::storage::read_small(server.store().as_ref(), &key, 64).await;
        if stored.is_ok_and(|s| s[..] != *b"0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = stowage::storage::read_small(server.store().as_ref(), &key, 64)
        .await
        .unwrap();
    assert_eq!(std::str::from_utf8(&stored).unwrap(), today().to_string());

    // Deleting the manifest deletes its record.
    let deleted = server.http.delete(&by_digest).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    assert!(server.stored_keys(&record).await.is_empty());
}
