//! The permissions the operator needs, in one place: the Helm chart's ClusterRole (or Role) is
//! generated from [`rules`], and the reconcile tests check every request against it.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// Kinds the controller watches: listed and watched.
const WATCH: &[&str] = &["list", "watch"];
/// Owned kinds it also watches; server-side apply is authorized as `patch`, and as `create`
/// when the object is new.
const WATCH_AND_APPLY: &[&str] = &["list", "watch", "create", "patch"];

/// Everything the operator reads and writes, verb by verb, and nothing more.
pub fn rules() -> Vec<PolicyRule> {
    let rule = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    vec![
        rule(crate::crd::GROUP, &["registries"], WATCH),
        rule(crate::crd::GROUP, &["registries/status"], &["patch"]),
        // Children's owner references set `blockOwnerDeletion`, which the API server allows
        // only to those who may update the owner's finalizers.
        rule(crate::crd::GROUP, &["registries/finalizers"], &["update"]),
        // The upload and token keys are read, created once and patched to rotate; S3
        // credentials are read for the pods' checksum; the policy Secret is applied; the
        // htpasswd, issuer and TLS Secrets are checked; all are watched.
        rule(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "patch"],
        ),
        rule("", &["services"], WATCH_AND_APPLY),
        // The in-use digests ConfigMap is read to merge with, and goes with the retention rules.
        rule(
            "",
            &["configmaps"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule("", &["serviceaccounts"], &["create", "patch"]),
        // An existing claim is checked; a new one is applied.
        rule("", &["persistentvolumeclaims"], &["get", "create", "patch"]),
        // The pods of a finished gc, replication or retention Job hold its counts in their
        // termination message, and the server pods' readiness tells whether they reach
        // storage. With `--in-use-namespaces`, pods there are listed for the digests they run.
        rule("", &["pods"], &["list"]),
        // An autoscaled Deployment is read to hand its replica count over to the autoscaler.
        rule(
            "apps",
            &["deployments"],
            &["get", "list", "watch", "create", "patch"],
        ),
        // The replication CronJob goes when `spec.replication` does.
        rule(
            "batch",
            &["cronjobs"],
            &["list", "watch", "create", "patch", "delete"],
        ),
        rule("batch", &["jobs"], WATCH),
        rule(
            "autoscaling",
            &["horizontalpodautoscalers"],
            &["list", "watch", "create", "patch", "delete"],
        ),
        rule(
            "policy",
            &["poddisruptionbudgets"],
            &["list", "watch", "create", "patch", "delete"],
        ),
        // `spec.tls.issuerRef`: the Certificate cert-manager issues the server's certificate
        // from, applied when cert-manager is installed.
        rule(
            "cert-manager.io",
            &["certificates"],
            &["create", "patch", "delete"],
        ),
        // `spec.monitoring.serviceMonitor`, when the Prometheus Operator is installed.
        rule(
            "monitoring.coreos.com",
            &["servicemonitors"],
            &["create", "patch", "delete"],
        ),
        // The event recorder creates an event, then patches its count when it repeats.
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// Rules for leader election, in the operator's own namespace.
pub fn leader_election_rules() -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".to_owned()]),
        resources: Some(vec!["leases".to_owned()]),
        verbs: ["get", "list", "watch", "create", "update", "patch"]
            .map(str::to_owned)
            .to_vec(),
        ..PolicyRule::default()
    }]
}

/// Whether `rules` allow `verb` on `resource` (with `/subresource` if any) in API `group`.
pub fn allows(rules: &[PolicyRule], verb: &str, group: &str, resource: &str) -> bool {
    rules.iter().any(|rule| {
        let has = |list: Option<&Vec<String>>, item: &str| {
            list.is_some_and(|l| l.iter().any(|x| x == item || x == "*"))
        };
        has(rule.api_groups.as_ref(), group)
            && has(rule.resources.as_ref(), resource)
            && has(Some(&rule.verbs), verb)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_specific() {
        let rules = rules();
        assert!(allows(&rules, "patch", "apps", "deployments"));
        assert!(allows(&rules, "watch", "batch", "jobs"));
        assert!(allows(&rules, "patch", "stowage.dev", "registries/status"));
        assert!(!allows(&rules, "patch", "stowage.dev", "registries"));
        assert!(!allows(&rules, "delete", "", "secrets"));
        assert!(!allows(&rules, "delete", "apps", "deployments"));
        assert!(!allows(&rules, "get", "", "nodes"));
        assert!(rules.iter().all(|r| !r.verbs.contains(&"*".to_owned())));
    }
}
