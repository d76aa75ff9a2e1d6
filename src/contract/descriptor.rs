//! What a tool says about itself and asks for.

use serde::{Deserialize, Serialize};

/// Access granted on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Read,
    ReadWrite,
}

impl Access {
    /// Whether this access includes writing.
    pub fn allows_write(self) -> bool {
        self == Access::ReadWrite
    }

    /// The name a policy file uses: `read` or `read-write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::ReadWrite => "read-write",
        }
    }
}

/// A state namespace a tool asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRequest {
    pub namespace: String,
    pub access: Access,
}

/// A directory a tool asks to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemRequest {
    pub guest_path: String,
    pub access: Access,
}

/// Everything a tool asks to be granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub state: Vec<StateRequest>,
    pub models: Vec<String>,
    pub filesystem: Vec<FilesystemRequest>,
    pub network: Vec<String>,
    pub env: Vec<String>,
}

/// What a tool says about itself (its `describe` export), with the schemas parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    pub name: String,
    pub description: String,
    pub version: String,
    pub input_schema: serde_json::Value,
    pub output_schema: Option<serde_json::Value>,
    pub capabilities: Capabilities,
}
