//! The web interface in a real browser: headless Chromium (Debian's), driven by Playwright
//! (`tests/ui/*.mjs`), against a real Stowage with images pushed by skopeo: a multi-platform
//! index, an image whose labels and annotations are hostile, and a signature that refers to it.
//! The scripts take screenshots of every page, at a desktop's width and a phone's, into
//! `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use stowage_e2e::layout::{Layout, Written};
use stowage_e2e::{Stowage, build_dir, require, run, skopeo};

/// What the hostile fields hold: markup, quote tricks and a script.
const HOSTILE_LABEL: &str = r#""><img src=x onerror=alert(1)>"#;
const HOSTILE_ANNOTATION: &str = "<script>alert('annotation')</script>";
const HOSTILE_ENV: &str = "X=</code><script>alert(\"env\")</script>";
const SIGNATURE_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

const USERS: [(&str, &str); 3] = [
    ("admin", "admin-secret"),
    ("reader", "reader-secret"),
    ("bob", "bob-secret"),
];

/// admin may do everything, reader may pull `team/…`, bob may do anything in `bob/…`.
const POLICY: &str = r#"
[[rules]]
repositories = ["**"]
subjects = ["user:admin"]
actions = ["*"]

[[rules]]
repositories = ["team/**"]
subjects = ["user:reader"]
actions = ["pull"]

[[rules]]
repositories = ["bob/**"]
subjects = ["user:bob"]
actions = ["*"]
"#;

/// The multi-platform releases of team/multi stay.
const IMMUTABLE: &str = r#"
[[policies.immutable-tags]]
name = "releases"
repositories = ["team/multi"]
tags = ["1.*"]
"#;

struct Site {
    stowage: Stowage,
    /// What the scripts are told: the address, the accounts, the digests pushed.
    fixture: Value,
}

/// A registry with access control, filled by skopeo.
fn site(dir: &Path, extra: &[&str]) -> Site {
    let htpasswd = dir.join("htpasswd");
    let accounts: String = USERS
        .iter()
        .map(|(user, pw)| format!("{user}:{}\n", bcrypt::hash(pw, 5).unwrap()))
        .collect();
    std::fs::write(&htpasswd, accounts).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let config = dir.join("stowage.toml");
    std::fs::write(&config, IMMUTABLE).unwrap();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--ui",
        "true",
        "--htpasswd",
        htpasswd.to_str().unwrap(),
        "--auth-policy",
        policy.to_str().unwrap(),
        "--auth-challenge",
        "basic",
    ];
    args.extend_from_slice(extra);
    let stowage = Stowage::start(&dir.join("data"), &args);
    let pushed = push_images(dir, &stowage.address);
    let fixture = json!({
        "url": format!("http://{}", stowage.address),
        "port": stowage.address.rsplit(':').next().unwrap(),
        "users": USERS.iter().map(|(u, p)| (u.to_string(), json!(p))).collect::<serde_json::Map<_, _>>(),
        "hostile": {"label": HOSTILE_LABEL, "annotation": HOSTILE_ANNOTATION, "env": HOSTILE_ENV},
        "signatureType": SIGNATURE_TYPE,
        "digests": pushed,
    });
    Site { stowage, fixture }
}

/// Pushes the images every scenario browses; returns their digests by name.
fn push_images(dir: &Path, address: &str) -> Value {
    let mut layout = Layout::new(&dir.join("layout"));
    let app = layout.image_with(
        "amd64",
        &[&[("app/run.sh", b"#!/bin/sh\necho hello\n")], &[("app/data.txt", b"data")]],
        &json!({
            "Env": ["PATH=/usr/bin", HOSTILE_ENV],
            "Entrypoint": ["/app/run.sh"],
            "Cmd": ["--serve", "it's here"],
            "WorkingDir": "/app",
            "Labels": {"evil": HOSTILE_LABEL, "org.opencontainers.image.title": "demo app"},
            "ExposedPorts": {"8080/tcp": {}},
        }),
        Some(&json!({"note": HOSTILE_ANNOTATION, "org.opencontainers.image.source": "https://example.com/app"})),
    );
    let old = layout.image("amd64", &[&[("old.txt", b"old")]]);
    let amd64 = layout.image("amd64", &[&[("bin/tool", b"amd64 build")]]);
    let arm64 = layout.image("arm64", &[&[("bin/tool", b"arm64 build")]]);
    let multi = layout.index(&[("amd64", &amd64), ("arm64", &arm64)]);
    let signature = layout.referrer(&app, SIGNATURE_TYPE, br#"{"critical":{"image":{}}}"#);
    let signature_tag = format!("sha256-{}.sig", app.digest.trim_start_matches("sha256:"));
    let pushes: Vec<(&str, &Written, String)> = [
        ("app-v1", &app, "team/app:v1".to_owned()),
        ("old", &old, "team/app:old".to_owned()),
        ("sig", &signature, format!("team/app:{signature_tag}")),
        ("multi", &multi, "team/multi:1.0".to_owned()),
        ("web", &old, "team/web:2".to_owned()),
        ("tool", &amd64, "bob/tool:latest".to_owned()),
        ("db", &old, "infra/db:15".to_owned()),
        ("cache", &old, "infra/cache:7".to_owned()),
    ]
    .into_iter()
    .collect();
    for (tag, written, _) in &pushes {
        layout.tag(tag, written);
    }
    for (tag, _, destination) in &pushes {
        skopeo(&[
            "copy",
            "--all",
            "--dest-creds",
            "admin:admin-secret",
            &layout.reference(tag),
            &format!("docker://{address}/{destination}"),
        ]);
    }
    json!({
        "app": app.digest,
        "old": old.digest,
        "multi": multi.digest,
        "amd64": amd64.digest,
        "arm64": arm64.digest,
        "signature": signature.digest,
    })
}

/// Where the scripts put their screenshots.
fn screenshots() -> PathBuf {
    let dir = build_dir().join("../ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `tests/ui/<script>` in Chromium with `fixture`; the script fails on any broken step.
fn browse(script: &str, fixture: &Value) {
    let node = require("node");
    require("chromium");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    assert!(
        scripts.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run ./scripts/test-deps.sh"
    );
    let mut fixture = fixture.clone();
    fixture["screenshots"] = json!(screenshots());
    let output = run(Command::new(node)
        .arg(scripts.join(script))
        .current_dir(&scripts)
        .env("STOWAGE_UI_FIXTURE", fixture.to_string()));
    println!("{}", String::from_utf8_lossy(&output.stdout));
}

/// The tags the registry API lists for `repository`, as admin.
async fn tags(site: &Site, repository: &str) -> Vec<String> {
    let body: Value = stowage_e2e::http()
        .get(site.stowage.url(&format!("/v2/{repository}/tags/list")))
        .basic_auth("admin", Some("admin-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    serde_json::from_value(body["tags"].clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_in_user_browses_copies_a_pull_command_and_deletes_a_tag() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), &[]);
    assert!(tags(&site, "team/app").await.contains(&"old".to_owned()));
    browse("walkthrough.mjs", &site.fixture);
    let left = tags(&site, "team/app").await;
    assert!(!left.contains(&"old".to_owned()), "{left:?}");
    assert!(left.contains(&"v1".to_owned()), "{left:?}");
    let log = site.stowage.logs();
    assert!(log.contains("deleted from the web interface"), "{log}");
    for (_, password) in USERS {
        assert!(!log.contains(password), "a password reached the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_user_sees_only_their_repositories_and_forged_deletes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), &[]);
    browse("access.mjs", &site.fixture);
    // Neither the pull-only user's forged forms nor another site's form deleted anything.
    let left = tags(&site, "team/app").await;
    assert!(
        left.contains(&"v1".to_owned()) && left.contains(&"old".to_owned()),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_browsing_follows_anonymous_pull_and_failed_sign_ins_lock_out() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(
        dir.path(),
        &["--anonymous-pull", "true", "--auth-max-failed-logins", "3"],
    );
    browse("anonymous.mjs", &site.fixture);
    let log = site.stowage.logs();
    assert!(log.contains("failed login"), "{log}");
}
