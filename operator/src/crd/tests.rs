//! The CRD as the API server sees it: its CEL rules, cost, formats and defaults.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

use super::Registry;

fn schema() -> Value {
    super::schema()
}

/// Every rule, estimated as the API server estimates it when the CRD is applied: within the
/// limits, and with a bound on everything a rule can reach.
#[test]
fn the_api_server_accepts_the_rules_cost() {
    fn count_rules(value: &Value) -> usize {
        match value {
            Value::Object(map) => {
                let here = map
                    .get("x-kubernetes-validations")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                here + map.values().map(count_rules).sum::<usize>()
            }
            Value::Array(items) => items.iter().map(count_rules).sum(),
            _ => 0,
        }
    }
    let report = super::cost::estimate(&schema());
    assert_eq!(report.problems(), Vec::<String>::new(), "\n{report}");
    assert_eq!(
        report.rules.len(),
        count_rules(&schema()),
        "every rule is estimated"
    );
    assert!(report.rules.len() >= 10, "\n{report}");
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "reads better at the call sites"
)]
fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "stowage.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": "images", "namespace": "team-a"},
        "spec": spec
    })
}

/// The messages of the CEL rules `spec` breaks, on create or (with `old`) on update.
fn broken(spec: Value, old: Option<Value>) -> Vec<String> {
    let old = old.map(object);
    match Validator::new().validate(&schema(), &object(spec), old.as_ref()) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

#[test]
fn notification_endpoints_need_their_own_name_and_a_scheme() {
    let spec = |endpoints: Value| json!({"storage": {"s3": {"bucket": "images"}}, "notifications": {"endpoints": endpoints}});
    let scanner =
        json!({"name": "scanner", "url": "https://scanner/events", "ignoredActions": ["pull"]});
    let audit = json!({"name": "audit", "url": "http://audit:8080/"});
    assert!(broken(spec(json!([scanner, audit])), None).is_empty());
    // Names are the keys of the list: the API server refuses a repeated one (see
    // `manifests`' tests, which check it as the API server does).
    let endpoints =
        &schema()["properties"]["spec"]["properties"]["notifications"]["properties"]["endpoints"];
    assert_eq!(endpoints["x-kubernetes-list-type"], "map");
    assert_eq!(endpoints["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        broken(spec(json!([{"name": "x", "url": "scanner/events"}])), None),
        ["url needs its scheme: https:// or http://"]
    );
}

#[test]
fn replication_rules_name_a_registry_and_their_own_name() {
    let spec = |rules: Value| json!({"storage": {"s3": {"bucket": "images"}}, "replication": {"rules": rules}});
    let dr = json!({"name": "dr", "url": "https://registry.dr.example", "prefix": "mirror/team/"});
    let edge = json!({"name": "edge", "url": "http://edge:5000/", "bandwidth": "50MiB"});
    assert!(broken(spec(json!([dr, edge])), None).is_empty());
    let rules = &schema()["properties"]["spec"]["properties"]["replication"]["properties"]["rules"];
    assert_eq!(rules["x-kubernetes-list-type"], "map");
    assert_eq!(rules["x-kubernetes-list-map-keys"], json!(["name"]));
    let message = "url names a registry, https://host[:port] or http://host[:port], without a \
                   path: repositories go in prefix";
    for url in [
        "registry.dr.example",
        "https://registry.dr.example/v2/team",
        "ftp://x:21",
    ] {
        assert_eq!(
            broken(spec(json!([{"name": "dr", "url": url}])), None),
            [message],
            "{url}"
        );
    }
    let rule = &rules["items"]["properties"];
    assert_eq!(rule["jobs"]["default"], 4);
    assert_eq!(rule["tls"]["default"], json!({"verify": true}));
    let schedule = &schema()["properties"]["spec"]["properties"]["replication"]["properties"]["reconciliation"]
        ["default"];
    assert_eq!(
        schedule,
        &json!({"schedule": "17 * * * *", "suspend": false})
    );
}

#[test]
fn a_quota_names_repositories_or_namespaces_and_a_size() {
    let spec = |quotas: Value| json!({"storage": {"s3": {"bucket": "images"}}, "policies": {"quotas": quotas}});
    let teams = json!({"name": "teams", "namespaces": ["team-*"], "bytes": "500Gi"});
    let sandbox = json!({"name": "sandbox", "repositories": ["sandbox/**"], "bytes": "5 GiB"});
    assert!(broken(spec(json!([teams, sandbox])), None).is_empty());
    let quotas = &schema()["properties"]["spec"]["properties"]["policies"]["properties"]["quotas"];
    assert_eq!(quotas["x-kubernetes-list-type"], "map");
    assert_eq!(quotas["x-kubernetes-list-map-keys"], json!(["name"]));
    let message = "name repositories or namespaces, not both";
    let both = json!({"name": "q", "repositories": ["a"], "namespaces": ["a"], "bytes": "1G"});
    let neither = json!({"name": "q", "bytes": "1G"});
    for quota in [both, neither] {
        assert_eq!(broken(spec(json!([quota])), None), [message], "{quota}");
    }
    let bytes = &quotas["items"]["properties"]["bytes"];
    assert_eq!(bytes["maxLength"], 24);
    assert!(bytes["pattern"].is_string());
}

#[test]
fn proxy_upstreams_need_their_own_prefix_and_a_scheme() {
    let spec = |upstreams: Value| json!({"storage": {"s3": {"bucket": "images"}}, "proxy": {"upstreams": upstreams}});
    let hub = json!({"prefix": "docker.io", "url": "https://registry-1.docker.io"});
    let ghcr = json!({"prefix": "ghcr.io", "url": "https://ghcr.io", "credentialsSecret": "ghcr"});
    assert!(broken(spec(json!([hub, ghcr])), None).is_empty());
    let upstreams =
        &schema()["properties"]["spec"]["properties"]["proxy"]["properties"]["upstreams"];
    assert_eq!(upstreams["x-kubernetes-list-type"], "map");
    assert_eq!(upstreams["x-kubernetes-list-map-keys"], json!(["prefix"]));
    let bare = json!({"prefix": "quay.io", "url": "quay.io"});
    assert_eq!(
        broken(spec(json!([bare])), None),
        ["url needs its scheme: https:// or http://"]
    );
}

#[test]
fn access_rules_and_tls_are_checked_on_apply() {
    let s3 = json!({"s3": {"bucket": "images"}});
    let with = |field: &str, value: Value| {
        let mut spec = json!({"storage": s3});
        spec[field] = value;
        spec
    };
    let good = json!({"rules": [{"repositories": ["team-a/**"], "subjects": ["anonymous", "user:alice", "group:system:serviceaccounts:ci"], "actions": ["pull", "*"]}]});
    assert!(broken(with("auth", good), None).is_empty());
    let bad_subject =
        json!({"rules": [{"repositories": ["**"], "subjects": ["alice"], "actions": ["pull"]}]});
    assert_eq!(
        broken(with("auth", bad_subject), None),
        ["subjects are anonymous, authenticated, user:<name> or group:<name>"]
    );
    let no_keys =
        json!({"tokenIssuer": {"realm": "https://a/token", "service": "s", "issuer": "i"}});
    assert_eq!(
        broken(with("auth", no_keys), None),
        ["set rootCertBundle or jwksUrl: the keys that sign the tokens"]
    );
    let tls_message = ["set exactly one of secretName or issuerRef"];
    assert_eq!(broken(with("tls", json!({})), None), tls_message);
    let both = json!({"secretName": "cert", "issuerRef": {"name": "ca"}});
    assert_eq!(broken(with("tls", both), None), tls_message);
    assert!(broken(with("tls", json!({"issuerRef": {"name": "ca"}})), None).is_empty());
}

fn azure() -> Value {
    json!({"account": "registrydata", "container": "images"})
}

fn gcs() -> Value {
    json!({"bucket": "images"})
}

#[test]
fn exactly_one_storage_kind() {
    for kind in [
        json!({"s3": {"bucket": "images"}}),
        json!({"filesystem": {}}),
        json!({"azure": azure()}),
        json!({"gcs": gcs()}),
    ] {
        assert_eq!(
            broken(json!({"storage": kind}), None),
            Vec::<String>::new(),
            "{kind}"
        );
    }
    let message = ["set exactly one storage kind: filesystem, s3, azure or gcs"];
    for kinds in [
        json!({}),
        json!({"filesystem": {}, "s3": {"bucket": "images"}}),
        json!({"azure": azure(), "gcs": gcs()}),
        json!({"s3": {"bucket": "images"}, "gcs": gcs()}),
        json!({"filesystem": {}, "azure": azure()}),
    ] {
        assert_eq!(broken(json!({"storage": kinds}), None), message, "{kinds}");
    }
}

#[test]
fn more_than_one_replica_needs_shared_storage() {
    let message = ["more than one replica needs shared storage: use storage.s3, azure or gcs"];
    assert_eq!(
        broken(json!({"replicas": 2, "storage": {"filesystem": {}}}), None),
        message
    );
    assert_eq!(
        broken(
            json!({"autoscaling": {"minReplicas": 1, "maxReplicas": 3}, "storage": {"filesystem": {}}}),
            None
        ),
        message
    );
    assert!(broken(json!({"replicas": 1, "storage": {"filesystem": {}}}), None).is_empty());
    assert!(broken(json!({"replicas": 0, "storage": {"filesystem": {}}}), None).is_empty());
    for shared in [
        json!({"s3": {"bucket": "images"}}),
        json!({"azure": azure()}),
        json!({"gcs": gcs()}),
    ] {
        assert!(
            broken(json!({"replicas": 5, "storage": shared}), None).is_empty(),
            "{shared}"
        );
    }
}

#[test]
fn one_way_to_sign_in_to_each_cloud() {
    let secret = json!({"name": "azure-storage"});
    let with = |extra: Value| {
        let mut azure = azure();
        azure
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"replicas": 3, "storage": {"azure": azure}})
    };
    for one in [
        json!({}),
        json!({"accessKeySecret": secret}),
        json!({"sasTokenSecret": secret}),
        json!({"clientSecret": {"tenantId": "t", "clientId": "c", "secret": secret}}),
        json!({"workloadIdentity": {"clientId": "c"}}),
    ] {
        assert!(broken(with(one.clone()), None).is_empty(), "{one}");
    }
    assert_eq!(
        broken(
            with(json!({"accessKeySecret": secret, "workloadIdentity": {"clientId": "c"}})),
            None
        ),
        [
            "set at most one way to sign in: accessKeySecret, sasTokenSecret, clientSecret or workloadIdentity"
        ]
    );
    let gcs = |extra: Value| {
        let mut gcs = gcs();
        gcs.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"storage": {"gcs": gcs}})
    };
    let key = json!({"name": "gcs-key"});
    let identity = json!({"serviceAccount": "registry@p.iam.gserviceaccount.com"});
    for one in [
        json!({"anonymous": false}),
        json!({"credentialsSecret": key, "anonymous": false}),
        json!({"workloadIdentity": identity, "anonymous": false}),
        json!({"anonymous": true}),
    ] {
        assert!(broken(gcs(one.clone()), None).is_empty(), "{one}");
    }
    for two in [
        json!({"credentialsSecret": key, "anonymous": true}),
        json!({"credentialsSecret": key, "workloadIdentity": identity, "anonymous": false}),
    ] {
        assert_eq!(
            broken(gcs(two.clone()), None),
            ["set at most one way to sign in: credentialsSecret, workloadIdentity or anonymous"],
            "{two}"
        );
    }
}

#[test]
fn autoscaling_bounds_are_ordered() {
    let s3 = json!({"s3": {"bucket": "images"}});
    assert_eq!(
        broken(
            json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 3}, "storage": s3}),
            None
        ),
        ["minReplicas must not exceed maxReplicas"]
    );
    assert!(
        broken(
            json!({"autoscaling": {"minReplicas": 3, "maxReplicas": 3}, "storage": s3}),
            None
        )
        .is_empty()
    );
    assert_eq!(
        broken(
            json!({"autoscaling": {"maxReplicas": 1}, "storage": s3}),
            None
        ),
        ["minReplicas must not exceed maxReplicas"],
        "the default minimum of 2 applies before the rule"
    );
}

#[test]
fn the_bucket_and_prefix_are_immutable() {
    let old = json!({"storage": {"s3": {"bucket": "images", "rootPrefix": "a"}}});
    assert!(
        broken(
            json!({"replicas": 4, "storage": {"s3": {"bucket": "images", "rootPrefix": "a"}}}),
            Some(old.clone())
        )
        .is_empty()
    );
    assert_eq!(
        broken(
            json!({"storage": {"s3": {"bucket": "other", "rootPrefix": "a"}}}),
            Some(old.clone())
        ),
        ["bucket is immutable"]
    );
    assert_eq!(
        broken(
            json!({"storage": {"s3": {"bucket": "images", "rootPrefix": "b"}}}),
            Some(old)
        ),
        ["rootPrefix is immutable"]
    );
}

#[test]
fn cloud_containers_and_prefixes_are_immutable() {
    let azure = |account: &str, container: &str, prefix: &str| json!({"storage": {"azure": {"account": account, "container": container, "rootPrefix": prefix}}});
    let old = azure("registrydata", "images", "a");
    assert!(broken(azure("registrydata", "images", "a"), Some(old.clone())).is_empty());
    assert_eq!(
        broken(azure("otheraccount", "images", "a"), Some(old.clone())),
        ["account is immutable"]
    );
    assert_eq!(
        broken(azure("registrydata", "others", "a"), Some(old.clone())),
        ["container is immutable"]
    );
    assert_eq!(
        broken(azure("registrydata", "images", "b"), Some(old)),
        ["rootPrefix is immutable"]
    );
    let gcs = |bucket: &str, prefix: &str| json!({"storage": {"gcs": {"bucket": bucket, "rootPrefix": prefix}}});
    let old = gcs("images", "a");
    assert!(broken(gcs("images", "a"), Some(old.clone())).is_empty());
    assert_eq!(
        broken(gcs("other", "a"), Some(old.clone())),
        ["bucket is immutable"]
    );
    assert_eq!(
        broken(gcs("images", "b"), Some(old)),
        ["rootPrefix is immutable"]
    );
}

#[test]
fn replicas_are_frozen_while_autoscaling() {
    let autoscaled = |replicas: i32| {
        json!({"replicas": replicas, "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
               "storage": {"s3": {"bucket": "images"}}})
    };
    let fixed =
        |replicas: i32| json!({"replicas": replicas, "storage": {"s3": {"bucket": "images"}}});
    let message = [
        "replicas cannot change while autoscaling is set: the autoscaler owns the replica \
         count; change autoscaling.minReplicas or maxReplicas, or remove autoscaling first",
    ];
    // `kubectl scale` on an autoscaled Registry.
    assert_eq!(broken(autoscaled(5), Some(autoscaled(1))), message);
    // Other changes to an autoscaled Registry, and scaling a fixed one, are fine.
    assert!(broken(autoscaled(1), Some(autoscaled(1))).is_empty());
    assert!(broken(fixed(5), Some(fixed(1))).is_empty());
    // Switching autoscaling on or off may come with a new count.
    assert!(broken(autoscaled(5), Some(fixed(1))).is_empty());
    assert!(broken(fixed(5), Some(autoscaled(1))).is_empty());
}

/// Every `format` in the schema is one the API server knows, so installing the CRD warns of
/// nothing.
#[test]
fn only_formats_the_api_server_knows() {
    fn formats(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(format)) = map.get("format") {
                    found.push(format.clone());
                }
                map.values().for_each(|v| formats(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| formats(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    formats(&schema(), &mut found);
    assert!(!found.is_empty(), "the walk finds formats");
    let known = [
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "date",
        "date-time",
        "int-or-string",
    ];
    for format in found {
        assert!(
            known.contains(&format.as_str()),
            "unknown format {format:?}"
        );
    }
}

#[test]
fn defaults_fill_a_minimal_spec() {
    let spec: super::RegistrySpec =
        serde_json::from_value(json!({"storage": {"s3": {"bucket": "images"}}})).expect("spec");
    assert_eq!(spec.replicas, 1);
    assert!(spec.deletes_enabled);
    assert_eq!(spec.service.port, 5000);
    assert_eq!(spec.garbage_collection.grace_period, "1h");
    assert_eq!(spec.upload_purging.max_age, "168h");
    let s3 = spec.storage.s3.expect("s3");
    assert_eq!(s3.region, "us-east-1");
    assert!(!s3.path_style);
}

#[test]
fn status_and_scale_subresources() {
    let crd = Registry::crd();
    let version = &crd.spec.versions[0];
    let subresources = version.subresources.as_ref().expect("subresources");
    assert!(subresources.status.is_some());
    let scale = subresources.scale.as_ref().expect("scale");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Replicas", "Endpoint", "Age"]);
    assert_eq!(crd.spec.names.short_names, Some(vec!["reg".to_owned()]));
}
