//! Registries on Azure Blob Storage and Google Cloud Storage against the fake API server: the
//! credentials Secret checked and mounted where the config points, its changes rolling the pods,
//! and workload identity annotating the ServiceAccount and labelling the pods as AKS and GKE
//! expect.

#[allow(dead_code, reason = "the reconcile tests use the rest of the fake")]
mod fake_api;
mod harness;

use harness::{CONFIG, DEPLOYMENT, Harness, NS, checksum};
use serde_json::{Value, json};

const SERVICE_ACCOUNT: &str = "/api/v1/namespaces/team-a/serviceaccounts/images";
const GC_JOB: &str = "/apis/batch/v1/namespaces/team-a/cronjobs/images-gc";
const AZURE_KEY: &str = "/api/v1/namespaces/team-a/secrets/azure-storage";

fn azure_spec(sign_in: &Value) -> Value {
    let mut azure = json!({
        "account": "registrydata", "container": "images",
        "endpoint": "http://azurite.storage:10000/registrydata"
    });
    azure
        .as_object_mut()
        .expect("object")
        .extend(sign_in.as_object().expect("object").clone());
    json!({"replicas": 3, "storage": {"azure": azure}})
}

fn secret(name: &str, data: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "team-a"},
        "data": data
    })
}

fn config(h: &Harness) -> toml::Table {
    h.object(CONFIG)["data"]["config.toml"]
        .as_str()
        .expect("config")
        .parse()
        .expect("TOML")
}

/// The pod template of the server Deployment, or of the gc CronJob's Jobs.
fn template(object: &Value) -> &Value {
    let spec = &object["spec"];
    if spec["jobTemplate"].is_null() {
        &spec["template"]
    } else {
        &spec["jobTemplate"]["spec"]["template"]
    }
}

/// The volume named `name` of a pod template, and its container's mount of it.
fn volume_and_mount<'a>(template: &'a Value, name: &str) -> Option<(&'a Value, &'a Value)> {
    let spec = &template["spec"];
    let volume = spec["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?;
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?;
    Some((volume, mount))
}

#[tokio::test]
async fn an_azure_access_key_is_checked_mounted_and_rolls_the_pods() {
    let h = Harness::new();
    h.apply_registry(&azure_spec(
        &json!({"accessKeySecret": {"name": "azure-storage"}}),
    ));
    h.reconcile()
        .await
        .expect("runs, reporting the storage problem");
    let storage = h.condition("StorageReady");
    assert_eq!(
        (storage["status"].as_str(), storage["reason"].as_str()),
        (Some("False"), Some("CredentialsMissing"))
    );
    assert_eq!(
        storage["message"],
        "Azure access key Secret azure-storage does not exist"
    );

    h.fake
        .put(AZURE_KEY, secret("azure-storage", &json!({"key": "a2V5"})));
    h.reconcile().await.expect("runs");
    assert_eq!(
        h.condition("StorageReady")["message"],
        "Azure access key Secret azure-storage has no key accessKey"
    );

    h.fake.put(
        AZURE_KEY,
        secret("azure-storage", &json!({"accessKey": "a2V5"})),
    );
    h.reconcile().await.expect("runs");
    assert_ne!(h.condition("StorageReady")["reason"], "CredentialsMissing");
    let config = config(&h);
    assert_eq!(config["storage"].as_str(), Some("azure"));
    let azure = config["azure"].as_table().expect("[azure]");
    assert_eq!(azure["account"].as_str(), Some("registrydata"));
    assert_eq!(azure["container"].as_str(), Some("images"));
    let key_file = azure["access-key-file"].as_str().expect("a key file");

    for object in [h.object(DEPLOYMENT), h.object(GC_JOB)] {
        let (volume, mount) =
            volume_and_mount(template(&object), "storage-credentials").expect("mounted");
        assert_eq!(volume["secret"]["secretName"], "azure-storage");
        assert_eq!(
            format!("{}/accessKey", mount["mountPath"].as_str().expect("path")),
            key_file,
            "the config names the mounted file"
        );
        let env = &template(&object)["spec"]["containers"][0]["env"];
        assert!(
            env.as_array().is_none_or(Vec::is_empty),
            "no key in the environment: {env}"
        );
    }

    let before = checksum(&h.object(DEPLOYMENT));
    h.fake
        .update(AZURE_KEY, |s| s["data"]["accessKey"] = json!("bmV3"));
    h.reconcile().await.expect("runs");
    assert_ne!(
        checksum(&h.object(DEPLOYMENT)),
        before,
        "a rotated key restarts the pods, which read it at start"
    );
}

#[tokio::test]
async fn aks_workload_identity_annotates_the_account_and_labels_every_pod() {
    let h = Harness::new();
    let mut spec = azure_spec(&json!({"workloadIdentity": {"clientId": "11111111-client"}}));
    spec["serviceAccountAnnotations"] = json!({"team": "platform"});
    h.apply_registry(&spec);
    h.reconcile().await.expect("reconciles");

    let account = h.object(SERVICE_ACCOUNT);
    assert_eq!(
        account["metadata"]["annotations"],
        json!({"azure.workload.identity/client-id": "11111111-client", "team": "platform"})
    );
    for object in [h.object(DEPLOYMENT), h.object(GC_JOB)] {
        let template = template(&object);
        assert_eq!(
            template["metadata"]["labels"]["azure.workload.identity/use"], "true",
            "AKS projects its token only into pods that ask"
        );
        assert!(volume_and_mount(template, "storage-credentials").is_none());
    }
    let deployment = h.object(DEPLOYMENT);
    assert!(
        deployment["spec"]["selector"]["matchLabels"]
            .get("azure.workload.identity/use")
            .is_none(),
        "the selector never changes"
    );
    let azure = config(&h)["azure"].as_table().expect("[azure]").clone();
    assert!(
        ["access-key-file", "sas-token-file", "client-secret-file"]
            .iter()
            .all(|key| !azure.contains_key(*key)),
        "the server takes workload identity from the environment AKS sets: {azure:?}"
    );
}

#[tokio::test]
async fn gcs_with_a_key_or_gke_workload_identity() {
    let h = Harness::new();
    h.fake.put(
        &format!("{NS}/secrets/gcs-key"),
        secret("gcs-key", &json!({"service-account.json": "e30="})),
    );
    h.apply_registry(&json!({"replicas": 2, "storage": {"gcs": {
        "bucket": "images", "rootPrefix": "registry",
        "credentialsSecret": {"name": "gcs-key", "key": "service-account.json"}
    }}}));
    h.reconcile().await.expect("reconciles");
    let config = config(&h);
    let gcs = config["gcs"].as_table().expect("[gcs]");
    assert_eq!(gcs["bucket"].as_str(), Some("images"));
    assert_eq!(gcs["root-prefix"].as_str(), Some("registry"));
    let deployment = h.object(DEPLOYMENT);
    let (volume, mount) =
        volume_and_mount(template(&deployment), "storage-credentials").expect("mounted");
    assert_eq!(volume["secret"]["secretName"], "gcs-key");
    assert_eq!(
        gcs["credentials-file"].as_str(),
        Some(
            format!(
                "{}/service-account.json",
                mount["mountPath"].as_str().expect("path")
            )
            .as_str()
        )
    );

    let h = Harness::new();
    h.apply_registry(&json!({"replicas": 2, "storage": {"gcs": {
        "bucket": "images",
        "workloadIdentity": {"serviceAccount": "registry@example.iam.gserviceaccount.com"}
    }}}));
    h.reconcile().await.expect("reconciles");
    assert_eq!(
        h.object(SERVICE_ACCOUNT)["metadata"]["annotations"]["iam.gke.io/gcp-service-account"],
        "registry@example.iam.gserviceaccount.com"
    );
    assert!(volume_and_mount(template(&h.object(DEPLOYMENT)), "storage-credentials").is_none());
    assert_eq!(
        h.condition("StorageReady")["reason"],
        "WaitingForPods",
        "nothing to check in the cluster: the pods' readiness tells"
    );
}
