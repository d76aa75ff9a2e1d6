//! MCP Tasks (the `io.modelcontextprotocol/tasks` extension of 2026-07-28): task handles a
//! client polls with `tasks/get`, answers with `tasks/update` and cancels with `tasks/cancel`.
//!
//! A task is a row in the host's store ([`TaskRecord`]), never only memory, so its handle
//! outlives the server that minted it. Its body says what the work is ([`Work`]: a tool call
//! in a session, or an agent run, whose own record then says where it is), how far it got
//! ([`Progress`]), and which server instance runs it until when (`owner`, `claimed_until_ms`,
//! renewed while it runs). A working task whose claim ran out (its server died) is taken
//! over by the next server that sees it: by its keeper ([`TaskBoard::orphans`], on start and
//! every renewal period) or by a `tasks/get`. A tool call whose step committed is completed
//! from the step's record, one that did not is run again; a run needs nothing (workers
//! continue it), but its task is renewed by its server for as long as the run goes on, and
//! ends when the run does (then its TTL runs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::model::{DetailedTask, JsonObject, Task, TaskPayload};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::{Store, StoreError, TaskRecord, timestamp_ms};

/// How often clients are told to poll.
pub(crate) const POLL_INTERVAL_MS: u64 = 500;
/// How many times a change to a task is retried when someone else changed it first.
const CHANGE_ATTEMPTS: usize = 16;
/// Orphans one keeper pass takes over at most (the next pass takes more).
const ORPHANS_PER_PASS: usize = 32;

/// What a task does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Work {
    /// A `tools/call` of `tool` in session `session`; `step` is the step it runs as, once it
    /// has started (so a takeover can tell whether it committed).
    ToolCall {
        tool: String,
        session: String,
        input: JsonObject,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<u64>,
    },
    /// An agent run: its status is read from its record.
    Run { run: String },
}

/// How far a task got. A run's task stays `Working` here until cancelled: its run says more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Progress {
    Working,
    /// The `CallToolResult`, as JSON (also a tool error, `isError: true`).
    Completed {
        result: JsonObject,
    },
    /// The JSON-RPC error the call ended in.
    Failed {
        error: JsonObject,
    },
    Cancelled,
}

impl Progress {
    fn is_terminal(&self) -> bool {
        !matches!(self, Self::Working)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskBody {
    pub work: Work,
    pub progress: Progress,
    /// The server instance running the work, and until when its claim holds.
    pub owner: String,
    pub claimed_until_ms: i64,
    #[serde(default)]
    pub takeovers: u32,
}

/// A task read from the store.
#[derive(Debug, Clone)]
pub(crate) struct StoredTask {
    pub id: String,
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// When retention may remove it: `ttl` after it ended, or after its claim runs out.
    pub expires_at_ms: i64,
    pub body: TaskBody,
}

impl StoredTask {
    fn decode(record: TaskRecord) -> Result<Self, StoreError> {
        let body = serde_json::from_str(&record.body)
            .map_err(|e| StoreError::corrupt_by(format!("task `{}`", record.id), e))?;
        Ok(Self {
            id: record.id,
            version: record.version,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            expires_at_ms: record.expires_at_ms,
            body,
        })
    }

    /// The record that replaces this one; it is kept `ttl` past its end (a working task:
    /// past its claim, so one whose server died and that nobody polls goes too).
    fn next_record(&self, ttl: Duration) -> TaskRecord {
        let now = timestamp_ms();
        let from = if self.body.progress.is_terminal() { now } else { self.body.claimed_until_ms.max(now) };
        // A run's session is the run: deleting it removes the run's task too.
        let session = match &self.body.work {
            Work::ToolCall { session, .. } => session.clone(),
            Work::Run { run } => run.clone(),
        };
        TaskRecord {
            id: self.id.clone(),
            version: self.version + 1,
            created_at_ms: self.created_at_ms,
            updated_at_ms: now,
            session: Some(session),
            expires_at_ms: from.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            claimed_until_ms: (!self.body.progress.is_terminal()).then_some(self.body.claimed_until_ms),
            body: serde_json::to_string(&self.body).expect("a task body serializes"),
        }
    }

    /// The task's base fields as MCP shows them.
    pub fn view(&self, message: Option<String>) -> Task {
        let mut task = Task::new(
            self.id.clone(),
            rmcp::model::TaskStatus::Working,
            iso8601(self.created_at_ms),
            iso8601(self.updated_at_ms),
        )
        .with_poll_interval_ms(POLL_INTERVAL_MS)
        .with_ttl_ms(self.expires_at_ms.saturating_sub(self.created_at_ms).max(0) as u64);
        task.status_message = message;
        task
    }

    /// The `tasks/get` view of a tool-call task (a run's comes from its run record).
    pub fn detailed(&self) -> DetailedTask {
        let payload = match &self.body.progress {
            Progress::Working => TaskPayload::Working,
            Progress::Completed { result } => TaskPayload::Completed { result: result.clone() },
            Progress::Failed { error } => TaskPayload::Failed { error: error.clone() },
            Progress::Cancelled => TaskPayload::Cancelled,
        };
        let message = match (&self.body.progress, &self.body.work) {
            (Progress::Working, Work::ToolCall { tool, .. }) => Some(format!("calling {tool}")),
            (Progress::Cancelled, _) => Some("cancelled by the client".into()),
            _ => None,
        };
        DetailedTask::new(self.view(message), payload)
    }
}

fn iso8601(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A JSON-RPC error object, for a task that failed.
pub(crate) fn rpc_error(code: i32, message: &str) -> JsonObject {
    let Value::Object(error) = json!({"code": code, "message": message}) else { unreachable!() };
    error
}

/// The tasks of one server: its store, its instance name, its claims' length, how long
/// its tasks are kept.
pub(crate) struct TaskBoard {
    store: Arc<dyn Store>,
    instance: String,
    lease: Duration,
    ttl: Duration,
    /// The run tasks this server holds, with their slots: [`TaskBoard::keep_runs`] renews
    /// them while their runs go on.
    runs: std::sync::Mutex<std::collections::BTreeMap<String, Slot>>,
    /// The tasks this server runs now, and how many it may.
    working: Arc<AtomicUsize>,
    max_working: usize,
}

/// One task this server runs, counted against its `max_working_tasks` until dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl TaskBoard {
    pub fn new(store: Arc<dyn Store>, lease: Duration, ttl: Duration) -> Self {
        let lease = lease.max(Duration::from_millis(300));
        let (runs, working) = (std::sync::Mutex::default(), Arc::default());
        Self { store, instance: uuid::Uuid::new_v4().to_string(), lease, ttl, runs, working, max_working: usize::MAX }
    }

    pub fn with_max_working(mut self, max: usize) -> Self {
        self.max_working = max.max(1);
        self
    }

    /// A slot for a new task, unless this server runs as many as it may already.
    pub fn reserve(&self) -> Option<Slot> {
        let max = self.max_working;
        self.working.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(self.working.clone()))
    }

    /// A slot even past the limit: for a task taken over, which someone has to finish.
    pub fn slot(&self) -> Slot {
        self.working.fetch_add(1, Ordering::AcqRel);
        Slot(self.working.clone())
    }

    /// The tasks this server runs now.
    pub fn working(&self) -> usize {
        self.working.load(Ordering::Acquire)
    }

    fn held_runs(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Slot>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds run task `task` (one this server created or took over), in `slot`, until its
    /// run ends; a tool call's task is held by its drive instead.
    pub fn hold(&self, task: &StoredTask, slot: Slot) {
        if matches!(task.body.work, Work::Run { .. }) {
            self.held_runs().insert(task.id.clone(), slot);
        }
    }

    /// How often a running task's claim is renewed.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    fn claim_until(&self) -> i64 {
        timestamp_ms().saturating_add(self.lease.as_millis() as i64)
    }

    /// Stores a new working task, claimed by this server; returns once it is durable.
    pub async fn create(&self, work: Work) -> Result<StoredTask, StoreError> {
        let now = timestamp_ms();
        let task = StoredTask {
            id: uuid::Uuid::new_v4().to_string(),
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
            expires_at_ms: now,
            body: TaskBody {
                work,
                progress: Progress::Working,
                owner: self.instance.clone(),
                claimed_until_ms: self.claim_until(),
                takeovers: 0,
            },
        };
        let record = task.next_record(self.ttl);
        self.store.create_task(&record).await?;
        Ok(StoredTask { version: 1, expires_at_ms: record.expires_at_ms, ..task })
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredTask>, StoreError> {
        self.store.task(id).await?.map(StoredTask::decode).transpose()
    }

    /// Reads task `id`, lets `change` edit it (it returns whether to write), and writes it
    /// back unless someone changed it meanwhile (then again, from what they wrote). `None`:
    /// no such task, or `change` declined.
    async fn change(
        &self,
        id: &str,
        mut change: impl FnMut(&mut TaskBody) -> bool,
    ) -> Result<Option<StoredTask>, StoreError> {
        for _ in 0..CHANGE_ATTEMPTS {
            let Some(mut task) = self.get(id).await? else { return Ok(None) };
            if !change(&mut task.body) {
                return Ok(None);
            }
            let record = task.next_record(self.ttl);
            match self.store.update_task(&record).await {
                Ok(()) => {
                    return Ok(Some(StoredTask {
                        version: record.version,
                        updated_at_ms: record.updated_at_ms,
                        expires_at_ms: record.expires_at_ms,
                        ..task
                    }));
                }
                Err(StoreError::TaskConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::backend_refused(format!("task `{id}` kept changing")))
    }

    fn is_mine(&self, body: &TaskBody) -> bool {
        body.owner == self.instance && !body.progress.is_terminal()
    }

    /// Extends this server's claim on a task it runs; `false` once it is no longer ours to
    /// finish (cancelled, or taken over after a claim ran out).
    pub async fn renew(&self, id: &str) -> Result<bool, StoreError> {
        let until = self.claim_until();
        let changed = self
            .change(id, |body| {
                let mine = self.is_mine(body);
                if mine {
                    body.claimed_until_ms = until;
                }
                mine
            })
            .await?;
        Ok(changed.is_some())
    }

    /// Records the step a tool call runs as.
    pub async fn started(&self, id: &str, at: u64) -> Result<(), StoreError> {
        self.change(id, |body| {
            let mine = self.is_mine(body);
            match &mut body.work {
                Work::ToolCall { step, .. } if mine => {
                    *step = Some(at);
                    true
                }
                _ => false,
            }
        })
        .await
        .map(drop)
    }

    /// Ends a task this server runs; `false` if it was no longer ours (then nothing changed).
    pub async fn finish(&self, id: &str, progress: Progress) -> Result<bool, StoreError> {
        let changed = self
            .change(id, |body| {
                let mine = self.is_mine(body);
                if mine {
                    body.progress = progress.clone();
                }
                mine
            })
            .await?;
        Ok(changed.is_some())
    }

    /// Cancels a task that has not ended; `None` if there is no such task.
    pub async fn cancel(&self, id: &str) -> Result<Option<StoredTask>, StoreError> {
        let changed = self
            .change(id, |body| {
                let open = !body.progress.is_terminal();
                if open {
                    body.progress = Progress::Cancelled;
                }
                open
            })
            .await?;
        match changed {
            Some(task) => Ok(Some(task)),
            None => self.get(id).await,
        }
    }

    /// Claims a working task whose claim ran out (its server is gone) for this server;
    /// `Some` with the task if this server won it and must now run it.
    pub async fn take_over(&self, task: &StoredTask) -> Result<Option<StoredTask>, StoreError> {
        if task.body.progress.is_terminal() || task.body.claimed_until_ms > timestamp_ms() {
            return Ok(None);
        }
        let until = self.claim_until();
        let won = self
            .change(&task.id, |body| {
                let orphaned = !body.progress.is_terminal() && body.claimed_until_ms <= timestamp_ms();
                if orphaned {
                    tracing::info!(task = %task.id, previous = %body.owner, "taking over an orphaned task");
                    body.owner = self.instance.clone();
                    body.claimed_until_ms = until;
                    body.takeovers += 1;
                }
                orphaned
            })
            .await?;
        if let Some(won) = &won {
            self.hold(won, self.slot());
        }
        Ok(won)
    }

    /// Takes over up to [`ORPHANS_PER_PASS`] working tasks whose claim ran out; the ones
    /// this server won, which it must now run. Those another server won first are skipped.
    pub async fn orphans(&self) -> Result<Vec<StoredTask>, StoreError> {
        let mut won = Vec::new();
        for id in self.store.orphaned_tasks(timestamp_ms(), ORPHANS_PER_PASS).await? {
            let Some(task) = self.get(&id).await? else { continue };
            won.extend(self.take_over(&task).await?);
        }
        Ok(won)
    }

    /// Renews the run tasks this server holds whose runs go on, and ends those whose runs
    /// ended (with the run's result, so their TTL runs from then) or are gone.
    pub async fn keep_runs(&self, runs: &crate::run::Runs) {
        let held: Vec<String> = self.held_runs().keys().cloned().collect();
        for id in held {
            let kept = match self.get(&id).await {
                Ok(Some(StoredTask { body: TaskBody { work: Work::Run { run }, .. }, .. })) => {
                    self.keep_run(&id, runs.get(&run).await).await
                }
                Ok(_) => Ok(false),
                Err(e) => Err(e),
            };
            match kept {
                Ok(true) => {}
                Ok(false) => {
                    self.held_runs().remove(&id);
                }
                Err(e) => tracing::warn!(task = %id, error = %e, "cannot renew a run's task"),
            }
        }
    }

    /// Whether this server still holds run task `id` after renewing or ending it.
    async fn keep_run(&self, id: &str, run: Result<crate::run::Run, crate::run::RunError>) -> Result<bool, StoreError> {
        let progress = match run {
            Ok(run) if !run.status.is_final() => return self.renew(id).await,
            Ok(run) => match serde_json::to_value(super::agents::ended(&run)) {
                Ok(Value::Object(result)) => Progress::Completed { result },
                _ => Progress::Failed { error: rpc_error(-32603, "the run's result does not serialize") },
            },
            Err(crate::run::RunError::NotFound(run)) => {
                Progress::Failed { error: rpc_error(-32603, &format!("run {run} is gone")) }
            }
            Err(e) => return Err(StoreError::backend("cannot read a task's run", e)),
        };
        self.finish(id, progress).await.map(|_| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunBody, Runs};
    use crate::store::{MemoryStore, RunRecord, RunStatus, SessionRecord};

    /// Run `id`'s row (and session) in `status`, with `outcome`.
    async fn run_row(store: &dyn Store, id: &str, status: RunStatus, version: u64) {
        let body = RunBody {
            goal: crate::agent::Goal::new("g"),
            waiting: None,
            decisions: Default::default(),
            signals: Vec::new(),
            next_signal: 1,
            outcome: status.is_final().then(|| "42".to_owned()),
            failed_attempts: 0,
            last_error: None,
            steps: 0,
        };
        let record = RunRecord {
            id: id.into(),
            agent: "a".into(),
            status,
            ready_at_ms: None,
            version,
            created_at_ms: 1,
            updated_at_ms: 1,
            body: serde_json::to_string(&body).unwrap(),
        };
        if version == 1 {
            let session =
                SessionRecord { id: id.into(), seed: [1; 32], forked_from: None, created_at_ms: 1, last_step: 0 };
            store.create_session(&session).await.unwrap();
            store.create_run(&record).await.unwrap();
        } else {
            store.update_run(&record, None).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_run_task_is_renewed_while_its_run_goes_on_and_ends_with_it() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        run_row(store.as_ref(), "r", RunStatus::Waiting, 1).await;
        let board = TaskBoard::new(store.clone(), Duration::from_millis(300), Duration::from_secs(1));
        let runs = Runs::new(store.clone());
        let task = board.create(Work::Run { run: "r".into() }).await.unwrap();
        board.hold(&task, board.reserve().unwrap());
        assert_eq!(board.working(), 1);
        // Kept well past its claim and TTL while the run waits; never an orphan.
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            board.keep_runs(&runs).await;
            assert!(store.orphaned_tasks(timestamp_ms(), 10).await.unwrap().is_empty());
        }
        assert_eq!(store.delete_tasks(crate::store::TaskScope::ExpiredBy(timestamp_ms())).await.unwrap(), 0);
        let kept = store.task(&task.id).await.unwrap().unwrap();
        assert!(kept.claimed_until_ms.unwrap() > timestamp_ms(), "{kept:?}");
        assert_eq!(kept.session.as_deref(), Some("r"), "a run's task goes with its session");

        // The run ends: so does its task, with the run's answer, and its TTL runs from now.
        run_row(store.as_ref(), "r", RunStatus::Done, 2).await;
        board.keep_runs(&runs).await;
        let done = board.get(&task.id).await.unwrap().unwrap();
        let Progress::Completed { result } = &done.body.progress else { panic!("{:?}", done.body.progress) };
        assert_eq!(result["structuredContent"]["answer"], "42", "{result:?}");
        assert!(board.held_runs().is_empty());
        assert_eq!(board.working(), 0, "its slot is free again");
        let row = store.task(&task.id).await.unwrap().unwrap();
        assert_eq!(row.claimed_until_ms, None);
        assert!(row.expires_at_ms > timestamp_ms() + 500, "{row:?}");
        assert!(store.orphaned_tasks(timestamp_ms(), 10).await.unwrap().is_empty());
    }

    #[test]
    fn slots_stop_at_the_limit_and_free_on_drop() {
        let board = TaskBoard::new(Arc::new(MemoryStore::default()), Duration::from_secs(1), Duration::from_secs(1))
            .with_max_working(2);
        let (a, b) = (board.reserve().unwrap(), board.reserve().unwrap());
        assert!(board.reserve().is_none(), "a third task past a limit of two");
        let taken_over = board.slot();
        assert_eq!(board.working(), 3, "a taken-over task counts, past the limit");
        drop((a, taken_over));
        assert_eq!(board.working(), 1);
        assert!(board.reserve().is_some());
        drop(b);
    }

    #[tokio::test]
    async fn a_dead_servers_run_task_is_found_and_taken_over_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        run_row(store.as_ref(), "r", RunStatus::Running, 1).await;
        let dead = TaskBoard::new(store.clone(), Duration::from_millis(300), Duration::from_secs(60));
        let task = dead.create(Work::Run { run: "r".into() }).await.unwrap();
        dead.hold(&task, dead.reserve().unwrap());
        drop(dead);
        let (second, third) = (
            TaskBoard::new(store.clone(), Duration::from_millis(300), Duration::from_secs(60)),
            TaskBoard::new(store.clone(), Duration::from_millis(300), Duration::from_secs(60)),
        );
        assert!(second.orphans().await.unwrap().is_empty(), "a live claim is no orphan");
        tokio::time::sleep(Duration::from_millis(350)).await;
        let won = second.orphans().await.unwrap();
        assert_eq!(won.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [task.id.as_str()]);
        assert!(third.orphans().await.unwrap().is_empty(), "only one server wins an orphan");
        assert_eq!((second.working(), third.working()), (1, 0));
        // The winner keeps it from now on.
        tokio::time::sleep(Duration::from_millis(350)).await;
        second.keep_runs(&Runs::new(store.clone())).await;
        assert!(third.orphans().await.unwrap().is_empty(), "a kept task is no orphan");
    }

    fn call() -> Work {
        Work::ToolCall { tool: "t".into(), session: "s".into(), input: JsonObject::new(), step: None }
    }

    #[tokio::test]
    async fn a_task_is_finished_once_by_its_owner_and_an_orphan_is_taken_over_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let first = TaskBoard::new(store.clone(), Duration::from_millis(300), Duration::from_secs(60));
        let second = TaskBoard::new(store.clone(), Duration::from_millis(300), Duration::from_secs(60));
        let task = first.create(call()).await.unwrap();
        assert!(second.take_over(&task).await.unwrap().is_none(), "a live claim is not taken over");
        first.started(&task.id, 7).await.unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        let stale = second.get(&task.id).await.unwrap().unwrap();
        let third = TaskBoard::new(store.clone(), Duration::from_millis(300), Duration::from_secs(60));
        let won = second.take_over(&stale).await.unwrap().expect("an orphan is taken over");
        assert_eq!(won.body.takeovers, 1);
        assert!(matches!(won.body.work, Work::ToolCall { step: Some(7), .. }));
        assert!(third.take_over(&stale).await.unwrap().is_none(), "only one server wins an orphan");
        // The first server's late result is not written over the new owner's.
        assert!(!first.renew(&task.id).await.unwrap());
        assert!(!first.finish(&task.id, Progress::Cancelled).await.unwrap());
        let result = JsonObject::new();
        assert!(second.finish(&task.id, Progress::Completed { result }).await.unwrap());
        let done = second.get(&task.id).await.unwrap().unwrap();
        assert!(matches!(done.body.progress, Progress::Completed { .. }));
        // A finished task is not cancelled.
        assert!(matches!(second.cancel(&task.id).await.unwrap().unwrap().body.progress, Progress::Completed { .. }));
        assert!(second.cancel("no-such-task").await.unwrap().is_none());
        let view = serde_json::to_value(done.detailed()).unwrap();
        assert_eq!(view["status"], "completed");
        assert_eq!(view["taskId"], json!(task.id));
        assert!(view["createdAt"].as_str().unwrap().ends_with('Z'), "{view}");
        // Kept a minute past its end, which `ttlMs` (from creation) reports.
        let ttl = view["ttlMs"].as_u64().unwrap();
        assert!((60_000..70_000).contains(&ttl), "{view}");
        assert_eq!(store.delete_tasks(crate::store::TaskScope::ExpiredBy(done.expires_at_ms - 1)).await.unwrap(), 0);
        assert_eq!(store.delete_tasks(crate::store::TaskScope::Session("s")).await.unwrap(), 1);
        assert!(second.get(&task.id).await.unwrap().is_none());
    }
}
