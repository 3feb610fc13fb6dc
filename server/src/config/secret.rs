//! Secrets given inline or in a file.

use std::path::Path;

use super::ConfigError;
use crate::upload::SecretKey;

/// The key given `inline` or in `file` (trailing newlines dropped); `None` when neither is set.
pub(super) fn secret(
    what: &'static str,
    inline: Option<String>,
    file: Option<&Path>,
) -> Result<Option<SecretKey>, ConfigError> {
    let bytes = match (inline, file) {
        (Some(inline), _) => inline.into_bytes(),
        (None, Some(path)) => {
            let mut bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                bytes.pop();
            }
            bytes
        }
        (None, None) => return Ok(None),
    };
    SecretKey::new(bytes)
        .map(Some)
        .ok_or(ConfigError::ShortKey(what))
}
