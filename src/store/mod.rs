//! Persistence: sessions, tool state, committed steps with their journals, snapshots and
//! the pending journal of the step in flight.
//!
//! [`Store`] is written for more than one backend: every method is async, a step commits
//! in one call (one transaction), sequence numbers are checked inside that transaction so
//! two hosts can never both commit step N of a session, and nothing relies on SQLite-only
//! behavior. [`SqliteStore`] is the embedded default; [`PostgresStore`] lets many hosts
//! share sessions, with [`Lease`]s deciding which host advances each one; [`MemoryStore`]
//! keeps the same contract in the process's memory, for sessions that need not outlive it.
//! [`open`] picks the backend from a URL.

mod chunks;
mod lease;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod runs;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tasks;
mod url;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::source::Source;

pub use chunks::{Chunk, chunk_snapshot};
pub use lease::Lease;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use runs::{RunRecord, RunStatus};
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteStore};
pub use tasks::{TaskRecord, TaskScope};
pub use url::{StoreUrl, open};

/// Milliseconds since the Unix epoch by this host's clock, for records.
pub(crate) fn timestamp_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

use crate::contract::workspace::{FileChange, Manifest, manifest_at, valid_path};

/// A format error as a [`StoreError::Corrupt`] about `what`, the error kept as its source.
fn corrupt<E: std::error::Error + Send + Sync + 'static>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::corrupt_by(what, e)
}

/// A step column or pending record in the current format (see [`crate::contract::record`]).
pub(crate) fn encode_record<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    crate::contract::encode_record(value).map_err(corrupt("encoding a record"))
}

/// A stored step column or pending record, in any format this toolhost reads.
pub(crate) fn decode_record<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    crate::contract::decode_record(bytes).map_err(corrupt(what))
}

/// A stored step's random position, in any format this toolhost reads.
pub(crate) fn decode_random(bytes: &[u8]) -> Result<RandomState, StoreError> {
    crate::contract::decode_random(bytes).map_err(corrupt("step random position"))
}

/// A step's journal in the current format (see [`crate::contract::journal`]).
pub(crate) fn encode_journal(journal: &[JournalEntry]) -> Result<Vec<u8>, StoreError> {
    crate::contract::encode_journal(journal).map_err(corrupt("encoding a step journal"))
}

/// A stored step journal, in any format this toolhost reads.
pub(crate) fn decode_journal(bytes: &[u8]) -> Result<Vec<JournalEntry>, StoreError> {
    crate::contract::decode_journal(bytes).map_err(corrupt("step journal"))
}
use crate::contract::{JournalEntry, RandomState, ToolFailure, Upgrade};

/// Whose state an operation touches. The host fills it in: a tool never names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateScope {
    pub session: String,
    pub tool: String,
}

/// One buffered write: `None` deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateWrite {
    pub namespace: String,
    pub key: String,
    #[serde(with = "crate::contract::bytes::optional")]
    pub value: Option<Vec<u8>>,
}

/// What a scope holds, for quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateUsage {
    pub keys: u64,
    /// Key plus value bytes.
    pub bytes: u64,
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// I/O, a database error, a lost connection, or an operation the store cannot do:
    /// `context` says what the store was doing, `source` (the rusqlite, tokio-postgres or
    /// I/O error) why it failed.
    #[error("store backend: {context}")]
    Backend { context: String, source: Option<Source> },
    /// Another writer advanced the session first (two hosts on one session).
    #[error("session `{session}` is at step {found}, not {expected}: another host advanced it")]
    Conflict { session: String, expected: u64, found: u64 },
    #[error("no session `{0}`")]
    SessionNotFound(String),
    #[error("session `{0}` already exists")]
    SessionExists(String),
    #[error("session `{session}` has no step {step}")]
    StepNotFound { session: String, step: u64 },
    /// Stored data does not decode (written by an incompatible version, or corrupted): `what`
    /// names the data, `source` is the decoder's error if one failed.
    #[error("stored data is unreadable: {what}")]
    Corrupt { what: String, source: Option<Source> },
    /// Another host holds the session's lease and it has not expired.
    #[error("session `{session}` is leased by `{holder}` for another {expires_in_ms} ms")]
    LeaseHeld { session: String, holder: String, expires_in_ms: u64 },
    /// The write carried lease token `token`, which no longer holds the session: the lease
    /// expired or another host took it over. Nothing was written.
    #[error("session `{session}`: lease token {token} no longer holds the session ({reason})")]
    LeaseLost { session: String, token: u64, reason: String },
    /// The store URL or its options are not usable.
    #[error("invalid store URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("no run `{0}`")]
    RunNotFound(String),
    #[error("run `{0}` already exists")]
    RunExists(String),
    /// Someone else changed the run first (a worker, or a person deciding or cancelling).
    #[error("run `{run}` is at version {found}, not {expected}: it was changed meanwhile")]
    RunConflict { run: String, expected: u64, found: u64 },
    #[error("no task `{0}`")]
    TaskNotFound(String),
    #[error("task `{0}` already exists")]
    TaskExists(String),
    /// Someone else changed the task first (another server taking it over, a cancel).
    #[error("task `{task}` is at version {found}, not {expected}: it was changed meanwhile")]
    TaskConflict { task: String, expected: u64, found: u64 },
}

impl StoreError {
    /// A backend failure while doing `context`, caused by `source`.
    pub fn backend(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend { context: context.into(), source: Some(Source::new(source)) }
    }

    /// A backend refusal with no underlying error (the store is closed; a fork would need
    /// pruned history).
    pub fn backend_refused(context: impl Into<String>) -> Self {
        Self::Backend { context: context.into(), source: None }
    }

    /// Unreadable data, described by `what`.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into(), source: None }
    }

    /// Unreadable data, `what`, which `source` (a decoder's error) refused.
    pub fn corrupt_by(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Corrupt { what: what.into(), source: Some(Source::new(source)) }
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    /// Seeds the session's random streams. A fork gets a fresh one.
    pub seed: [u8; 32],
    /// The session this one was forked from, and at which step.
    pub forked_from: Option<(String, u64)>,
    pub created_at_ms: i64,
    /// The last committed step (0: none yet).
    pub last_step: u64,
}

/// How a committed step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// The output JSON, as the tool returned it.
    Output(String),
    /// The tool's own error.
    Failed(ToolFailure),
    /// Not a call: the session switched the tool to another component here (the step's
    /// `digest` is the new one). Replay skips it.
    Upgraded(Upgrade),
}

/// A committed step: one tool call in a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based, gapless within the session.
    pub seq: u64,
    pub tool: String,
    /// sha256 of the component that ran it.
    pub digest: String,
    pub input: String,
    pub outcome: StepOutcome,
    pub journal: Vec<JournalEntry>,
    /// The step's state writes (kept so a fork can rebuild state as of any step).
    pub writes: Vec<StateWrite>,
    /// The tool's random-stream positions after the step.
    pub random: RandomState,
    pub committed_at_ms: i64,
    /// The step's changes to the tool's session workspace (kept so a fork, or another host,
    /// can rebuild the files as of any step).
    #[serde(default)]
    pub files: Vec<FileChange>,
}

impl StepRecord {
    /// Every chunk the step's file changes name, once per naming (the store's reference count).
    pub(crate) fn file_chunk_refs(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.files.iter().filter_map(|c| c.entry.as_ref()).flat_map(|e| e.chunks())
    }

    /// Refuses file changes a store must not keep: a path that could leave a directory it
    /// is written out to.
    pub(crate) fn check_files(&self) -> Result<(), StoreError> {
        match self.files.iter().find(|c| !valid_path(&c.path)) {
            Some(c) => {
                Err(StoreError::corrupt(format!("step {} changes an invalid workspace path {:?}", self.seq, c.path)))
            }
            None => Ok(()),
        }
    }
}

/// Everything one step commits, atomically.
#[derive(Debug, Clone)]
pub struct StepCommit {
    pub session: String,
    pub step: StepRecord,
    /// The tool's snapshot after the step, if taken. Shared, not copied, with the host's
    /// snapshot cache.
    pub snapshot: Option<bytes::Bytes>,
    /// Chunks of the step's changed workspace files that the store may not hold yet (it
    /// keeps one copy of each, shared with snapshots and other sessions).
    pub file_chunks: Vec<Chunk>,
    /// Snapshots to keep per (session, tool); older ones are pruned with the journals of the
    /// steps they cover.
    pub keep_snapshots: u32,
    /// The fencing token of the committing host's lease. With a token, the commit fails with
    /// [`StoreError::LeaseLost`] unless that lease still holds the session, unexpired; without
    /// one, it fails with [`StoreError::LeaseHeld`] while any host holds an unexpired lease.
    pub lease: Option<u64>,
}

/// A snapshot of one tool in one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub tool: String,
    /// The step after which it was taken.
    pub seq: u64,
    /// Logical size.
    pub bytes: u64,
    pub chunks: u64,
}

/// Summary of a session, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub id: String,
    pub steps: u64,
    pub created_at_ms: i64,
    pub forked_from: Option<(String, u64)>,
}

/// Byte accounting, for `show` and the storage benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Steps' stored bytes (input, outcome, journal, writes).
    pub step_bytes: u64,
    /// Logical bytes of all kept snapshots.
    pub snapshot_bytes: u64,
    /// Bytes of distinct chunks held in the whole store.
    pub chunk_bytes: u64,
}

/// A capability decision, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at_ms: i64,
    pub session: String,
    pub tool: String,
    /// `state`, `model`, `filesystem`, `network`, `env`, ...
    pub capability: String,
    /// What was asked, with untrusted parts escaped (e.g. `set notes/a\\nb`).
    pub request: String,
    pub allowed: bool,
    pub reason: String,
}

/// The steps of a step in flight that must outlive a crash: model responses are persisted as
/// they arrive, so re-running the step after a crash answers them from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingStep {
    pub seq: u64,
    pub tool: String,
    pub input: String,
    pub journal: Vec<JournalEntry>,
    /// The writer's lease token, checked like [`StepCommit::lease`]; not stored.
    #[serde(skip)]
    pub lease: Option<u64>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    async fn list_sessions(&self) -> Result<Vec<SessionSummary>, StoreError>;
    /// Deletes the session with its state, steps and snapshots; `false` if it did not exist.
    /// Fenced like [`StepCommit::lease`]: refused while a host other than `lease`'s holder
    /// runs the session, so a session in use is never deleted under it.
    async fn delete_session(&self, id: &str, lease: Option<u64>) -> Result<bool, StoreError>;
    /// Creates `child` holding the history of `parent` up to and including step `at`, with the
    /// state as of that step; snapshot chunks are shared, not copied.
    async fn fork_session(&self, parent: &str, at: u64, child: &SessionRecord) -> Result<(), StoreError>;

    async fn get(&self, scope: &StateScope, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keys of `namespace` starting with `prefix`, sorted by byte order.
    async fn list_keys(&self, scope: &StateScope, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Keys and bytes held by `scope` over all namespaces.
    async fn usage(&self, scope: &StateScope) -> Result<StateUsage, StoreError>;
    /// Every (tool, namespace, key) of a session, sorted.
    async fn state_keys(&self, session: &str) -> Result<Vec<(String, String, String)>, StoreError>;

    /// Commits a step: record, journal, state writes, snapshot, all or nothing. Fails with
    /// [`StoreError::Conflict`] unless the session's last step is `step.seq - 1`.
    async fn commit_step(&self, commit: StepCommit) -> Result<(), StoreError>;
    /// Steps of `session` after `after`, optionally of one tool, in order.
    async fn steps(&self, session: &str, tool: Option<&str>, after: u64) -> Result<Vec<StepRecord>, StoreError>;
    /// The last step of `tool` at or before step `at`: where a stateless tool's random
    /// streams resume. Override with an indexed read; the default reads every step.
    async fn last_step_of(&self, session: &str, tool: &str, at: u64) -> Result<Option<StepRecord>, StoreError> {
        let steps = self.steps(session, Some(tool), 0).await?;
        Ok(steps.into_iter().rev().find(|s| s.seq <= at))
    }
    /// The session workspace of `tool` as of step `at`: the tool's file changes up to `at`,
    /// applied in order. A fork holds its parent's steps up to the fork step, so a fork's
    /// workspace starts as the parent's was then. Stores override this with a read of the
    /// file changes alone (no journals, inputs or state writes); the default reads every step.
    async fn workspace_at(&self, session: &str, tool: &str, at: u64) -> Result<Manifest, StoreError> {
        let steps = self.steps(session, Some(tool), 0).await?;
        Ok(manifest_at(steps.iter().map(|s| (s.seq, s.files.as_slice())), at))
    }
    /// The newest snapshot of `tool` taken at or before step `at`, with its bytes.
    async fn latest_snapshot(&self, session: &str, tool: &str, at: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    async fn snapshots(&self, session: &str) -> Result<Vec<SnapshotInfo>, StoreError>;
    /// The data of the chunks `hashes` name, in order (workspace files are rebuilt from them).
    /// Fails with [`StoreError::Corrupt`] if one is missing.
    async fn chunks(&self, hashes: &[[u8; 32]]) -> Result<Vec<Vec<u8>>, StoreError>;
    async fn storage_stats(&self, session: &str) -> Result<StorageStats, StoreError>;

    /// Persists the journal of the step in flight (durably, before returning).
    async fn put_pending(&self, session: &str, pending: &PendingStep) -> Result<(), StoreError>;
    async fn pending(&self, session: &str) -> Result<Option<PendingStep>, StoreError>;
    /// Drops the journal of the step in flight (the step was aborted). Fenced like
    /// [`StepCommit::lease`]: once the session has moved to another host, the journal is its.
    async fn clear_pending(&self, session: &str, lease: Option<u64>) -> Result<(), StoreError>;

    /// Takes the lease of `session` for `holder` for `ttl` if it is free, expired, or already
    /// `holder`'s. Each acquisition draws a new fencing token (greater than every earlier one
    /// of the session), so writes carrying an older token are refused from then on. Fails
    /// with [`StoreError::LeaseHeld`] while another holder's lease runs. Expiry is judged by
    /// one clock for all hosts (the database server's, for Postgres).
    async fn acquire_lease(&self, session: &str, holder: &str, ttl: std::time::Duration) -> Result<Lease, StoreError>;
    /// Extends the lease carrying `token` to `ttl` from now. Fails with
    /// [`StoreError::LeaseLost`] if another acquisition has superseded it. A lease that
    /// expired without being taken over is renewed: no other host can have written meanwhile.
    async fn renew_lease(&self, session: &str, token: u64, ttl: std::time::Duration) -> Result<Lease, StoreError>;
    /// Gives the lease up so another host can take the session at once; a no-op if `token`
    /// no longer holds it.
    async fn release_lease(&self, session: &str, token: u64) -> Result<(), StoreError>;
    /// The session's current lease, expired or not; `None` if it never had one or it was
    /// released.
    async fn lease(&self, session: &str) -> Result<Option<Lease>, StoreError>;

    /// Appends to the audit trail. Events outlive the session they name: deleting a session
    /// keeps its audit trail (see [`Store::delete_audit`]).
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Audit events in the order recorded, of one session or of all.
    async fn audit_events(&self, session: Option<&str>) -> Result<Vec<AuditEvent>, StoreError>;

    /// Up to `limit` sessions that have ended by `before_ms`: no unexpired lease holds them
    /// and their last commit (their creation, without one) is older than `before_ms`. Oldest
    /// first. Retention deletes them with [`Store::delete_session`], which stays fenced, so a
    /// session a host takes meanwhile is refused, not deleted.
    async fn ended_sessions(&self, before_ms: i64, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Deletes the audit events recorded before `before_ms`, of `scope`; returns how many.
    async fn delete_audit(&self, scope: AuditScope<'_>, before_ms: i64) -> Result<u64, StoreError>;

    // ---- Agent runs (see `runs.rs` and `crate::run`) ----

    /// Stores a new run (version 1) for the existing session of the same id.
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Runs in the order created, optionally of one status.
    async fn list_runs(&self, status: Option<RunStatus>) -> Result<Vec<RunRecord>, StoreError>;
    /// Replaces the run whose stored version is `run.version - 1`, else fails with
    /// [`StoreError::RunConflict`]. With `lease`, fenced like [`StepCommit::lease`] (a
    /// worker's write); without, not fenced (a decision or a cancel from outside).
    async fn update_run(&self, run: &RunRecord, lease: Option<u64>) -> Result<(), StoreError>;
    /// Takes, for `holder`, the session leases of up to `limit` runs of `agents` that are
    /// ready (`ready_at_ms` passed on the store's clock) and not leased by anyone: waiting
    /// runs whose wait came due first, then the others, each earliest first (a due timer is
    /// not held up behind a backlog of new runs); each lease as [`Store::acquire_lease`]
    /// draws it. Concurrent claimers never get the same run.
    async fn claim_runs(
        &self,
        agents: &[String],
        holder: &str,
        ttl: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError>;
    /// The earliest time a run of `agents` becomes claimable: its `ready_at_ms`, or the
    /// expiry of its session's lease when one is held past that (a run being driven, or one
    /// a killed worker left). When a worker with nothing to do has to look again at the latest.
    async fn next_ready_at(&self, agents: &[String]) -> Result<Option<i64>, StoreError>;
    /// Waits until a run may have become ready (created, decided, signalled, released) or
    /// `timeout` passes. The default just sleeps; stores that can be told override it.
    async fn wait_for_runs(&self, timeout: std::time::Duration) {
        tokio::time::sleep(timeout).await;
    }

    // ---- Tasks (see `tasks.rs`) ----

    /// Stores a new task (version 1); fails with [`StoreError::TaskExists`] if its id is taken.
    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError>;
    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// Replaces the task whose stored version is `task.version - 1`, else fails with
    /// [`StoreError::TaskConflict`] (or [`StoreError::TaskNotFound`]).
    async fn update_task(&self, task: &TaskRecord) -> Result<(), StoreError>;
    /// Removes the tasks `scope` names; how many.
    async fn delete_tasks(&self, scope: TaskScope<'_>) -> Result<u64, StoreError>;
    /// The ids of up to `limit` tasks whose claim ran out by `now_ms` (their server died
    /// while they ran), the longest orphaned first: a server takes them over without waiting
    /// for their client to poll.
    async fn orphaned_tasks(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, StoreError>;
}

/// Whose audit events [`Store::delete_audit`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditScope<'a> {
    /// One session's, whether or not it still exists.
    Session(&'a str),
    /// Those of sessions the store no longer holds (left by deletes that kept them).
    DeletedSessions,
}
