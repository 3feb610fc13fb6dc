//! The web interface over HTTP, for what the browser scenarios (tests/ui) do not reach: signing in
//! with a Kubernetes service account token or an external issuer's token, a registry without
//! access control, and read-only mode.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::access::{Cluster, basic, external_issuer, external_token};
use crate::common::{Server, data};

/// A browser's part: one cookie, redirects not followed.
struct Visitor {
    http: reqwest::Client,
    cookie: Option<String>,
}

impl Visitor {
    fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { http, cookie: None }
    }

    fn keep_cookie(&mut self, response: &reqwest::Response) {
        if let Some(set) = response.headers().get(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
    }

    async fn get(&mut self, server: &Server, path: &str) -> (StatusCode, String) {
        let mut request = self.http.get(server.url(path));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await.unwrap();
        self.keep_cookie(&response);
        (response.status(), response.text().await.unwrap())
    }

    /// The CSRF token in the form of the page at `path`.
    async fn csrf(&mut self, server: &Server, path: &str) -> String {
        let (_, page) = self.get(server, path).await;
        page.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("{path} has no form with a CSRF token: {page}"))
            .to_owned()
    }

    /// Posts `fields` with `csrf`.
    async fn post(
        &mut self,
        server: &Server,
        path: &str,
        fields: &[(&str, &str)],
        csrf: &str,
    ) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf", csrf));
        let response = self
            .http
            .post(server.url(path))
            .header(COOKIE, self.cookie.clone().unwrap_or_default())
            .form(&form)
            .send()
            .await
            .unwrap();
        self.keep_cookie(&response);
        response
    }
}

#[tokio::test]
async fn an_external_issuers_token_signs_in_with_no_more_than_it_grants() {
    let dir = tempfile::tempdir().unwrap();
    let (key, mut flags) = external_issuer(dir.path());
    flags.extend(["--ui".to_owned(), "true".to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_with(&flags).await;
    let push_token = external_token(&key, &["pull", "push"], &json!({}));
    let pusher = server.acting_as(&format!("Bearer {push_token}"));
    pusher.push_image("team/app", "v1", &data(3, 10)).await;

    let mut visitor = Visitor::new();
    let (status, _) = visitor.get(&server, "/ui/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "anonymous visitors sign in");
    let token = external_token(&key, &["pull"], &json!({}));
    let csrf = visitor.csrf(&server, "/ui/login").await;
    let fields = [
        ("user", "ci-bot"),
        ("password", token.as_str()),
        ("next", "/ui/r/team/app"),
    ];
    let signed_in = visitor.post(&server, "/ui/login", &fields, &csrf).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()[LOCATION], "/ui/r/team/app");
    // The session ends with the token (five minutes), not after the usual eight hours.
    let cookie = signed_in.headers()[SET_COOKIE].to_str().unwrap();
    let max_age: u64 = cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age <= 300, "{cookie}");
    let (status, page) = visitor.get(&server, "/ui/r/team/app").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("data-tag=\"v1\""), "{page}");
    assert!(page.contains(">ci-bot<"), "the signed-in name is shown");
    assert!(!page.contains("Delete"), "the token grants no delete");
    let (_, listing) = visitor.get(&server, "/ui/").await;
    assert!(listing.contains("/ui/r/team/app"), "{listing}");
    let csrf = visitor.csrf(&server, "/ui/r/team/app").await;
    let path = "/ui/r/team/app/-/delete";
    let refused = visitor.post(&server, path, &[("tag", "v1")], &csrf).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("you may not delete"));

    // A token for another audience signs nobody in.
    let mut stranger = Visitor::new();
    let other = external_token(&key, &["pull"], &json!({"aud": "elsewhere"}));
    let csrf = stranger.csrf(&server, "/ui/login").await;
    let fields = [("user", "ci-bot"), ("password", other.as_str())];
    let refused = stranger.post(&server, "/ui/login", &fields, &csrf).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_service_account_token_signs_in_as_its_workload() {
    let cluster = Cluster::start(&["--ui", "true"]).await;
    let server = &cluster.server;
    let token = |audience: &str| {
        cluster
            .key
            .sign(&cluster.claims(&json!({ "aud": [audience] })))
    };
    let pusher = server.acting_as(&basic("builder", &token("registry")));
    pusher.push_image("team-a/app", "v1", &data(8, 10)).await;

    let mut visitor = Visitor::new();
    let csrf = visitor.csrf(server, "/ui/login").await;
    let wrong = token("kubernetes");
    let fields = [("user", "builder"), ("password", wrong.as_str())];
    let refused = visitor.post(server, "/ui/login", &fields, &csrf).await;
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "another audience"
    );
    let right = token("registry");
    let fields = [("user", "builder"), ("password", right.as_str())];
    let signed_in = visitor.post(server, "/ui/login", &fields, &csrf).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let (status, page) = visitor.get(server, "/ui/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(">system:serviceaccount:ci:builder<"),
        "{page}"
    );
    assert!(page.contains("/ui/r/team-a/app"), "{page}");
    let (status, page) = visitor.get(server, "/ui/r/team-a/app").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("data-tag=\"v1\""), "{page}");
}

#[tokio::test]
async fn without_access_control_anyone_browses_and_deletes_with_the_forms_token() {
    let server = Server::start_with(&["--ui", "true"]).await;
    server.push_image("team/app", "v1", &data(4, 10)).await;
    server.push_image("team/app", "v2", &data(5, 10)).await;
    let mut visitor = Visitor::new();
    let (status, page) = visitor.get(&server, "/ui/r/team/app").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Delete"), "{page}");
    assert!(!page.contains("Sign in"), "nobody to sign in as");
    let path = "/ui/r/team/app/-/delete";
    let forged = visitor
        .post(&server, path, &[("tag", "v1")], "guessed")
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let csrf = visitor
        .csrf(&server, "/ui/r/team/app/-/delete?tag=v1")
        .await;
    let deleted = visitor.post(&server, path, &[("tag", "v1")], &csrf).await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    let tags = server.get_json("/v2/team/app/tags/list").await;
    assert_eq!(tags["tags"], json!(["v2"]));
    // A manifest, with the tags that point at it.
    let (_, digest) = server.push_image("team/app", "v3", &data(5, 10)).await;
    let confirm = format!("/ui/r/team/app/-/delete?digest={digest}");
    let (_, page) = visitor.get(&server, &confirm).await;
    assert!(page.contains("every tag that points at it"), "{page}");
    let csrf = visitor.csrf(&server, &confirm).await;
    let fields = [("digest", digest.to_string())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let deleted = visitor.post(&server, path, &fields, &csrf).await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    let tags = server.get_json("/v2/team/app/tags/list").await;
    assert_eq!(tags["tags"], json!([]), "v2 and v3 named the same manifest");
    let manifest = server.url(&format!("/v2/team/app/manifests/{digest}"));
    let gone = visitor.http.get(manifest).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    // Pages are never served to other sites' frames or scripts.
    let response = visitor.http.get(server.url("/ui/")).send().await.unwrap();
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn an_immutable_tag_shows_no_delete_and_a_forced_one_is_refused() {
    let (server, _config) = Server::start_with_config(
        "ui = true\n[[policies.immutable-tags]]\nname = \"releases\"\nrepositories = [\"team/**\"]\ntags = [\"v*\"]\n",
    )
    .await;
    server.push_image("team/app", "v1", &data(9, 10)).await;
    server.push_image("team/app", "latest", &data(10, 10)).await;
    let mut visitor = Visitor::new();
    let (_, page) = visitor.get(&server, "/ui/r/team/app").await;
    assert!(page.contains("delete?tag=latest"), "{page}");
    assert!(!page.contains("delete?tag=v1"), "{page}");
    assert!(page.contains(">immutable<"), "{page}");
    let csrf = visitor
        .csrf(&server, "/ui/r/team/app/-/delete?tag=v1")
        .await;
    let path = "/ui/r/team/app/-/delete";
    let refused = visitor.post(&server, path, &[("tag", "v1")], &csrf).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("is immutable (rule &quot;releases&quot;)"),
        "{text}"
    );
    let tags = server.get_json("/v2/team/app/tags/list").await;
    assert_eq!(tags["tags"], json!(["latest", "v1"]));
}

#[tokio::test]
async fn the_cookie_is_secure_when_a_trusted_proxy_ended_https() {
    let server = Server::start_with(&["--ui", "true", "--trusted-proxies", "127.0.0.1"]).await;
    let cookie = |proto: Option<&'static str>| {
        let request = server.http.get(server.url("/ui/"));
        let request = match proto {
            Some(proto) => request.header("x-forwarded-proto", proto),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            response.headers()[SET_COOKIE].to_str().unwrap().to_owned()
        }
    };
    assert!(cookie(Some("https")).await.ends_with("; Secure"));
    assert!(!cookie(Some("http")).await.contains("Secure"));
    assert!(!cookie(None).await.contains("Secure"));
    // From anyone else, the header is not believed.
    let direct = Server::start_with(&["--ui", "true"]).await;
    let response = direct
        .http
        .get(direct.url("/ui/"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        !response.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
}

#[tokio::test]
async fn a_read_only_replica_shows_no_delete_and_refuses_one_from_another_replicas_form() {
    let server = Server::start_with(&["--ui", "true"]).await;
    server.push_image("team/app", "v1", &data(6, 10)).await;
    let replica = server
        .replica_with(|config| config.api.read_only = true)
        .await;
    let mut visitor = Visitor::new();
    // The session and its form come from the writable replica: any replica accepts them.
    let csrf = visitor
        .csrf(&server, "/ui/r/team/app/-/delete?tag=v1")
        .await;
    let (status, page) = visitor.get(&replica, "/ui/r/team/app").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("Delete"), "{page}");
    let path = "/ui/r/team/app/-/delete";
    let refused = visitor.post(&replica, path, &[("tag", "v1")], &csrf).await;
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(refused.text().await.unwrap().contains("read-only"));
}
