//! A small in-memory Kubernetes API server behind a tower-test mock: it stores what is created
//! and applied, answers gets, lists (with label selectors) and deletes, merges status patches,
//! records every request, and fails the requests a test asks it to.

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
    requests: Vec<Recorded>,
    faults: Vec<Fault>,
    version: u64,
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
        state.requests.push(Recorded {
            method: method.clone(),
            path: path.to_owned(),
            verbs,
            group: target.group.clone(),
            resource: match &target.subresource {
                Some(sub) => format!("{}/{sub}", target.resource),
                None => target.resource.clone(),
            },
            body: body.clone(),
        });
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
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|(key, _)| {
                        key.strip_prefix(&target.collection)
                            .is_some_and(|rest| rest.matches('/').count() == 1)
                    })
                    .map(|(_, object)| object.clone())
                    .filter(|object| {
                        selector
                            .iter()
                            .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v))
                    })
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version}, "items": items}),
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
                    let mut object = body;
                    if let Some(old) = old.as_ref().filter(|o| !o["status"].is_null()) {
                        object["status"] = old["status"].clone();
                    }
                    stamp(&mut object, &version, old.as_ref());
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
            ("DELETE", Some(_)) => match state.objects.remove(path) {
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
