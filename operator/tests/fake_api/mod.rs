//! A small in-memory Kubernetes API server behind a tower-test mock: it stores what is created
//! and applied, answers gets, lists (with label selectors) and deletes, merges status patches,
//! records every request, fails the requests a test asks it to, and can delete a namespace as
//! the API server does.
//!
//! Server-side apply is modelled as the API server does it, where it matters to the operator:
//! the object is the merge of every field manager's applied configuration, and `spec.replicas`
//! has owners: a forced apply takes it from the others, an update through `/scale` (the
//! autoscaler) takes it from every applier, and when nobody owns it any more the field is reset
//! to its default. `metadata.managedFields` shows who owns it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request the operator made.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    /// The RBAC verbs it needs: `patch` (and `create` when an apply made the object), `get`…
    pub verbs: Vec<&'static str>,
    pub group: String,
    /// The resource, with `/subresource` if any.
    pub resource: String,
    pub body: Value,
}

struct Fault {
    method: Method,
    path_suffix: String,
    code: u16,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    /// Per object, each field manager's applied configuration, oldest applier first.
    applied: BTreeMap<String, Vec<(String, Value)>>,
    /// Per object, the manager that last set `spec.replicas` through `/scale`, and the value.
    scaled: BTreeMap<String, (String, i64)>,
    requests: Vec<Recorded>,
    faults: Vec<Fault>,
    version: u64,
    /// The namespace is being deleted: nothing new may be created in it.
    terminating: bool,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// A request path, taken apart.
struct Target {
    group: String,
    /// `/api/v1/namespaces/ns/secrets` or the like: where the objects of the kind live.
    collection: String,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match *segments.first()? {
        "api" => (String::new(), &segments[2..]),
        "apis" => ((*segments.get(1)?).to_owned(), &segments[3..]),
        _ => return None,
    };
    let prefix_len = segments.len() - rest.len();
    let (rest, namespaced) = match rest {
        ["namespaces", _ns, tail @ ..] => (tail, true),
        tail => (tail, false),
    };
    let resource = (*rest.first()?).to_owned();
    let collection_len = prefix_len + if namespaced { 3 } else { 1 };
    Some(Target {
        group,
        collection: format!("/{}", segments[..collection_len].join("/")),
        resource,
        name: rest.get(1).map(|s| (*s).to_owned()),
        subresource: rest.get(2).map(|s| (*s).to_owned()),
    })
}

impl FakeApi {
    /// A client talking to a new fake API server.
    pub fn start() -> (Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = Self {
            state: Arc::new(Mutex::new(State::default())),
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let response = server.handle(request).await;
                respond.send_response(response);
            }
        });
        (Client::new(service, "default"), fake)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored object at `path`, such as `/apis/apps/v1/namespaces/ns/deployments/x`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state().objects.get(path).cloned()
    }

    /// Stores `object` at `path`, as if someone had created it.
    pub fn put(&self, path: &str, mut object: Value) {
        let mut state = self.state();
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        state.objects.insert(path.to_owned(), object);
    }

    /// Changes the stored object at `path` with `change`.
    pub fn update(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        let object = state.objects.get_mut(path).expect("object to update");
        change(object);
    }

    /// Sets `spec.replicas` through the `/scale` subresource as `manager`, as the
    /// HorizontalPodAutoscaler (`kube-controller-manager`) or `kubectl scale` do: an update,
    /// which takes the field from every applier.
    pub fn scale(&self, path: &str, manager: &str, replicas: i64) {
        let mut state = self.state();
        for (_, config) in state.applied.entry(path.to_owned()).or_default() {
            forget_replicas(config);
        }
        state
            .scaled
            .insert(path.to_owned(), (manager.to_owned(), replicas));
        let object = state.objects.get_mut(path).expect("object to scale");
        object["spec"]["replicas"] = json!(replicas);
        let managed = managed_fields(&state, path);
        if let Some(object) = state.objects.get_mut(path) {
            object["metadata"]["managedFields"] = managed;
        }
    }

    /// The field managers that own `spec.replicas` of the object at `path`.
    pub fn replicas_owners(&self, path: &str) -> Vec<String> {
        let state = self.state();
        managed_fields(&state, path)
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| !entry["fieldsV1"]["f:spec"]["f:replicas"].is_null())
            .filter_map(|entry| entry["manager"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Answers `code` to every `method` request whose path ends with `path_suffix`.
    pub fn fail(&self, method: Method, path_suffix: &str, code: u16) {
        self.state().faults.push(Fault {
            method,
            path_suffix: path_suffix.to_owned(),
            code,
        });
    }

    pub fn heal(&self) {
        self.state().faults.clear();
    }

    /// Starts deleting the namespace as the API server does: its contents go (here, all but the
    /// Registries, which the namespace controller may reach last) and creating anything in it
    /// is refused.
    pub fn delete_namespace(&self) {
        let mut state = self.state();
        state.terminating = true;
        state
            .objects
            .retain(|path, _| path.contains("/registries/"));
        state
            .applied
            .retain(|path, _| path.contains("/registries/"));
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        let (code, response) = self.answer(&method, &path, &query, &content_type, body);
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&response).expect("JSON")))
            .expect("response")
    }

    fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let Some(target) = parse_path(path) else {
            return status(StatusCode::NOT_FOUND, "no such path");
        };
        let mut state = self.state();
        let exists = state
            .objects
            .contains_key(path_without_subresource(path, &target).as_str());
        let is_apply = content_type.starts_with("application/apply-patch");
        let verbs = match (method.as_str(), &target.name) {
            ("GET", None) if query.contains("watch=true") => vec!["watch"],
            ("GET", None) => vec!["list"],
            ("GET", Some(_)) => vec!["get"],
            ("POST", _) => vec!["create"],
            ("PATCH", _) if is_apply && !exists => vec!["patch", "create"],
            ("PATCH", _) => vec!["patch"],
            ("PUT", _) => vec!["update"],
            ("DELETE", _) => vec!["delete"],
            _ => vec!["unknown"],
        };
        let creates = verbs.contains(&"create");
        state.requests.push(Recorded {
            method: method.clone(),
            path: path.to_owned(),
            query: query.to_owned(),
            verbs,
            group: target.group.clone(),
            resource: match &target.subresource {
                Some(sub) => format!("{}/{sub}", target.resource),
                None => target.resource.clone(),
            },
            body: body.clone(),
        });
        if state.terminating && creates {
            return namespace_terminating(&target.resource);
        }
        if let Some(fault) = state
            .faults
            .iter()
            .find(|f| f.method == method && path.ends_with(&f.path_suffix))
        {
            let code = StatusCode::from_u16(fault.code).expect("status code");
            return status(code, "injected failure");
        }
        state.version += 1;
        let version = state.version.to_string();
        match (method.as_str(), &target.name) {
            ("GET", None) => {
                let selector = label_selector(query);
                // A list across namespaces (`/api/v1/pods`) holds the kind's objects in all.
                let across_namespaces = !target.collection.contains("/namespaces/");
                let in_list = |key: &str| match parse_path(key) {
                    Some(item) if item.name.is_some() && item.subresource.is_none() => {
                        item.collection == target.collection
                            || (across_namespaces
                                && item.group == target.group
                                && item.resource == target.resource)
                    }
                    _ => false,
                };
                let mut items: Vec<(&String, Value)> = state
                    .objects
                    .iter()
                    .filter(|(key, _)| in_list(key))
                    .map(|(key, object)| (key, object.clone()))
                    .filter(|(_, object)| {
                        selector
                            .iter()
                            .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v))
                    })
                    .collect();
                items.sort_by(|a, b| a.0.cmp(b.0));
                // Pages of `limit`, the `continue` token being the offset of the next.
                let start: usize = query_value(query, "continue")
                    .and_then(|token| token.parse().ok())
                    .unwrap_or(0);
                let limit: usize = query_value(query, "limit")
                    .and_then(|limit| limit.parse().ok())
                    .unwrap_or(usize::MAX);
                let end = start.saturating_add(limit).min(items.len());
                let page: Vec<Value> = items[start.min(end)..end]
                    .iter()
                    .map(|(_, object)| object.clone())
                    .collect();
                let mut metadata = json!({"resourceVersion": version});
                if end < items.len() {
                    metadata["continue"] = json!(end.to_string());
                }
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": page}),
                )
            }
            ("GET", Some(_)) => match state.objects.get(path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => status(StatusCode::NOT_FOUND, "not found"),
            },
            ("POST", _) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("generated")
                    .to_owned();
                let key = format!("{}/{name}", target.collection);
                if state.objects.contains_key(&key) {
                    return status(StatusCode::CONFLICT, "already exists");
                }
                let mut object = body;
                stamp(&mut object, &version, None);
                state.objects.insert(key, object.clone());
                (StatusCode::CREATED, object)
            }
            ("PATCH", Some(_)) => {
                let key = path_without_subresource(path, &target);
                let old = state.objects.get(&key).cloned();
                let object = if is_apply {
                    let manager = query_value(query, "fieldManager").unwrap_or_default();
                    let mut object = server_side_apply(&mut state, &key, &manager, body);
                    if let Some(old) = old.as_ref().filter(|o| !o["status"].is_null()) {
                        object["status"] = old["status"].clone();
                    }
                    stamp(&mut object, &version, old.as_ref());
                    object["metadata"]["managedFields"] = managed_fields(&state, &key);
                    object
                } else {
                    let Some(mut object) = old else {
                        return status(StatusCode::NOT_FOUND, "not found");
                    };
                    merge(&mut object, &body);
                    object["metadata"]["resourceVersion"] = json!(version);
                    object
                };
                state.objects.insert(key, object.clone());
                (StatusCode::OK, object)
            }
            ("DELETE", Some(_)) => match state.objects.remove(path).inspect(|_| {
                state.applied.remove(path);
                state.scaled.remove(path);
            }) {
                Some(_) => (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                None => status(StatusCode::NOT_FOUND, "not found"),
            },
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "not supported by the fake"),
        }
    }
}

/// The object `manager`'s apply of `body` makes: every applier's configuration merged, this
/// one's last, with `spec.replicas` owned as the API server would own it.
fn server_side_apply(state: &mut State, key: &str, manager: &str, body: Value) -> Value {
    let applies_replicas = !body["spec"]["replicas"].is_null();
    let configs = state.applied.entry(key.to_owned()).or_default();
    configs.retain(|(m, _)| m != manager);
    if applies_replicas {
        // A forced apply takes the field from owners that hold another value; equal values
        // are shared.
        for (_, config) in configs.iter_mut() {
            if config["spec"]["replicas"] != body["spec"]["replicas"] {
                forget_replicas(config);
            }
        }
        state.scaled.remove(key);
    }
    configs.push((manager.to_owned(), body));
    let mut object = json!({});
    for (_, config) in configs.iter() {
        merge(&mut object, config);
    }
    let is_deployment = object["kind"] == "Deployment";
    if object["spec"]["replicas"].is_null() && is_deployment {
        // Owned by the autoscaler's updates, or by nobody: then the API server's default.
        let replicas = state.scaled.get(key).map_or(1, |(_, replicas)| *replicas);
        object["spec"]["replicas"] = json!(replicas);
    }
    object
}

fn forget_replicas(config: &mut Value) {
    if let Some(spec) = config.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("replicas");
    }
}

/// `metadata.managedFields`, reduced to what the fake tracks: who applied, and who owns
/// `spec.replicas`.
fn managed_fields(state: &State, key: &str) -> Value {
    let replicas = json!({"f:spec": {"f:replicas": {}}});
    let mut entries: Vec<Value> = state
        .applied
        .get(key)
        .into_iter()
        .flatten()
        .map(|(manager, config)| {
            let fields = if config["spec"]["replicas"].is_null() {
                json!({"f:metadata": {}})
            } else {
                replicas.clone()
            };
            json!({"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields})
        })
        .collect();
    if let Some((manager, _)) = state.scaled.get(key) {
        entries.push(
            json!({"manager": manager, "operation": "Update", "subresource": "scale",
            "fieldsType": "FieldsV1", "fieldsV1": replicas}),
        );
    }
    Value::Array(entries)
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn path_without_subresource(path: &str, target: &Target) -> String {
    match (&target.name, &target.subresource) {
        (Some(name), Some(_)) => format!("{}/{name}", target.collection),
        _ => path.to_owned(),
    }
}

/// Sets what the API server sets: uid, resourceVersion, creationTimestamp, and a generation
/// that moves only when the spec does.
fn stamp(object: &mut Value, version: &str, old: Option<&Value>) {
    let spec_changed = old.is_none_or(|o| o["spec"] != object["spec"]);
    let metadata = &mut object["metadata"];
    metadata["resourceVersion"] = json!(version);
    let uid = old
        .map(|o| o["metadata"]["uid"].clone())
        .unwrap_or_else(|| json!(format!("uid-{version}")));
    metadata["uid"] = uid;
    metadata["creationTimestamp"] = old
        .map(|o| o["metadata"]["creationTimestamp"].clone())
        .unwrap_or_else(|| json!("2026-11-23T10:00:00Z"));
    let generation = old
        .and_then(|o| o["metadata"]["generation"].as_i64())
        .unwrap_or(0)
        + i64::from(spec_changed);
    metadata["generation"] = json!(generation);
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in patch {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge(&mut target[key], value);
        }
    }
}

fn label_selector(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("labelSelector="))
        .flat_map(|selector| {
            let decoded = selector
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/");
            decoded
                .split(',')
                .filter_map(|term| term.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What the API server answers a create in a namespace being deleted.
fn namespace_terminating(resource: &str) -> (StatusCode, Value) {
    (
        StatusCode::FORBIDDEN,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{resource} is forbidden: unable to create new content in namespace team-a because it is being terminated"),
            "reason": "Forbidden",
            "details": {"kind": resource, "causes": [{
                "reason": "NamespaceTerminating",
                "message": "namespace team-a is being terminated",
                "field": "metadata.namespace"
            }]},
            "code": 403
        }),
    )
}

/// A `Status` failure, with the machine-readable reason the API server gives.
fn status(code: StatusCode, message: &str) -> (StatusCode, Value) {
    let reason = match code.as_u16() {
        404 => "NotFound",
        409 => "AlreadyExists",
        405 => "MethodNotAllowed",
        _ => "InternalError",
    };
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16()
        }),
    )
}
