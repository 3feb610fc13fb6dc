//! End to end on a real cluster. Ignored by `cargo test`, so it reports as such rather than as a
//! pass; `make test-cluster` runs it with `KUBECONFIG` naming a cluster and `STOWAGE_E2E_IMAGE`
//! naming a server image the cluster can pull (`make images`, then push it where the cluster
//! pulls from). It installs the CRD, runs the controller in this process, and checks what a
//! user sees: every child, server pods Ready, a push and pull through the Service, scaling
//! through the scale subresource, the hand-over to the autoscaler without a dip, `kubectl
//! scale` refused while autoscaling, and a storage status that tells the truth.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use stowage_operator::controller::{self, Context};
use stowage_operator::crd::Registry;
use stowage_operator::metrics::Metrics;

/// Polls `check` every second until it returns `Some`, or fails after `seconds`.
async fn eventually<T, F, Fut>(what: &str, seconds: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..seconds {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("timed out waiting for {what}");
}

/// `sha256:<hex>` of `data`.
fn sha256(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Sends a registry request to the Service `service` through the API server's service proxy,
/// as a client inside the cluster would reach it; returns the status and body.
async fn through_service(
    client: &Client,
    namespace: &str,
    service: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let uri = format!("/api/v1/namespaces/{namespace}/services/{service}:http/proxy{path}");
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = client
        .send(request.body(body.into()).expect("a request"))
        .await
        .expect("the API server proxies");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .expect("a body")
        .to_vec();
    (status, body)
}

#[tokio::test]
#[ignore = "needs a cluster: run `make test-cluster` with KUBECONFIG and STOWAGE_E2E_IMAGE set"]
async fn a_registry_on_a_real_cluster() {
    let image = std::env::var("STOWAGE_E2E_IMAGE")
        .expect("STOWAGE_E2E_IMAGE names a server image the cluster can pull");
    let client = Client::try_default()
        .await
        .expect("a cluster client from KUBECONFIG");

    // The CRD exactly as `helm install` applies it: the API server checks its CEL rules' cost
    // here, and a refusal ends the test with the API server's own words.
    let chart_crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/stowage-operator/files/registries.stowage.dev.yaml"
    );
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(chart_crd).expect("the chart's CRD"))
            .expect("the chart's CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if let Err(refusal) = crds
        .patch(
            "registries.stowage.dev",
            &PatchParams::apply("stowage-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
    {
        panic!("the API server refused the Registry CRD, so `helm install` fails: {refusal}");
    }
    eventually("the CRD to be established", 60, || async {
        let crd = crds.get("registries.stowage.dev").await.ok()?;
        let established = crd
            .status?
            .conditions?
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;

    let namespace = format!("stowage-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns"),
        )
        .await
        .expect("a namespace");

    let registries: Api<Registry> = Api::namespaced(client.clone(), &namespace);
    let operator = {
        let context = Arc::new(Context::new(
            client.clone(),
            Arc::new(Metrics::default()),
            image,
        ));
        let registries = registries.clone();
        let namespace = namespace.clone();
        tokio::spawn(async move { controller::run(context, registries, Some(&namespace)).await })
    };

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "s3-creds"},
                "stringData": {"accessKeyId": "GK0000", "secretAccessKey": "not-a-real-secret"}
            }))
            .expect("secret"),
        )
        .await
        .expect("credentials");
    let registry: Registry = serde_json::from_value(json!({
        "apiVersion": "stowage.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": "images"},
        "spec": {
            "replicas": 2,
            "storage": {"s3": {"bucket": "images", "endpoint": "http://s3.invalid:3900", "pathStyle": true,
                "credentialsSecret": {"name": "s3-creds"}}}
        }
    }))
    .expect("registry");
    registries
        .create(&PostParams::default(), &registry)
        .await
        .expect("the Registry is accepted");

    let owned = |name: &str,
                 object: Option<
        Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    >| {
        let owner = object.unwrap_or_default();
        assert!(
            owner
                .iter()
                .any(|o| o.kind == "Registry" && o.name == "images"),
            "{name} is owned"
        );
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let deployment = eventually("the Deployment", 60, || async {
        deployments.get("images").await.ok()
    })
    .await;
    owned("Deployment", deployment.metadata.owner_references.clone());
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(2));
    for (kind, found) in [
        (
            "Service",
            Api::<Service>::namespaced(client.clone(), &namespace)
                .get("images")
                .await
                .map(|o| o.metadata),
        ),
        (
            "ServiceAccount",
            Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
                .get("images")
                .await
                .map(|o| o.metadata),
        ),
        (
            "ConfigMap",
            Api::<ConfigMap>::namespaced(client.clone(), &namespace)
                .get("images-config")
                .await
                .map(|o| o.metadata),
        ),
        (
            "Secret",
            secrets.get("images-upload-key").await.map(|o| o.metadata),
        ),
        (
            "PodDisruptionBudget",
            Api::<PodDisruptionBudget>::namespaced(client.clone(), &namespace)
                .get("images")
                .await
                .map(|o| o.metadata),
        ),
        (
            "CronJob gc",
            Api::<CronJob>::namespaced(client.clone(), &namespace)
                .get("images-gc")
                .await
                .map(|o| o.metadata),
        ),
        (
            "CronJob purge-uploads",
            Api::<CronJob>::namespaced(client.clone(), &namespace)
                .get("images-purge-uploads")
                .await
                .map(|o| o.metadata),
        ),
    ] {
        let metadata = found.unwrap_or_else(|e| panic!("{kind}: {e}"));
        owned(kind, metadata.owner_references);
    }

    let status = eventually("the status", 60, || async {
        let registry = registries.get("images").await.ok()?;
        let status = registry.status?;
        (status.observed_generation == registry.metadata.generation).then_some(status)
    })
    .await;
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("images.{namespace}.svc:5000").as_str())
    );
    assert!(status.selector.contains("stowage.dev/registry=images"));
    let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "Ready",
            "Progressing",
            "Degraded",
            "StorageReady",
            "GarbageCollected"
        ]
    );

    // `kubectl scale registry/images --replicas=4`
    registries
        .patch_scale(
            "images",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("the scale subresource");
    eventually("the Deployment to scale", 60, || async {
        let replicas = deployments.get("images").await.ok()?.spec?.replicas?;
        (replicas == 4).then_some(())
    })
    .await;

    // The bucket is out of reach: once the pods run, the status says so.
    let storage = eventually("StorageReady=False", 300, || async {
        let status = registries.get("images").await.ok()?.status?;
        let storage = status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "StorageReady")?;
        (storage.status == "False").then_some(storage)
    })
    .await;
    assert_eq!(storage.reason, "StorageUnreachable", "{}", storage.message);

    // Autoscaling switched on: the four pods stay while the autoscaler takes over.
    registries
        .patch(
            "images",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}}})),
        )
        .await
        .expect("autoscaling on");
    for _ in 0..80 {
        let replicas = deployments
            .get("images")
            .await
            .expect("the Deployment")
            .spec
            .and_then(|s| s.replicas);
        assert!(
            replicas.is_some_and(|r| r >= 4),
            "replicas dipped to {replicas:?} on the hand-over"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // `kubectl scale` now has nothing to say: refused, with the reason.
    let refused = registries
        .patch_scale(
            "images",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}})),
        )
        .await
        .expect_err("scaling an autoscaled Registry is refused");
    assert!(
        refused
            .to_string()
            .contains("autoscaler owns the replica count"),
        "{refused}"
    );

    // A filesystem Registry whose storage works: pods Ready, and images go in and out through
    // the Service.
    let local: Registry = serde_json::from_value(json!({
        "apiVersion": "stowage.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": "local"},
        "spec": {"storage": {"filesystem": {"size": "1Gi"}}}
    }))
    .expect("registry");
    registries
        .create(&PostParams::default(), &local)
        .await
        .expect("the filesystem Registry is accepted");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    eventually("a Ready server pod", 300, || async {
        let listed = pods
            .list(&ListParams::default().labels("stowage.dev/registry=local"))
            .await
            .ok()?;
        listed
            .items
            .iter()
            .any(|pod| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .then_some(())
    })
    .await;
    eventually("StorageReady=True", 120, || async {
        let status = registries.get("local").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "StorageReady" && c.status == "True")
            .then_some(())
    })
    .await;
    let service =
        |method: &'static str, path: String, content_type: Option<&'static str>, body: Vec<u8>| {
            let (client, namespace) = (client.clone(), namespace.clone());
            async move {
                through_service(
                    &client,
                    &namespace,
                    "local",
                    method,
                    &path,
                    content_type,
                    body,
                )
                .await
            }
        };
    let layer = b"a layer pushed through the Service".to_vec();
    let config = b"{}".to_vec();
    for blob in [&layer, &config] {
        let (status, _) = service(
            "POST",
            format!("/v2/e2e/app/blobs/uploads/?digest={}", sha256(blob)),
            Some("application/octet-stream"),
            blob.clone(),
        )
        .await;
        assert_eq!(status, 201, "blob push");
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer), "size": layer.len()}]
    }))
    .expect("JSON");
    let (status, _) = service(
        "PUT",
        "/v2/e2e/app/manifests/v1".to_owned(),
        Some("application/vnd.oci.image.manifest.v1+json"),
        manifest.clone(),
    )
    .await;
    assert_eq!(status, 201, "manifest push");
    let (status, pulled) = service(
        "GET",
        "/v2/e2e/app/manifests/v1".to_owned(),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!((status, pulled), (200, manifest));
    let (status, pulled) = service(
        "GET",
        format!("/v2/e2e/app/blobs/{}", sha256(&layer)),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!((status, pulled), (200, layer));

    registries
        .delete("local", &DeleteParams::default())
        .await
        .expect("delete");
    registries
        .delete("images", &DeleteParams::default())
        .await
        .expect("delete");
    operator.abort();
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .expect("namespace deleted");
}
