//! Prints the generated manifests (`make generate` writes them into `crds/` and the Helm chart),
//! or checks Registry manifests against the CRD:
//!
//! - `crdgen crd`: the CRD
//! - `crdgen rbac`: the operator's RBAC rules
//! - `crdgen leader-election-rbac`: the rules for its Lease
//! - `crdgen cost`: the API server's cost estimate of the CRD's CEL rules; fails on what it would
//!   refuse
//! - `crdgen check FILE…`: every `Registry` in the YAML files, checked as the API server would

use stowage_operator::manifests;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text = match args.first().map(String::as_str) {
        None | Some("crd") => manifests::crd_yaml(),
        Some("rbac") => manifests::rbac_rules_yaml(),
        Some("leader-election-rbac") => manifests::leader_election_rules_yaml(),
        Some("check") => std::process::exit(check(&args[1..])),
        Some("cost") => {
            let report = manifests::crd_cost();
            print!("{report}");
            std::process::exit(i32::from(!report.problems().is_empty()));
        }
        Some(other) => {
            eprintln!(
                "usage: crdgen [crd|rbac|leader-election-rbac|cost|check FILE…]; unknown {other:?}"
            );
            std::process::exit(2);
        }
    };
    print!("{text}");
}

/// Checks every Registry in `files`; returns the exit code.
fn check(files: &[String]) -> i32 {
    let mut failed = false;
    let mut checked = 0;
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("{file}: {error}");
                failed = true;
                continue;
            }
        };
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = match serde::Deserialize::deserialize(document) {
                Ok(value) => value,
                Err(error) => {
                    eprintln!("{file}: not YAML: {error}");
                    failed = true;
                    continue;
                }
            };
            if value["kind"] != "Registry" {
                continue;
            }
            checked += 1;
            let name = value["metadata"]["name"].as_str().unwrap_or("?").to_owned();
            if let Err(problems) = manifests::check_registry(&value) {
                failed = true;
                for problem in problems {
                    eprintln!("{file}: Registry {name}: {problem}");
                }
            }
        }
    }
    println!("checked {checked} Registry manifests");
    if failed || checked == 0 { 1 } else { 0 }
}
