//! End to end on a real cluster, run only when `KUBECONFIG` names one: installs the CRD, runs
//! the controller in this process, applies a `Registry`, and checks every child, scaling through
//! the scale subresource, and the status. Set `STOWAGE_E2E_IMAGE` to a server image the cluster
//! can pull for the pods to become ready; the checks here do not need them ready.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;
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

#[tokio::test]
async fn a_registry_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("KUBECONFIG is not set: skipping the cluster test");
        return;
    }
    let client = Client::try_default().await.expect("a cluster client");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "registries.stowage.dev",
        &PatchParams::apply("stowage-e2e").force(),
        &Patch::Apply(Registry::crd()),
    )
    .await
    .expect("the CRD installs");
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

    let image = std::env::var("STOWAGE_E2E_IMAGE")
        .unwrap_or_else(|_| stowage_operator::cli::DEFAULT_IMAGE.to_owned());
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
