//! Retention on Kubernetes: the digests pods run, kept in a ConfigMap the retention job reads
//! so that nothing a workload uses is deleted, and the hash of the rules that tells whether
//! they have run dry once yet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, Volume, VolumeMount};
use kube::ResourceExt;
use sha2::{Digest as _, Sha256};

use super::owned_meta;
use crate::crd::{JobResult, Registry, RetentionOutcome};

/// Where the retention job finds the digests in use.
pub const IN_USE_PATH: &str = "/etc/stowage/in-use";
/// The ConfigMap's key: one digest a line, each with when a pod was last seen running it.
pub const IN_USE_KEY: &str = "digests";
/// Whether the operator collects digests, and whether they all fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InUseDigests {
    /// Not collected (the operator was not given pods to read): the rules alone decide.
    #[default]
    NotCollected,
    Collected,
    /// More than a ConfigMap holds: retention only runs dry until fewer are in use.
    TooMany,
}

/// How stale a running digest's last-seen time may get before it is written again: the
/// ConfigMap changes only when a digest comes, goes, or gets this old, so writing it does not
/// wake the controller (which watches it) on every reconcile.
const REFRESH_EVERY: i64 = 3_600;

/// What a ConfigMap may hold (1 MiB), less a margin for its metadata.
const CONFIG_MAP_BYTES: usize = 1_000_000;

/// The label on retention Jobs naming the rules they ran.
pub const RULES_LABEL: &str = "stowage.dev/retention-rules";

pub fn in_use_config_map_name(registry: &Registry) -> String {
    format!("{}-in-use", registry.name_any())
}

/// The digest an image ID names: pods report `repo@sha256:…`, `docker-pullable://repo@sha256:…`
/// or a bare `sha256:…`.
pub fn digest_of_image_id(image_id: &str) -> Option<&str> {
    let digest = image_id.rsplit_once('@').map_or(image_id, |(_, d)| d);
    let (algorithm, hex) = digest.split_once(':')?;
    let length = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    let hex_ok = hex.len() == length
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex_ok.then_some(digest)
}

/// When each digest was last seen in use (Unix seconds), as the ConfigMap recorded it.
pub fn last_seen(previous: Option<&ConfigMap>) -> BTreeMap<String, i64> {
    let text = previous
        .and_then(|map| map.data.as_ref())
        .and_then(|data| data.get(IN_USE_KEY));
    text.into_iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let digest = digest_of_image_id(fields.next()?)?;
            let seen = fields.next()?.parse().ok()?;
            Some((digest.to_owned(), seen))
        })
        .collect()
}

/// The digests to keep: those running `now`, and those seen within `keep_for` seconds before
/// (give or take [`REFRESH_EVERY`]), newest first when they do not all fit.
pub fn in_use(
    previous: BTreeMap<String, i64>,
    running: impl IntoIterator<Item = String>,
    now: i64,
    keep_for: i64,
) -> (BTreeMap<String, i64>, InUseDigests) {
    let mut seen: BTreeMap<String, i64> = previous
        .into_iter()
        .filter(|(_, at)| now.saturating_sub(*at) <= keep_for)
        .collect();
    for digest in running {
        let at = seen.entry(digest).or_insert(now);
        if now.saturating_sub(*at) >= REFRESH_EVERY {
            *at = now;
        }
    }
    let mut newest_first: Vec<(String, i64)> = seen.into_iter().collect();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut bytes = 0;
    let mut kept = BTreeMap::new();
    let mut state = InUseDigests::Collected;
    for (digest, at) in newest_first {
        bytes += digest.len() + 22;
        if bytes > CONFIG_MAP_BYTES {
            // Forgetting a digest seen a while ago is what keep-for does anyway; forgetting
            // one running now would let retention delete it.
            if at == now {
                state = InUseDigests::TooMany;
            }
            break;
        }
        kept.insert(digest, at);
    }
    (kept, state)
}

/// The ConfigMap the retention job reads: `<digest> <last seen>` a line.
pub fn in_use_config_map(registry: &Registry, seen: &BTreeMap<String, i64>) -> ConfigMap {
    let text: String = seen
        .iter()
        .map(|(digest, at)| format!("{digest} {at}\n"))
        .collect();
    ConfigMap {
        metadata: owned_meta(registry, in_use_config_map_name(registry), "retention"),
        data: Some([(IN_USE_KEY.to_owned(), text)].into()),
        ..ConfigMap::default()
    }
}

/// The volume and mount of [`in_use_config_map`] in the retention pod.
pub fn in_use_volume(registry: &Registry) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "in-use".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: in_use_config_map_name(registry),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: "in-use".to_owned(),
            mount_path: IN_USE_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}

/// A short hash of the retention rules, as a label value: a run names the rules it applied.
pub fn rules_hash(registry: &Registry) -> Option<String> {
    let policies = registry.spec.policies.as_ref()?;
    if policies.retention.is_empty() {
        return None;
    }
    let rules = serde_json::to_vec(&policies.retention).unwrap_or_default();
    let digest = Sha256::digest(rules);
    Some(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether these rules have run (dry or not) to the end in `last`: rules that changed run dry
/// first.
pub fn rules_previewed(registry: &Registry, last: Option<&RetentionOutcome>) -> bool {
    match (last, rules_hash(registry)) {
        (Some(last), Some(hash)) => last.rules == hash && last.result == JobResult::Succeeded,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn image_ids_name_their_digest() {
        let pullable = format!("docker-pullable://registry.example/team/app@{A}");
        assert_eq!(digest_of_image_id(&pullable), Some(A));
        assert_eq!(
            digest_of_image_id(&format!("docker.io/library/nginx@{A}")),
            Some(A)
        );
        assert_eq!(digest_of_image_id(A), Some(A));
        assert_eq!(digest_of_image_id("docker.io/library/nginx:1.27"), None);
        assert_eq!(digest_of_image_id("sha256:ABC"), None);
        assert_eq!(digest_of_image_id(""), None);
    }

    #[test]
    fn digests_stay_for_keep_for_after_their_pods_go() {
        let day = 86_400;
        let now = 10 * day;
        // A was last seen more than a day ago, B a day ago; C runs now.
        let previous = [(A.to_owned(), now - day - 1), (B.to_owned(), now - day)].into();
        let (kept, state) = in_use(previous, [C.to_owned()], now, day);
        assert_eq!(state, InUseDigests::Collected);
        assert_eq!(
            kept,
            [(B.to_owned(), now - day), (C.to_owned(), now)].into()
        );
        let (kept, _) = in_use(kept, [], now + 1, day);
        assert_eq!(kept, [(C.to_owned(), now)].into(), "B's day is over");
    }

    #[test]
    fn a_running_digest_is_written_again_only_once_it_is_an_hour_old() {
        let previous: BTreeMap<String, i64> = [(A.to_owned(), 1_000)].into();
        let (kept, _) = in_use(previous.clone(), [A.to_owned()], 1_000 + 600, 86_400);
        assert_eq!(kept, previous, "unchanged, so the ConfigMap is not written");
        let (kept, _) = in_use(previous, [A.to_owned()], 1_000 + REFRESH_EVERY, 86_400);
        assert_eq!(kept[A], 1_000 + REFRESH_EVERY);
    }

    #[test]
    fn the_config_map_reads_back() {
        let registry = crate::resources::fixtures::s3_registry();
        let seen: BTreeMap<String, i64> = [(A.to_owned(), 5), (B.to_owned(), 7)].into();
        let map = in_use_config_map(&registry, &seen);
        assert_eq!(map.metadata.name.as_deref(), Some("images-in-use"));
        assert_eq!(last_seen(Some(&map)), seen);
    }

    #[test]
    fn more_running_digests_than_fit_make_retention_run_dry() {
        let running: Vec<String> = (0..20_000).map(|n| format!("sha256:{n:064x}")).collect();
        let (kept, state) = in_use(BTreeMap::new(), running, 10, 86_400);
        assert_eq!(state, InUseDigests::TooMany);
        assert!(kept.len() < 20_000);
        let old: BTreeMap<String, i64> = (0..20_000)
            .map(|n| (format!("sha256:{n:064x}"), 5))
            .collect();
        let (kept, state) = in_use(old, [A.to_owned()], 10, 86_400);
        assert_eq!(
            state,
            InUseDigests::Collected,
            "only old digests were dropped"
        );
        assert!(kept.contains_key(A));
    }
}
