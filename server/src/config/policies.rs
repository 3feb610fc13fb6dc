//! What the registry keeps no matter who asks: the `[policies]` table of the config file.
//!
//! ```toml
//! [[policies.immutable-tags]]
//! name = "releases"
//! repositories = ["team/**"]
//! tags = ["v*", "release-*"]
//! ```

use serde::Deserialize;

use super::ConfigError;
use crate::policies::{ImmutableTags, Policies, Retention};

/// The `[policies]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicySettings {
    #[serde(default)]
    pub immutable_tags: Vec<ImmutableTagsTable>,
}

/// One `[[policies.immutable-tags]]` table: tags matching `tags` in repositories matching
/// `repositories` cannot be moved to another manifest or deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImmutableTagsTable {
    /// How refusals name the rule; its position when unset.
    pub name: Option<String>,
    pub repositories: Vec<String>,
    pub tags: Vec<String>,
}

impl PolicySettings {
    pub fn resolve(self) -> Result<Policies, ConfigError> {
        let rules = self
            .immutable_tags
            .into_iter()
            .enumerate()
            .map(|(n, table)| {
                let name = table
                    .name
                    .unwrap_or_else(|| format!("immutable-tags #{}", n + 1));
                ImmutableTags::new(&name, &table.repositories, &table.tags)
                    .map_err(|err| ConfigError::Invalid(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policies::new(rules, Retention::default()))
    }
}
