//! Manifest bodies by digest, in memory, bounded by bytes.
//!
//! Content-addressed bytes never change, so a cached body is always right for its digest.
//! Whether a repository or tag still names that digest is read from storage on every request,
//! so a delete or a re-tag takes effect at once on every replica; the cache only saves reading
//! the body again, which on S3 is a round trip per manifest request.

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::oci::Digest;

/// What an entry costs beyond its body: the key and the bookkeeping.
const ENTRY_OVERHEAD: u64 = 160;
/// A typical manifest, for sizing the table.
const TYPICAL_MANIFEST: u64 = 2048;

#[derive(Clone)]
struct ByLength;

impl Weighter<Digest, Bytes> for ByLength {
    fn weight(&self, _: &Digest, body: &Bytes) -> u64 {
        body.len() as u64 + ENTRY_OVERHEAD
    }
}

/// The cache of one replica.
pub struct ManifestCache(Cache<Digest, Bytes, ByLength>);

impl std::fmt::Debug for ManifestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestCache")
            .field("entries", &self.0.len())
            .field("bytes", &self.0.weight())
            .finish()
    }
}

impl ManifestCache {
    /// A cache holding at most `bytes`; `None` for 0 (no cache).
    pub fn new(bytes: u64) -> Option<Self> {
        (bytes > 0).then(|| {
            let items = usize::try_from(bytes / TYPICAL_MANIFEST)
                .unwrap_or(usize::MAX)
                .max(16);
            Self(Cache::with_weighter(items, bytes, ByLength))
        })
    }

    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.0.get(digest)
    }

    pub fn insert(&self, digest: Digest, body: Bytes) {
        self.0.insert(digest, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_bodies_by_digest_within_its_bytes() {
        assert!(ManifestCache::new(0).is_none());
        let cache = ManifestCache::new(64 * 1024).expect("a cache");
        let body = Bytes::from_static(b"{\"schemaVersion\":2}");
        let digest = Digest::sha256_of(&body);
        assert_eq!(cache.get(&digest), None);
        cache.insert(digest.clone(), body.clone());
        assert_eq!(cache.get(&digest), Some(body));
        for n in 0..200u32 {
            let body = Bytes::from(vec![u8::try_from(n % 251).unwrap_or(0); 1024]);
            cache.insert(Digest::sha256_of(&body), body);
        }
        assert!(cache.0.weight() <= 64 * 1024, "{cache:?}");
    }
}
