//! The reconcile loop against a fake API server (tower-test): create, update, autoscaling on and
//! off, status, deletion, key rotation and API errors, with every request checked against the
//! RBAC rules the Helm chart grants.

mod fake_api;
mod harness;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::{
    CONFIG, DEPLOYMENT, FakeApi, HPA, Harness, KEY, NS, PDB, REGISTRY, checksum, s3_spec,
};
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use stowage_operator::controller::{Context, InUseScope, error_policy};
use stowage_operator::metrics::Metrics;
use stowage_operator::rbac;
use stowage_operator::resources::{FIELD_MANAGER, REPLICAS_HANDOVER_MANAGER};

fn htpasswd_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "accounts", "namespace": "team-a"},
        "data": {"htpasswd": BASE64.encode("alice:$2y$05$abcdefghijklmnopqrstuu5Cm1Ij2o0LhpXH1ZJ2ngNk0wE6uBiNe\n")}
    })
}

fn auth_spec() -> Value {
    json!({
        "replicas": 2,
        "storage": s3_spec()["storage"],
        "auth": {
            "htpasswd": {"name": "accounts"},
            "rules": [{"repositories": ["**"], "subjects": ["authenticated"], "actions": ["pull"]}],
            "workloadIdentity": {}
        },
        "tls": {"issuerRef": {"name": "cluster-ca", "kind": "ClusterIssuer"}, "dnsNames": ["registry.example.com"]},
        "monitoring": {"serviceMonitor": {"labels": {"release": "prometheus"}}}
    })
}

#[tokio::test]
async fn create_makes_every_child_and_reports_status() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    let action = h.reconcile().await.expect("reconciles");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)), "settling");

    for path in [
        format!("{NS}/serviceaccounts/images"),
        CONFIG.to_owned(),
        KEY.to_owned(),
        DEPLOYMENT.to_owned(),
        format!("{NS}/services/images"),
        PDB.to_owned(),
        "/apis/batch/v1/namespaces/team-a/cronjobs/images-gc".to_owned(),
        "/apis/batch/v1/namespaces/team-a/cronjobs/images-purge-uploads".to_owned(),
    ] {
        let object = h.object(&path);
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Registry", "{path} is owned");
        assert_eq!(owner["uid"], "registry-uid", "{path} is owned");
    }
    assert!(
        h.fake.get(HPA).is_none(),
        "no autoscaler without autoscaling"
    );
    assert!(
        h.fake
            .get(&format!("{NS}/persistentvolumeclaims/images-data"))
            .is_none()
    );

    let deployment = h.object(DEPLOYMENT);
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/stowage/stowage:test"
    );
    let key = h.object(KEY);
    assert_eq!(
        key["data"]["current"].as_str().map(str::len),
        Some(128),
        "96 hex bytes, base64"
    );

    let status = &h.object(REGISTRY)["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["endpoint"], "images.team-a.svc:5000");
    assert!(
        status["selector"]
            .as_str()
            .expect("selector")
            .contains("stowage.dev/registry=images")
    );
    assert_eq!(
        h.condition("Ready")["status"],
        "False",
        "no pod is ready yet"
    );
    assert_eq!(h.condition("Progressing")["status"], "True");
    assert_eq!(
        h.condition("StorageReady")["status"],
        "Unknown",
        "no pod has reached storage yet"
    );
    assert_eq!(h.condition("StorageReady")["reason"], "WaitingForPods");
    assert_eq!(h.event_reasons(), ["Reconciled", "UploadKeyGenerated"]);

    // Applies go through server-side apply with our field manager, forced.
    let applies: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::PATCH && r.resource == "deployments")
        .collect();
    assert_eq!(applies.len(), 1);
    assert!(applies[0].path.ends_with("/deployments/images"));
}

#[tokio::test]
async fn every_request_is_allowed_by_the_generated_rbac() {
    // Digests in use collected in the Registry's own namespace, which the generated rules
    // cover (the chart grants other namespaces apart).
    let h = Harness::with_context(|context| {
        context.with_in_use_digests(Some(InUseScope {
            namespaces: vec!["team-a".to_owned()],
            keep_for: Duration::from_secs(3_600),
        }))
    });
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    h.deployment_ready(3);
    h.apply_registry(&json!({"autoscaling": {"maxReplicas": 6}, "storage": s3_spec()["storage"], "uploadKey": {"rotation": "r1"}}));
    h.reconcile().await.expect("reconciles");
    h.apply_registry(&json!({"replicas": 1, "storage": s3_spec()["storage"]}));
    h.reconcile().await.expect("reconciles");

    // An existing claim is checked with a get.
    h.fake.put(&format!("{NS}/persistentvolumeclaims/old-data"), json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "old-data"}}));
    h.apply_registry(&json!({"storage": {"filesystem": {"existingClaim": "old-data"}}}));
    h.reconcile().await.expect("reconciles");
    h.apply_registry(&json!({"storage": {"filesystem": {}}}));
    h.reconcile().await.expect("reconciles");
    // Access control and a certificate from cert-manager.
    h.fake
        .put(&format!("{NS}/secrets/accounts"), htpasswd_secret());
    h.apply_registry(&auth_spec());
    h.reconcile().await.expect("reconciles");
    // Retention rules, then none: the digests in use are read, written and deleted.
    let mut retention = s3_spec();
    retention["policies"] =
        json!({"retention": [{"name": "all", "repositories": ["**"], "mostRecentlyPushed": 5}]});
    h.apply_registry(&retention);
    h.reconcile().await.expect("reconciles");
    h.reconcile().await.expect("reconciles");
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");

    let rules = rbac::rules();
    let requests = h.fake.requests();
    assert!(requests.len() > 30, "the scenario exercised the operator");
    // Nothing more: every verb granted is one the scenario used, but for the list and watch of
    // the controller's watches, the recorder's patch of a repeated event, and the finalizers
    // update that the API server checks (never requested) before it accepts an owner reference
    // with `blockOwnerDeletion`.
    for rule in &rules {
        for resource in rule.resources.iter().flatten() {
            for verb in &rule.verbs {
                let group = &rule.api_groups.as_ref().expect("groups")[0];
                let used = requests.iter().any(|r| {
                    &r.group == group && &r.resource == resource && r.verbs.contains(&verb.as_str())
                });
                let exempt = matches!(verb.as_str(), "watch" | "list")
                    || (resource == "events" && verb == "patch")
                    || (resource == "registries/finalizers" && verb == "update");
                assert!(
                    used || exempt,
                    "{verb} {group}/{resource} is granted but never used"
                );
            }
        }
    }
    for request in requests {
        for verb in &request.verbs {
            assert!(
                rbac::allows(&rules, verb, &request.group, &request.resource),
                "{verb} {}/{} ({} {}) is not in the RBAC rules",
                request.group,
                request.resource,
                request.method,
                request.path
            );
        }
    }
}

#[tokio::test]
async fn a_spec_change_converges_and_rolls_the_pods() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    let first_key = h.object(KEY)["data"]["current"].clone();
    let first = checksum(&h.object(DEPLOYMENT));

    let mut spec = s3_spec();
    spec["replicas"] = json!(5);
    spec["logLevel"] = json!("debug");
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");

    let deployment = h.object(DEPLOYMENT);
    assert_eq!(deployment["spec"]["replicas"], 5);
    assert_ne!(
        checksum(&deployment),
        first,
        "a config change rolls the pods"
    );
    assert!(
        h.object(CONFIG)["data"]["config.toml"]
            .as_str()
            .expect("config")
            .contains("log-level = \"debug\"")
    );
    assert_eq!(
        h.object(KEY)["data"]["current"],
        first_key,
        "the key is never regenerated"
    );
    assert_eq!(h.object(REGISTRY)["status"]["observedGeneration"], 2);

    // The same spec again changes nothing the pods see.
    h.reconcile().await.expect("reconciles");
    assert_eq!(checksum(&h.object(DEPLOYMENT)), checksum(&deployment));
}

#[tokio::test]
async fn changed_credentials_roll_the_pods() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    let before = checksum(&h.object(DEPLOYMENT));
    h.fake.update(&format!("{NS}/secrets/s3-creds"), |s| {
        s["data"]["secretAccessKey"] = json!("bmV3")
    });
    h.reconcile().await.expect("reconciles");
    assert_ne!(checksum(&h.object(DEPLOYMENT)), before);
}

#[tokio::test]
async fn autoscaling_switched_on_and_off() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");

    let mut spec = s3_spec();
    spec["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 8, "targetCpuUtilization": 60});
    h.apply_registry(&spec);
    h.fake.clear_requests();
    h.reconcile().await.expect("reconciles");
    let hpa = h.object(HPA);
    assert_eq!(hpa["spec"]["maxReplicas"], 8);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "images");
    let applied = h
        .fake
        .requests()
        .into_iter()
        .find(|r| {
            r.method == Method::PATCH
                && r.resource == "deployments"
                && !r.body["spec"]["template"].is_null()
        })
        .expect("deployment applied");
    assert!(
        applied.body["spec"].get("replicas").is_none(),
        "the autoscaler owns replicas"
    );
    assert_eq!(h.object(PDB)["spec"]["maxUnavailable"], 1);

    h.apply_registry(&json!({"replicas": 1, "storage": s3_spec()["storage"]}));
    h.reconcile().await.expect("reconciles");
    assert!(h.fake.get(HPA).is_none(), "the autoscaler is deleted");
    assert!(
        h.fake.get(PDB).is_none(),
        "one replica needs no disruption budget"
    );
    assert_eq!(h.object(DEPLOYMENT)["spec"]["replicas"], 1);
}

/// A server pod of the Registry, its container running since long ago, ready or not.
fn server_pod(h: &Harness, name: &str, ready: bool) {
    h.fake.put(
        &format!("{NS}/pods/{name}"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "team-a", "labels": {
                "app.kubernetes.io/name": "stowage", "app.kubernetes.io/instance": "images",
                "app.kubernetes.io/component": "registry", "stowage.dev/registry": "images"}},
            "spec": {"containers": [{"name": "stowage"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{"name": "stowage", "image": "x", "imageID": "", "ready": ready,
                    "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]
            }
        }),
    );
}

#[tokio::test]
async fn storage_status_tells_the_truth() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    h.deployment_ready(0);

    // Pods run, but none passes /readyz: the bucket is out of their reach.
    server_pod(&h, "images-a", false);
    server_pod(&h, "images-b", false);
    h.reconcile().await.expect("reconciles");
    let storage = h.condition("StorageReady");
    assert_eq!(storage["status"], "False");
    assert_eq!(storage["reason"], "StorageUnreachable");
    assert!(
        storage["message"]
            .as_str()
            .is_some_and(|m| m.contains("images-a, images-b")),
        "{storage}"
    );
    assert_eq!(h.condition("Degraded")["status"], "True");
    assert_eq!(h.condition("Degraded")["reason"], "StorageUnreachable");
    assert!(h.event_reasons().contains(&"StorageUnreachable".to_owned()));

    // One pod gets through: storage works.
    server_pod(&h, "images-b", true);
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.condition("StorageReady")["status"], "True");
    assert_eq!(h.condition("Degraded")["status"], "False");
}

#[tokio::test]
async fn a_pending_claim_is_not_ready_storage() {
    let h = Harness::new();
    h.apply_registry(&json!({"storage": {"filesystem": {}}}));
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.condition("StorageReady")["status"], "False");
    assert_eq!(h.condition("StorageReady")["reason"], "ClaimPending");
    assert_eq!(h.condition("Degraded")["status"], "True");

    h.fake
        .update(&format!("{NS}/persistentvolumeclaims/images-data"), |c| {
            c["status"] = json!({"phase": "Bound"})
        });
    server_pod(&h, "images-a", true);
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.condition("StorageReady")["status"], "True");
    assert!(
        h.condition("StorageReady")["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("volume claim images-data")),
    );
}

#[tokio::test]
async fn each_new_generation_is_its_own_event() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    let mut spec = s3_spec();
    spec["replicas"] = json!(4);
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    server_pod(&h, "images-a", false);
    h.reconcile().await.expect("reconciles");
    h.reconcile().await.expect("reconciles");

    let created: Vec<(String, String)> = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.resource == "events" && r.method == Method::POST)
        .map(|r| {
            (
                r.body["reason"].as_str().unwrap_or_default().to_owned(),
                r.body["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(reason, _)| reason != "UploadKeyGenerated")
        .collect();
    assert_eq!(
        created,
        [
            ("Reconciled".to_owned(), "applied generation 1".to_owned()),
            ("Reconciled".to_owned(), "applied generation 2".to_owned()),
            (
                "StorageUnreachable".to_owned(),
                h.condition("StorageReady")["message"]
                    .as_str()
                    .expect("message")
                    .to_owned()
            ),
        ],
        "the same warning twice is one event that counts its repeats"
    );
    assert!(
        h.fake
            .requests()
            .iter()
            .any(|r| r.resource == "events" && r.method == Method::PATCH),
        "the repeat was merged"
    );
}

fn handover_applies(h: &Harness) -> usize {
    h.fake
        .requests()
        .iter()
        .filter(|r| {
            r.method == Method::PATCH
                && r.resource == "deployments"
                && r.body["spec"]["template"].is_null()
        })
        .count()
}

#[tokio::test]
async fn a_new_autoscaled_registry_starts_at_its_minimum_and_leaves_the_count_to_the_autoscaler() {
    let h = Harness::new();
    let mut spec = s3_spec();
    spec["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 6});
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    assert_eq!(
        h.object(DEPLOYMENT)["spec"]["replicas"],
        2,
        "not the API server's default of one"
    );

    // The next pass hands the count over before it stops applying it: no dip to one.
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.object(DEPLOYMENT)["spec"]["replicas"], 2);
    assert_eq!(
        h.fake.replicas_owners(DEPLOYMENT),
        [REPLICAS_HANDOVER_MANAGER]
    );

    // The autoscaler scales through /scale; the operator leaves that alone.
    h.fake.scale(DEPLOYMENT, "kube-controller-manager", 5);
    h.fake.clear_requests();
    h.reconcile().await.expect("reconciles");
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.object(DEPLOYMENT)["spec"]["replicas"], 5);
    assert_eq!(
        h.fake.replicas_owners(DEPLOYMENT),
        ["kube-controller-manager"]
    );
    assert_eq!(handover_applies(&h), 0, "nothing to hand over any more");
}

#[tokio::test]
async fn switching_autoscaling_on_keeps_the_running_pods() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.object(DEPLOYMENT)["spec"]["replicas"], 3);
    assert_eq!(h.fake.replicas_owners(DEPLOYMENT), [FIELD_MANAGER]);

    let mut spec = s3_spec();
    spec["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 8});
    h.apply_registry(&spec);
    h.fake.clear_requests();
    h.reconcile().await.expect("reconciles");
    assert_eq!(
        h.object(DEPLOYMENT)["spec"]["replicas"],
        3,
        "the three running pods stay"
    );
    assert_eq!(
        h.fake.replicas_owners(DEPLOYMENT),
        [REPLICAS_HANDOVER_MANAGER]
    );
    assert_eq!(handover_applies(&h), 1);
    h.fake.clear_requests();
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.object(DEPLOYMENT)["spec"]["replicas"], 3);
    assert_eq!(handover_applies(&h), 0, "handed over once");

    // Switched off again: the spec's count, owned by the operator.
    let mut spec = s3_spec();
    spec["replicas"] = json!(4);
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.object(DEPLOYMENT)["spec"]["replicas"], 4);
    assert_eq!(h.fake.replicas_owners(DEPLOYMENT), [FIELD_MANAGER]);

    // Switched on from below the minimum: the autoscaler's floor applies at once.
    let mut spec = s3_spec();
    spec["replicas"] = json!(1);
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    spec["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 8});
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.object(DEPLOYMENT)["spec"]["replicas"], 2);
}

#[tokio::test]
async fn status_follows_the_deployment_and_the_last_gc() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    h.deployment_ready(3);
    h.fake.put(
        "/apis/batch/v1/namespaces/team-a/jobs/images-gc-29000000",
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "images-gc-29000000", "namespace": "team-a",
                "labels": {"stowage.dev/registry": "images", "app.kubernetes.io/component": "gc"}},
            "status": {"completionTime": "2026-11-23T03:01:00Z",
                "conditions": [{"type": "Complete", "status": "True"}]}
        }),
    );
    h.fake.put(
        &format!("{NS}/pods/images-gc-29000000-abcde"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "images-gc-29000000-abcde", "namespace": "team-a",
                "labels": {"job-name": "images-gc-29000000"}},
            "spec": {"containers": [{"name": "gc"}]},
            "status": {"containerStatuses": [{"name": "gc", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message":
                    "{\"dry_run\":false,\"manifests_deleted\":1,\"blobs_deleted\":4,\"links_deleted\":0,\"uploads_deleted\":0,\"bytes_freed\":9000,\"duration_seconds\":31.0}"}}}]}
        }),
    );
    let action = h.reconcile().await.expect("reconciles");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)), "settled");
    let status = h.object(REGISTRY)["status"].clone();
    assert_eq!(
        (status["replicas"].clone(), status["readyReplicas"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(h.condition("Ready")["status"], "True");
    assert_eq!(h.condition("Progressing")["status"], "False");
    assert_eq!(h.condition("GarbageCollected")["status"], "True");
    let gc = &status["lastGarbageCollection"];
    assert_eq!(gc["job"], "images-gc-29000000");
    assert_eq!(gc["bytesFreed"], 9000);
    assert_eq!(gc["blobsDeleted"], 4);
    assert_eq!(gc["result"], "Succeeded");

    // A settled Registry is not written again.
    h.fake.clear_requests();
    h.reconcile().await.expect("reconciles");
    let requests = h.fake.requests();
    assert!(
        !requests.iter().any(|r| r.resource == "registries/status"),
        "unchanged status is not written"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.resource == "pods" && r.query.contains("job-name")),
        "a known gc run is not read again"
    );
}

#[tokio::test]
async fn a_deleted_registry_is_left_to_the_garbage_collector() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.fake.update(REGISTRY, |r| {
        r["metadata"]["deletionTimestamp"] = json!("2026-11-23T11:00:00Z")
    });
    h.fake.clear_requests();
    let action = h.reconcile().await.expect("reconciles");
    assert_eq!(action, Action::await_change());
    assert!(
        h.fake.requests().is_empty(),
        "nothing is applied to a Registry being deleted"
    );
    assert!(h.fake.get(DEPLOYMENT).is_none());
}

/// Deleting a namespace takes a Registry's children away, Secrets and all, and refuses anything
/// new, while the Registry may still be reconciled: that is no failure to retry or warn about.
#[tokio::test]
async fn a_registry_in_a_namespace_being_deleted_is_left_alone_quietly() {
    let with_htpasswd =
        json!({"storage": s3_spec()["storage"], "auth": {"htpasswd": {"name": "accounts"}}});
    for spec in [s3_spec(), with_htpasswd] {
        let h = Harness::new();
        h.fake
            .put(&format!("{NS}/secrets/accounts"), htpasswd_secret());
        h.apply_registry(&spec);
        h.reconcile().await.expect("reconciles");
        assert!(h.fake.get(DEPLOYMENT).is_some());

        h.fake.delete_namespace();
        h.fake.clear_requests();
        let action = h.reconcile().await.expect("no failure to retry");
        assert_eq!(action, Action::await_change(), "{spec}");
        let writes: Vec<String> = h
            .fake
            .requests()
            .iter()
            .filter(|r| r.method != Method::GET)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            writes.len() <= 2,
            "it stops at the first refusal, not re-applying every child: {writes:?}"
        );
        assert!(h.fake.get(CONFIG).is_none() && h.fake.get(DEPLOYMENT).is_none());
    }
}

#[tokio::test]
async fn rotation_keeps_the_previous_key() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    let old_key = h.object(KEY)["data"]["current"].clone();
    let before = checksum(&h.object(DEPLOYMENT));

    let mut spec = s3_spec();
    spec["uploadKey"] = json!({"rotation": "2026-11"});
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    let key = h.object(KEY);
    assert_eq!(key["data"]["previous"], old_key);
    assert_ne!(key["data"]["current"], old_key);
    assert_eq!(
        key["metadata"]["annotations"]["stowage.dev/rotation"],
        "2026-11"
    );
    assert!(
        h.object(CONFIG)["data"]["config.toml"]
            .as_str()
            .expect("config")
            .contains("upload-secret-previous-file")
    );
    assert_ne!(
        checksum(&h.object(DEPLOYMENT)),
        before,
        "the pods roll onto the new key"
    );
    assert!(h.event_reasons().contains(&"UploadKeyRotated".to_owned()));

    // Reconciling again does not rotate again.
    let rotated = h.object(KEY)["data"].clone();
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.object(KEY)["data"], rotated);
}

#[tokio::test]
async fn an_api_error_is_reported_and_retried_with_backoff() {
    let h = Harness::new();
    h.apply_registry(&s3_spec());
    h.fake.fail(Method::PATCH, "/deployments/images", 500);
    let error = h.reconcile().await.expect_err("the apply fails");
    assert!(
        error.to_string().contains("applying Deployment images"),
        "{error}"
    );
    assert_eq!(h.condition("Degraded")["status"], "True");
    assert_eq!(h.condition("Degraded")["reason"], "ReconcileFailed");
    assert_eq!(h.condition("Ready")["status"], "False");
    assert!(h.event_reasons().contains(&"ApiError".to_owned()));

    let registry = Arc::new(h.registry());
    let first = error_policy(Arc::clone(&registry), &error, Arc::clone(&h.context));
    let second = error_policy(Arc::clone(&registry), &error, Arc::clone(&h.context));
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));

    h.fake.heal();
    h.reconcile().await.expect("recovers");
    assert_eq!(h.condition("Degraded")["status"], "False");
    let third = error_policy(registry, &error, Arc::clone(&h.context));
    assert_eq!(
        third,
        Action::requeue(Duration::from_secs(5)),
        "a success resets the backoff"
    );
}

#[tokio::test]
async fn missing_secrets_are_reported() {
    let h = Harness::new();
    let mut spec = s3_spec();
    spec["uploadKey"] = json!({"secretName": "my-key"});
    h.apply_registry(&spec);
    let error = h.reconcile().await.expect_err("no key");
    assert_eq!(error.reason(), "UploadKeyMissing");
    assert!(
        h.fake.get(DEPLOYMENT).is_none(),
        "nothing runs without its key"
    );

    h.fake.put(
        &format!("{NS}/secrets/my-key"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "my-key", "namespace": "team-a"},
               "data": {"current": "c2hvcnQ="}}),
    );
    assert_eq!(
        h.reconcile().await.expect_err("short key").reason(),
        "UploadKeyInvalid"
    );

    let long = "a".repeat(40);
    h.fake.update(&format!("{NS}/secrets/my-key"), |s| {
        s["data"]["current"] = json!(BASE64.encode(&long));
    });
    h.fake.update(&format!("{NS}/secrets/s3-creds"), |s| {
        s["data"]
            .as_object_mut()
            .expect("data")
            .remove("secretAccessKey");
    });
    h.reconcile()
        .await
        .expect("runs, reporting the storage problem");
    assert_eq!(h.condition("StorageReady")["status"], "False");
    assert_eq!(h.condition("StorageReady")["reason"], "CredentialsMissing");
    assert_eq!(h.condition("Degraded")["status"], "True");
    assert!(
        h.fake.get(KEY).is_none(),
        "no key is generated beside the user's"
    );
    assert!(h.event_reasons().contains(&"CredentialsMissing".to_owned()));
}

#[tokio::test]
async fn filesystem_storage_claims_a_volume() {
    let h = Harness::new();
    h.apply_registry(&json!({"storage": {"filesystem": {"size": "20Gi"}}}));
    h.reconcile().await.expect("reconciles");
    let claim = h.object(&format!("{NS}/persistentvolumeclaims/images-data"));
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
    assert!(
        claim["metadata"].get("ownerReferences").is_none(),
        "the data outlives the Registry"
    );
    assert_eq!(h.object(DEPLOYMENT)["spec"]["strategy"]["type"], "Recreate");
    assert!(h.fake.get(PDB).is_none());
}

const CERTIFICATE: &str = "/apis/cert-manager.io/v1/namespaces/team-a/certificates/images";

#[tokio::test]
async fn auth_and_tls_reach_the_pods_and_the_status_tells_the_certificate() {
    let (client, fake) = FakeApi::start();
    let context = Arc::new(
        Context::new(
            client,
            Arc::new(Metrics::default()),
            "stowage:test".to_owned(),
        )
        .with_service_account_issuer(Some("https://kubernetes.default.svc.cluster.local".into())),
    );
    let h = Harness { fake, context };
    h.fake.put(&format!("{NS}/secrets/s3-creds"), json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": "team-a"},
        "data": {"accessKeyId": "R0s=", "secretAccessKey": "c2VjcmV0"}
    }));
    h.apply_registry(&auth_spec());

    // Without the htpasswd Secret the pods could not start: the reconcile says so.
    let error = h
        .reconcile()
        .await
        .expect_err("the htpasswd Secret is missing");
    assert_eq!(error.reason(), "AuthSecretMissing");
    assert!(error.to_string().contains("accounts"), "{error}");

    h.fake
        .put(&format!("{NS}/secrets/accounts"), htpasswd_secret());
    h.reconcile().await.expect("reconciles");
    // The token key is generated once, like the upload key.
    let token_key = h.object(&format!("{NS}/secrets/images-token-key"));
    assert!(
        BASE64
            .decode(token_key["data"]["current"].as_str().unwrap())
            .unwrap()
            .len()
            >= 32
    );
    assert!(h.event_reasons().contains(&"TokenKeyGenerated".to_owned()));
    // The rules, in the policy Secret the pods read again when it changes.
    let policy = h.object(&format!("{NS}/secrets/images-auth-policy"));
    let policy = String::from_utf8(
        BASE64
            .decode(policy["data"]["policy.toml"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        policy.contains("subjects = [\"authenticated\"]"),
        "{policy}"
    );
    // The server config names the mounted files and the cluster's issuer.
    let config = h.object(CONFIG)["data"]["config.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let config: toml::Table = config.parse().unwrap();
    assert_eq!(
        config["auth"]["htpasswd"].as_str(),
        Some("/etc/stowage/auth/htpasswd/htpasswd")
    );
    assert_eq!(
        config["auth"]["kubernetes-issuer"].as_str(),
        Some("https://kubernetes.default.svc.cluster.local")
    );
    assert_eq!(
        config["tls"]["cert-file"].as_str(),
        Some("/etc/stowage/tls/tls.crt")
    );
    let deployment = h.object(DEPLOYMENT);
    let volumes: Vec<&str> = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for volume in ["htpasswd", "auth-policy", "token-key", "kubernetes", "tls"] {
        assert!(volumes.contains(&volume), "{volume} in {volumes:?}");
    }
    let probe = &deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"];
    assert_eq!(probe["httpGet"]["scheme"], "HTTPS");
    // cert-manager is asked for the certificate; until it issues, the status says so.
    let certificate = h.object(CERTIFICATE);
    assert_eq!(certificate["spec"]["secretName"], "images-tls");
    assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    assert_eq!(h.condition("TlsReady")["reason"], "CertificatePending");
    assert_eq!(
        h.object(REGISTRY)["status"]["endpoint"],
        "https://images.team-a.svc:5000"
    );

    h.fake.put(
        &format!("{NS}/secrets/images-tls"),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "images-tls", "namespace": "team-a"},
            "data": {"tls.crt": BASE64.encode("cert"), "tls.key": BASE64.encode("key")}
        }),
    );
    h.reconcile().await.expect("reconciles");
    assert_eq!(h.condition("TlsReady")["status"], "True");

    // A cluster without cert-manager has no Certificate resource: a clear condition, and the
    // rest of the Registry is still reconciled.
    h.fake.fail(Method::PATCH, "/certificates/images", 404);
    h.reconcile().await.expect("reconciles");
    let tls = h.condition("TlsReady");
    assert_eq!(
        (tls["status"].as_str(), tls["reason"].as_str()),
        (Some("False"), Some("CertManagerMissing"))
    );
}

const SERVICE_MONITOR: &str =
    "/apis/monitoring.coreos.com/v1/namespaces/team-a/servicemonitors/images";

#[tokio::test]
async fn a_service_monitor_where_the_prometheus_operator_is_installed() {
    let h = Harness::new();
    let mut spec = s3_spec();
    spec["monitoring"] = json!({"serviceMonitor": {"interval": "15s"}});
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    let monitor = h.object(SERVICE_MONITOR);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    assert_eq!(h.condition("ServiceMonitorReady")["status"], "True");
    // The Service carries the port it scrapes.
    let service = h.object(&format!("{NS}/services/images"));
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics")
    );

    // Without the Prometheus Operator: skipped, and the condition says why.
    h.fake.fail(Method::PATCH, "/servicemonitors/images", 404);
    h.reconcile().await.expect("reconciles");
    let condition = h.condition("ServiceMonitorReady");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "ServiceMonitorCrdMissing");
    h.fake.heal();

    // Asked for no more: deleted, and the condition goes.
    h.apply_registry(&s3_spec());
    h.reconcile().await.expect("reconciles");
    assert!(
        h.fake.get(SERVICE_MONITOR).is_none(),
        "the ServiceMonitor is deleted"
    );
    let registry = h.object(REGISTRY);
    let conditions = registry["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .all(|c| c["type"] != "ServiceMonitorReady")
    );
}

#[tokio::test]
async fn replication_runs_its_cronjob_reports_each_rule_and_goes_when_removed() {
    const CRONJOB: &str = "/apis/batch/v1/namespaces/team-a/cronjobs/images-replicate";
    let h = Harness::new();
    let mut spec = s3_spec();
    spec["replication"] = json!({"rules": [{"name": "dr", "url": "https://dr.example", "credentialsSecret": "dr-push"}]});
    h.apply_registry(&spec);
    let error = h.reconcile().await.expect_err("no credentials Secret");
    assert_eq!(error.reason(), "AuthSecretMissing");
    assert!(error.to_string().contains("dr-push"), "{error}");
    h.fake.put(
        &format!("{NS}/secrets/dr-push"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dr-push", "namespace": "team-a"},
               "data": {"username": BASE64.encode("robot"), "password": BASE64.encode("pa55")}}),
    );
    h.reconcile().await.expect("reconciles");
    let cron = h.object(CRONJOB);
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].clone();
    assert_eq!(args[0], "replicate");
    assert!(args.as_array().expect("args").contains(&json!("--once")));
    let mounted = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v["secret"]["secretName"] == "dr-push");
    assert!(mounted, "the reconciliation reads the credentials: {pod}");
    assert_eq!(h.condition("Replicated")["reason"], "NotRunYet");

    h.fake.put(
        "/apis/batch/v1/namespaces/team-a/jobs/images-replicate-29000000",
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "images-replicate-29000000", "namespace": "team-a",
                "labels": {"stowage.dev/registry": "images", "app.kubernetes.io/component": "replicate"}},
            "status": {"completionTime": "2026-11-23T03:01:00Z",
                "conditions": [{"type": "Complete", "status": "True"}]}
        }),
    );
    h.fake.put(
        &format!("{NS}/pods/images-replicate-29000000-abcde"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "images-replicate-29000000-abcde", "namespace": "team-a",
                "labels": {"job-name": "images-replicate-29000000"}},
            "spec": {"containers": [{"name": "replicate"}]},
            "status": {"containerStatuses": [{"name": "replicate", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message":
                    "{\"dryRun\":false,\"rules\":[{\"rule\":\"dr\",\"tagsChecked\":12,\"copied\":1,\"deleted\":0,\"refused\":1,\"firstRefusal\":\"team/app:v1: 403\",\"pendingEvents\":0,\"oldestPendingSeconds\":0}]}"}}}]}
        }),
    );
    h.reconcile().await.expect("reconciles");
    let replication = &h.object(REGISTRY)["status"]["lastReplication"];
    assert_eq!(replication["job"], "images-replicate-29000000");
    assert_eq!(replication["rules"][0]["refused"], 1);
    let condition = h.condition("Replicated");
    assert_eq!(
        (condition["status"].clone(), condition["reason"].clone()),
        (json!("False"), json!("Refused"))
    );
    assert!(
        h.event_reasons()
            .contains(&"ReplicationIncomplete".to_owned())
    );

    let mut spec = spec.clone();
    spec.as_object_mut().expect("spec").remove("replication");
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    assert!(
        h.fake.get(CRONJOB).is_none(),
        "the CronJob goes with the rules"
    );
    assert!(
        h.object(REGISTRY)["status"]
            .get("lastReplication")
            .is_none()
    );
    assert!(
        h.object(REGISTRY)["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .all(|c| c["type"] != "Replicated")
    );
}

fn pod(namespace: &str, name: &str, status: &Value) -> (String, Value) {
    (
        format!("/api/v1/namespaces/{namespace}/pods/{name}"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "main"}]},
            "status": status
        }),
    )
}

fn container_status(image_id: &str) -> Value {
    json!({"name": "main", "image": "x", "imageID": image_id, "ready": true, "restartCount": 0})
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

#[tokio::test]
async fn retention_keeps_the_digests_pods_run_runs_dry_first_and_reports_each_run() {
    const CRONJOB: &str = "/apis/batch/v1/namespaces/team-a/cronjobs/images-retention";
    const IN_USE: &str = "/api/v1/namespaces/team-a/configmaps/images-in-use";
    let h = Harness::with_context(|context| {
        context.with_in_use_digests(Some(InUseScope {
            namespaces: Vec::new(),
            keep_for: Duration::from_secs(86_400),
        }))
    });
    // Pods in other namespaces, in every phase, with init containers; more than one page.
    let pods = [
        pod(
            "apps",
            "web-1",
            &json!({"phase": "Running",
            "containerStatuses": [container_status(&format!("registry.team-a.svc:5000/team/app@{}", digest('a')))],
            "initContainerStatuses": [container_status(&format!("docker-pullable://docker.io/library/busybox@{}", digest('b')))]}),
        ),
        pod(
            "jobs",
            "batch-1",
            &json!({"phase": "Succeeded",
            "containerStatuses": [container_status(&digest('c'))]}),
        ),
        pod(
            "apps",
            "pulling",
            &json!({"phase": "Pending",
            "containerStatuses": [container_status("")]}),
        ),
    ];
    for (path, object) in pods {
        h.fake.put(&path, object);
    }
    for n in 0..600 {
        let image = if n == 599 { digest('e') } else { digest('d') };
        let (path, object) = pod(
            "bulk",
            &format!("worker-{n:03}"),
            &json!({"phase": "Running",
            "containerStatuses": [container_status(&format!("team/worker@{image}"))]}),
        );
        h.fake.put(&path, object);
    }
    // What an earlier collection recorded: one digest seen two days ago, one an hour ago.
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    h.fake.put(IN_USE, json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "images-in-use", "namespace": "team-a"},
        "data": {"digests": format!("{} {}\n{} {}\n", digest('f'), now - 2 * 86_400, digest('9'), now - 3_600)}
    }));

    let mut spec = s3_spec();
    spec["policies"] = json!({"retention": [
        {"name": "builds", "repositories": ["team/**"], "tags": ["build-*"], "mostRecentlyPushed": 3}
    ]});
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");

    let recorded = h.object(IN_USE)["data"]["digests"]
        .as_str()
        .expect("digests")
        .to_owned();
    let listed: Vec<&str> = recorded
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let mut expected: Vec<String> = "abcde9".chars().map(digest).collect();
    expected.sort();
    assert_eq!(
        listed, expected,
        "running, and seen within a day: {recorded}"
    );
    let page_requests: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .collect();
    assert_eq!(page_requests.len(), 2, "603 pods in pages of 500");
    assert!(page_requests.iter().all(|r| r.query.contains("limit=500")));

    let cron = h.object(CRONJOB);
    let template = &cron["spec"]["jobTemplate"];
    let pod_spec = &template["spec"]["template"]["spec"];
    let args: Vec<String> =
        serde_json::from_value(pod_spec["containers"][0]["args"].clone()).expect("args");
    assert_eq!(args[0], "retention");
    assert!(
        args.windows(2)
            .any(|w| w == ["--in-use-file", "/etc/stowage/in-use/digests"]),
        "{args:?}"
    );
    assert!(
        args.contains(&"--dry-run".to_owned()),
        "new rules run dry first"
    );
    let mounted = pod_spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v["configMap"]["name"] == "images-in-use");
    assert!(mounted, "{pod_spec}");
    let rules = template["metadata"]["labels"]["stowage.dev/retention-rules"]
        .as_str()
        .expect("the rules' hash")
        .to_owned();

    // The dry run finishes: the status and an event say what would go, and why.
    h.fake.put(
        "/apis/batch/v1/namespaces/team-a/jobs/images-retention-29000000",
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "images-retention-29000000", "namespace": "team-a",
                "labels": {"stowage.dev/registry": "images", "app.kubernetes.io/component": "retention",
                           "stowage.dev/retention-rules": rules}},
            "status": {"completionTime": "2026-12-03T02:01:00Z",
                "conditions": [{"type": "Complete", "status": "True"}]}
        }),
    );
    let report = json!({"dry_run": true, "repositories_checked": 2, "tags_deleted": 4,
        "manifests_deleted": 3, "skipped_changed": 0, "duration_seconds": 0.2,
        "deleted": [{"what": "tag team/app:build-1", "why": "not kept by builds"}]});
    h.fake.put(
        &format!("{NS}/pods/images-retention-29000000-abcde"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "images-retention-29000000-abcde", "namespace": "team-a",
                "labels": {"job-name": "images-retention-29000000"}},
            "spec": {"containers": [{"name": "retention"}]},
            "status": {"containerStatuses": [{"name": "retention", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message": report.to_string()}}}]}
        }),
    );
    h.reconcile().await.expect("reconciles");
    let last = &h.object(REGISTRY)["status"]["lastRetention"];
    assert_eq!(last["job"], "images-retention-29000000");
    assert_eq!(last["dryRun"], true);
    assert_eq!(
        (
            last["tagsDeleted"].clone(),
            last["manifestsDeleted"].clone()
        ),
        (json!(4), json!(3))
    );
    assert_eq!(
        last["deletions"][0],
        "tag team/app:build-1: not kept by builds"
    );
    assert_eq!(last["rules"], rules.as_str());
    assert!(h.event_reasons().contains(&"RetentionPreviewed".to_owned()));
    let args = h.object(CRONJOB)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .clone();
    assert!(
        !args.as_array().expect("args").contains(&json!("--dry-run")),
        "previewed rules delete on the next run: {args}"
    );

    // Changed rules run dry again.
    spec["policies"]["retention"][0]["mostRecentlyPushed"] = json!(5);
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    let args = h.object(CRONJOB)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .clone();
    assert!(args.as_array().expect("args").contains(&json!("--dry-run")));

    // No rules: the CronJob, the digests and the status field go.
    spec.as_object_mut().expect("spec").remove("policies");
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");
    assert!(h.fake.get(CRONJOB).is_none());
    assert!(h.fake.get(IN_USE).is_none());
    assert!(h.object(REGISTRY)["status"].get("lastRetention").is_none());
}
