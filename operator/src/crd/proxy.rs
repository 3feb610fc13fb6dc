//! `spec.proxy`: the pull-through cache, repositories below each prefix mirroring an upstream.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// Upstream registries this registry mirrors, beside its own repositories.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Proxy {
    /// The upstreams, each serving the repositories below its own prefix: a list keyed by
    /// `prefix`, so the API server refuses two of one prefix.
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["prefix".into()]))]
    pub upstreams: Vec<Upstream>,

    /// Mirrored repositories nobody pulled for this long are removed by garbage collection
    /// (`720h`). Unset: they are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(s|m|h|d))+$"))]
    pub retention: Option<String>,
}

/// One upstream registry.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "self.url.startsWith('https://') || self.url.startsWith('http://')"
).message("url needs its scheme: https:// or http://"))]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Repositories below this name mirror the upstream: with `docker.io`, a pull of
    /// `docker.io/library/alpine` (or, for Docker Hub, `docker.io/alpine`) comes from it.
    #[schemars(
        length(min = 1, max = 200),
        pattern(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
    )]
    pub prefix: String,

    /// The upstream registry, such as `https://registry-1.docker.io` or `https://ghcr.io`.
    #[schemars(length(min = 8, max = 512))]
    pub url: String,

    /// A Secret in the Registry's namespace with `username` and `password` keys (a password or
    /// an access token), or a `token` key sent as a bearer token. Read again when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = bounds::NAME))]
    pub credentials_secret: Option<String>,

    /// How long a cached tag is served before the upstream is asked whether it moved.
    #[serde(default = "tag_ttl")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub tag_ttl: String,

    /// When the upstream is down, serve cached tags anyway (with a `Warning` header).
    #[serde(default = "yes")]
    pub serve_stale: bool,
}

fn tag_ttl() -> String {
    "5m".to_owned()
}

fn yes() -> bool {
    true
}
