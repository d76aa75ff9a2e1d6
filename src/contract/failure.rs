//! A tool's own failure, the outcome of a step that returned an error.

/// How a tool reported its own failure (the WIT `tool-error`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
// Externally tagged (`{"invalid-input": "..."}`): the store encodes steps with postcard, which
// cannot read back internally or adjacently tagged enums.
#[serde(rename_all = "kebab-case")]
pub enum ToolFailure {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("failed: {0}")]
    Failed(String),
}
