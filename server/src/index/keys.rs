//! Where [`StoredIndex`](super::StoredIndex) keeps each entry and journal page.
//!
//! ```text
//! _stowage/index/blobs/<alg>/<hex>/<repository>/_manifests/<alg>/<hex>   Uses
//! _stowage/index/blobs/<alg>/<hex>/<repository>/_layer                   Links
//! _stowage/index/manifests/<alg>/<hex>/<repository>/_tags/<tag>          Tags
//! _stowage/index/manifests/<alg>/<hex>/<repository>/_indexes/<alg>/<hex> Lists
//! _stowage/index/usage/<repository>/_layers/<alg>/<hex>/<size>           Stores, a layer
//! _stowage/index/usage/<repository>/_manifests/<alg>/<hex>/<size>        Stores, a manifest
//! _stowage/index/complete                                                since when it is whole
//! _stowage/journal/<hour>/<nanos>-<random>                               one page of reviews
//! ```
//!
//! Repository names never have a part starting with `_`, so the first such part ends the name.
//! Entries are empty objects: the key is the fact, so a listing of `usage/<repository>/` alone
//! sums what a repository stores.

use std::time::{Duration, SystemTime};

use super::{Entry, LinkKind};
use crate::oci::{Digest, RepositoryName};
use crate::storage::layout;

fn digest_path(digest: &Digest) -> String {
    format!("{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub(super) fn blob_dir(blob: &Digest) -> String {
    format!("{}/blobs/{}", layout::index_root(), digest_path(blob))
}

pub(super) fn holders_dir(repository: &RepositoryName, manifest: &Digest) -> String {
    format!(
        "{}/manifests/{}/{repository}",
        layout::index_root(),
        digest_path(manifest)
    )
}

/// Where `repository`'s `Stores` entries are, and those of the repositories below it.
pub(super) fn usage_dir(repository: Option<&RepositoryName>) -> String {
    match repository {
        Some(repository) => format!("{}/usage/{repository}", layout::index_root()),
        None => format!("{}/usage", layout::index_root()),
    }
}

fn link_dir(link: LinkKind) -> &'static str {
    match link {
        LinkKind::Layer => "_layers",
        LinkKind::Manifest => "_manifests",
    }
}

/// Where `repository`'s `Stores` entries for `blob` are, whatever its size.
pub(super) fn stored_dir(repository: &RepositoryName, link: LinkKind, blob: &Digest) -> String {
    format!(
        "{}/{}/{}",
        usage_dir(Some(repository)),
        link_dir(link),
        digest_path(blob)
    )
}

pub(super) fn complete() -> String {
    format!("{}/complete", layout::index_root())
}

/// The key of `entry` relative to the index root, as [`parse`] takes it.
pub(super) fn relative(entry: &Entry) -> String {
    let key = of(entry);
    let root = format!("{}/", layout::index_root());
    key.strip_prefix(&root).map_or(key.clone(), str::to_owned)
}

/// The key of `entry`.
pub(super) fn of(entry: &Entry) -> String {
    match entry {
        Entry::Uses {
            blob,
            repository,
            manifest,
        } => format!(
            "{}/{repository}/_manifests/{}",
            blob_dir(blob),
            digest_path(manifest)
        ),
        Entry::Links { blob, repository } => format!("{}/{repository}/_layer", blob_dir(blob)),
        Entry::Tags {
            manifest,
            repository,
            tag,
        } => format!("{}/_tags/{tag}", holders_dir(repository, manifest)),
        Entry::Lists {
            manifest,
            repository,
            index,
        } => format!(
            "{}/_indexes/{}",
            holders_dir(repository, manifest),
            digest_path(index)
        ),
        Entry::Stores {
            repository,
            link,
            blob,
            size,
        } => format!("{}/{size}", stored_dir(repository, *link, blob)),
    }
}

fn digest(alg: &str, hex: &str) -> Option<Digest> {
    format!("{alg}:{hex}").parse().ok()
}

/// Splits `<repository>/_x/...` at the first `_` part.
fn repository_and_rest<'a>(parts: &'a [&'a str]) -> Option<(RepositoryName, &'a [&'a str])> {
    let split = parts.iter().position(|p| p.starts_with('_'))?;
    let repository = parts[..split].join("/").parse().ok()?;
    Some((repository, &parts[split..]))
}

/// The entry at `key`, relative to the index root; `None` for anything else.
pub(super) fn parse(key: &str) -> Option<Entry> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["blobs", alg, hex, rest @ ..] => {
            let blob = digest(alg, hex)?;
            match repository_and_rest(rest)? {
                (repository, ["_manifests", alg, hex]) => Some(Entry::Uses {
                    blob,
                    repository,
                    manifest: digest(alg, hex)?,
                }),
                (repository, ["_layer"]) => Some(Entry::Links { blob, repository }),
                _ => None,
            }
        }
        ["manifests", alg, hex, rest @ ..] => {
            let manifest = digest(alg, hex)?;
            match repository_and_rest(rest)? {
                (repository, ["_tags", tag]) => Some(Entry::Tags {
                    manifest,
                    repository,
                    tag: (*tag).to_owned(),
                }),
                (repository, ["_indexes", alg, hex]) => Some(Entry::Lists {
                    manifest,
                    repository,
                    index: digest(alg, hex)?,
                }),
                _ => None,
            }
        }
        ["usage", rest @ ..] => {
            let (repository, rest) = repository_and_rest(rest)?;
            let (link, alg, hex, size) = match rest {
                ["_layers", alg, hex, size] => (LinkKind::Layer, alg, hex, size),
                ["_manifests", alg, hex, size] => (LinkKind::Manifest, alg, hex, size),
                _ => return None,
            };
            Some(Entry::Stores {
                repository,
                link,
                blob: digest(alg, hex)?,
                size: size.parse().ok()?,
            })
        }
        _ => None,
    }
}

const HOUR: u64 = 3600;

fn nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// The hour shard a page written at `time` goes to; zero-padded so names sort by time.
pub(super) fn journal_shard(time: SystemTime) -> String {
    format!("{:010}", nanos(time) / 1_000_000_000 / u128::from(HOUR))
}

/// The start of shard `name`, if it is one.
pub(super) fn shard_start(name: &str) -> Option<SystemTime> {
    let hour: u64 = name.parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(hour.checked_mul(HOUR)?))
}

/// A page's name: when it was written, then something random so two writers never collide.
pub(super) fn journal_page(time: SystemTime) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{:020}-{}", nanos(time), &random[..12])
}

/// When page `name` was written, if it is one.
pub(super) fn page_written(name: &str) -> Option<SystemTime> {
    let (nanos, _) = name.split_once('-')?;
    let nanos: u64 = nanos.parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
}
