//! Tool upgrades inside a session: the per-tool policy, and the record of an `upgraded` step.

use serde::{Deserialize, Serialize};

/// What a session does when it meets a new component (another sha256) of a tool it has
/// already used: the policy's `on_upgrade` for that tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUpgrade {
    /// Restore the session's last snapshot of the tool into the new component, replay the
    /// tool's steps after it, and record an `upgraded` step. A tool with no snapshot (a
    /// plain tool, or none taken yet) is replayed from its first step instead.
    #[default]
    Snapshot,
    /// Replay the tool's steps from the first under the new component, checking each gives
    /// its recorded output, and record an `upgraded` step.
    Replay,
    /// Refuse the new component in this session.
    Refuse,
}

impl OnUpgrade {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Replay => "replay",
            Self::Refuse => "refuse",
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Display for OnUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an upgrade brought the new component to the session's last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeVia {
    /// The old component's last snapshot, restored into the new one.
    Snapshot,
    /// The tool's steps, replayed from the first (`on_upgrade = "replay"`).
    Replay,
    /// `on_upgrade = "snapshot"`, but there was no snapshot to restore (a plain tool, or a
    /// stateful one before its first): its steps were replayed from the first.
    ReplayWithoutSnapshot,
    /// A tool declared stateless carries nothing over.
    Stateless,
}

impl UpgradeVia {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Replay => "replay",
            Self::ReplayWithoutSnapshot => "replay (no snapshot to restore)",
            Self::Stateless => "stateless",
        }
    }
}

/// What an `upgraded` step records: the switch from one component of a tool to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgrade {
    /// sha256 of the component the tool's earlier steps ran.
    pub from: String,
    /// sha256 of the component that runs its steps from here on.
    pub to: String,
    pub via: UpgradeVia,
    /// The snapshot restored (the step it was taken after), for [`UpgradeVia::Snapshot`].
    #[serde(default)]
    pub restored_from: Option<u64>,
    /// Earlier steps replayed under the new component, and found to give their outputs.
    #[serde(default)]
    pub replayed: u32,
}

impl std::fmt::Display for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {} via {}", self.from, self.to, self.via.as_str())?;
        if let Some(seq) = self.restored_from {
            write!(f, " of step {seq}")?;
        }
        if self.replayed > 0 {
            write!(f, ", {} steps replayed", self.replayed)?;
        }
        Ok(())
    }
}
