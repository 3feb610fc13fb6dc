//! Why a copy failed, and the exit code each kind gives, so a script can tell them apart.

use std::process::ExitCode;

use crate::client::ClientError;

/// Every way a copy fails.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The command line does not describe a copy that can be made.
    #[error("{0}")]
    Usage(String),
    /// The source has no such tag, manifest or layout.
    #[error("{0}: not found")]
    NotFound(String),
    /// A registry refused the credentials, or asked for some.
    #[error("{0}")]
    Unauthorized(String),
    /// A registry could not be reached, or stopped answering.
    #[error("{0}")]
    Network(String),
    /// Content does not match its digest or size: the source is corrupt or lying.
    #[error("{0}")]
    Verification(String),
    /// A registry answered that it cannot serve now (a `5xx` or `429`): worth trying again.
    #[error("{0}")]
    Unavailable(String),
    /// A registry answered with an error, or something it sent makes no sense.
    #[error("{0}")]
    Registry(String),
    /// Reading or writing an image layout failed.
    #[error("{0}")]
    Layout(String),
    /// Stopped by Ctrl-C; a layout destination is left as it was.
    #[error("interrupted")]
    Interrupted,
}

impl CopyError {
    /// `0` is success and `2` a command-line error (as clap exits); the rest are these.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
            Self::Unauthorized(_) => 4,
            Self::Network(_) | Self::Unavailable(_) => 5,
            Self::Verification(_) => 6,
            Self::Registry(_) | Self::Layout(_) => 1,
            Self::Interrupted => 130,
        })
    }

    /// Whether the same request may succeed later: the registry was unreachable or busy.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Network(_) | Self::Unavailable(_))
    }

    /// A layout's file operation failing on `path`.
    pub fn io(path: &std::path::Path, err: &std::io::Error) -> Self {
        Self::Layout(format!("{}: {err}", path.display()))
    }
}

impl From<ClientError> for CopyError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Config(_) => Self::Usage(err.to_string()),
            ClientError::Network { .. } => Self::Network(err.to_string()),
            ClientError::Unauthorized { .. } => Self::Unauthorized(err.to_string()),
            ClientError::NotFound { what } => Self::NotFound(what),
            ClientError::Verification(message) => Self::Verification(message),
            ClientError::Status { status, .. } if status == 429 || status >= 500 => {
                Self::Unavailable(err.to_string())
            }
            ClientError::Status { .. } | ClientError::Protocol { .. } => {
                Self::Registry(err.to_string())
            }
        }
    }
}
