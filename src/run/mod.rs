//! Long-running agent runs: a durable record per run beside its session, decisions and
//! signals from outside, and workers that claim runnable runs and drive them.
//!
//! A run's steps live in its session (see [`crate::agent`]); its row in the store says where
//! it is ([`RunStatus`]), what it waits for, from when a worker may claim it, and what has
//! arrived for it (a decision on the approval it waits for, events). A waiting run holds no
//! instance, no lease and no process: it is its row. [`Runs`] is the library API for
//! starting, inspecting, deciding, signalling and cancelling; [`Worker`] drives runs.
//!
//! ```ignore
//! let runs = Runs::new(host.store());
//! let run = runs.create(&host, None, "research", Goal::new("...")).await?;
//! // Any number of processes, on any hosts sharing the store:
//! Worker::new(WorkerConfig::default()).with_agent("research", host, agent).run_until(shutdown).await?;
//! // From anywhere:
//! runs.approve(&run.id, None, "alice").await?;
//! ```

mod local;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use worker::{Worker, WorkerConfig, WorkerStats};

use crate::agent::{AgentError, Decision, Goal, Signal, Wait, Waiting};
use crate::error::SessionError;
use crate::host::Host;
use crate::store::{AuditEvent, RunRecord, RunStatus, Store, StoreError};

/// How many times a change to a run is retried when someone else changed it first.
const CHANGE_ATTEMPTS: usize = 32;
/// Bounds on what outsiders may put in a run's row.
pub const MAX_REASON_CHARS: usize = 4096;
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const MAX_PENDING_SIGNALS: usize = 256;

/// Why a run operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no run `{0}`")]
    NotFound(String),
    #[error("run `{run}` is {status}: {action} applies only to {applies}")]
    WrongState { run: String, status: RunStatus, action: &'static str, applies: &'static str },
    #[error("run `{run}` is not waiting for an approval{}", waits_for.as_ref().map(|w| format!(" (it waits for {w})")).unwrap_or_default())]
    NotAwaitingApproval { run: String, waits_for: Option<String> },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("run `{0}` kept changing; try again")]
    Busy(String),
    /// `source`: the JSON error.
    #[error("run `{run}` has an unreadable record")]
    Corrupt { run: String, source: serde_json::Error },
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The drive of a run in this process failed (see [`Runs::drive`]); its row says so.
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a run's row holds besides its indexed columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunBody {
    pub goal: Goal,
    /// What it is suspended on, while waiting (and once decided, until a worker continues it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// Decisions by the wait step they answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub decisions: BTreeMap<u64, Decision>,
    /// Events not yet consumed by the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<Signal>,
    #[serde(default)]
    pub next_signal: u64,
    /// The answer (done), or why it stopped (failed, cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Drives in a row that ended in an error; reset by one that gets somewhere.
    #[serde(default)]
    pub failed_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The session's last step when the row was last written by a worker.
    #[serde(default)]
    pub steps: u64,
}

/// A run as the library shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: String,
    pub agent: String,
    pub status: RunStatus,
    pub ready_at_ms: Option<i64>,
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub body: RunBody,
}

impl Run {
    fn from_record(record: RunRecord) -> Result<Self, RunError> {
        let body = serde_json::from_str(&record.body)
            .map_err(|source| RunError::Corrupt { run: record.id.clone(), source })?;
        Ok(Self {
            id: record.id,
            agent: record.agent,
            status: record.status,
            ready_at_ms: record.ready_at_ms,
            version: record.version,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            body,
        })
    }

    /// The record of the next version of this run.
    fn next_record(&self) -> RunRecord {
        RunRecord {
            id: self.id.clone(),
            agent: self.agent.clone(),
            status: self.status,
            ready_at_ms: self.ready_at_ms,
            version: self.version + 1,
            created_at_ms: self.created_at_ms,
            updated_at_ms: crate::store::timestamp_ms(),
            body: serde_json::to_string(&self.body).expect("a run body serializes"),
        }
    }
}

/// The library API over the runs of a store.
#[derive(Clone)]
pub struct Runs {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs").finish_non_exhaustive()
    }
}

fn check_text(what: &'static str, text: &str, max: usize) -> Result<(), RunError> {
    if text.chars().count() > max {
        return Err(RunError::Invalid { what, reason: format!("longer than {max} characters") });
    }
    Ok(())
}

impl Runs {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates run `id` (a random id by default) of `agent` towards `goal`: its session, and
    /// its row, ready for a worker to claim now.
    pub async fn create(&self, host: &Host, id: Option<String>, agent: &str, goal: Goal) -> Result<Run, RunError> {
        check_new(agent, &goal)?;
        let session = match id {
            Some(id) => host.create_session(id).await?,
            None => host.new_session().await?,
        };
        let id = session.id().to_owned();
        session.close().await?;
        self.insert(&id, agent, goal).await
    }

    /// Stores the row of a new run of `agent` for the existing session `id`, ready now.
    async fn insert(&self, id: &str, agent: &str, goal: Goal) -> Result<Run, RunError> {
        check_new(agent, &goal)?;
        let now = crate::store::timestamp_ms();
        let run = Run {
            id: id.to_owned(),
            agent: agent.to_owned(),
            status: RunStatus::Running,
            ready_at_ms: Some(now),
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
            body: RunBody {
                goal,
                waiting: None,
                decisions: BTreeMap::new(),
                signals: Vec::new(),
                next_signal: 1,
                outcome: None,
                failed_attempts: 0,
                last_error: None,
                steps: 0,
            },
        };
        self.store.create_run(&run.next_record()).await?;
        self.get(&run.id).await
    }

    pub async fn get(&self, id: &str) -> Result<Run, RunError> {
        let record = self.store.run(id).await?.ok_or_else(|| RunError::NotFound(id.to_owned()))?;
        Run::from_record(record)
    }

    /// Runs in the order created, optionally of one status.
    pub async fn list(&self, status: Option<RunStatus>) -> Result<Vec<Run>, RunError> {
        self.store.list_runs(status).await?.into_iter().map(Run::from_record).collect()
    }

    /// Cancels a run that has not ended: it is never claimed again, and a worker driving it
    /// stops before its next step.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Run, RunError> {
        check_text("reason", reason, MAX_REASON_CHARS)?;
        self.change(id, |run| {
            if run.status.is_final() {
                return Err(wrong_state(run, "cancel", "a run that has not ended"));
            }
            run.status = RunStatus::Cancelled;
            run.ready_at_ms = None;
            run.body.outcome = Some(if reason.is_empty() { "cancelled".into() } else { reason.to_owned() });
            Ok(())
        })
        .await
    }

    /// Approves the call run `id` waits on, with `edit` as its input instead of the model's
    /// when given; the run becomes claimable at once. Audited.
    pub async fn approve(&self, id: &str, edit: Option<Value>, by: &str) -> Result<Run, RunError> {
        if edit.as_ref().is_some_and(|e| !e.is_object()) {
            return Err(RunError::Invalid { what: "edit", reason: "the call's input must be a JSON object".into() });
        }
        self.decide(id, Decision::Approve { edit, by: by.to_owned() }).await
    }

    /// Denies the call run `id` waits on: the model is told `reason` as the call's result.
    /// Audited.
    pub async fn deny(&self, id: &str, reason: &str, by: &str) -> Result<Run, RunError> {
        if reason.trim().is_empty() {
            return Err(RunError::Invalid { what: "reason", reason: "a denial needs a reason".into() });
        }
        check_text("reason", reason, MAX_REASON_CHARS)?;
        self.decide(id, Decision::Deny { reason: reason.to_owned(), by: by.to_owned() }).await
    }

    async fn decide(&self, id: &str, decision: Decision) -> Result<Run, RunError> {
        let by = match &decision {
            Decision::Approve { by, .. } | Decision::Deny { by, .. } => by.clone(),
        };
        check_text("reviewer name", &by, 200)?;
        let mut decided = None;
        let run = self
            .change(id, |run| {
                let waiting = run.body.waiting.clone().filter(|w| matches!(w.wait, Wait::Approval { .. }));
                let Some(waiting) = waiting.filter(|w| !run.body.decisions.contains_key(&w.step)) else {
                    return Err(RunError::NotAwaitingApproval {
                        run: run.id.clone(),
                        waits_for: run.body.waiting.as_ref().map(|w| w.wait.to_string()),
                    });
                };
                if run.status != RunStatus::Waiting {
                    return Err(wrong_state(run, "a decision", "a waiting run"));
                }
                run.body.decisions.insert(waiting.step, decision.clone());
                run.status = RunStatus::Running;
                run.ready_at_ms = Some(crate::store::timestamp_ms());
                decided = Some(waiting);
                Ok(())
            })
            .await?;
        if let Some(Waiting { step, call, wait: Wait::Approval { tool, input } }) = decided {
            let (allowed, reason) = match &decision {
                Decision::Approve { edit: None, .. } => (true, format!("approved by {by}")),
                Decision::Approve { edit: Some(edit), .. } => (true, format!("approved by {by} with the input {edit}")),
                Decision::Deny { reason, .. } => (false, format!("denied by {by}: {reason}")),
            };
            let event = AuditEvent {
                at_ms: crate::store::timestamp_ms(),
                session: id.to_owned(),
                tool,
                capability: "approval".into(),
                request: format!(
                    "call {} (step {step}) with {}",
                    call.escape_debug(),
                    input.to_string().escape_debug()
                ),
                allowed,
                reason,
            };
            self.store.record_audit(&event).await?;
        }
        Ok(run)
    }

    /// Sends event `name` with `payload` to run `id`: a wait for it ends at once, else the
    /// first later wait for that name takes it.
    pub async fn signal(&self, id: &str, name: &str, payload: Value) -> Result<Run, RunError> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(RunError::Invalid { what: "event name", reason: "1 to 128 printable characters".into() });
        }
        let size = payload.to_string().len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(RunError::Invalid {
                what: "payload",
                reason: format!("{size} bytes, more than {MAX_PAYLOAD_BYTES}"),
            });
        }
        self.change(id, |run| {
            if run.status.is_final() {
                return Err(wrong_state(run, "a signal", "a run that has not ended"));
            }
            if run.body.signals.len() >= MAX_PENDING_SIGNALS {
                return Err(RunError::Invalid {
                    what: "signal",
                    reason: format!("the run already holds {MAX_PENDING_SIGNALS} unconsumed events"),
                });
            }
            let id = run.body.next_signal.max(1);
            run.body.next_signal = id + 1;
            run.body.signals.push(Signal { id, name: name.to_owned(), payload: payload.clone() });
            let awaited =
                matches!(&run.body.waiting, Some(Waiting { wait: Wait::Event { name: n, .. }, .. }) if n == name);
            if awaited && run.status == RunStatus::Waiting {
                run.status = RunStatus::Running;
                run.ready_at_ms = Some(crate::store::timestamp_ms());
            }
            Ok(())
        })
        .await
    }

    /// Reads run `id`, applies `change`, and writes it back unless someone changed it
    /// meanwhile (then again, from what they wrote).
    async fn change(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Run) -> Result<(), RunError>,
    ) -> Result<Run, RunError> {
        for _ in 0..CHANGE_ATTEMPTS {
            let mut run = self.get(id).await?;
            change(&mut run)?;
            match self.store.update_run(&run.next_record(), None).await {
                Ok(()) => return self.get(id).await,
                Err(StoreError::RunConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RunError::Busy(id.to_owned()))
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

fn check_new(agent: &str, goal: &Goal) -> Result<(), RunError> {
    if agent.trim().is_empty() || goal.text.trim().is_empty() {
        return Err(RunError::Invalid { what: "run", reason: "the agent name and the goal must not be empty".into() });
    }
    Ok(())
}

fn wrong_state(run: &Run, action: &'static str, applies: &'static str) -> RunError {
    RunError::WrongState { run: run.id.clone(), status: run.status, action, applies }
}
