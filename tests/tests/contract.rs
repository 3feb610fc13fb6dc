//! The operator and the server can never drift apart: the containers the operator builds
//! (Deployment and CronJobs) are fed, with their mounted files and environment, to the server's
//! own command-line parser and configuration resolver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use serde_json::json;
use stowage::cli::{Cli, Command};
use stowage::config::ServeConfig;
use stowage::storage::StorageConfig;
use stowage_operator::crd::Registry;
use stowage_operator::resources::{self, ClusterFacts, InUseDigests, Inputs, KeyKind, Task};

/// A Registry as the API server hands it over.
fn registry(spec: serde_json::Value) -> Registry {
    let mut registry = Registry::new("images", serde_json::from_value(spec).expect("spec"));
    registry.metadata.namespace = Some("team-a".to_owned());
    registry.metadata.uid = Some("uid-1".to_owned());
    registry
}

/// What the cluster would hold for `registry`: the config map, the key and S3 credentials.
struct Cluster {
    config_map: ConfigMap,
    /// ConfigMaps besides the config, such as the digests in use.
    other_config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    inputs: Inputs,
    /// What the `kube-root-ca.crt` ConfigMap holds.
    cluster_ca: String,
}

fn cluster(registry: &Registry, rotating: bool) -> Cluster {
    let mut key = resources::new_key_secret(registry, KeyKind::Upload, "k".repeat(64));
    if rotating {
        // The key as generated before the rotation was asked for.
        key.metadata.annotations = None;
        key = resources::rotated_key_secret(registry, KeyKind::Upload, &key, "n".repeat(64))
            .expect("a rotation is asked for");
    }
    let credentials: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-creds"},
        "stringData": {"accessKeyId": "GK0123", "secretAccessKey": "s3cr3t"}
    }))
    .expect("secret");
    let facts = ClusterFacts {
        previous_upload_key: rotating,
        ..ClusterFacts::default()
    };
    let config = resources::server_config(registry, &facts);
    Cluster {
        config_map: resources::config_map(registry, config),
        other_config_maps: Vec::new(),
        secrets: vec![key, credentials],
        cluster_ca: String::new(),
        inputs: Inputs {
            image: "stowage:test".to_owned(),
            has_previous_key: rotating,
            checksum: "c".to_owned(),
            in_use_digests: InUseDigests::NotCollected,
            retention_previewed: false,
        },
    }
}

fn secret_value(cluster: &Cluster, name: &str, key: &str) -> String {
    let secret = cluster
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Secret {name}"));
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        })
        .unwrap_or_else(|| panic!("no key {key} in Secret {name}"))
}

/// Lays the container's volumes out under `root` as the kubelet would under `/`, and returns
/// the container's arguments with mount paths moved under `root`.
fn materialize(
    root: &Path,
    cluster: &Cluster,
    pod: &PodSpec,
    container: &Container,
) -> Vec<String> {
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    // In one pass through placeholders, so that a root under /tmp is not moved again by the
    // /tmp mount.
    let relocate = |text: &str| {
        let marked = mounts
            .iter()
            .enumerate()
            .fold(text.to_owned(), |text, (i, mount)| {
                text.replace(&mount.mount_path, &format!("\u{0}{i}\u{0}"))
            });
        mounts.iter().enumerate().fold(marked, |text, (i, mount)| {
            text.replace(
                &format!("\u{0}{i}\u{0}"),
                &format!("{}{}", root.display(), mount.mount_path),
            )
        })
    };
    for mount in &mounts {
        let dir = PathBuf::from(format!("{}{}", root.display(), mount.mount_path));
        std::fs::create_dir_all(&dir).expect("mount point");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("mount {} has no volume", mount.name));
        let files: BTreeMap<String, String> = if let Some(projected) = &volume.projected {
            // The kubelet's own projections: a service account token, the cluster CA.
            let mut files = BTreeMap::new();
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    files.insert(
                        token.path.clone(),
                        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln".to_owned(),
                    );
                }
                for item in source
                    .config_map
                    .iter()
                    .flat_map(|map| map.items.iter().flatten())
                {
                    files.insert(item.path.clone(), cluster.cluster_ca.clone());
                }
            }
            files
        } else if let Some(map) = &volume.config_map {
            let found = std::iter::once(&cluster.config_map)
                .chain(&cluster.other_config_maps)
                .find(|found| found.metadata.name.as_ref() == Some(&map.name));
            found
                .unwrap_or_else(|| panic!("no ConfigMap {}", map.name))
                .data
                .clone()
                .expect("data")
                .into_iter()
                .collect()
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().expect("secret name");
            let found = cluster
                .secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name));
            let found = found.unwrap_or_else(|| panic!("no Secret {name}"));
            let all = found
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()));
            match &secret.items {
                // Only the keys named, at the paths named.
                Some(items) => all
                    .filter_map(|(key, value)| {
                        let item = items.iter().find(|item| item.key == key)?;
                        Some((item.path.clone(), value))
                    })
                    .collect(),
                None => all.collect(),
            }
        } else {
            BTreeMap::new()
        };
        for (file, content) in files {
            std::fs::write(dir.join(file), relocate(&content)).expect("file");
        }
    }
    container
        .args
        .iter()
        .flatten()
        .map(|arg| relocate(arg))
        .collect()
}

/// Turns the container's environment into the flags clap would read it as, checking that every
/// variable is one the server knows.
fn env_as_flags(cluster: &Cluster, container: &Container, subcommand: &str) -> Vec<String> {
    let command = Cli::command();
    let sub = command.find_subcommand(subcommand).expect("subcommand");
    let mut flags = Vec::new();
    for var in container.env.iter().flatten() {
        let arg = sub
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var.name.as_str()))
            .unwrap_or_else(|| panic!("`stowage {subcommand}` reads no variable {}", var.name));
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => {
                let reference = from.secret_key_ref.as_ref().expect("a Secret reference");
                secret_value(cluster, &reference.name, &reference.key)
            }
            (None, None) => String::new(),
        };
        flags.push(format!("--{}", arg.get_long().expect("long flag")));
        flags.push(value);
    }
    flags
}

/// Parses and resolves `container` as the server would start it, from a fresh directory.
fn resolve(cluster: &Cluster, pod: &PodSpec, container: &Container) -> (Command, ServeConfig) {
    let root = tempfile::tempdir().expect("tempdir");
    resolve_at(root.path(), cluster, pod, container)
}

/// As [`resolve`], with the pod's files laid out under `root`, which the caller keeps.
fn resolve_at(
    root: &Path,
    cluster: &Cluster,
    pod: &PodSpec,
    container: &Container,
) -> (Command, ServeConfig) {
    let args = materialize(root, cluster, pod, container);
    let subcommand = args.first().expect("a subcommand").clone();
    let env = env_as_flags(cluster, container, &subcommand);
    let argv = std::iter::once("stowage".to_owned()).chain(args).chain(env);
    let cli =
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("the server refuses the args: {e}"));
    let config = match &cli.command {
        Command::Serve(args) => args.clone().resolve(),
        Command::Gc(gc) => gc.storage.clone().resolve_for_maintenance(),
        Command::PurgeUploads(purge) => purge.storage.clone().resolve_for_maintenance(),
        Command::Copy(_) => panic!("the operator never runs stowage copy"),
        Command::Retention(retention) => retention.storage.clone().resolve_for_maintenance(),
        Command::Replicate(replicate) => replicate.storage.clone().resolve_for_maintenance(),
        Command::Usage(_) => panic!("the operator never runs stowage usage"),
    };
    let config = config.unwrap_or_else(|e| panic!("the server refuses the config: {e}"));
    (cli.command, config)
}

fn pods(registry: &Registry, cluster: &Cluster) -> Vec<(String, PodSpec)> {
    let deployment = resources::deployment(registry, &cluster.inputs);
    let mut pods = vec![(
        "deployment".to_owned(),
        deployment.spec.and_then(|s| s.template.spec).expect("pod"),
    )];
    let replication = registry
        .spec
        .replication
        .is_some()
        .then_some(Task::Replication);
    let retention = resources::rules_hash(registry).map(|_| Task::Retention);
    for task in Task::ALWAYS.into_iter().chain(replication).chain(retention) {
        let job = resources::cron_job(registry, &cluster.inputs, task);
        let pod = job
            .spec
            .and_then(|s| s.job_template.spec)
            .and_then(|s| s.template.spec);
        pods.push((task.command().to_owned(), pod.expect("pod")));
    }
    pods
}

#[test]
fn s3_pods_start_with_the_settings_asked_for() {
    let registry = registry(json!({
        "replicas": 3,
        "readOnly": true,
        "logLevel": "debug",
        "ui": {"enabled": true, "sessionTtl": "90m"},
        "policies": {
            "immutableTags": [{"name": "releases", "repositories": ["team/**"], "tags": ["v*"]}],
            "quotas": [
                {"name": "teams", "namespaces": ["team"], "bytes": "500Gi"},
                {"name": "sandbox", "repositories": ["sandbox/**"], "bytes": "5 GiB"}
            ]
        },
        "storage": {"s3": {
            "bucket": "images", "region": "eu-west-3", "endpoint": "http://garage:3900",
            "pathStyle": true, "rootPrefix": "team-a", "redirect": true,
            "credentialsSecret": {"name": "s3-creds"}
        }},
        "garbageCollection": {"gracePeriod": "2h", "deleteUntagged": true},
        "uploadPurging": {"maxAge": "72h"},
        "limits": {"maxConnections": 1000, "maxConcurrentRequests": 64, "headerReadTimeout": "5s",
                   "bodyIdleTimeout": "2m", "rateLimit": 50, "trustedProxies": ["10.0.0.0/8", "192.0.2.1"]}
    }));
    let cluster = cluster(&registry, false);
    for (what, pod) in pods(&registry, &cluster) {
        let (command, config) = resolve(&cluster, &pod, &pod.containers[0]);
        let StorageConfig::S3(s3) = &config.storage else {
            panic!("{what}: not S3: {:?}", config.storage);
        };
        assert_eq!(s3.bucket, "images", "{what}");
        assert_eq!(s3.region, "eu-west-3", "{what}");
        assert_eq!(s3.endpoint.as_deref(), Some("http://garage:3900"), "{what}");
        assert!(s3.path_style && s3.redirect, "{what}");
        assert_eq!(s3.root_prefix, "team-a", "{what}");
        assert_eq!(
            s3.credentials,
            Some(("GK0123".to_owned(), "s3cr3t".to_owned())),
            "{what}: credentials from the Secret"
        );
        assert!(
            config.keys.is_some(),
            "{what}: the shared upload key is read"
        );
        assert!(config.api.read_only, "{what}");
        assert!(config.ui.enabled, "{what}: the web interface is on");
        assert_eq!(config.ui.session_ttl.as_secs(), 90 * 60, "{what}");
        let rule = config.policies.immutable("team/app", "v1.0");
        assert_eq!(rule.map(|r| r.name.as_str()), Some("releases"), "{what}");
        assert!(
            config.policies.immutable("team/app", "latest").is_none(),
            "{what}"
        );
        let quotas: Vec<(&str, u64)> = config
            .policies
            .quotas()
            .iter()
            .map(|q| (q.name.as_str(), q.limit))
            .collect();
        assert_eq!(
            quotas,
            [("teams", 500 << 30), ("sandbox", 5 << 30)],
            "{what}: quotas reach every pod, gc's too"
        );
        assert_eq!(config.log_level, "debug", "{what}");
        assert_eq!(config.connections.max_connections, 1000, "{what}");
        assert_eq!(config.connections.header_read_timeout.as_secs(), 5);
        assert_eq!(config.requests.max_concurrent_requests, 64, "{what}");
        assert_eq!(config.requests.body_idle_timeout.as_secs(), 120);
        let rate = config.requests.rate_limit.as_ref().expect("a rate limit");
        assert_eq!((rate.per_second.get(), rate.burst.get()), (50, 100));
        assert_eq!(
            rate.trusted_proxies,
            [
                "10.0.0.0/8".parse().unwrap(),
                "192.0.2.1/32".parse().unwrap()
            ]
        );
        match command {
            Command::Serve(_) => {
                assert_eq!(what, "deployment");
                let port = pod.containers[0].ports.as_ref().expect("ports")[0].container_port;
                assert_eq!(
                    i32::from(config.listen.port()),
                    port,
                    "the server listens where probed"
                );
                let metrics = pod.containers[0].ports.as_ref().expect("ports")[1].clone();
                assert_eq!(metrics.name.as_deref(), Some("metrics"));
                assert_eq!(
                    config.metrics_listen.map(|a| i32::from(a.port())),
                    Some(metrics.container_port),
                    "metrics are served where the pod declares them"
                );
            }
            Command::Gc(gc) => {
                assert_eq!(gc.grace_period.as_secs(), 7200);
                assert!(gc.delete_untagged);
                assert!(!gc.dry_run);
                assert_eq!(
                    gc.full_every.map(|d| d.as_secs()),
                    Some(168 * 3600),
                    "a full run weekly by default"
                );
                assert_eq!(
                    gc.report.report_file.as_deref(),
                    Some(Path::new("/dev/termination-log"))
                );
            }
            Command::PurgeUploads(purge) => {
                assert_eq!(purge.older_than.as_secs(), 72 * 3600);
                assert!(!purge.dry_run);
            }
            Command::Copy(_) => panic!("the operator never runs stowage copy"),
            Command::Retention(_) => panic!("no retention rules were asked for"),
            Command::Replicate(_) => panic!("no replication was asked for"),
            Command::Usage(_) => panic!("the operator never runs stowage usage"),
        }
    }
}

#[test]
fn a_rotating_key_reaches_every_pod() {
    let registry = registry(json!({
        "replicas": 2,
        "storage": {"s3": {"bucket": "images", "credentialsSecret": {"name": "s3-creds"}}},
        "uploadKey": {"rotation": "2026-11"}
    }));
    let cluster = cluster(&registry, true);
    for (what, pod) in pods(&registry, &cluster) {
        let root = tempfile::tempdir().expect("tempdir");
        materialize(root.path(), &cluster, &pod, &pod.containers[0]);
        let key_dir = root.path().join("etc/stowage/upload-key");
        assert_eq!(
            std::fs::read_to_string(key_dir.join("previous")).expect("previous"),
            "k".repeat(64),
            "{what}"
        );
        let (_, config) = resolve(&cluster, &pod, &pod.containers[0]);
        assert!(config.keys.is_some(), "{what}");
    }
}

#[test]
fn filesystem_pods_use_the_volume() {
    let registry = registry(json!({"storage": {"filesystem": {"size": "5Gi"}}}));
    let cluster = cluster(&registry, false);
    for (what, pod) in pods(&registry, &cluster) {
        let (_, config) = resolve(&cluster, &pod, &pod.containers[0]);
        let StorageConfig::Filesystem { root, fsync } = &config.storage else {
            panic!("{what}: not filesystem: {:?}", config.storage);
        };
        assert!(
            root.ends_with("var/lib/stowage"),
            "{what}: {}",
            root.display()
        );
        assert!(*fsync);
        assert!(!config.api.read_only);
        assert!(config.api.deletes_enabled);
    }
}

#[test]
fn the_probes_name_the_servers_health_endpoints() {
    let registry = registry(json!({"storage": {"s3": {"bucket": "images"}}}));
    let cluster = cluster(&registry, false);
    let (_, pod) = pods(&registry, &cluster).remove(0);
    let container = &pod.containers[0];
    let path = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
        probe
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
            .expect("path")
    };
    // The same routes the server's own tests serve.
    assert_eq!(
        path(container.readiness_probe.as_ref()),
        stowage::api::READINESS_PATH
    );
    assert_eq!(
        path(container.liveness_probe.as_ref()),
        stowage::api::LIVENESS_PATH
    );
}

/// A Secret with `data`, as the cluster would hold it.
fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            ..k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    }
}

#[test]
fn access_control_and_tls_load_in_the_server() {
    let registry = registry(json!({
        "replicas": 2,
        "storage": {"s3": {"bucket": "images", "credentialsSecret": {"name": "s3-creds"}}},
        "auth": {
            "htpasswd": {"name": "accounts", "key": "users"},
            "groups": {"team-a": ["alice"]},
            "rules": [{"repositories": ["team-a/**"], "subjects": ["group:team-a"], "actions": ["pull", "push"]},
                      {"repositories": ["**"], "subjects": ["group:system:serviceaccounts:ci"], "actions": ["pull"]}],
            "anonymousPull": true,
            "challenge": "basic",
            "tokenIssuer": {"realm": "https://auth.example/token", "service": "registry", "issuer": "auth",
                            "rootCertBundle": {"name": "issuer-ca"}},
            "workloadIdentity": {"audience": "registry"}
        },
        "tls": {"secretName": "images-tls"}
    }));
    let mut cluster = cluster(&registry, false);
    let ca = stowage_e2e::tls::TestCa::new();
    let served = ca.issue();
    let facts = ClusterFacts {
        service_account_issuer: Some("https://kubernetes.default.svc.cluster.local".to_owned()),
        ..ClusterFacts::default()
    };
    cluster.config_map =
        resources::config_map(&registry, resources::server_config(&registry, &facts));
    cluster.cluster_ca = ca.cert_pem();
    let hash = bcrypt::hash("alice-pw", 4).expect("bcrypt");
    cluster.secrets.extend([
        resources::new_key_secret(&registry, KeyKind::Token, "t".repeat(64)),
        resources::policy_secret(&registry).expect("a policy"),
        secret("accounts", &[("users", &format!("alice:{hash}\n"))]),
        secret("issuer-ca", &[("ca.crt", &ca.cert_pem())]),
        secret(
            "images-tls",
            &[("tls.crt", &served.cert_pem), ("tls.key", &served.key_pem)],
        ),
    ]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (what, pod) in pods(&registry, &cluster) {
        let root = tempfile::tempdir().expect("tempdir");
        let (command, config) = resolve_at(root.path(), &cluster, &pod, &pod.containers[0]);
        if !matches!(command, Command::Serve(_)) {
            assert!(config.auth.is_none() && config.tls.is_none(), "{what}");
            continue;
        }
        let auth = config.auth.clone().expect("access control is on");
        assert!(auth.anonymous_pull);
        assert_eq!(auth.challenge, stowage::auth::ChallengeScheme::Basic);
        let kubernetes = auth.kubernetes.as_ref().expect("workload identity");
        assert_eq!(kubernetes.audience, "registry");
        assert_eq!(
            kubernetes.jwks_url.as_deref(),
            Some(resources::CLUSTER_JWKS_URL)
        );
        // The server loads every file the pod mounts: accounts, policy, the issuer's
        // certificates, the cluster CA, and the certificate it serves.
        let loaded = runtime.block_on(stowage::auth::Auth::start(auth));
        let auth = loaded.unwrap_or_else(|e| panic!("the server refuses its access control: {e}"));
        let alice = stowage::auth::Principal::User("alice".to_owned());
        assert_eq!(
            auth.allowed(&alice, "team-a/app"),
            stowage::auth::Actions::from(stowage::auth::Action::Pull)
                .with(stowage::auth::Action::Push)
        );
        let (cert, key) = config.tls.clone().expect("HTTPS");
        let tls = runtime
            .block_on(async { stowage::tls::ServerTls::start(cert, key, config.reload_interval) });
        assert!(
            tls.is_ok(),
            "the server refuses its certificate: {:?}",
            tls.err()
        );
    }
}

#[test]
fn proxy_upstreams_load_in_the_server_and_reach_gc() {
    let registry = registry(json!({
        "storage": {"s3": {"bucket": "images", "credentialsSecret": {"name": "s3-creds"}}},
        "proxy": {
            "retention": "720h",
            "upstreams": [
                {"prefix": "docker.io", "url": "https://registry-1.docker.io", "credentialsSecret": "hub"},
                {"prefix": "ghcr.io", "url": "https://ghcr.io", "credentialsSecret": "ghcr", "tagTtl": "1m"},
                {"prefix": "quay.io", "url": "https://quay.io"}
            ]
        }
    }));
    let mut cluster = cluster(&registry, false);
    cluster.secrets.extend([
        secret("hub", &[("username", "puller"), ("password", "hub-token")]),
        secret("ghcr", &[("token", "ghp_x")]),
    ]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut served = false;
    for (what, pod) in pods(&registry, &cluster) {
        let root = tempfile::tempdir().expect("tempdir");
        let (command, config) = resolve_at(root.path(), &cluster, &pod, &pod.containers[0]);
        assert_eq!(config.proxy.upstreams.len(), 3, "{what}");
        match command {
            Command::Serve(_) => {
                served = true;
                let proxy = runtime.block_on(async {
                    stowage::proxy::Proxy::new(&config.proxy, config.reload_interval, None)
                });
                let proxy = proxy
                    .unwrap_or_else(|e| panic!("the server refuses its upstreams: {e}"))
                    .expect("a proxy");
                let name = "docker.io/alpine".parse().expect("a name");
                let route = proxy.route(&name).expect("docker.io is mirrored");
                assert_eq!(route.remote, "library/alpine");
                assert!(proxy.route(&"team/app".parse().expect("a name")).is_none());
            }
            Command::Gc(_) => {
                assert_eq!(
                    config.proxy.retention,
                    Some(std::time::Duration::from_secs(720 * 3600)),
                    "gc knows the retention"
                );
            }
            _ => {}
        }
    }
    assert!(served, "a serving pod was checked");
}

#[test]
fn notification_endpoints_load_in_the_server() {
    let registry = registry(json!({
        "storage": {"s3": {"bucket": "images", "credentialsSecret": {"name": "s3-creds"}}},
        "notifications": {"endpoints": [{
            "name": "scanner",
            "url": "https://scanner.example/events",
            "secretHeaders": {"Authorization": {"name": "scanner", "key": "auth"}},
            "signingKey": {"name": "scanner", "key": "hmac"},
            "ignoredActions": ["pull"]
        }]}
    }));
    let mut cluster = cluster(&registry, false);
    cluster.secrets.push(secret(
        "scanner",
        &[("auth", "Bearer t0ken"), ("hmac", "k3y")],
    ));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut served = false;
    for (_, pod) in pods(&registry, &cluster) {
        let root = tempfile::tempdir().expect("tempdir");
        let (command, config) = resolve_at(root.path(), &cluster, &pod, &pod.containers[0]);
        if !matches!(command, Command::Serve(_)) {
            continue;
        }
        served = true;
        let endpoint = &config.notifications[0];
        assert!(endpoint.ignored_actions.contains("pull"));
        // The files the config names are the Secret's keys, as the pod mounts them.
        let header =
            std::fs::read_to_string(&endpoint.header_files["Authorization"]).expect("mounted");
        assert_eq!(header, "Bearer t0ken");
        let key = std::fs::read_to_string(endpoint.signing_key_file.as_ref().expect("a key"))
            .expect("mounted");
        assert_eq!(key, "k3y");
        let store: std::sync::Arc<dyn stowage::storage::BlobStore> =
            std::sync::Arc::new(stowage::storage::MemoryStore::default());
        let started = runtime.block_on(async {
            let outlets = stowage::events::webhooks(&config.notifications, None)
                .expect("the server takes its endpoints");
            stowage::events::Notifier::start(outlets, store, "pod:5000".into(), "http")
        });
        assert!(started.is_some());
    }
    assert!(served);
}

#[test]
fn replication_rules_load_in_the_server_and_the_reconciliation_job() {
    let registry = registry(json!({
        "storage": {"s3": {"bucket": "images", "credentialsSecret": {"name": "s3-creds"}}},
        "replication": {"rules": [{
            "name": "dr",
            "url": "https://registry.dr.example",
            "repositories": ["team/**"],
            "prefix": "mirror/",
            "deletes": true,
            "credentialsSecret": "dr-push",
            "tls": {"ca": {"name": "dr-ca", "key": "ca.crt"}},
            "bandwidth": "50MiB",
            "jobs": 2
        }], "reconciliation": {"schedule": "*/20 * * * *"}}
    }));
    let ca = rcgen::generate_simple_self_signed(vec!["registry.dr.example".to_owned()])
        .expect("a certificate");
    let mut cluster = cluster(&registry, false);
    cluster.secrets.push(secret(
        "dr-push",
        &[("username", "replicator"), ("password", "pa55")],
    ));
    cluster
        .secrets
        .push(secret("dr-ca", &[("ca.crt", &ca.cert.pem())]));
    let job = resources::cron_job(&registry, &cluster.inputs, Task::Replication);
    assert_eq!(
        job.spec.as_ref().map(|s| s.schedule.as_str()),
        Some("*/20 * * * *")
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut checked = Vec::new();
    for (what, pod) in pods(&registry, &cluster) {
        let root = tempfile::tempdir().expect("tempdir");
        let (command, config) = resolve_at(root.path(), &cluster, &pod, &pod.containers[0]);
        let rule = &config.replication[0];
        assert_eq!(rule.url.as_str(), "https://registry.dr.example/", "{what}");
        assert_eq!((rule.prefix.as_str(), rule.deletes), ("mirror/", true));
        assert_eq!((rule.bandwidth, rule.jobs), (Some(50 << 20), 2));
        assert_eq!(rule.reconcile_every, None, "{what}: the CronJob reconciles");
        // The server builds the rule's client from the mounted files: the credentials and
        // the CA certificate parse.
        let rules = runtime.block_on(async { stowage::replication::rules(&config.replication) });
        let rules = rules.unwrap_or_else(|e| panic!("{what}: the server refuses the rule: {e}"));
        assert_eq!(rules[0].name(), "dr");
        if let Command::Replicate(replicate) = &command {
            assert!(replicate.once && !replicate.dry_run, "{what}");
            assert_eq!(
                replicate.report.report_file.as_deref(),
                Some(Path::new("/dev/termination-log"))
            );
            assert_eq!(replicate.report.output, stowage::report::OutputFormat::Json);
        }
        checked.push(what);
    }
    assert!(checked.contains(&"deployment".to_owned()));
    assert!(checked.contains(&"replicate".to_owned()));
}

#[test]
fn the_blob_cache_and_its_redis_url_load_in_the_server() {
    let registry = registry(json!({
        "storage": {"s3": {"bucket": "images", "credentialsSecret": {"name": "s3-creds"}}},
        "blobCache": {"entries": 5000, "redisUrl": {"name": "redis", "key": "url"}}
    }));
    let mut cluster = cluster(&registry, false);
    cluster.secrets.push(secret(
        "redis",
        &[("url", "redis://cache:s3cret@redis.cache.svc:6379/1")],
    ));
    let mut served = false;
    for (_, pod) in pods(&registry, &cluster) {
        let root = tempfile::tempdir().expect("tempdir");
        let (command, config) = resolve_at(root.path(), &cluster, &pod, &pod.containers[0]);
        if !matches!(command, Command::Serve(_)) {
            continue;
        }
        served = true;
        assert_eq!(config.blob_cache.entries, 5000);
        let url = config
            .blob_cache
            .redis
            .as_ref()
            .expect("the Redis URL, read from the Secret");
        // The password is the Secret's, and never printed.
        assert_eq!(format!("{url:?}"), "redis://redis.cache.svc:6379/1");
        assert_eq!(
            url,
            &stowage::registry::descriptors::RedisUrl::parse(
                "redis://cache:s3cret@redis.cache.svc:6379/1"
            )
            .expect("a URL")
        );
    }
    assert!(served);
}

/// The storage every pod of `registry` resolves (the server and both maintenance jobs), with
/// its files laid out under a directory of its own in `root`.
fn storage_of_every_pod(
    root: &Path,
    registry: &Registry,
    cluster: &Cluster,
) -> Vec<(String, StorageConfig)> {
    pods(registry, cluster)
        .into_iter()
        .map(|(what, pod)| {
            let root = root.join(&what);
            let (_, config) = resolve_at(&root, cluster, &pod, &pod.containers[0]);
            (what, config.storage)
        })
        .collect()
}

#[test]
fn azure_pods_sign_in_the_way_the_registry_asks() {
    let azure = |sign_in: serde_json::Value| {
        let mut azure = json!({
            "account": "registrydata", "container": "images", "rootPrefix": "team-a",
            "endpoint": "http://azurite.storage:10000/registrydata", "redirect": true
        });
        azure
            .as_object_mut()
            .unwrap()
            .extend(sign_in.as_object().unwrap().clone());
        registry(json!({"replicas": 3, "storage": {"azure": azure}}))
    };
    let cases = [
        (
            azure(json!({"accessKeySecret": {"name": "azure-storage"}})),
            "access key: the-shared-key",
        ),
        (
            azure(json!({"sasTokenSecret": {"name": "azure-storage", "key": "sas"}})),
            "sas: sv=2024&sig=abc",
        ),
        (
            azure(
                json!({"clientSecret": {"tenantId": "t-1", "clientId": "c-1",
                "secret": {"name": "azure-storage"}}}),
            ),
            "client secret: t-1 c-1 app-secret",
        ),
        (
            azure(json!({"workloadIdentity": {"clientId": "c-1"}})),
            "environment",
        ),
    ];
    for (registry, expected) in cases {
        let mut cluster = cluster(&registry, false);
        cluster.secrets.push(secret(
            "azure-storage",
            &[
                ("accessKey", "the-shared-key\n"),
                ("sas", "?sv=2024&sig=abc"),
                ("clientSecret", "app-secret"),
            ],
        ));
        let root = tempfile::tempdir().expect("tempdir");
        for (what, storage) in storage_of_every_pod(root.path(), &registry, &cluster) {
            let StorageConfig::Azure(azure) = storage else {
                panic!("{what}: not Azure: {storage:?}");
            };
            assert_eq!(
                (azure.account.as_str(), azure.container.as_str()),
                ("registrydata", "images"),
                "{what}"
            );
            assert_eq!(
                azure.endpoint.as_deref(),
                Some("http://azurite.storage:10000/registrydata")
            );
            assert_eq!(azure.settings.root_prefix, "team-a", "{what}");
            assert!(azure.settings.redirect, "{what}");
            let signed_in = match &azure.credentials {
                stowage::storage::AzureCredentials::AccessKey(key) => format!("access key: {key}"),
                stowage::storage::AzureCredentials::Sas(sas) => {
                    format!("sas: {}", sas.trim_start_matches('?'))
                }
                stowage::storage::AzureCredentials::ClientSecret {
                    tenant_id,
                    client_id,
                    secret,
                } => format!("client secret: {tenant_id} {client_id} {secret}"),
                stowage::storage::AzureCredentials::Environment => "environment".to_owned(),
            };
            assert_eq!(signed_in, expected, "{what}");
        }
    }
}

#[test]
fn gcs_pods_sign_in_the_way_the_registry_asks() {
    let gcs = |sign_in: serde_json::Value| {
        let mut gcs = json!({"bucket": "images", "endpoint": "http://fake-gcs:4443"});
        gcs.as_object_mut()
            .unwrap()
            .extend(sign_in.as_object().unwrap().clone());
        registry(json!({"replicas": 2, "storage": {"gcs": gcs}}))
    };
    for (registry, expected) in [
        (
            gcs(json!({"credentialsSecret": {"name": "gcs-key"}})),
            "key file",
        ),
        (gcs(json!({"anonymous": true})), "anonymous"),
        (
            gcs(json!({"workloadIdentity": {"serviceAccount": "r@p.iam.gserviceaccount.com"}})),
            "environment",
        ),
    ] {
        let mut cluster = cluster(&registry, false);
        cluster.secrets.push(secret(
            "gcs-key",
            &[("key.json", r#"{"type":"service_account"}"#)],
        ));
        let root = tempfile::tempdir().expect("tempdir");
        for (what, storage) in storage_of_every_pod(root.path(), &registry, &cluster) {
            let StorageConfig::Gcs(gcs) = storage else {
                panic!("{what}: not GCS: {storage:?}");
            };
            assert_eq!(gcs.bucket, "images", "{what}");
            assert_eq!(gcs.endpoint.as_deref(), Some("http://fake-gcs:4443"));
            let signed_in = match &gcs.credentials {
                stowage::storage::GcsCredentials::KeyFile(path) => {
                    assert_eq!(
                        std::fs::read_to_string(path).expect("the mounted key"),
                        r#"{"type":"service_account"}"#,
                        "{what}"
                    );
                    "key file"
                }
                stowage::storage::GcsCredentials::Anonymous => "anonymous",
                stowage::storage::GcsCredentials::Environment => "environment",
            };
            assert_eq!(signed_in, expected, "{what}");
        }
    }
}

#[test]
fn retention_rules_load_in_the_server_and_its_job_reads_the_digests_in_use() {
    let registry = registry(json!({
        "storage": {"s3": {"bucket": "images", "credentialsSecret": {"name": "s3-creds"}}},
        "policies": {
            "immutableTags": [{"name": "releases", "repositories": ["team/**"], "tags": ["v*"]}],
            "retention": [
                {"name": "builds", "repositories": ["team/**"], "tags": ["build-*"],
                 "mostRecentlyPushed": 10, "pushedWithin": "30d", "untaggedOlderThan": "7d"},
                {"name": "releases", "repositories": ["team/**"],
                 "semver": {"range": ">=1.0.0", "newestPer": "minor", "count": 3}, "keepReferrers": true}
            ],
            "retentionRun": {"schedule": "15 1 * * *"}
        }
    }));
    let mut cluster = cluster(&registry, false);
    cluster.inputs.in_use_digests = InUseDigests::Collected;
    let running = format!("sha256:{}", "a".repeat(64));
    let seen = [(running.clone(), 1_764_748_800)].into();
    cluster
        .other_config_maps
        .push(resources::in_use_config_map(&registry, &seen));
    let job = resources::cron_job(&registry, &cluster.inputs, Task::Retention);
    assert_eq!(
        job.spec.as_ref().map(|s| s.schedule.as_str()),
        Some("15 1 * * *")
    );
    let mut checked = Vec::new();
    for (what, pod) in pods(&registry, &cluster) {
        let root = tempfile::tempdir().expect("tempdir");
        let (command, config) = resolve_at(root.path(), &cluster, &pod, &pod.containers[0]);
        let retention = config.policies.retention();
        assert!(
            retention.covers("team/app") && !retention.covers("other/app"),
            "{what}"
        );
        assert!(
            config.policies.immutable("team/app", "v1").is_some(),
            "{what}"
        );
        if let Command::Retention(args) = &command {
            assert!(args.dry_run, "rules never run before run dry");
            let file = args.in_use_file.as_ref().expect("the digests in use");
            let text = std::fs::read_to_string(file).expect("the mounted digests");
            let digests = stowage::cli::digests_in_use(&text).expect("the server reads them");
            assert_eq!(digests.len(), 1);
            assert!(digests.contains(&running.parse().expect("a digest")));
            assert_eq!(
                args.report.report_file.as_deref(),
                Some(Path::new("/dev/termination-log"))
            );
        }
        checked.push(what);
    }
    assert!(checked.contains(&"retention".to_owned()), "{checked:?}");
}
