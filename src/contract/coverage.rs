//! Requested against granted, one row per capability request or grant.

use serde::Serialize;

use super::Access;

/// How far a grant covers a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coverage {
    /// Requested and granted.
    Granted,
    /// Granted with less than requested (read instead of read-write).
    Partial,
    /// Requested, not granted: uses are denied.
    Denied,
    /// Granted without being requested.
    Unrequested,
}

impl Coverage {
    /// The coverage of a request for `requested` access by a grant of `granted`.
    pub fn of_access(requested: Access, granted: Access) -> Self {
        if requested.allows_write() && !granted.allows_write() { Coverage::Partial } else { Coverage::Granted }
    }
}

/// One line of the requested-vs-granted table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapabilityRow {
    /// `state`, `model`, `filesystem`, `workspace`, `network` or `env`.
    pub capability: &'static str,
    pub requested: Option<String>,
    pub granted: Option<String>,
    pub coverage: Coverage,
}

impl CapabilityRow {
    /// A row of `capability`.
    pub fn new(
        capability: &'static str,
        requested: Option<String>,
        granted: Option<String>,
        coverage: Coverage,
    ) -> Self {
        Self { capability, requested, granted, coverage }
    }

    /// Whether the row is a request the grants do not (fully) cover.
    pub fn is_ungranted(&self) -> bool {
        matches!(self.coverage, Coverage::Partial | Coverage::Denied)
    }
}
