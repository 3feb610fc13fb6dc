use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, expect_error, header};

#[tokio::test]
async fn tags_are_listed_in_pages() {
    let server = Server::start().await;
    let manifest = server.image_manifest("paged", b"layer", None).await;
    for tag in ["c", "a", "e", "b", "d"] {
        let response = server
            .put_manifest("paged", tag, crate::common::OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let all: Value = server.get_json("/v2/paged/tags/list").await;
    assert_eq!(
        all,
        json!({"name": "paged", "tags": ["a", "b", "c", "d", "e"]})
    );

    let mut url = server.url("/v2/paged/tags/list?n=2");
    let mut pages = Vec::new();
    loop {
        let response = server.http.get(&url).send().await.unwrap();
        let link = response
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        pages.push(body["tags"].clone());
        let Some(link) = link else { break };
        let next = link.trim_start_matches('<').split('>').next().unwrap();
        assert!(link.ends_with("rel=\"next\""), "{link}");
        url = server.url(next);
    }
    assert_eq!(pages, [json!(["a", "b"]), json!(["c", "d"]), json!(["e"])]);

    let after: Value = server.get_json("/v2/paged/tags/list?last=c").await;
    assert_eq!(after["tags"], json!(["d", "e"]));
    let none: Value = server.get_json("/v2/paged/tags/list?n=0").await;
    assert_eq!(none["tags"], json!([]));

    let unknown = server
        .http
        .get(server.url("/v2/nobody/tags/list"))
        .send()
        .await
        .unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    let bad_n = server
        .http
        .get(server.url("/v2/paged/tags/list?n=-1"))
        .send()
        .await
        .unwrap();
    expect_error(bad_n, StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID").await;
}

#[tokio::test]
async fn catalog_lists_nested_repositories() {
    let server = Server::start().await;
    for repo in ["zeta", "alpha/one", "alpha/one/nested", "beta"] {
        server.push_image(repo, "latest", repo.as_bytes()).await;
    }
    // A repository with only blobs is not in the catalog (Distribution's rule).
    server.push_blob("blobs-only", b"x").await;
    let all: Value = server.get_json("/v2/_catalog").await;
    assert_eq!(
        all["repositories"],
        json!(["alpha/one", "alpha/one/nested", "beta", "zeta"])
    );
    let first = server
        .http
        .get(server.url("/v2/_catalog?n=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&first, "link"),
        "</v2/_catalog?n=2&last=alpha/one/nested>; rel=\"next\""
    );
    let second: Value = server
        .get_json("/v2/_catalog?n=2&last=alpha/one/nested")
        .await;
    assert_eq!(second["repositories"], json!(["beta", "zeta"]));
}
