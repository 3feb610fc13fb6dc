//! Paginated listings: a repository's tags and the registry's catalog.

use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use super::{Registry, Result};

/// Directories the catalog walk lists at once.
const LISTINGS_AT_ONCE: usize = 16;
use crate::oci::RepositoryName;
use crate::storage::{self, layout};

/// A page request: at most `n` entries after `last`, in lexical order.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub n: Option<usize>,
    pub last: Option<String>,
}

impl Page {
    /// Applies the page to a sorted list; the flag says whether entries remain after it.
    fn apply(&self, sorted: Vec<String>) -> (Vec<String>, bool) {
        let after = sorted
            .into_iter()
            .filter(|entry| self.last.as_ref().is_none_or(|last| entry > last));
        match self.n {
            None => (after.collect(), false),
            // An empty page has no next page to point at.
            Some(0) => (Vec::new(), false),
            Some(n) => {
                let mut page: Vec<String> = after.take(n.saturating_add(1)).collect();
                let more = page.len() > n;
                page.truncate(n);
                (page, more)
            }
        }
    }
}

impl Registry {
    /// Every tag of `name`, sorted.
    pub(super) async fn all_tags(&self, name: &RepositoryName) -> Result<Vec<String>> {
        match self.store.list(&layout::tags_dir(name)).await {
            Ok(tags) => Ok(tags),
            Err(storage::Error::NotFound) => Ok(Vec::new()),
            Err(err) => Err(err.into()),
        }
    }

    /// Every tag of `name` with when it was last pushed (its current link's time), in one
    /// listing of the tags' objects rather than a request per tag.
    pub async fn tag_times(&self, name: &RepositoryName) -> Result<Vec<(String, SystemTime)>> {
        self.require_repository(name).await?;
        let objects = self.store.walk(&layout::tags_dir(name)).await?;
        Ok(objects
            .into_iter()
            .filter_map(|object| {
                let tag = object.key.strip_suffix("/current/link")?;
                (!tag.contains('/')).then(|| (tag.to_owned(), object.modified))
            })
            .collect())
    }

    /// A page of `name`'s tags, and whether more follow.
    pub async fn tags(&self, name: &RepositoryName, page: &Page) -> Result<(Vec<String>, bool)> {
        self.require_repository(name).await?;
        Ok(page.apply(self.all_tags(name).await?))
    }

    /// A page of the repositories `visible` lets the caller see (pagination counts only
    /// those, so a page is never cut short by names the caller may not know of).
    pub async fn catalog(
        &self,
        page: &Page,
        visible: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<(Vec<String>, bool)> {
        let mut names = self.walk_repositories().await?;
        names.retain(|name| visible(name));
        names.sort();
        Ok(page.apply(names))
    }

    /// Every repository, in no order. Distribution's rule: a directory holding `_manifests` is
    /// a repository; other `_` directories are a repository's internals and are not descended
    /// into. A level of the tree at a time, its directories listed several at once: on S3 each
    /// is a request, and a namespace of a thousand repositories is a thousand of them.
    async fn walk_repositories(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut level = vec![(layout::repositories_root(), String::new())];
        while !level.is_empty() {
            let listed: Vec<(String, String, Vec<String>)> = futures::stream::iter(level)
                .map(|(dir, prefix)| async move {
                    match self.store.list(&dir).await {
                        Ok(children) => Ok((dir, prefix, children)),
                        Err(storage::Error::NotFound) => Ok((dir, prefix, Vec::new())),
                        Err(err) => Err(err),
                    }
                })
                .buffer_unordered(LISTINGS_AT_ONCE)
                .try_collect()
                .await?;
            level = Vec::new();
            for (dir, prefix, children) in listed {
                if children.iter().any(|c| c == layout::MANIFESTS_DIR) && !prefix.is_empty() {
                    names.push(prefix.clone());
                }
                for child in children.iter().filter(|c| !c.starts_with('_')) {
                    let name = if prefix.is_empty() {
                        child.clone()
                    } else {
                        format!("{prefix}/{child}")
                    };
                    // Anything that is not a valid name cannot be a repository of ours.
                    if name.parse::<RepositoryName>().is_ok() {
                        level.push((format!("{dir}/{child}"), name));
                    }
                }
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::Page;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pages() {
        let all = names(&["a", "b", "c", "d"]);
        let page = |n, last: Option<&str>| {
            Page {
                n,
                last: last.map(str::to_owned),
            }
            .apply(all.clone())
        };
        assert_eq!(page(None, None), (all.clone(), false));
        assert_eq!(page(Some(2), None), (names(&["a", "b"]), true));
        assert_eq!(page(Some(2), Some("b")), (names(&["c", "d"]), false));
        assert_eq!(page(Some(0), None), (names(&[]), false));
        assert_eq!(page(None, Some("d")), (names(&[]), false));
        assert_eq!(page(Some(10), Some("bb")), (names(&["c", "d"]), false));
    }
}
