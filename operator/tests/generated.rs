//! The checked-in YAML must be what the Rust types generate: `make generate` rewrites it.

use std::path::Path;

fn checked_in(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_crd_in_crds_matches_the_types() {
    assert!(
        checked_in("crds/registries.stowage.dev.yaml") == stowage_operator::manifests::crd_yaml(),
        "crds/registries.stowage.dev.yaml is stale: run `make generate`"
    );
}

#[test]
fn the_charts_crd_and_rbac_match_the_generators() {
    use stowage_operator::manifests;
    for (file, expected) in [
        (
            "charts/stowage-operator/files/registries.stowage.dev.yaml",
            manifests::crd_yaml(),
        ),
        (
            "charts/stowage-operator/files/rbac-rules.yaml",
            manifests::rbac_rules_yaml(),
        ),
        (
            "charts/stowage-operator/files/leader-election-rules.yaml",
            manifests::leader_election_rules_yaml(),
        ),
    ] {
        assert!(
            checked_in(file) == expected,
            "{file} is stale: run `make generate`"
        );
    }
}
