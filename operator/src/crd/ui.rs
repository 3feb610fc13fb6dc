//! `spec.ui`: the web interface each server pod serves under `/ui/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// The web interface: browse repositories, tags, images and their referrers, and delete where
/// the signed-in account may. Served on the registry's own port (the Service is unchanged), with
/// the registry's access control.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Ui {
    /// Serve the web interface.
    #[serde(default)]
    pub enabled: bool,

    /// How long a sign-in lasts; the server's default (8h) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DURATION), pattern(r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub session_ttl: Option<String>,
}
