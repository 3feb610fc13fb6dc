//! The operator's reconcile against the fake API server, shared by the integration tests.

#![allow(dead_code, reason = "each test crate uses part of the harness")]

use std::sync::Arc;

use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use stowage_operator::controller::{Context, reconcile};
use stowage_operator::crd::Registry;
use stowage_operator::metrics::Metrics;

pub use crate::fake_api::FakeApi;

pub const NS: &str = "/api/v1/namespaces/team-a";
pub const REGISTRY: &str = "/apis/stowage.dev/v1alpha1/namespaces/team-a/registries/images";
pub const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/team-a/deployments/images";
pub const HPA: &str = "/apis/autoscaling/v2/namespaces/team-a/horizontalpodautoscalers/images";
pub const PDB: &str = "/apis/policy/v1/namespaces/team-a/poddisruptionbudgets/images";
pub const KEY: &str = "/api/v1/namespaces/team-a/secrets/images-upload-key";
pub const CONFIG: &str = "/api/v1/namespaces/team-a/configmaps/images-config";

pub struct Harness {
    pub fake: FakeApi,
    pub context: Arc<Context>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_context(|context| context)
    }

    /// With the operator's context set up by `configure` (as its flags would).
    pub fn with_context(configure: impl FnOnce(Context) -> Context) -> Self {
        let (client, fake) = FakeApi::start();
        let context = Arc::new(configure(Context::new(
            client,
            Arc::new(Metrics::default()),
            "ghcr.io/stowage/stowage:test".to_owned(),
        )));
        fake.put(
            &format!("{NS}/secrets/s3-creds"),
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s3-creds", "namespace": "team-a"},
                "data": {"accessKeyId": "R0s=", "secretAccessKey": "c2VjcmV0"}
            }),
        );
        Self { fake, context }
    }

    /// Stores a Registry with `spec` (as `kubectl apply` would) and returns what the API holds.
    pub fn apply_registry(&self, spec: &Value) {
        let existing = self.fake.get(REGISTRY);
        let generation = existing
            .as_ref()
            .and_then(|r| r["metadata"]["generation"].as_i64())
            .unwrap_or(0)
            + 1;
        let mut registry = json!({
            "apiVersion": "stowage.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "images", "namespace": "team-a", "uid": "registry-uid", "generation": generation},
            "spec": spec
        });
        if let Some(status) = existing.as_ref().map(|r| r["status"].clone()) {
            registry["status"] = status;
        }
        self.fake.put(REGISTRY, registry);
    }

    pub fn registry(&self) -> Registry {
        serde_json::from_value(self.fake.get(REGISTRY).expect("registry")).expect("a Registry")
    }

    pub async fn reconcile(&self) -> Result<Action, stowage_operator::controller::Error> {
        reconcile(Arc::new(self.registry()), Arc::clone(&self.context)).await
    }

    pub fn object(&self, path: &str) -> Value {
        self.fake
            .get(path)
            .unwrap_or_else(|| panic!("{path} was not made"))
    }

    pub fn condition(&self, type_: &str) -> Value {
        let registry = self.object(REGISTRY);
        registry["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or_else(|| panic!("no {type_} condition in {}", registry["status"]))
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.resource == "events" && r.method == Method::POST)
            .map(|r| r.body["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Marks the Deployment as rolled out with `ready` replicas, as its controller would.
    pub fn deployment_ready(&self, ready: i64) {
        self.fake.update(DEPLOYMENT, |d| {
            let generation = d["metadata"]["generation"].clone();
            d["status"] = json!({
                "observedGeneration": generation, "replicas": ready, "readyReplicas": ready,
                "availableReplicas": ready, "updatedReplicas": ready
            });
        });
    }
}

pub fn s3_spec() -> Value {
    json!({
        "replicas": 3,
        "storage": {"s3": {
            "bucket": "images", "endpoint": "http://garage.storage:3900", "pathStyle": true,
            "credentialsSecret": {"name": "s3-creds"}
        }}
    })
}

pub fn checksum(deployment: &Value) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"]["stowage.dev/config-checksum"]
        .as_str()
        .expect("checksum")
        .to_owned()
}
