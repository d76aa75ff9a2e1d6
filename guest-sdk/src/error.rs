use std::fmt;

use crate::bindings::exports::toolhost::tool::tool::ToolError as WitToolError;

/// Why a tool call failed. The host reports it to the caller as a typed tool error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The input was well-formed but unusable (range, semantics). Schema violations are
    /// caught before your code runs.
    InvalidInput(String),
    /// A capability the tool needed was denied by the host's policy.
    Denied(String),
    /// The tool could not complete the request.
    Failed(String),
}

impl ToolError {
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self::Denied(message.into())
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// Asks an agent run to make this call again in `seconds` (durably: the run waits as a
    /// record, on no process). Outside an agent run it is an ordinary `failed` error.
    pub fn retry_after(seconds: u64, why: impl fmt::Display) -> Self {
        Self::Failed(format!("retry-after={seconds}; {why}"))
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Denied(m) => write!(f, "denied: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for ToolError {}

/// WASI answers a use the host's policy does not allow (a path outside the tool's
/// preopens, a write to a read-only one, a socket) with `access` or `not-permitted`, which
/// the standard library reports as [`std::io::ErrorKind::PermissionDenied`]: `?` turns
/// those into [`ToolError::Denied`] and every other I/O error into [`ToolError::Failed`].
impl From<std::io::Error> for ToolError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => ToolError::Denied(format!("denied by the host: {e}")),
            _ => ToolError::Failed(e.to_string()),
        }
    }
}

impl From<ToolError> for WitToolError {
    fn from(e: ToolError) -> Self {
        match e {
            ToolError::InvalidInput(m) => Self::InvalidInput(m),
            ToolError::Denied(m) => Self::Denied(m),
            ToolError::Failed(m) => Self::Failed(m),
        }
    }
}
