//! Whether a Registry's storage works, as far as the cluster can tell: the settings the pods
//! need (checked by the controller), the volume claim's phase, and the server pods' readiness,
//! whose probe (`/readyz`) reads and writes storage. Pure, so every verdict is unit tested.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

/// How long a started server container may fail its readiness probe before that counts as
/// storage being unreachable rather than the pod still starting.
pub const STARTUP_GRACE_SECONDS: i64 = 30;

/// The `StorageReady` condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ready,
    Unavailable,
    /// Nothing has reported yet: no server pod has run long enough to tell.
    Unknown,
}

/// The verdict on a Registry's storage, with the condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageCheck {
    pub health: Health,
    pub reason: &'static str,
    pub message: String,
}

impl StorageCheck {
    pub fn ready(message: impl Into<String>) -> Self {
        Self::new(Health::Ready, "Available", message)
    }

    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Health::Unavailable, reason, message)
    }

    pub fn unknown(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Health::Unknown, reason, message)
    }

    fn new(health: Health, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            health,
            reason,
            message: message.into(),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        self.health == Health::Unavailable
    }
}

/// A problem with the volume claim, or `None` when it is bound to a volume.
pub fn claim_problem(claim: &PersistentVolumeClaim) -> Option<StorageCheck> {
    let name = claim.name_any();
    match claim.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Bound") => None,
        Some("Lost") => Some(StorageCheck::unavailable(
            "ClaimLost",
            format!("PersistentVolumeClaim {name} lost its volume"),
        )),
        phase => Some(StorageCheck::unavailable(
            "ClaimPending",
            format!(
                "PersistentVolumeClaim {name} is {}: no volume is bound to it yet (see its \
                 events and its storage class)",
                phase.unwrap_or("Pending")
            ),
        )),
    }
}

/// What the server pods' readiness says of storage. A pod is ready only while its `/readyz`
/// reaches storage, so a running pod that stays unready past the start-up grace means storage
/// is unreachable (or not writable) from the pods.
pub fn from_pods(pods: &[Pod], storage: &str, now: &Time) -> StorageCheck {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = live.iter().filter(|pod| is_ready(pod)).count();
    if ready > 0 {
        return StorageCheck::ready(format!(
            "{storage}: {ready} of {} server pods reach it",
            live.len()
        ));
    }
    let failing: Vec<String> = live
        .iter()
        .filter(|pod| {
            running_since(pod).is_some_and(|since| {
                now.0.as_second() - since.0.as_second() > STARTUP_GRACE_SECONDS
            })
        })
        .map(|pod| pod.name_any())
        .collect();
    if failing.is_empty() {
        return StorageCheck::unknown(
            "WaitingForPods",
            format!("{storage}: no server pod has run long enough to report on it yet"),
        );
    }
    StorageCheck::unavailable(
        "StorageUnreachable",
        format!(
            "{storage}: no server pod passes its readiness check, which reads and writes \
             storage (failing: {}; their logs say why)",
            failing.join(", ")
        ),
    )
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// When the pod's server container last started running, if it is running.
fn running_since(pod: &Pod) -> Option<Time> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "stowage")?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .clone()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStatus, PersistentVolumeClaimStatus,
        PodCondition, PodStatus,
    };
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;

    use super::*;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_790_000_000 + seconds).expect("time"))
    }

    /// A server pod started at `started` (None: not running yet), ready or not.
    fn pod(name: &str, started: Option<i64>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_owned(),
                    status: if ready { "True" } else { "False" }.to_owned(),
                    ..PodCondition::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "stowage".to_owned(),
                    state: started.map(|at| ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(time(at)),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn one_ready_pod_means_storage_answers() {
        let check = from_pods(
            &[pod("a", Some(0), true), pod("b", Some(0), false)],
            "bucket images",
            &time(100),
        );
        assert_eq!(check.health, Health::Ready);
        assert_eq!(check.message, "bucket images: 1 of 2 server pods reach it");
    }

    #[test]
    fn pods_unready_past_the_grace_mean_storage_is_unreachable() {
        let check = from_pods(
            &[pod("a", Some(0), false), pod("b", Some(95), false)],
            "bucket images",
            &time(100),
        );
        assert_eq!(check.health, Health::Unavailable);
        assert_eq!(check.reason, "StorageUnreachable");
        assert!(check.message.contains("failing: a;"), "{}", check.message);
    }

    #[test]
    fn pods_still_starting_tell_nothing_yet() {
        for pods in [
            vec![],
            vec![pod("a", None, false)],
            vec![pod("a", Some(90), false)],
        ] {
            let check = from_pods(&pods, "bucket images", &time(100));
            assert_eq!(check.health, Health::Unknown, "{pods:?}");
        }
        let mut leaving = pod("a", Some(0), true);
        leaving.metadata.deletion_timestamp = Some(time(99));
        assert_eq!(
            from_pods(&[leaving], "x", &time(100)).health,
            Health::Unknown,
            "a pod on its way out does not count"
        );
    }

    #[test]
    fn a_claim_must_be_bound() {
        let claim = |phase: Option<&str>| PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("images-data".to_owned()),
                ..ObjectMeta::default()
            },
            status: Some(PersistentVolumeClaimStatus {
                phase: phase.map(str::to_owned),
                ..PersistentVolumeClaimStatus::default()
            }),
            ..PersistentVolumeClaim::default()
        };
        assert_eq!(claim_problem(&claim(Some("Bound"))), None);
        let pending = claim_problem(&claim(Some("Pending"))).expect("a problem");
        assert_eq!(pending.reason, "ClaimPending");
        assert!(pending.message.contains("images-data is Pending"));
        assert_eq!(
            claim_problem(&claim(None)).expect("a problem").reason,
            "ClaimPending"
        );
        assert_eq!(
            claim_problem(&claim(Some("Lost")))
                .expect("a problem")
                .reason,
            "ClaimLost"
        );
    }
}
