//! Usage accounting: what the index counts per repository and namespace is what a recount from
//! the storage's links finds, after pushes, mounts, deletes and collections.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use stowage::gc::{self, Options};
use stowage::index::usage;
use stowage::index::{StoredIndex, Usage};
use stowage::oci::{Digest, RepositoryName};
use stowage::storage::{BlobStore, layout};

use crate::common::Server;

/// Counts from the links themselves: every layer and revision link of every repository, each
/// blob once per repository and once per namespace, sized from its data.
async fn recount(store: &dyn BlobStore) -> Usage {
    let mut held: HashMap<String, HashSet<Digest>> = HashMap::new();
    for object in store.walk(&layout::repositories_root()).await.unwrap() {
        let parts: Vec<&str> = object.key.split('/').collect();
        let Some(split) = parts.iter().position(|p| p.starts_with('_')) else {
            continue;
        };
        let digest = match &parts[split..] {
            ["_layers", alg, hex, "link"] | ["_manifests", "revisions", alg, hex, "link"] => {
                format!("{alg}:{hex}").parse::<Digest>().unwrap()
            }
            _ => continue,
        };
        held.entry(parts[..split].join("/"))
            .or_default()
            .insert(digest);
    }
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    for digest in held.values().flatten() {
        let meta = store.stat(&layout::blob_data(digest)).await.unwrap();
        sizes.insert(digest.clone(), meta.size);
    }
    let bytes = |blobs: &HashSet<Digest>| blobs.iter().map(|d| sizes[d]).sum::<u64>();
    let mut namespaces: BTreeMap<String, HashSet<Digest>> = BTreeMap::new();
    for (repository, blobs) in &held {
        let namespace = repository.split('/').next().unwrap().to_owned();
        namespaces
            .entry(namespace)
            .or_default()
            .extend(blobs.iter().cloned());
    }
    Usage {
        total_bytes: sizes.values().sum(),
        namespaces: namespaces
            .iter()
            .map(|(n, b)| (n.clone(), bytes(b)))
            .collect(),
        repositories: held.iter().map(|(r, b)| (r.clone(), bytes(b))).collect(),
    }
}

async fn counted(server: &Server, namespace: Option<&str>) -> usage::Counted {
    let index = StoredIndex::new(server.store());
    let namespace: Option<RepositoryName> = namespace.map(|n| n.parse().unwrap());
    usage::count(&index, namespace.as_ref()).await.unwrap()
}

async fn assert_matches_recount(server: &Server, when: &str) -> Usage {
    let counted = counted(server, None).await;
    assert!(
        counted.complete,
        "{when}: the index is whole from the start"
    );
    let recounted = recount(server.store().as_ref()).await;
    assert_eq!(counted.usage, recounted, "{when}");
    counted.usage
}

#[tokio::test]
async fn usage_per_repository_and_namespace_matches_a_recount_from_the_storage() {
    let server = Server::start().await;
    let shared = vec![7u8; 3000];
    let (same_manifest, _) = server.push_image("team/app", "v1", &shared).await;
    server.push_image("team/web", "v1", &shared).await;
    let (_, web_v2) = server.push_image("team/web", "v2", &[8u8; 5000]).await;
    server.push_image("other/tool", "v1", &[9u8; 700]).await;
    let alone = server.push_blob("team/app", &[1u8; 1234]).await;
    let mounted = server
        .http
        .post(server.url(&format!(
            "/v2/other/mounted/blobs/uploads/?mount={}&from=team/web",
            Digest::sha256_of(&[8u8; 5000])
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(mounted.status(), 201);

    let usage = assert_matches_recount(&server, "after the pushes").await;
    // The shared layer, config and manifest count once in `team`, once in each repository.
    assert_eq!(
        usage.namespaces["team"],
        usage.repositories["team/app"] + usage.repositories["team/web"]
            - 3000
            - br#"{"architecture":"amd64","os":"linux"}"#.len() as u64
            - same_manifest.len() as u64
    );
    let team = counted(&server, Some("team")).await.usage;
    assert_eq!(team.repositories.len(), 2, "{team:?}");
    assert_eq!(team.total_bytes, usage.namespaces["team"]);

    // A manifest or blob deleted through the API leaves the usage at once.
    let deleted = server
        .http
        .delete(server.url(&format!("/v2/team/web/manifests/{web_v2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let deleted = server
        .http
        .delete(server.url(&format!("/v2/team/app/blobs/{alone}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let before_gc = assert_matches_recount(&server, "after the deletes").await;
    assert!(before_gc.repositories["team/app"] < usage.repositories["team/app"]);

    // A collection deletes the blobs no manifest uses (the deleted manifest's layer, which
    // other/mounted only linked, and the blob pushed alone) with their links, and the usage
    // follows; a full run then finds nothing to correct and reports the same figures.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let options = Options {
        dry_run: false,
        full: false,
        full_every: None,
        delete_untagged: true,
        grace_period: Duration::ZERO,
        sweep_wait: gc::MIN_SWEEP_WAIT,
        mirror_retention: None,
        quotas: Vec::new(),
    };
    let report = gc::run_once(server.store(), &options).await.unwrap();
    assert_eq!(report.manifests_deleted, 0, "{:?}", report.deleted);
    let after_gc = assert_matches_recount(&server, "after gc").await;
    // The deleted manifest's own bytes, its layer and the blob pushed alone.
    assert_eq!(report.blobs_deleted, 3, "{:?}", report.deleted);
    assert!(
        after_gc.repositories["team/web"] < before_gc.repositories["team/web"],
        "{after_gc:?}"
    );
    assert!(!after_gc.repositories.contains_key("other/mounted"));
    let full = Options {
        full: true,
        full_every: None,
        ..options
    };
    let audited = gc::run_once(server.store(), &full).await.unwrap();
    assert_eq!(audited.index_entries_added, 0, "{audited:?}");
    assert_eq!(audited.usage.as_ref(), Some(&after_gc));
}

/// What the index lacks, the audit of a full run records: a registry written without usage
/// entries (Distribution, an older Stowage) counts right after its first collection.
#[tokio::test]
async fn a_full_run_counts_a_registry_written_without_usage_entries() {
    let server = Server::start().await;
    server.push_image("adopted/app", "v1", &[3u8; 4096]).await;
    server.push_image("adopted/db", "v1", &[4u8; 2048]).await;
    let stored = StoredIndex::new(server.store());
    let usage_root = format!("{}/usage", layout::index_root());
    server.store().delete(&usage_root).await.unwrap();
    assert_eq!(
        usage::count(&stored, None).await.unwrap().usage,
        Usage::default()
    );
    let options = Options {
        dry_run: false,
        full: true,
        full_every: None,
        delete_untagged: false,
        grace_period: Duration::ZERO,
        sweep_wait: gc::MIN_SWEEP_WAIT,
        mirror_retention: None,
        quotas: Vec::new(),
    };
    let report = gc::run_once(server.store(), &options).await.unwrap();
    assert_eq!(report.index_entries_added, 6, "{report:?}");
    let usage = assert_matches_recount(&server, "after the audit").await;
    assert_eq!(report.usage, Some(usage));
}
