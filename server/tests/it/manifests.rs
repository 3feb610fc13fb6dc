use reqwest::StatusCode;
use serde_json::json;
use stowage::oci::{Algorithm, Digest};

use crate::common::{
    CONFIG, DOCKER_MANIFEST, LAYER, OCI_INDEX, OCI_MANIFEST, Server, expect_error, header,
};

#[tokio::test]
async fn push_and_pull_by_tag_and_digest() {
    let server = Server::start().await;
    let (manifest, digest) = server.push_image("library/app", "v1", b"layer one").await;
    for reference in ["v1".to_owned(), digest.to_string()] {
        let url = server.url(&format!("/v2/library/app/manifests/{reference}"));
        let response = server
            .http
            .get(&url)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "content-type"), OCI_MANIFEST);
        assert_eq!(
            header(&response, "docker-content-digest"),
            digest.to_string()
        );
        assert_eq!(response.bytes().await.unwrap(), manifest);
        let head = server.http.head(&url).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(header(&head, "content-length"), manifest.len().to_string());
        assert_eq!(header(&head, "docker-content-digest"), digest.to_string());
    }
}

#[tokio::test]
async fn push_answers_with_location_and_digest() {
    let server = Server::start().await;
    let manifest = server.image_manifest("answers", b"layer", None).await;
    let digest = Digest::sha256_of(&manifest);
    let response = server
        .put_manifest("answers", "latest", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, "location"),
        format!("/v2/answers/manifests/{digest}")
    );
    assert_eq!(
        header(&response, "docker-content-digest"),
        digest.to_string()
    );
    // By digest, under sha512 too.
    let sha512 = Digest::of(Algorithm::Sha512, &manifest);
    let response = server
        .put_manifest("answers", &sha512.to_string(), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, "docker-content-digest"),
        sha512.to_string()
    );
    let pulled = server
        .http
        .get(server.url(&format!("/v2/answers/manifests/{sha512}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), manifest);
}

#[tokio::test]
async fn referenced_blobs_and_manifests_must_exist() {
    let server = Server::start().await;
    let missing = Digest::sha256_of(b"never pushed");
    let config = server.push_blob("strict", b"{}").await;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": LAYER, "digest": missing.to_string(), "size": 12}],
    });
    let response = server
        .put_manifest(
            "strict",
            "v1",
            OCI_MANIFEST,
            manifest.to_string().as_bytes(),
        )
        .await;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(body["errors"][0]["detail"]["digest"], missing.to_string());

    // A blob in another repository does not count.
    let elsewhere = server.push_blob("other", b"layer elsewhere").await;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": LAYER, "digest": elsewhere.to_string(), "size": 15}],
    });
    let response = server
        .put_manifest(
            "strict",
            "v1",
            OCI_MANIFEST,
            manifest.to_string().as_bytes(),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing.to_string(), "size": 100}],
    });
    let response = server
        .put_manifest("strict", "multi", OCI_INDEX, index.to_string().as_bytes())
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    // Nothing was stored for the refused manifests.
    let tags = server
        .http
        .get(server.url("/v2/strict/tags/list"))
        .send()
        .await
        .unwrap();
    let tags: serde_json::Value = tags.json().await.unwrap();
    assert_eq!(tags["tags"], json!([]));
}

#[tokio::test]
async fn indexes_and_docker_manifests() {
    let server = Server::start().await;
    let (amd64, amd64_digest) = server.push_image("multi", "amd64", b"amd64 layer").await;
    let (arm64, arm64_digest) = server.push_image("multi", "arm64", b"arm64 layer").await;
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64_digest.to_string(), "size": amd64.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64_digest.to_string(), "size": arm64.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    });
    let body = serde_json::to_vec(&index).unwrap();
    let response = server
        .put_manifest("multi", "latest", OCI_INDEX, &body)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let pulled = server
        .http
        .get(server.url("/v2/multi/manifests/latest"))
        .header("accept", OCI_INDEX)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&pulled, "content-type"), OCI_INDEX);
    assert_eq!(pulled.bytes().await.unwrap(), body);

    // Docker schema 2, and Accept negotiation by tag.
    let config = server.push_blob("docker", b"{\"os\":\"linux\"}").await;
    let layer = server.push_blob("docker", b"docker layer").await;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config.to_string(), "size": 14},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer.to_string(), "size": 12}],
    });
    let response = server
        .put_manifest(
            "docker",
            "v2",
            DOCKER_MANIFEST,
            manifest.to_string().as_bytes(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let ok = server
        .http
        .get(server.url("/v2/docker/manifests/v2"))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&ok, "content-type"), DOCKER_MANIFEST);
    let refused = server
        .http
        .get(server.url("/v2/docker/manifests/v2"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    expect_error(refused, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn invalid_and_oversized_manifests() {
    let server = Server::start_with(&["--max-manifest-size", "1024"]).await;
    let manifest = server.image_manifest("limits", b"layer", None).await;
    let mut big: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    big["annotations"] = json!({"padding": "x".repeat(2000)});
    let response = server
        .put_manifest("limits", "big", OCI_MANIFEST, big.to_string().as_bytes())
        .await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;
    // Also when streamed without a Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(big.to_string().into_bytes())];
    let response = server
        .http
        .put(server.url("/v2/limits/manifests/big"))
        .header("content-type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;

    let response = server
        .put_manifest("limits", "v1", OCI_INDEX, &manifest)
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let wrong = Digest::sha256_of(b"not this manifest");
    let response = server
        .put_manifest("limits", &wrong.to_string(), OCI_MANIFEST, &manifest)
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert!(server.stored_keys("_manifests").await.is_empty());
}

#[tokio::test]
async fn deleting_tags_and_manifests() {
    let server = Server::start().await;
    let (_, digest) = server.push_image("deletes", "v1", b"layer").await;
    let response = server
        .put_manifest(
            "deletes",
            "v1-alias",
            OCI_MANIFEST,
            &server.image_manifest("deletes", b"layer", None).await,
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // Deleting a tag leaves the manifest.
    let response = server
        .http
        .delete(server.url("/v2/deletes/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let gone = server
        .http
        .get(server.url("/v2/deletes/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_error(gone, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let by_digest = server
        .http
        .get(server.url(&format!("/v2/deletes/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(by_digest.status(), StatusCode::OK);

    // Deleting the manifest removes the tags that point at it.
    let response = server
        .http
        .delete(server.url(&format!("/v2/deletes/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    for reference in ["v1-alias".to_owned(), digest.to_string()] {
        let gone = server
            .http
            .get(server.url(&format!("/v2/deletes/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        expect_error(gone, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
    let tags: serde_json::Value = server.get_json("/v2/deletes/tags/list").await;
    assert_eq!(tags["tags"], json!([]));
    let again = server
        .http
        .delete(server.url(&format!("/v2/deletes/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(again, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}
