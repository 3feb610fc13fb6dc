use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::storage::MemoryStore;

fn digest(n: u8) -> Digest {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
        .parse()
        .unwrap()
}

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn index() -> StoredIndex {
    StoredIndex::new(Arc::new(MemoryStore::default()))
}

#[test]
fn every_entry_survives_its_key() {
    let entries = [
        Entry::Uses {
            blob: digest(1),
            repository: repo("team/app/web"),
            manifest: digest(2),
        },
        Entry::Links {
            blob: digest(1),
            repository: repo("a"),
        },
        Entry::Tags {
            manifest: digest(2),
            repository: repo("team/app"),
            tag: "_v1.0-rc".into(),
        },
        Entry::Lists {
            manifest: digest(2),
            repository: repo("team/app"),
            index: digest(3),
        },
        Entry::stores(&repo("team/app/web"), LinkKind::Layer, &digest(4), 1234),
        Entry::stores(&repo("a"), LinkKind::Manifest, &digest(4), 0),
    ];
    let root = format!("{}/", crate::storage::layout::index_root());
    for entry in entries {
        let key = keys::of(&entry);
        let relative = keys::relative(&entry);
        assert_eq!(key.strip_prefix(&root), Some(relative.as_str()));
        assert_eq!(keys::parse(&relative), Some(entry), "{key}");
    }
    assert_eq!(keys::parse("blobs/sha256/zz/team/_layer"), None);
    assert_eq!(keys::parse("complete"), None);
    assert_eq!(keys::parse("usage/a/_layers/sha256/zz/12"), None);
    let hex = "04".repeat(32);
    assert_eq!(
        keys::parse(&format!("usage/a/_layers/sha256/{hex}/-1")),
        None
    );
}

#[test]
fn usage_counts_a_blob_once_per_repository_and_once_per_namespace() {
    let stores = |name: &str, link, n: u8, size| Entry::stores(&repo(name), link, &digest(n), size);
    let entries = [
        // One blob as a layer of two repositories of `team`, and as a manifest of one.
        stores("team/app", LinkKind::Layer, 1, 100),
        stores("team/web", LinkKind::Layer, 1, 100),
        stores("team/web", LinkKind::Manifest, 1, 100),
        stores("team/web", LinkKind::Layer, 2, 20),
        stores("team", LinkKind::Layer, 3, 3),
        stores("solo", LinkKind::Layer, 1, 100),
        // Not usage.
        Entry::Links {
            blob: digest(9),
            repository: repo("team/app"),
        },
    ];
    let usage = Usage::of(&entries);
    let expect = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(n, b)| ((*n).to_owned(), *b))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        usage.repositories,
        expect(&[
            ("team/app", 100),
            ("team/web", 120),
            ("team", 3),
            ("solo", 100)
        ])
    );
    assert_eq!(usage.namespaces, expect(&[("team", 123), ("solo", 100)]));
    assert_eq!(usage.total_bytes, 123);
    assert_eq!(usage.largest_namespaces(1), vec![("team", 123)]);
}

#[test]
fn quotas_are_set_against_what_each_repository_or_namespace_stores_fullest_first() {
    use crate::policies::{Quota, QuotaScope};
    let stores =
        |name: &str, n: u8, size| Entry::stores(&repo(name), LinkKind::Layer, &digest(n), size);
    let usage = Usage::of(&[
        stores("team/app", 1, 60),
        stores("team/web", 1, 60),
        stores("team/web", 2, 30),
        stores("solo", 3, 10),
    ]);
    let quotas = [
        Quota::new("teams", QuotaScope::Namespace, &["team".to_owned()], 100).unwrap(),
        Quota::new("apps", QuotaScope::Repository, &["team/*".to_owned()], 1000).unwrap(),
    ];
    let against = usage.against(&quotas);
    let found: Vec<(&str, &str, u64, u64)> = against
        .iter()
        .map(|q| {
            (
                q.quota.as_str(),
                q.name.as_str(),
                q.used_bytes,
                q.limit_bytes,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("teams", "team", 90, 100),
            ("apps", "team/web", 90, 1000),
            ("apps", "team/app", 60, 1000),
        ],
        "solo is under no quota"
    );
}

#[tokio::test]
async fn a_namespace_s_usage_is_one_listing_below_it() {
    let index = index();
    let entries = [
        Entry::stores(&repo("team"), LinkKind::Layer, &digest(1), 10),
        Entry::stores(&repo("team/app"), LinkKind::Layer, &digest(2), 20),
        Entry::stores(&repo("teamx"), LinkKind::Layer, &digest(3), 30),
    ];
    index.record(&entries).await.unwrap();
    let team = usage::count(&index, Some(&repo("team"))).await.unwrap();
    assert!(!team.complete);
    assert_eq!(team.usage.total_bytes, 30);
    assert_eq!(
        index
            .stored_in(&repo("team/app"), LinkKind::Layer, &digest(2))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        index
            .stored_in(&repo("team"), LinkKind::Layer, &digest(2))
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn reviews_survive_their_lines() {
    for review in [
        Review::Blob(digest(9)),
        Review::Manifest(repo("x/y"), digest(8)),
    ] {
        assert_eq!(review.to_string().parse::<Review>(), Ok(review));
    }
    assert!("manifest x".parse::<Review>().is_err());
    assert!("blob sha256:nothex".parse::<Review>().is_err());
}

#[tokio::test]
async fn a_blob_s_users_come_from_one_listing_and_go_when_forgotten() {
    let index = index();
    let app = repo("team/app");
    let uses = Entry::Uses {
        blob: digest(1),
        repository: app.clone(),
        manifest: digest(2),
    };
    let links = Entry::Links {
        blob: digest(1),
        repository: repo("other"),
    };
    let unrelated = Entry::Links {
        blob: digest(10),
        repository: app.clone(),
    };
    index
        .record(&[uses.clone(), links.clone(), unrelated.clone()])
        .await
        .unwrap();
    let mut users: Vec<Entry> = index
        .users_of(&digest(1))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry)
        .collect();
    users.sort();
    assert_eq!(users, vec![uses.clone(), links.clone()]);
    index.forget(&[uses]).await.unwrap();
    let users = index.users_of(&digest(1)).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].entry, links);
    assert_eq!(index.all().await.unwrap().len(), 2);
}

#[tokio::test]
async fn holders_are_per_repository() {
    let index = index();
    let tag = |repository: &str| Entry::Tags {
        manifest: digest(2),
        repository: repo(repository),
        tag: "latest".into(),
    };
    // `team/app` must not see `team/app/web`'s tags: a prefix of the name is another repository.
    index
        .record(&[tag("team/app"), tag("team/app/web")])
        .await
        .unwrap();
    let holders = index
        .holders_of(&repo("team/app"), &digest(2))
        .await
        .unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0].entry, tag("team/app"));
}

#[tokio::test]
async fn the_journal_hands_out_only_pages_older_than_asked() {
    let index = index();
    index.append(&[Review::Blob(digest(1))]).await.unwrap();
    index
        .append(&[
            Review::Manifest(repo("a"), digest(2)),
            Review::Blob(digest(3)),
        ])
        .await
        .unwrap();
    index.append(&[]).await.unwrap();
    let (pages, newer) = index
        .due(SystemTime::now() - Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(pages.is_empty());
    assert_eq!(newer, 2);
    let (pages, newer) = index
        .due(SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(newer, 0);
    let reviews: Vec<&Review> = pages.iter().flat_map(|p| &p.reviews).collect();
    assert_eq!(
        reviews,
        [
            &Review::Blob(digest(1)),
            &Review::Manifest(repo("a"), digest(2)),
            &Review::Blob(digest(3)),
        ]
    );
    index.consume(&[pages[0].id.clone()]).await.unwrap();
    let (pages, _) = index
        .due(SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].reviews.len(), 2);
}

#[tokio::test]
async fn completeness_is_remembered_to_the_second() {
    let index = index();
    assert_eq!(index.complete_since().await.unwrap(), None);
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    index.mark_complete(at).await.unwrap();
    assert_eq!(index.complete_since().await.unwrap(), Some(at));
}

#[tokio::test]
async fn journaled_entries_reach_the_index_when_a_collection_records_them() {
    let index = index();
    let uses = Entry::Uses {
        blob: digest(1),
        repository: repo("team/app"),
        manifest: digest(2),
    };
    let tags = Entry::Tags {
        manifest: digest(2),
        repository: repo("team/app"),
        tag: "v1".into(),
    };
    let review = Review::Manifest(repo("team/app"), digest(9));
    index
        .append_page(std::slice::from_ref(&review), &[uses.clone(), tags.clone()])
        .await
        .unwrap();
    // Journaled only: not in the index yet.
    assert!(index.users_of(&digest(1)).await.unwrap().is_empty());

    let mut journal = Journaled::read(&index).await.unwrap();
    assert_eq!(journal.pages.len(), 1);
    assert_eq!(journal.pages[0].reviews, vec![review]);
    assert_eq!(journal.pages[0].entries, vec![uses.clone(), tags.clone()]);
    assert_eq!(journal.record_into(&index).await.unwrap(), 2);
    let users: Vec<Entry> = index
        .users_of(&digest(1))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry)
        .collect();
    assert_eq!(users, vec![uses]);
    let holders = index
        .holders_of(&repo("team/app"), &digest(2))
        .await
        .unwrap();
    assert_eq!(holders.len(), 1);

    // Catching up records only what was journaled since.
    let later = Entry::Uses {
        blob: digest(3),
        repository: repo("team/db"),
        manifest: digest(4),
    };
    index
        .append_page(&[], std::slice::from_ref(&later))
        .await
        .unwrap();
    assert_eq!(journal.catch_up(&index).await.unwrap(), 1);
    assert_eq!(journal.pages.len(), 2);
    assert_eq!(index.users_of(&digest(3)).await.unwrap().len(), 1);
    assert_eq!(journal.catch_up(&index).await.unwrap(), 0);
}
