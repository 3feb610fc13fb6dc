use reqwest::StatusCode;
use stowage::oci::{Algorithm, Digest};

use crate::common::{Server, data, expect_error, header};

async fn start_upload(server: &Server, repo: &str) -> String {
    let response = server
        .http
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range"), "0-0");
    let id = header(&response, "docker-upload-uuid");
    let location = server.location(&response);
    assert!(
        location.contains(&format!("/v2/{repo}/blobs/uploads/{id}?_state=")),
        "{location}"
    );
    location
}

async fn patch(
    server: &Server,
    location: &str,
    chunk: &[u8],
    range: Option<(u64, u64)>,
) -> reqwest::Response {
    let mut request = server.http.patch(location).body(chunk.to_vec());
    if let Some((start, end)) = range {
        request = request.header("content-range", format!("{start}-{end}"));
    }
    request.send().await.unwrap()
}

/// The upload state a `Location`'s token carries (its signed JSON payload).
fn token_payload(location: &str) -> serde_json::Value {
    use base64::Engine as _;
    let token = location.split("_state=").nth(1).expect("a token");
    let payload = token.split('.').next().expect("a payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&json).expect("JSON")
}

fn finish_url(location: &str, digest: &Digest) -> String {
    format!("{location}&digest={digest}")
}

#[tokio::test]
async fn chunked_upload_with_content_range() {
    let server = Server::start().await;
    let blob = data(7, 300_000);
    let digest = Digest::sha256_of(&blob);
    let mut location = start_upload(&server, "chunky").await;
    let mut offset = 0u64;
    for chunk in blob[..250_000].chunks(100_000) {
        let end = offset + chunk.len() as u64 - 1;
        let response = patch(&server, &location, chunk, Some((offset, end))).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&response, "range"), format!("0-{end}"));
        location = server.location(&response);
        offset = end + 1;
    }
    // Status of the upload.
    let status = server.http.get(&location).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range"), "0-249999");

    // An out-of-order chunk is refused and changes nothing.
    let response = patch(&server, &location, &blob[..10], Some((0, 9))).await;
    assert_eq!(header(&response, "range"), "0-249999");
    expect_error(response, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;

    // The last chunk rides on the PUT.
    let response = server
        .http
        .put(finish_url(&location, &digest))
        .header("content-range", "250000-299999")
        .body(blob[250_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, "location"),
        format!("/v2/chunky/blobs/{digest}")
    );
    let pulled = server
        .http
        .get(server.url(&format!("/v2/chunky/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), blob);
    // The session is gone.
    expect_error(
        server.http.get(&location).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert!(server.stored_keys("_uploads").await.is_empty());
}

#[tokio::test]
async fn streamed_patch_then_empty_put() {
    let server = Server::start().await;
    let blob = data(3, 1_000_000);
    let digest = Digest::sha256_of(&blob);
    let location = start_upload(&server, "streamed").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        blob.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let response = server
        .http
        .patch(&location)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range"), "0-999999");
    let response = server
        .http
        .put(finish_url(&server.location(&response), &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, "docker-content-digest"),
        digest.to_string()
    );
}

#[tokio::test]
async fn sha512_uploads() {
    let server = Server::start().await;
    let blob = data(5, 70_000);
    let digest = Digest::of(Algorithm::Sha512, &blob);
    // Monolithic: the algorithm comes from the digest.
    let response = server
        .http
        .post(server.url(&format!("/v2/five/blobs/uploads/?digest={digest}")))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let pulled = server
        .http
        .get(server.url(&format!("/v2/five/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), blob);
    // Chunked: the client names the algorithm up front.
    let response = server
        .http
        .post(server.url("/v2/six/blobs/uploads/?digest-algorithm=sha512"))
        .send()
        .await
        .unwrap();
    let response = patch(&server, &server.location(&response), &blob, None).await;
    let response = server
        .http
        .put(finish_url(&server.location(&response), &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    // A sha256 session finished with a sha512 digest: what was stored is read back and hashed.
    let location = start_upload(&server, "seven").await;
    let response = patch(&server, &location, &blob, None).await;
    let response = server
        .http
        .put(finish_url(&server.location(&response), &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let pulled = server
        .http
        .get(server.url(&format!("/v2/seven/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), blob);
    // ... and a wrong one is refused, naming the algorithms as the spec spells them, with
    // nothing published and the session gone.
    let wrong = Digest::of(Algorithm::Sha512, b"something else");
    let location = start_upload(&server, "eight").await;
    let response = patch(&server, &location, &blob, None).await;
    let location = server.location(&response);
    let response = server
        .http
        .put(finish_url(&location, &wrong))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.contains("DIGEST_INVALID"), "{text}");
    assert!(
        text.contains("sha512:") && !text.contains("Sha512"),
        "{text}"
    );
    for url in [
        format!("/v2/eight/blobs/{wrong}"),
        format!("/v2/eight/blobs/{digest}"),
    ] {
        let response = server.http.head(server.url(&url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{url}");
    }
    let status = server.http.get(&location).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NOT_FOUND);
    // A sha512 mount that cannot be served falls back to a sha512 session.
    let other = data(6, 1_000);
    let other_digest = Digest::of(Algorithm::Sha512, &other);
    let response = server
        .http
        .post(server.url(&format!(
            "/v2/nine/blobs/uploads/?mount={other_digest}&from=nowhere"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        token_payload(&server.location(&response))["a"],
        "sha512",
        "the session hashes as it will be finished"
    );
    let response = patch(&server, &server.location(&response), &other, None).await;
    let response = server
        .http
        .put(finish_url(&server.location(&response), &other_digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn digest_mismatch_publishes_nothing() {
    let server = Server::start().await;
    let location = start_upload(&server, "liar").await;
    let claimed = Digest::sha256_of(b"what I claim");
    let response = patch(&server, &location, b"what I send", None).await;
    let response = server
        .http
        .put(finish_url(&server.location(&response), &claimed))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let response = server
        .http
        .get(server.url(&format!("/v2/liar/blobs/{claimed}")))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    assert!(server.stored_keys("blobs/sha256").await.is_empty());

    // Monolithic too.
    let response = server
        .http
        .post(server.url(&format!("/v2/liar/blobs/uploads/?digest={claimed}")))
        .body("something else")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert!(server.stored_keys("blobs/sha256").await.is_empty());
}

#[tokio::test]
async fn cancel_ends_the_session() {
    let server = Server::start().await;
    let location = start_upload(&server, "cancelled").await;
    let response = patch(&server, &location, b"abc", None).await;
    let location = server.location(&response);
    assert_eq!(
        server.http.delete(&location).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let response = patch(&server, &location, b"def", None).await;
    expect_error(response, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(server.stored_keys("_uploads").await.is_empty());
}

#[tokio::test]
async fn stale_tampered_and_foreign_tokens_write_nothing() {
    let server = Server::start().await;
    let first = start_upload(&server, "guarded").await;
    let response = patch(&server, &first, b"genuine bytes", None).await;
    let current = server.location(&response);

    // The older token no longer writes: the bytes it would overwrite are vouched for by `current`.
    let response = patch(&server, &first, b"forged bytes!", None).await;
    expect_error(response, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    let response = server
        .http
        .put(finish_url(&first, &Digest::sha256_of(b"")))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());

    // A token changed by one character.
    let tampered = {
        let (head, token) = current.split_once("_state=").unwrap();
        let mut token = token.to_owned().into_bytes();
        token[10] = if token[10] == b'A' { b'B' } else { b'A' };
        format!("{head}_state={}", String::from_utf8(token).unwrap())
    };
    expect_error(
        patch(&server, &tampered, b"x", None).await,
        StatusCode::BAD_REQUEST,
        "BLOB_UPLOAD_INVALID",
    )
    .await;

    // A valid token used on another repository's URL, or another upload id.
    let foreign_repo = current.replace("/v2/guarded/", "/v2/elsewhere/");
    expect_error(
        patch(&server, &foreign_repo, b"x", None).await,
        StatusCode::BAD_REQUEST,
        "BLOB_UPLOAD_INVALID",
    )
    .await;
    let (path, query) = current.split_once('?').unwrap();
    let (prefix, _id) = path.rsplit_once('/').unwrap();
    let foreign_id = format!("{prefix}/00000000-0000-0000-0000-000000000000?{query}");
    expect_error(
        patch(&server, &foreign_id, b"x", None).await,
        StatusCode::BAD_REQUEST,
        "BLOB_UPLOAD_INVALID",
    )
    .await;

    // No token at all.
    let no_state = current.split_once('?').unwrap().0.to_owned();
    expect_error(
        patch(&server, &no_state, b"x", None).await,
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;

    // The genuine upload is intact.
    let digest = Digest::sha256_of(b"genuine bytes");
    let response = server
        .http
        .put(finish_url(&current, &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let pulled = server
        .http
        .get(server.url(&format!("/v2/guarded/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.bytes().await.unwrap(), &b"genuine bytes"[..]);
}

#[tokio::test]
async fn tokens_from_another_key_or_expired_are_refused() {
    let key_a = "a".repeat(32);
    let key_b = "b".repeat(32);
    let server_a = Server::start_with(&["--upload-secret", &key_a]).await;
    let server_b = Server::start_with(&["--upload-secret", &key_b]).await;
    let location = start_upload(&server_a, "keys").await;
    let on_b = location.replace(&server_a.base, &server_b.base);
    expect_error(
        patch(&server_b, &on_b, b"x", None).await,
        StatusCode::BAD_REQUEST,
        "BLOB_UPLOAD_INVALID",
    )
    .await;

    // After rotation (b current, a previous) the old key's tokens still work.
    let rotated = Server::start_with(&[
        "--upload-secret",
        &key_b,
        "--upload-secret-previous",
        &key_a,
    ])
    .await;
    let location = start_upload(&rotated, "keys").await;
    let response = patch(&rotated, &location, b"x", None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let short_lived = Server::start_with(&["--upload-token-ttl", "1s"]).await;
    let location = start_upload(&short_lived, "expiring").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    expect_error(
        patch(&short_lived, &location, b"x", None).await,
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn chunk_length_must_match_its_headers() {
    let server = Server::start().await;
    let location = start_upload(&server, "lengths").await;
    // Content-Range says 10 bytes, the body has 5.
    let response = patch(&server, &location, b"12345", Some((0, 9))).await;
    expect_error(response, StatusCode::BAD_REQUEST, "SIZE_INVALID").await;
    // A malformed Content-Range.
    let response = server
        .http
        .patch(&location)
        .header("content-range", "bytes=nonsense")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    // Nothing was accepted: the original token still starts at 0.
    let response = patch(&server, &location, b"12345", Some((0, 4))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range"), "0-4");
}

/// `url` (of any replica) sent to `server` instead.
fn on(server: &Server, url: &str) -> String {
    server.url(&url[url.find("/v2/").expect("an API URL")..])
}

/// A client whose `PATCH` response was lost (the replica stored the chunk, then died) asks any
/// replica where the upload stands, with any token of the upload it still has, and resumes from
/// the real offset instead of starting the blob again.
#[tokio::test]
async fn a_lost_response_is_recovered_from_any_token_on_any_replica() {
    let a = Server::start().await;
    let b = a.replica().await;
    // Large enough that, on S3, the upload has sent whole parts and keeps a tail.
    let blob = data(11, 13 * 1024 * 1024 + 321);
    let (one, rest) = blob.split_at(4 * 1024 * 1024);
    let (two, three) = rest.split_at(5 * 1024 * 1024 + 7);
    let first = start_upload(&a, "lost/response").await;
    let response = patch(&a, &first, one, Some((0, one.len() as u64 - 1))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let second = a.location(&response);
    let stored = (one.len() + two.len()) as u64;
    let response = patch(&a, &second, two, Some((one.len() as u64, stored - 1))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    drop(response); // Lost on its way back: the client never sees its Location.

    let mut recovered = None;
    for (server, token) in [(&b, &first), (&a, &second), (&b, &second)] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let response = server
                .http
                .request(method.clone(), on(server, token))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{method}");
            assert_eq!(header(&response, "range"), format!("0-{}", stored - 1));
            let location = server.location(&response);
            assert_eq!(token_payload(&location)["w"]["size"], stored);
            recovered = Some(location);
        }
    }

    let recovered = on(&a, &recovered.expect("a location"));
    let response = patch(&a, &recovered, three, Some((stored, blob.len() as u64 - 1))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let digest = Digest::sha256_of(&blob);
    let response = b
        .http
        .put(finish_url(&on(&b, &a.location(&response)), &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let pulled = a
        .http
        .get(a.url(&format!("/v2/lost/response/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert!(pulled.bytes().await.unwrap() == blob, "the blob is whole");

    // A finished upload is unknown to every token it had.
    let response = b.http.get(on(&b, &first)).send().await.unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}
