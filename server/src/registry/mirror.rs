//! Content a pull-through cache brings from an upstream, stored like pushed content (so tags,
//! referrers and gc treat it alike) but without a push's reference checks: a mirrored image's
//! blobs arrive when clients ask for them, not before its manifest.

use bytes::Bytes;

use super::{Registry, Result};
use crate::index::{Entry, LinkKind, Review};
use crate::manifest;
use crate::oci::{Digest, RepositoryName, Tag};
use crate::storage::{ByteStream, layout};

impl Registry {
    /// Stores a manifest fetched from an upstream (its digest already checked), and names it
    /// `tag` if given. Content first, then the revision link, then referrers, then the tag.
    pub async fn store_mirrored_manifest(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        body: Bytes,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let parsed = manifest::parse(&body, None).ok();
        let mut entries = parsed
            .as_ref()
            .map(|parsed| crate::index::entries_of_manifest(name, digest, parsed))
            .unwrap_or_default();
        entries.push(Entry::stores(
            name,
            LinkKind::Manifest,
            digest,
            body.len() as u64,
        ));
        self.index.record(&entries).await?;
        let subject = parsed.and_then(|m| m.subject);
        self.store.put(&layout::blob_data(digest), body).await?;
        self.write_link(&layout::revision_link(name, digest), digest)
            .await?;
        if let Some(subject) = subject {
            self.write_link(
                &layout::referrer_link(name, &subject.digest, digest),
                digest,
            )
            .await?;
        }
        if let Some(tag) = tag {
            self.tag_mirrored(name, tag, digest).await?;
        }
        Ok(())
    }

    /// Points `tag` at `digest`, whose manifest is already stored.
    pub async fn tag_mirrored(
        &self,
        name: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<()> {
        let previous = self.read_link(&layout::tag_current_link(name, tag)).await?;
        let entry = [Entry::Tags {
            manifest: digest.clone(),
            repository: name.clone(),
            tag: tag.to_string(),
        }];
        // The manifest the upstream moved the tag from may be left untagged.
        let reviews: Vec<Review> = previous
            .filter(|old| old != digest)
            .map(|old| Review::Manifest(name.clone(), old))
            .into_iter()
            .collect();
        futures::try_join!(self.index.record(&entry), self.index.append(&reviews))?;
        self.write_link(&layout::tag_index_link(name, tag, digest), digest)
            .await?;
        self.write_link(&layout::tag_current_link(name, tag), digest)
            .await
    }

    /// Streams `body` into storage as blob `digest` of `name`. `body` must fail instead of ending
    /// when its bytes do not hash to `digest`: the blob is committed only if the whole stream
    /// succeeds, so nothing partial or corrupt is ever visible. Two replicas doing this for one
    /// blob at once each commit the same bytes to the same key, atomically; the second write is
    /// harmless.
    pub async fn store_mirrored_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<()> {
        let id = uuid::Uuid::new_v4().to_string();
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        // A replica dying mid-way leaves an ordinary upload session, which purging removes.
        self.store
            .put(&layout::upload_started_at(name, &id), started.into())
            .await?;
        let data = layout::upload_data(name, &id);
        let outcome = async {
            let state = self.store.create_resumable(&data).await?;
            let state = self.store.append(&data, &state, body).await?;
            self.store
                .commit_resumable(&data, &state, &layout::blob_data(digest))
                .await?;
            Ok::<_, crate::storage::Error>(state.size)
        }
        .await;
        if outcome.is_err() {
            let _ = self.store.abort_resumable(&data).await;
        }
        let _ = self.store.delete(&layout::upload_dir(name, &id)).await;
        let size = outcome?;
        self.link_blob(name, digest, size).await
    }

    /// A stored manifest by digest (the mirror resolved it already).
    pub async fn read_mirrored(&self, digest: &Digest) -> Result<super::StoredManifest> {
        self.read_manifest(digest.clone()).await
    }

    /// Records that `name` was pulled on `day` (days since the epoch).
    pub async fn mark_mirror_pulled(&self, name: &RepositoryName, day: u64) -> Result<()> {
        Ok(self
            .store
            .put(&layout::mirror_last_pull(name), day.to_string().into())
            .await?)
    }

    /// The day `name` was last recorded as pulled, if ever.
    pub async fn mirror_last_pulled(&self, name: &RepositoryName) -> Result<Option<u64>> {
        self.read_day(&layout::mirror_last_pull(name)).await
    }
}
