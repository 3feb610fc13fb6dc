//! Hostile and malformed requests: each gets the spec's error and a 4xx, never a 5xx, a panic or
//! a stored byte. Requests go over a raw socket so that paths reach the server exactly as written.

use serde_json::Value;
use stowage::oci::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{OCI_INDEX, OCI_MANIFEST, Server};

struct Case {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(method: &'static str, path: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        status,
        code,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// Sends one HTTP/1.1 request with the path exactly as given; returns status and body.
async fn raw_request(server: &Server, case: &Case) -> (u16, Vec<u8>) {
    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n",
        case.method, case.path
    );
    for (name, value) in &case.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !case
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        request.push_str(&format!("Content-Length: {}\r\n", case.body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&case.body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no response to {}", case.path));
    let body_start = text.find("\r\n\r\n").map_or(response.len(), |i| i + 4);
    (status, response[body_start..].to_vec())
}

/// Decodes a possibly chunked body well enough to find the JSON in it.
fn json_in(body: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(body);
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(&text[start..=end]).ok()
}

#[tokio::test]
async fn every_bad_request_gets_the_specs_error() {
    let server = Server::start().await;
    let good = Digest::sha256_of(b"anything");
    let start = server
        .http
        .post(server.url("/v2/valid/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let upload = server
        .location(&start)
        .trim_start_matches(&server.base)
        .to_owned();
    let upload_path = upload.split('?').next().unwrap().to_owned();
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"a/b","digest":"{good}","size":1}},"layers":[]}}"#
    );
    let huge_tag = "t".repeat(129);
    let huge_name = "n".repeat(256);

    let cases = vec![
        // Names and path traversal.
        case("GET", "/v2/UPPER/tags/list", 400, "NAME_INVALID"),
        case("GET", "/v2/a..b/tags/list", 400, "NAME_INVALID"),
        case(
            "GET",
            format!("/v2/../../etc/blobs/{good}"),
            400,
            "NAME_INVALID",
        ),
        case(
            "GET",
            format!("/v2/a/../../../../etc/blobs/{good}"),
            400,
            "NAME_INVALID",
        ),
        case("GET", "/v2/a/%2e%2e/b/tags/list", 400, "NAME_INVALID"),
        case("GET", "/v2/a%2Fb/tags/list", 400, "NAME_INVALID"),
        case("GET", "/v2/a/manifests/v1%00", 400, "NAME_INVALID"),
        case("GET", "/v2//etc/tags/list", 400, "NAME_INVALID"),
        case(
            "GET",
            format!("/v2/{huge_name}/tags/list"),
            400,
            "NAME_INVALID",
        ),
        case("PUT", "/v2/-x/manifests/v1", 400, "NAME_INVALID"),
        case(
            "GET",
            "/v2/a/blobs/sha256:../../../../etc/passwd",
            404,
            "UNSUPPORTED",
        ),
        // Digests.
        case("GET", "/v2/a/blobs/sha256:short", 400, "DIGEST_INVALID"),
        case(
            "GET",
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            400,
            "DIGEST_INVALID",
        ),
        case(
            "GET",
            format!("/v2/a/blobs/sha256:{}", "A".repeat(64)),
            400,
            "DIGEST_INVALID",
        ),
        case("HEAD", "/v2/a/blobs/notadigest", 400, ""),
        case("DELETE", "/v2/a/blobs/sha256:", 400, "DIGEST_INVALID"),
        case("GET", "/v2/a/referrers/sha256:xyz", 400, "DIGEST_INVALID"),
        case(
            "POST",
            "/v2/a/blobs/uploads/?digest=sha256:zz",
            400,
            "DIGEST_INVALID",
        ),
        case(
            "POST",
            "/v2/a/blobs/uploads/?mount=bad&from=b",
            400,
            "DIGEST_INVALID",
        ),
        case(
            "POST",
            format!("/v2/a/blobs/uploads/?mount={good}&from=BAD"),
            400,
            "NAME_INVALID",
        ),
        case(
            "POST",
            "/v2/a/blobs/uploads/?digest-algorithm=md5",
            400,
            "DIGEST_INVALID",
        ),
        // Tags and references: a read of one that cannot exist finds nothing (as conformance
        // expects); a write gets the precise 400.
        case("GET", "/v2/a/manifests/-bad", 404, "MANIFEST_UNKNOWN"),
        case("HEAD", "/v2/a/manifests/-bad", 404, ""),
        case(
            "GET",
            format!("/v2/a/manifests/{huge_tag}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        case(
            "GET",
            "/v2/a/manifests/sha256:nothex",
            404,
            "MANIFEST_UNKNOWN",
        ),
        case("PUT", "/v2/a/manifests/-bad", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body("{}"),
        case(
            "PUT",
            format!("/v2/a/manifests/{huge_tag}"),
            400,
            "MANIFEST_INVALID",
        )
        .header("Content-Type", OCI_MANIFEST)
        .body("{}"),
        case(
            "DELETE",
            "/v2/a/manifests/sha256:nothex",
            400,
            "DIGEST_INVALID",
        ),
        case("GET", "/v2/a/manifests/missing", 404, "MANIFEST_UNKNOWN"),
        // Manifests.
        case("PUT", "/v2/a/manifests/v1", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body("{"),
        case("PUT", "/v2/a/manifests/v1", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body("[1,2]"),
        case("PUT", "/v2/a/manifests/v1", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_INDEX)
            .body(image.clone()),
        case("PUT", "/v2/a/manifests/v1", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body(image.replace("\"schemaVersion\":2", "\"schemaVersion\":1")),
        case("PUT", "/v2/a/manifests/v1", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .body(image.replace(&good.to_string(), "sha256:../../../etc")),
        case("PUT", "/v2/a/manifests/v1", 400, "MANIFEST_BLOB_UNKNOWN")
            .header("Content-Type", OCI_MANIFEST)
            .body(image.clone()),
        case(
            "PUT",
            format!("/v2/a/manifests/{good}"),
            400,
            "DIGEST_INVALID",
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(image.clone()),
        case("PUT", "/v2/a/manifests/v1", 413, "SIZE_INVALID")
            .header("Content-Type", OCI_MANIFEST)
            .header("Content-Length", "999999999"),
        // Uploads.
        case(
            "PATCH",
            "/v2/valid/blobs/uploads/not-an-upload",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .body("x"),
        case(
            "PATCH",
            "/v2/valid/blobs/uploads/x?_state=garbage",
            400,
            "BLOB_UPLOAD_INVALID",
        )
        .body("x"),
        case(
            "PATCH",
            "/v2/valid/blobs/uploads/x?_state=a.b",
            400,
            "BLOB_UPLOAD_INVALID",
        )
        .body("x"),
        case(
            "PUT",
            format!("/v2/valid/blobs/uploads/x?_state=garbage&digest={good}"),
            400,
            "BLOB_UPLOAD_INVALID",
        ),
        case(
            "DELETE",
            "/v2/valid/blobs/uploads/x?_state=garbage",
            400,
            "BLOB_UPLOAD_INVALID",
        ),
        case(
            "GET",
            "/v2/valid/blobs/uploads/x",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        case("PUT", upload.clone(), 400, "DIGEST_INVALID"),
        case(
            "PUT",
            format!("{upload}&digest=sha256:bad"),
            400,
            "DIGEST_INVALID",
        ),
        case("PATCH", upload.clone(), 416, "RANGE_INVALID")
            .header("Content-Range", "5-9")
            .body("12345"),
        case("PATCH", upload.clone(), 416, "RANGE_INVALID")
            .header("Content-Range", "0-18446744073709551615")
            .body("1"),
        case("PATCH", upload.clone(), 416, "RANGE_INVALID")
            .header("Content-Range", "9-0")
            .body("1"),
        case("PATCH", upload.clone(), 400, "SIZE_INVALID")
            .header("Content-Range", "0-9")
            .body("12345"),
        case(
            "PATCH",
            format!("{upload_path}?_state="),
            400,
            "BLOB_UPLOAD_INVALID",
        )
        .body("x"),
        case(
            "PUT",
            upload.replace("/v2/valid/", "/v2/other/"),
            400,
            "BLOB_UPLOAD_INVALID",
        ),
        // Listings and methods.
        case(
            "GET",
            "/v2/_catalog?n=abc",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        case("GET", "/v2/_catalog?n=-5", 400, "PAGINATION_NUMBER_INVALID"),
        case("PUT", "/v2/a/tags/list", 405, "UNSUPPORTED"),
        case("POST", "/v2/a/manifests/v1", 405, "UNSUPPORTED"),
        case("PATCH", format!("/v2/a/blobs/{good}"), 405, "UNSUPPORTED"),
        case("GET", "/v2/a/unknown/thing", 404, "UNSUPPORTED"),
    ];

    for case in &cases {
        let (status, body) = raw_request(&server, case).await;
        let what = format!("{} {}", case.method, case.path);
        assert_eq!(
            status,
            case.status,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        if case.method != "HEAD" {
            let json = json_in(&body).unwrap_or_else(|| panic!("{what}: no error body"));
            assert_eq!(json["errors"][0]["code"], case.code, "{what}");
        }
    }

    // The server is still fine, and nothing the bad requests sent was stored.
    assert_eq!(
        server
            .http
            .get(server.url("/v2/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        server.stored_keys("/blobs/").await.is_empty(),
        "{:?}",
        server.stored_keys("/blobs/").await
    );
    assert!(server.stored_keys("_manifests").await.is_empty());
    assert!(server.stored_keys("_layers").await.is_empty());
    // The one valid upload still starts at zero: no rejected chunk got in.
    let status = server.http.get(server.url(&upload)).send().await.unwrap();
    assert_eq!(status.headers()["range"], "0-0");
}
