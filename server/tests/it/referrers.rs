use reqwest::StatusCode;
use serde_json::{Value, json};
use stowage::oci::Digest;

use crate::common::{OCI_INDEX, OCI_MANIFEST, Server, expect_error, header};

const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Pushes an artifact manifest of `artifact_type` whose subject is `subject`.
async fn push_referrer(
    server: &Server,
    repo: &str,
    subject: &(Vec<u8>, Digest),
    artifact_type: &str,
    payload: &[u8],
) -> Digest {
    let empty = server.push_blob(repo, b"{}").await;
    let blob = server.push_blob(repo, payload).await;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": blob.to_string(), "size": payload.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.1.to_string(), "size": subject.0.len()},
        "annotations": {"org.example.note": artifact_type},
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let digest = Digest::sha256_of(&body);
    let response = server
        .put_manifest(repo, &digest.to_string(), OCI_MANIFEST, &body)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "oci-subject"), subject.1.to_string());
    digest
}

#[tokio::test]
async fn referrers_are_listed_and_filtered() {
    let server = Server::start().await;
    let subject = server.push_image("signed", "v1", b"the image").await;
    let signature = push_referrer(
        &server,
        "signed",
        &subject,
        "application/vnd.example.signature",
        b"sig",
    )
    .await;
    let sbom = push_referrer(
        &server,
        "signed",
        &subject,
        "application/vnd.example.sbom",
        b"sbom",
    )
    .await;

    let url = server.url(&format!("/v2/signed/referrers/{}", subject.1));
    let response = server.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), OCI_INDEX);
    assert!(response.headers().get("oci-filters-applied").is_none());
    let index: Value = response.json().await.unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let mut listed: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_owned(),
                d["artifactType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    listed.sort();
    let mut expected = vec![
        (
            signature.to_string(),
            "application/vnd.example.signature".to_owned(),
        ),
        (sbom.to_string(), "application/vnd.example.sbom".to_owned()),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(index["manifests"][0]["mediaType"], OCI_MANIFEST);
    assert!(index["manifests"][0]["annotations"]["org.example.note"].is_string());

    let filtered = server
        .http
        .get(format!("{url}?artifactType=application/vnd.example.sbom"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&filtered, "oci-filters-applied"), "artifactType");
    let filtered: Value = filtered.json().await.unwrap();
    assert_eq!(filtered["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["manifests"][0]["digest"], sbom.to_string());

    // Deleting a referrer takes it out of the list.
    let response = server
        .http
        .delete(server.url(&format!("/v2/signed/manifests/{sbom}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let index: Value = server
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);

    // A subject with no referrers (or that does not exist) gives an empty index.
    let unknown = Digest::sha256_of(b"nothing refers to this");
    let empty: Value = server
        .get_json(&format!("/v2/signed/referrers/{unknown}"))
        .await;
    assert_eq!(empty["manifests"], json!([]));
    let bad = server
        .http
        .get(server.url("/v2/signed/referrers/sha256:nope"))
        .send()
        .await
        .unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}
