//! The digests pods run, collected for retention: every container, init container and
//! ephemeral container status's `imageID`, of pods in any phase (a finished Job's pods count
//! while they exist), in the namespaces the operator was given. They are written with when
//! each was last seen, so a digest stays protected for a while after its pods go.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::children::apply;
use super::{Error, kube_error};
use crate::crd::Registry;
use crate::resources::{self, InUseDigests};

/// Where the operator reads pods for the digests in use.
#[derive(Clone, Debug)]
pub struct InUseScope {
    /// The namespaces read; every namespace when empty.
    pub namespaces: Vec<String>,
    /// How long a digest stays in use after the last pod running it was seen.
    pub keep_for: Duration,
}

/// Pods are listed at most this often, however many Registries ask.
const LIST_EVERY: Duration = Duration::from_secs(60);
/// Pods listed per request.
const PAGE: u32 = 500;

/// The digests running now, listed at most once per [`LIST_EVERY`] for every Registry.
#[derive(Default)]
pub struct Collector {
    listed: tokio::sync::Mutex<Option<(Instant, BTreeSet<String>)>>,
}

impl Collector {
    async fn running(
        &self,
        client: &Client,
        scope: &InUseScope,
    ) -> Result<BTreeSet<String>, Error> {
        let mut listed = self.listed.lock().await;
        if let Some((at, digests)) = listed.as_ref()
            && at.elapsed() < LIST_EVERY
        {
            return Ok(digests.clone());
        }
        let apis: Vec<Api<Pod>> = if scope.namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            scope
                .namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        };
        let mut digests = BTreeSet::new();
        for api in apis {
            let mut params = ListParams::default().limit(PAGE);
            loop {
                let page = api
                    .list(&params)
                    .await
                    .map_err(kube_error("listing pods for the digests in use"))?;
                digests.extend(page.items.iter().flat_map(image_digests));
                match page.metadata.continue_.filter(|token| !token.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
        }
        *listed = Some((Instant::now(), digests.clone()));
        Ok(digests)
    }

    /// Brings the Registry's in-use ConfigMap up to date: what runs now, and what ran within
    /// `keep_for`.
    pub async fn record(
        &self,
        client: &Client,
        registry: &Registry,
        namespace: &str,
        scope: &InUseScope,
    ) -> Result<InUseDigests, Error> {
        let running = self.running(client, scope).await?;
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let name = resources::in_use_config_map_name(registry);
        let previous = maps
            .get_opt(&name)
            .await
            .map_err(kube_error(format!("reading ConfigMap {name}")))?;
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let keep_for = i64::try_from(scope.keep_for.as_secs()).unwrap_or(i64::MAX);
        let (seen, state) = resources::in_use(
            resources::last_seen(previous.as_ref()),
            running,
            now,
            keep_for,
        );
        apply(
            client,
            namespace,
            &resources::in_use_config_map(registry, &seen),
        )
        .await?;
        if state == InUseDigests::TooMany {
            tracing::warn!(registry = %registry.name_any(), "more digests in use than a ConfigMap holds: retention runs dry");
        }
        Ok(state)
    }
}

/// The digests a pod's containers run.
fn image_digests(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let status = pod.status.as_ref();
    let statuses = [
        status.and_then(|s| s.container_statuses.as_ref()),
        status.and_then(|s| s.init_container_statuses.as_ref()),
        status.and_then(|s| s.ephemeral_container_statuses.as_ref()),
    ];
    statuses
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|container| resources::digest_of_image_id(&container.image_id))
        .map(str::to_owned)
}
