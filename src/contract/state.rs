//! State errors as the journal keeps them (the WIT `state-error`, converted at the state
//! capability).

use serde::{Deserialize, Serialize};

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateError {
    Denied(String),
    QuotaExceeded(String),
    InvalidKey(String),
    Unavailable(String),
}
