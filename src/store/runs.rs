//! Agent runs as store records: one row per run, beside the session that holds its steps.
//!
//! The store keeps what it must index (status, which agent, from when the run may be claimed)
//! in columns and the rest as an opaque JSON body that [`crate::run`] reads. Every change is a
//! compare-and-set on [`RunRecord::version`], so a worker and a person approving from the
//! command line never overwrite each other; a worker's writes are also fenced by its lease.

use serde::{Deserialize, Serialize};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Has work to do now (or is being driven by a worker).
    Running,
    /// Suspended until an approval, a time or an event; what it waits for is in its body.
    Waiting,
    /// Ended with a final answer.
    Done,
    /// Ended without one (a limit, a model or tool error it cannot get past).
    Failed,
    /// Cancelled; it never runs again.
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [Self::Running, Self::Waiting, Self::Done, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Done, failed or cancelled: nothing changes it any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown run status `{text}` (one of: {})", names.join(", "))
        })
    }
}

/// The SQL sort key (over `runs r`) that puts claimable waiting runs, whose wait came due (a
/// timer, a retry, an event's deadline), before running ones (new, decided, handed back): a
/// due wait was promised a time, other work was not, so a backlog of runs that have not
/// started never holds a timer up behind it.
pub(crate) const DUE_WAITS_FIRST: &str = "CASE r.status WHEN 'waiting' THEN 0 ELSE 1 END";

/// A run as stored. Its id is its session's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: String,
    /// The name of the agent that drives it: a worker claims only runs of agents it has.
    pub agent: String,
    pub status: RunStatus,
    /// From when a worker may claim it (ms since the Unix epoch); `None`: not claimable (ended,
    /// or waiting for a person or an event without a timeout).
    pub ready_at_ms: Option<i64>,
    /// Grows by one with every write; a write names the version it replaces.
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// JSON, read by [`crate::run`]: the goal, the wait, decisions and signals.
    pub body: String,
}

/// Fails unless `found` is the version a write of `run` replaces.
pub(crate) fn check_version(run: &RunRecord, found: Option<u64>) -> Result<(), super::StoreError> {
    match found {
        None => Err(super::StoreError::RunNotFound(run.id.clone())),
        Some(found) if found + 1 != run.version => {
            Err(super::StoreError::RunConflict { run: run.id.clone(), expected: run.version.saturating_sub(1), found })
        }
        Some(_) => Ok(()),
    }
}
