//! Patterns over repository names and tags, as access rules and immutable-tags rules write them:
//! `*` matches within one path segment, `**` across segments, and `\` is a plain character.

use globset::{GlobBuilder, GlobMatcher};

/// Compiles `pattern`; the error says what is wrong with it.
pub fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|err| err.kind().to_string())
}
