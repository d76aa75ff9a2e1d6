//! The policy side: `[tools.NAME.workspace]`.

use serde::{Deserialize, Serialize};

/// A session workspace for one tool: `guest` is where the tool sees it; the quotas bound what
/// it may hold per session (over all its files and directories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceGrant {
    /// Absolute path inside the sandbox, e.g. `/workspace`.
    pub guest: String,
    /// Sum of file sizes.
    #[serde(default = "default_quota_bytes")]
    pub quota_bytes: u64,
    /// Files plus directories.
    #[serde(default = "default_quota_files")]
    pub quota_files: u64,
}

fn default_quota_bytes() -> u64 {
    64 << 20
}

fn default_quota_files() -> u64 {
    1_000
}

impl WorkspaceGrant {
    /// A grant at `guest` with the default quotas.
    pub fn at(guest: impl Into<String>) -> Self {
        Self { guest: guest.into(), quota_bytes: default_quota_bytes(), quota_files: default_quota_files() }
    }

    /// How `inspect --policy` shows it.
    pub fn describe(&self) -> String {
        format!(
            "{} (session workspace, in the step's transaction; {} bytes, {} files)",
            self.guest, self.quota_bytes, self.quota_files
        )
    }
}
