//! `serve`'s settings, and the storage settings `gc` and `purge-uploads` share: every flag has a
//! `STOWAGE_*` environment variable, and the same settings (kebab-case keys) can come from an
//! optional TOML file; flags and environment win over the file. [`ServeArgs::resolve`] layers
//! them, applies defaults and validates them into a [`ServeConfig`].

mod auth;
mod cache;
mod cloud;
mod notifications;
mod policies;
mod proxy;
mod replication;
mod resolve;
mod secret;
mod settings;

use std::path::PathBuf;

use clap::Args;

pub use crate::serve::{GuardSettings, Settings as ServeConfig};
pub use auth::{AuthSettings, TlsSettings};
pub use cache::CacheSettings;
pub use cloud::{AzureSettings, GcsSettings};
pub use notifications::NotificationSettings;
pub use policies::PolicySettings;
pub use proxy::ProxySettings;
pub use replication::ReplicationTable;
pub use settings::{Settings, StorageKind};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (kebab-case keys); flags and env override it.
    #[arg(long, env = "STOWAGE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: Settings,
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0} must be at least {min} bytes", min = crate::upload::token::MIN_KEY_LEN)]
    ShortKey(&'static str),
    #[error("{0} is set without an upload key")]
    PreviousWithoutCurrent(&'static str),
    #[error("this --storage needs {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// Whether `name` is letters, digits, `-` and `_` only, and not empty: a name that also
/// names a directory in storage (an outbox) and a metrics label.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Optional durations in the config file, written as humantime strings ("30s", "24h").
pub(crate) mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
