//! Manifests through the cache: by tag, fresh for the upstream's TTL, then revalidated; by
//! digest, cached for good.

use super::{Error, Outcome, Proxy, Route};
use crate::manifest;
use crate::oci::{Digest, Reference, RepositoryName, Tag};
use crate::registry::{self, Registry, StoredManifest};

/// A manifest served through the cache.
#[derive(Debug)]
pub struct Served {
    pub manifest: StoredManifest,
    /// The upstream failed and this is the cached version, which may be out of date.
    pub stale: bool,
}

impl Proxy {
    pub async fn manifest(
        &self,
        registry: &Registry,
        name: &RepositoryName,
        route: &Route<'_>,
        reference: &Reference,
    ) -> Result<Served, Error> {
        let served = match reference {
            Reference::Tag(tag) => self.by_tag(registry, name, route, tag).await,
            Reference::Digest(digest) => self.by_digest(registry, name, route, digest).await,
        }?;
        self.mark_pulled(registry, name).await;
        Ok(served)
    }

    async fn by_tag(
        &self,
        registry: &Registry,
        name: &RepositoryName,
        route: &Route<'_>,
        tag: &Tag,
    ) -> Result<Served, Error> {
        let key = format!("{name}:{tag}");
        let cached = match registry.resolve(name, &Reference::Tag(tag.clone())).await {
            Ok(digest) => Some(digest),
            Err(registry::Error::ManifestUnknown) => None,
            Err(err) => return Err(err.into()),
        };
        let ttl = route.upstream.config.tag_ttl;
        if let Some(digest) = &cached
            && self
                .validated
                .get(&key)
                .is_some_and(|at| at.elapsed() < ttl)
        {
            self.record(route, name, "manifest", tag.as_str(), Outcome::Hit);
            return fresh(registry, digest).await;
        }
        let upstream = route.upstream;
        match route
            .within(upstream.client.manifest_digest(&route.remote, tag.as_str()))
            .await
        {
            Ok(Some(digest)) if cached.as_ref() == Some(&digest) => {
                self.validated.insert(key, std::time::Instant::now());
                self.record(route, name, "manifest", tag.as_str(), Outcome::Revalidated);
                fresh(registry, &digest).await
            }
            Ok(Some(digest)) => {
                match registry
                    .resolve(name, &Reference::Digest(digest.clone()))
                    .await
                {
                    Ok(_) => registry.tag_mirrored(name, tag, &digest).await?,
                    Err(registry::Error::ManifestUnknown) => {
                        self.fetch(registry, name, route, &digest, Some(tag))
                            .await?;
                    }
                    Err(err) => return Err(err.into()),
                }
                self.validated.insert(key, std::time::Instant::now());
                self.record(route, name, "manifest", tag.as_str(), Outcome::Miss);
                fresh(registry, &digest).await
            }
            Ok(None) => {
                self.record(route, name, "manifest", tag.as_str(), Outcome::Miss);
                Err(registry::Error::ManifestUnknown.into())
            }
            Err(err) => match cached {
                Some(digest) if upstream.config.serve_stale => {
                    tracing::warn!(upstream = upstream.prefix(), %err, "serving a cached tag");
                    self.record(route, name, "manifest", tag.as_str(), Outcome::Stale);
                    Ok(Served {
                        manifest: registry
                            .get_manifest(name, &Reference::Digest(digest))
                            .await?,
                        stale: true,
                    })
                }
                _ => {
                    self.record(
                        route,
                        name,
                        "manifest",
                        tag.as_str(),
                        Outcome::UpstreamError,
                    );
                    Err(Error::upstream(upstream, err))
                }
            },
        }
    }

    async fn by_digest(
        &self,
        registry: &Registry,
        name: &RepositoryName,
        route: &Route<'_>,
        digest: &Digest,
    ) -> Result<Served, Error> {
        let what = digest.to_string();
        match registry
            .resolve(name, &Reference::Digest(digest.clone()))
            .await
        {
            Ok(_) => {
                self.record(route, name, "manifest", &what, Outcome::Hit);
                return fresh(registry, digest).await;
            }
            Err(registry::Error::ManifestUnknown) => {}
            Err(err) => return Err(err.into()),
        }
        match self.fetch(registry, name, route, digest, None).await {
            Ok(()) => {
                self.record(route, name, "manifest", &what, Outcome::Miss);
                fresh(registry, digest).await
            }
            Err(err) => {
                let outcome = match &err {
                    Error::Registry(registry::Error::ManifestUnknown) => Outcome::Miss,
                    _ => Outcome::UpstreamError,
                };
                self.record(route, name, "manifest", &what, outcome);
                Err(err)
            }
        }
    }

    /// Fetches the manifest `digest` from the upstream and stores it, named `tag` if given.
    async fn fetch(
        &self,
        registry: &Registry,
        name: &RepositoryName,
        route: &Route<'_>,
        digest: &Digest,
        tag: Option<&Tag>,
    ) -> Result<(), Error> {
        let upstream = route.upstream;
        let fetched = route
            .within(
                upstream
                    .client
                    .fetch_manifest(&route.remote, &digest.to_string()),
            )
            .await
            .map_err(|err| Error::upstream(upstream, err))?
            .ok_or(registry::Error::ManifestUnknown)?;
        // Only manifests this registry could serve are kept.
        manifest::parse(&fetched.bytes, fetched.content_type.as_deref()).map_err(|err| {
            Error::Corrupt {
                upstream: upstream.config.url.to_string(),
                reason: format!("{digest} is not a manifest: {err}"),
            }
        })?;
        registry
            .store_mirrored_manifest(name, digest, fetched.bytes, tag)
            .await?;
        Ok(())
    }
}

async fn fresh(registry: &Registry, digest: &Digest) -> Result<Served, Error> {
    Ok(Served {
        manifest: registry.read_mirrored(digest).await?,
        stale: false,
    })
}
