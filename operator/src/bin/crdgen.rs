//! Prints the generated manifests: `crdgen` the CRD, `crdgen rbac` the operator's RBAC rules.
//! `make generate` writes them into `crds/` and the Helm chart.

fn main() {
    let what = std::env::args().nth(1);
    let text = match what.as_deref() {
        None | Some("crd") => stowage_operator::manifests::crd_yaml(),
        Some("rbac") => stowage_operator::manifests::rbac_rules_yaml(),
        Some(other) => {
            eprintln!("usage: crdgen [crd|rbac]; unknown {other:?}");
            std::process::exit(2);
        }
    };
    print!("{text}");
}
