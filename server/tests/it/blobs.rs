use reqwest::StatusCode;

use crate::common::{Server, data, expect_error, header};

#[tokio::test]
async fn base_endpoint_announces_the_api_version() {
    let server = Server::start().await;
    for path in ["/v2/", "/v2"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "docker-distribution-api-version"),
            "registry/2.0"
        );
    }
}

#[tokio::test]
async fn get_head_range_and_delete() {
    // One process: another replica may answer for a blob deleted elsewhere for up to 5 s (the
    // blob-descriptor cache, as the README says).
    let server = Server::start_one_replica_with(&[]).await;
    let blob = data(1, 100_000);
    let digest = server.push_blob("team/app", &blob).await;
    let url = server.url(&format!("/v2/team/app/blobs/{digest}"));

    let response = server.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "docker-content-digest"),
        digest.to_string()
    );
    assert_eq!(header(&response, "content-length"), "100000");
    assert_eq!(response.bytes().await.unwrap(), blob);

    let response = server.http.head(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-length"), "100000");
    assert_eq!(
        header(&response, "docker-content-digest"),
        digest.to_string()
    );

    let response = server
        .http
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&response, "content-range"), "bytes 10-19/100000");
    assert_eq!(response.bytes().await.unwrap(), blob[10..20]);

    let response = server
        .http
        .get(&url)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap(), blob[blob.len() - 5..]);

    let response = server
        .http
        .get(&url)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "content-range"), "bytes */100000");
    expect_error(response, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;

    // Only the repository it was pushed to holds it.
    let other = server
        .http
        .get(server.url(&format!("/v2/team/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(other, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;

    let response = server.http.delete(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    expect_error(
        server.http.get(&url).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
    expect_error(
        server.http.delete(&url).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn cross_repository_mount() {
    let server = Server::start().await;
    let digest = server.push_blob("source/repo", b"shared layer").await;

    let response = server
        .http
        .post(server.url(&format!(
            "/v2/target/repo/blobs/uploads/?mount={digest}&from=source/repo"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, "location"),
        format!("/v2/target/repo/blobs/{digest}")
    );
    assert_eq!(
        header(&response, "docker-content-digest"),
        digest.to_string()
    );
    let mounted = server
        .http
        .get(server.url(&format!("/v2/target/repo/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(mounted.bytes().await.unwrap(), &b"shared layer"[..]);

    // A repository that does not hold the blob cannot lend it: a normal upload starts instead.
    let response = server
        .http
        .post(server.url(&format!(
            "/v2/third/repo/blobs/uploads/?mount={digest}&from=nobody/here"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(header(&response, "location").contains("/v2/third/repo/blobs/uploads/"));
}
