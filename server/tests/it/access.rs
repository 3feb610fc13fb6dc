//! Access control over HTTP: the rules table, the token flow, tokens that must be refused,
//! failed-login limits, external issuers and Kubernetes service account tokens.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{OCI_MANIFEST, Server, data, header};

const TOKEN_SECRET: &str = "an-auth-token-key-for-these-tests-only";

const POLICY: &str = r#"
[groups]
team-a = ["alice"]

[[rules]]
repositories = ["**"]
subjects = ["user:carol"]
actions = ["*"]

[[rules]]
repositories = ["team-a/**"]
subjects = ["group:team-a"]
actions = ["*"]

[[rules]]
repositories = ["team-a/**"]
subjects = ["user:bob"]
actions = ["pull"]

[[rules]]
repositories = ["public/**"]
subjects = ["anonymous", "authenticated"]
actions = ["pull"]
"#;

const AUTHENTICATED_DO_ALL: &str = r#"
[[rules]]
repositories = ["**"]
subjects = ["authenticated"]
actions = ["*"]
"#;

pub(crate) fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Writes the accounts and policy into `dir` and returns the flags that use them.
fn auth_files(dir: &Path, policy: &str) -> Vec<String> {
    let htpasswd: String = [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ]
    .iter()
    .map(|(user, pw)| format!("{user}:{}\n", bcrypt::hash(pw, 4).unwrap()))
    .collect();
    std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    vec![
        "--htpasswd".into(),
        dir.join("htpasswd").display().to_string(),
        "--auth-policy".into(),
        dir.join("policy.toml").display().to_string(),
        "--auth-token-secret".into(),
        TOKEN_SECRET.into(),
    ]
}

struct Setup {
    server: Server,
    _dir: tempfile::TempDir,
}

async fn start(policy: &str, extra: &[&str]) -> Setup {
    setup(policy, extra, false).await
}

/// As `start`, as one process even when the suite runs replicas.
async fn setup(policy: &str, extra: &[&str], one_replica: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = auth_files(dir.path(), policy);
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = if one_replica {
        Server::start_one_replica_with(&flags).await
    } else {
        Server::start_with(&flags).await
    };
    Setup { server, _dir: dir }
}

async fn status(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn the_rules_table() {
    let setup = start(POLICY, &[]).await;
    let server = &setup.server;
    let carol = server.acting_as(&basic("carol", "carol-pw"));
    let alice = server.acting_as(&basic("alice", "alice-pw"));
    let bob = server.acting_as(&basic("bob", "bob-pw"));
    let (manifest, _) = carol.push_image("team-a/app", "v1", &data(1, 100)).await;
    carol.push_image("public/base", "v1", &data(2, 100)).await;
    carol.push_image("secret/x", "v1", &data(3, 100)).await;
    let secret_layer = stowage::oci::Digest::sha256_of(&data(3, 100));

    let anonymous = server;
    let wrong = server.acting_as(&basic("alice", "not-her-password"));
    let put = |s: &Server, repo: &str, tag: &str| {
        s.http
            .put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
    };
    let get = |s: &Server, repo: &str| s.http.get(s.url(&format!("/v2/{repo}/manifests/v1")));
    let delete = |s: &Server, repo: &str, tag: &str| {
        s.http.delete(s.url(&format!("/v2/{repo}/manifests/{tag}")))
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "anonymous pulls team-a",
            get(anonymous, "team-a/app"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "anonymous pulls public",
            get(anonymous, "public/base"),
            StatusCode::OK,
        ),
        (
            "anonymous pushes public",
            put(anonymous, "public/base", "x"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong password pulls public",
            get(&wrong, "public/base"),
            StatusCode::UNAUTHORIZED,
        ),
        ("bob pulls team-a", get(&bob, "team-a/app"), StatusCode::OK),
        (
            "bob pushes team-a",
            put(&bob, "team-a/app", "bob"),
            StatusCode::FORBIDDEN,
        ),
        (
            "bob deletes a team-a tag",
            delete(&bob, "team-a/app", "v1"),
            StatusCode::FORBIDDEN,
        ),
        (
            "bob pulls secret",
            get(&bob, "secret/x"),
            StatusCode::FORBIDDEN,
        ),
        (
            "alice pushes team-a",
            put(&alice, "team-a/app", "v2"),
            StatusCode::CREATED,
        ),
        (
            "alice deletes her tag",
            delete(&alice, "team-a/app", "v2"),
            StatusCode::ACCEPTED,
        ),
        (
            "alice pulls secret",
            get(&alice, "secret/x"),
            StatusCode::FORBIDDEN,
        ),
        (
            "alice pulls public",
            get(&alice, "public/base"),
            StatusCode::OK,
        ),
        (
            "carol pulls secret",
            get(&carol, "secret/x"),
            StatusCode::OK,
        ),
        (
            "anonymous base",
            anonymous.http.get(anonymous.url("/v2/")),
            StatusCode::UNAUTHORIZED,
        ),
        ("bob base", bob.http.get(bob.url("/v2/")), StatusCode::OK),
        (
            "wrong base",
            wrong.http.get(wrong.url("/v2/")),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, request, expected) in cases {
        assert_eq!(status(request).await, expected, "{what}");
    }

    // The challenge names the realm at the address used, the service and the scope needed.
    let response = put(anonymous, "public/base", "x").send().await.unwrap();
    assert_eq!(
        header(&response, "www-authenticate"),
        format!(
            "Bearer realm=\"{}/auth/token\",service=\"stowage\",scope=\"repository:public/base:pull,push\"",
            server.base
        )
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    let response = put(&bob, "team-a/app", "x").send().await.unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["errors"][0]["code"],
        "DENIED"
    );

    // The catalog lists only what each caller may pull.
    let catalog = |s: &Server| {
        let request = s.http.get(s.url("/v2/_catalog"));
        async move {
            request.send().await.unwrap().json::<Value>().await.unwrap()["repositories"].clone()
        }
    };
    assert_eq!(
        catalog(&carol).await,
        json!(["public/base", "secret/x", "team-a/app"])
    );
    assert_eq!(catalog(&alice).await, json!(["public/base", "team-a/app"]));
    assert_eq!(catalog(anonymous).await, json!(["public/base"]));

    // Mounting from a repository the caller cannot read falls back to an upload: nothing tells
    // whether the blob is there. With read access it mounts.
    let mount = |s: &Server| {
        s.http.post(s.url(&format!(
            "/v2/team-a/app/blobs/uploads/?mount={secret_layer}&from=secret/x"
        )))
    };
    assert_eq!(status(mount(&alice)).await, StatusCode::ACCEPTED);
    assert_eq!(status(mount(&carol)).await, StatusCode::CREATED);

    // An upload authorized for one repository cannot finish into another, even one the caller
    // may push to: its state names the repository it was started in.
    let started = alice
        .http
        .post(alice.url("/v2/team-a/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = alice
        .location(&started)
        .replace("/team-a/app/", "/team-a/other/");
    let content = data(9, 64);
    let digest = stowage::oci::Digest::sha256_of(&content);
    let finish = alice
        .http
        .put(format!("{location}&digest={digest}"))
        .body(content)
        .send()
        .await
        .unwrap();
    assert_eq!(finish.status(), StatusCode::BAD_REQUEST);
    let body: Value = finish.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
    let blob = alice.url(&format!("/v2/team-a/other/blobs/{digest}"));
    assert_eq!(status(alice.http.head(blob)).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_anonymous_pull_anonymous_callers_must_log_in() {
    let setup = start(AUTHENTICATED_DO_ALL, &["--anonymous-pull", "false"]).await;
    let server = &setup.server;
    let carol = server.acting_as(&basic("carol", "carol-pw"));
    carol.push_image("any/repo", "v1", &data(4, 10)).await;
    let url = server.url("/v2/any/repo/manifests/v1");
    assert_eq!(
        status(server.http.get(&url)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(server.http.get(server.url("/v2/_catalog"))).await,
        StatusCode::UNAUTHORIZED
    );

    let open = start(AUTHENTICATED_DO_ALL, &["--anonymous-pull", "true"]).await;
    let carol = open.server.acting_as(&basic("carol", "carol-pw"));
    carol.push_image("any/repo", "v1", &data(4, 10)).await;
    let url = open.server.url("/v2/any/repo/manifests/v1");
    assert_eq!(status(open.server.http.get(&url)).await, StatusCode::OK);
    let put = open
        .server
        .http
        .put(&url)
        .header("content-type", OCI_MANIFEST)
        .body("{}");
    assert_eq!(status(put).await, StatusCode::UNAUTHORIZED);
}

async fn token(server: &Server, credentials: Option<&str>, scopes: &[&str]) -> Value {
    let mut request = server
        .http
        .get(server.url("/auth/token"))
        .query(&[("service", "stowage")]);
    for scope in scopes {
        request = request.query(&[("scope", scope)]);
    }
    if let Some(credentials) = credentials {
        request = request.header("authorization", credentials);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn tokens_grant_what_was_asked_and_allowed_on_every_replica() {
    let setup = start(POLICY, &[]).await;
    let server = &setup.server;
    let replica = server.replica().await;
    let alice = basic("alice", "alice-pw");
    let issued = token(
        server,
        Some(&alice),
        &[
            "repository:team-a/app:pull,push repository:secret/x:pull",
            "repository:public/base:push",
        ],
    )
    .await;
    for field in ["token", "access_token", "expires_in", "issued_at"] {
        assert!(!issued[field].is_null(), "{field} in {issued}");
    }
    assert_eq!(
        claims(issued["token"].as_str().unwrap())["access"],
        json!([{"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}])
    );
    // Issued by one replica, used on another.
    let bearer = format!("Bearer {}", issued["token"].as_str().unwrap());
    let as_alice = replica.acting_as(&bearer);
    let (manifest, _) = as_alice.push_image("team-a/app", "v1", &data(5, 50)).await;
    assert_eq!(
        status(as_alice.http.get(as_alice.url("/v2/secret/x/tags/list"))).await,
        StatusCode::FORBIDDEN
    );
    // Allowed by the rules but not by this token: a challenge for a better token.
    let response = as_alice
        .http
        .delete(as_alice.url("/v2/team-a/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&response, "www-authenticate").contains("error=\"insufficient_scope\""));

    // Anonymous tokens carry only what anonymous callers may do.
    let anonymous = token(
        server,
        None,
        &[
            "repository:public/base:pull,push",
            "repository:team-a/app:pull",
        ],
    )
    .await;
    assert_eq!(
        claims(anonymous["token"].as_str().unwrap())["access"],
        json!([{"type": "repository", "name": "public/base", "actions": ["pull"]}])
    );

    // Refresh tokens, the Docker way and the OAuth2 way.
    let mut request = server.http.get(server.url("/auth/token"));
    request = request.query(&[
        ("offline_token", "true"),
        ("scope", "repository:team-a/app:pull"),
    ]);
    let offline: Value = request
        .header("authorization", &alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = offline["refresh_token"].as_str().unwrap();
    assert!(
        status(server.http.get(server.url("/v2/")).bearer_auth(refresh)).await
            == StatusCode::UNAUTHORIZED,
        "a refresh token is not an access token"
    );
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("service", "stowage"),
        ("scope", "repository:team-a/app:pull"),
    ];
    let refreshed: Value = server
        .http
        .post(server.url("/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = refreshed["access_token"].as_str().unwrap();
    let get = server
        .http
        .get(server.url("/v2/team-a/app/manifests/v1"))
        .bearer_auth(access);
    assert_eq!(status(get).await, StatusCode::OK);
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "alice-pw"),
        ("scope", "repository:team-a/app:pull"),
    ];
    let response = server
        .http
        .post(server.url("/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "nope"),
    ];
    let response = server
        .http
        .post(server.url("/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let _ = manifest;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn forge(claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap()
}

#[tokio::test]
async fn refuses_every_kind_of_bad_token_and_writes_nothing() {
    let setup = start(POLICY, &[]).await;
    let server = &setup.server;
    let carol = server.acting_as(&basic("carol", "carol-pw"));
    let (manifest, _) = carol.push_image("team-a/app", "v1", &data(6, 50)).await;
    let good = json!({
        "iss": "stowage:stowage", "sub": "alice", "aud": "stowage",
        "exp": now() + 300, "nbf": now() - 1, "iat": now(), "jti": "x",
        "access": [{"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}],
    });
    // The control: a token made exactly as ours are is accepted.
    let valid = forge(&good, TOKEN_SECRET.as_bytes());
    let put = |token: &str, tag: &str| {
        server
            .http
            .put(server.url(&format!("/v2/team-a/app/manifests/{tag}")))
            .bearer_auth(token)
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
    };
    assert_eq!(status(put(&valid, "control")).await, StatusCode::CREATED);

    let with = |change: Value| {
        let mut claims = good.clone();
        for (key, value) in change.as_object().unwrap() {
            claims[key] = value.clone();
        }
        claims
    };
    let parts: Vec<&str> = valid.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let admin_claims =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&with(json!({"sub": "carol"}))).unwrap());
    let bad = [
        (
            "another key",
            forge(&good, b"some-other-key-that-is-long-enough!!"),
        ),
        (
            "expired",
            forge(&with(json!({"exp": now() - 120})), TOKEN_SECRET.as_bytes()),
        ),
        (
            "another service",
            forge(&with(json!({"aud": "elsewhere"})), TOKEN_SECRET.as_bytes()),
        ),
        (
            "another issuer",
            forge(&with(json!({"iss": "someone"})), TOKEN_SECRET.as_bytes()),
        ),
        (
            "another repository",
            forge(
                &with(
                    json!({"access": [{"type": "repository", "name": "public/base", "actions": ["push"]}]}),
                ),
                TOKEN_SECRET.as_bytes(),
            ),
        ),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        (
            "tampered",
            format!("{}.{admin_claims}.{}", parts[0], parts[2]),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in bad {
        let tag = what.replace(' ', "-");
        assert_eq!(
            status(put(&token, &tag)).await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
        let written = carol
            .http
            .get(carol.url(&format!("/v2/team-a/app/manifests/{tag}")));
        assert_eq!(
            status(written).await,
            StatusCode::NOT_FOUND,
            "{what} wrote a tag"
        );
    }
}

#[tokio::test]
async fn failed_logins_are_limited_per_user() {
    // Failed sign-ins are counted by each replica (the README says so).
    let setup = setup(POLICY, &["--auth-max-failed-logins", "3"], true).await;
    let server = &setup.server;
    let wrong = server.acting_as(&basic("bob", "guess"));
    for _ in 0..3 {
        assert_eq!(
            status(wrong.http.get(wrong.url("/v2/"))).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let response = wrong.http.get(wrong.url("/v2/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&response, "retry-after").parse::<u64>().unwrap() >= 1);
    // Locked out means locked out: the right password does not get through either.
    let right = server.acting_as(&basic("bob", "bob-pw"));
    assert_eq!(
        status(right.http.get(right.url("/v2/"))).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let token = right.http.get(right.url("/auth/token"));
    assert_eq!(status(token).await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn changed_accounts_and_rules_apply_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = auth_files(dir.path(), POLICY);
    flags.extend(["--reload-interval".to_owned(), "100ms".to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_with(&flags).await;
    let dave = server.acting_as(&basic("dave", "dave-pw"));
    assert_eq!(
        status(dave.http.get(dave.url("/v2/"))).await,
        StatusCode::UNAUTHORIZED
    );
    let mut accounts = std::fs::read_to_string(dir.path().join("htpasswd")).unwrap();
    accounts.push_str(&format!("dave:{}\n", bcrypt::hash("dave-pw", 4).unwrap()));
    std::fs::write(dir.path().join("htpasswd"), accounts).unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[rules]]\nrepositories = [\"**\"]\nsubjects = [\"user:dave\"]\nactions = [\"pull\"]\n",
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(dave.http.get(dave.url("/v2/_catalog"))).await != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new account never worked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new policy replaced the old one: carol's catch-all rule is gone.
    let carol = server.acting_as(&basic("carol", "carol-pw"));
    let push = carol.http.post(carol.url("/v2/x/blobs/uploads/"));
    assert_eq!(status(push).await, StatusCode::FORBIDDEN);
}

/// An ES256 signing key, and its public half as a JWK.
pub(crate) struct SigningKey {
    key: rcgen::KeyPair,
    kid: &'static str,
}

impl SigningKey {
    fn new(kid: &'static str) -> Self {
        Self {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            kid,
        }
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.to_owned());
        let key = EncodingKey::from_ec_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn jwk(&self) -> Value {
        let point = self.key.public_key_raw();
        json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }
}

/// A small OIDC issuer on loopback: a discovery document and its JWKS, as the Kubernetes API
/// server serves them.
async fn oidc_issuer(keys: Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/openid/v1/jwks") });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/openid/v1/jwks",
            axum::routing::get(move || async move { axum::Json(keys) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    issuer
}

/// A registry that takes the service account tokens of a cluster whose issuer serves on
/// loopback, with `flags`; its policy lets namespace `ci` pull and push in `team-a/**`.
pub(crate) struct Cluster {
    pub key: SigningKey,
    pub issuer: String,
    pub server: Server,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) async fn start(flags: &[&str]) -> Self {
        let key = SigningKey::new("cluster-key");
        let issuer = oidc_issuer(json!({ "keys": [key.jwk()] })).await;
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            "[[rules]]\nrepositories = [\"team-a/**\"]\nsubjects = [\"group:system:serviceaccounts:ci\"]\n\
             actions = [\"pull\", \"push\"]\n",
        )
        .unwrap();
        let mut all = vec![
            "--auth-kubernetes-issuer",
            &issuer,
            "--auth-kubernetes-audience",
            "registry",
            "--auth-policy",
            policy.to_str().unwrap(),
        ];
        all.extend_from_slice(flags);
        let server = Server::start_with(&all).await;
        Self {
            key,
            issuer,
            server,
            _dir: dir,
        }
    }

    /// The claims of `ci/builder`'s token for the registry, with `change` made to them.
    pub(crate) fn claims(&self, change: &Value) -> Value {
        let mut claims = json!({
            "iss": self.issuer, "aud": ["registry"], "sub": "system:serviceaccount:ci:builder",
            "exp": now() + 600, "nbf": now() - 1, "iat": now(),
            "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "builder"}},
        });
        for (k, v) in change.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }
}

#[tokio::test]
async fn kubernetes_service_account_tokens_as_passwords() {
    let cluster = Cluster::start(&[]).await;
    let (key, server) = (&cluster.key, &cluster.server);
    let impostor = SigningKey::new("cluster-key");
    let claims = |change: Value| cluster.claims(&change);
    let push_with = |token: String| {
        let s = server.acting_as(&basic("anything", &token));
        async move { status(s.http.post(s.url("/v2/team-a/app/blobs/uploads/"))).await }
    };
    let cases = [
        (
            "a valid token",
            key.sign(&claims(json!({}))),
            StatusCode::ACCEPTED,
        ),
        (
            "another audience",
            key.sign(&claims(json!({"aud": ["kubernetes"]}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another issuer",
            key.sign(&claims(json!({"iss": "https://elsewhere"}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            key.sign(&claims(json!({"exp": now() - 120}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another key",
            impostor.sign(&claims(json!({}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not a service account",
            key.sign(&claims(json!({"sub": "admin"}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another namespace",
            key.sign(&claims(
                json!({"sub": "system:serviceaccount:web:frontend"}),
            )),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, token, expected) in cases {
        assert_eq!(push_with(token).await, expected, "{what}");
    }
}

/// An external token server (`auth.example.com`, for `registry.example.com`): its signing key,
/// and the `serve` flags that trust its certificate (written under `dir`).
pub(crate) fn external_issuer(dir: &Path) -> (SigningKey, Vec<String>) {
    let key = SigningKey::new("token-server");
    let mut params = rcgen::CertificateParams::new(vec!["token-server".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "token server");
    let certificate = params.self_signed(&key.key).unwrap();
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, certificate.pem()).unwrap();
    let flags = [
        "--auth-issuer-realm",
        "https://auth.example.com/token",
        "--auth-issuer-service",
        "registry.example.com",
        "--auth-issuer-name",
        "auth.example.com",
        "--auth-issuer-root-cert-bundle",
        bundle.to_str().unwrap(),
    ];
    (key, flags.iter().map(|f| (*f).to_owned()).collect())
}

/// A token of [`external_issuer`] for `ci-bot`, granting `actions` on `team/app`, with `change`
/// made to its claims.
pub(crate) fn external_token(key: &SigningKey, actions: &[&str], change: &Value) -> String {
    let mut claims = json!({
        "iss": "auth.example.com", "aud": "registry.example.com", "sub": "ci-bot",
        "exp": now() + 300, "nbf": now() - 1, "iat": now(), "jti": "1",
        "access": [{"type": "repository", "name": "team/app", "actions": actions}],
    });
    for (k, v) in change.as_object().unwrap() {
        claims[k] = v.clone();
    }
    key.sign(&claims)
}

#[tokio::test]
async fn tokens_from_an_external_token_server() {
    let dir = tempfile::tempdir().unwrap();
    let (key, flags) = external_issuer(dir.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_with(&flags).await;
    let token = |actions: &[&str], change: Value| {
        format!("Bearer {}", external_token(&key, actions, &change))
    };
    // The challenge sends clients to the token server.
    let response = server
        .http
        .get(server.url("/v2/team/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&response, "www-authenticate"),
        "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example.com\",scope=\"repository:team/app:pull\""
    );
    let pusher = server.acting_as(&token(&["pull", "push"], json!({})));
    pusher.push_image("team/app", "v1", &data(7, 10)).await;
    let tags = |authorization: String| {
        let s = server.acting_as(&authorization);
        async move { status(s.http.get(s.url("/v2/team/app/tags/list"))).await }
    };
    assert_eq!(tags(token(&["pull"], json!({}))).await, StatusCode::OK);
    assert_eq!(
        tags(token(&["push"], json!({}))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        tags(token(&["pull"], json!({"aud": "other"}))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        tags(token(&["pull"], json!({"iss": "other"}))).await,
        StatusCode::UNAUTHORIZED
    );
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": "auth.example.com", "aud": "registry.example.com", "sub": "x", "exp": now() + 60,
                "access": [{"type": "repository", "name": "team/app", "actions": ["pull"]}]}),
        &EncodingKey::from_secret(&std::fs::read(dir.path().join("bundle.pem")).unwrap()),
    )
    .unwrap();
    assert_eq!(
        tags(format!("Bearer {hs256}")).await,
        StatusCode::UNAUTHORIZED
    );
}
