//! The spec's error codes, with the few Distribution's clients know beyond them, and the JSON
//! body every error response carries (`{"errors":[{"code","message","detail"}]}`).

use oci_spec::distribution::ErrorCode;
use serde::Serialize;

/// An error code: one of the spec's, or one of the few extra codes Distribution's clients know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Code {
    Spec(ErrorCode),
    Distribution(DistributionCode),
}

/// Codes CNCF Distribution uses beyond the spec's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DistributionCode {
    Unknown,
    Unavailable,
    RangeInvalid,
    PaginationNumberInvalid,
}

impl From<ErrorCode> for Code {
    fn from(code: ErrorCode) -> Self {
        Self::Spec(code)
    }
}

impl From<DistributionCode> for Code {
    fn from(code: DistributionCode) -> Self {
        Self::Distribution(code)
    }
}

/// The body of an error response, with its one error.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(Debug, Serialize)]
struct Entry<'a> {
    code: Code,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

impl<'a> ErrorBody<'a> {
    pub fn new(
        code: impl Into<Code>,
        message: &'a str,
        detail: Option<&'a serde_json::Value>,
    ) -> Self {
        Self {
            errors: [Entry {
                code: code.into(),
                message,
                detail,
            }],
        }
    }
}
