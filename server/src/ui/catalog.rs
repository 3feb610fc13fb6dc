//! The repository list the pages search and page through, kept for a few seconds: walking the
//! catalog costs a listing per directory, which on S3 is too slow to repeat for every page view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::registry::{self, Page, Registry};

/// How long a walked catalog is served before the next view walks it again.
pub const CATALOG_TTL: Duration = Duration::from_secs(10);

/// Every repository's name, sorted, as of a recent walk.
#[derive(Debug, Default)]
pub struct Catalog {
    walked: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

impl Catalog {
    /// The names, walking the catalog again when the last walk is older than [`CATALOG_TTL`]; one
    /// walk at a time, which the views waiting for it share.
    pub async fn names(&self, registry: &Registry) -> Result<Arc<Vec<String>>, registry::Error> {
        let mut walked = self.walked.lock().await;
        if let Some((at, names)) = walked.as_ref()
            && at.elapsed() < CATALOG_TTL
        {
            return Ok(Arc::clone(names));
        }
        let (names, _) = registry.catalog(&Page::default(), &|_| true).await?;
        let names = Arc::new(names);
        *walked = Some((Instant::now(), Arc::clone(&names)));
        Ok(names)
    }
}
