//! Persisted key-value state, scoped by the host to this session, this tool and a namespace.
//!
//! Namespaces must be granted by the host's policy (declare them with
//! [`Capabilities::state`](crate::Capabilities::state)). Within one call, writes are
//! buffered by the host and commit together when the call returns; a trap discards them.
//!
//! ```ignore
//! let notes = Namespace::new("notes");
//! notes.set_json("count", &3u32)?;
//! let count: Option<u32> = notes.get_json("count")?;
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ToolError;
use crate::bindings::toolhost::tool::state as wit;

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The namespace is not granted, or only for reading.
    Denied(String),
    /// A quota (keys, value bytes, total bytes) would be exceeded.
    QuotaExceeded(String),
    /// The key or namespace is malformed.
    InvalidKey(String),
    /// The host's store failed.
    Unavailable(String),
    /// A stored value did not decode as the requested type.
    Decode(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "state access denied: {m}"),
            Self::QuotaExceeded(m) => write!(f, "state quota exceeded: {m}"),
            Self::InvalidKey(m) => write!(f, "invalid state key: {m}"),
            Self::Unavailable(m) => write!(f, "state unavailable: {m}"),
            Self::Decode(m) => write!(f, "stored value does not decode: {m}"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<wit::StateError> for StateError {
    fn from(e: wit::StateError) -> Self {
        match e {
            wit::StateError::Denied(m) => Self::Denied(m),
            wit::StateError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            wit::StateError::InvalidKey(m) => Self::InvalidKey(m),
            wit::StateError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<StateError> for ToolError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Denied(_) => ToolError::Denied(e.to_string()),
            _ => ToolError::Failed(e.to_string()),
        }
    }
}

/// A handle on one state namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Raw bytes under `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(wit::get(&self.name, key)?)
    }

    /// Stores raw bytes under `key`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        Ok(wit::set(&self.name, key, value)?)
    }

    /// Deletes `key`; returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool, StateError> {
        Ok(wit::delete(&self.name, key)?)
    }

    /// Keys starting with `prefix` (empty for all), sorted.
    pub fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        Ok(wit::list_keys(&self.name, prefix)?)
    }

    /// The value under `key`, decoded from JSON.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|e| StateError::Decode(format!("key `{key}`: {e}")))
            }
        }
    }

    /// Stores `value` under `key` as JSON.
    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StateError::Decode(format!("key `{key}`: {e}")))?;
        self.set(key, &bytes)
    }
}
