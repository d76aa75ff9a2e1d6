//! A worker: claims runnable runs of the agents it has, drives each to its next wait or its
//! end, records where it got, and releases it.
//!
//! Claiming takes the run's session lease (see [`Store::claim_runs`]); the session is then
//! opened under this host's leases, so every step the worker commits and its final write to
//! the run's row are fenced by that lease. A worker killed mid-run holds its runs until their
//! leases expire; then any worker claims them and continues after their last committed step.
//! An idle worker sleeps until a run changes (Postgres `LISTEN`; in-process for the others),
//! the next run becomes claimable (a timer is due, a dead worker's lease runs out), or `poll`
//! passes; a full one until one of its runs ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use super::{CHANGE_ATTEMPTS, Run, RunError, Runs};
use crate::agent::{Agent, AgentError, AgentOutcome, Inbox, Stop, Wait};
use crate::error::CallError;
use crate::host::Host;
use crate::source::chain;
use crate::store::{Lease, RunStatus, Store, StoreError, timestamp_ms};

/// How a worker paces itself.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Runs driven at once.
    pub max_runs: usize,
    /// The longest an idle worker waits before looking for runs again.
    pub poll: Duration,
    /// Drives in a row that may end in an error (a model outage, a lost store connection)
    /// before the run is marked failed.
    pub max_failed_attempts: u32,
    /// The delay before the first retry of a run whose drive failed; doubled each time.
    pub retry_after: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { max_runs: 8, poll: Duration::from_secs(2), max_failed_attempts: 5, retry_after: Duration::from_secs(1) }
    }
}

/// What a worker did, when it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub drives: u64,
    /// Drives that ended the run (done, failed, cancelled).
    pub ended: u64,
    /// Drives that left the run waiting.
    pub suspended: u64,
    /// Drives handed back unfinished (drain) or lost to another worker.
    pub released: u64,
    pub errors: u64,
}

/// Where one drive left its run.
pub(super) enum Driven {
    Status(RunStatus),
    Released,
}

/// Drives the runs of its agents. See the module doc.
pub struct Worker {
    config: WorkerConfig,
    agents: BTreeMap<String, (Host, Arc<Agent>)>,
    /// The stop flags of the runs being driven, raised on drain.
    in_flight: Mutex<Vec<Arc<AtomicBool>>>,
    draining: AtomicBool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("config", &self.config).field("agents", &self.agents.keys()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Worker {
    pub fn new(config: WorkerConfig) -> Self {
        Self { config, agents: BTreeMap::new(), in_flight: Mutex::new(Vec::new()), draining: AtomicBool::new(false) }
    }

    /// Adds the agent that drives runs named `name`. Every host must lease sessions under
    /// the same holder and share one store.
    pub fn with_agent(mut self, name: impl Into<String>, host: Host, agent: Arc<Agent>) -> Self {
        self.agents.insert(name.into(), (host, agent));
        self
    }

    /// The store, lease holder and TTL all the agents' hosts share.
    fn setup(&self) -> Result<(Arc<dyn Store>, String, Duration), RunError> {
        let invalid = |reason: &str| RunError::Invalid { what: "worker", reason: reason.to_owned() };
        let (first, _) = self.agents.values().next().ok_or_else(|| invalid("it has no agents"))?;
        let leases =
            first.lease_config().ok_or_else(|| invalid("its hosts must lease sessions (`HostConfig::leases`)"))?;
        for (host, _) in self.agents.values() {
            if !Arc::ptr_eq(&host.store(), &first.store()) || host.lease_config() != Some(leases) {
                return Err(invalid("all its hosts must share one store and one lease configuration"));
            }
        }
        if self.config.max_runs == 0 {
            return Err(invalid("`max_runs` must be at least 1"));
        }
        Ok((first.store(), leases.holder.clone(), leases.ttl))
    }

    /// Claims and drives runs until `shutdown` completes; then stops claiming, asks the runs
    /// in flight to stop before their next step, and returns once each is handed back.
    pub async fn run_until(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<WorkerStats, RunError> {
        let (store, holder, ttl) = self.setup()?;
        let names: Vec<String> = self.agents.keys().cloned().collect();
        let mut stats = WorkerStats::default();
        let mut tasks: JoinSet<Result<Driven, RunError>> = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while let Some(done) = tasks.try_join_next() {
                count(&mut stats, done);
            }
            let free = self.config.max_runs - tasks.len();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                store.claim_runs(&names, &holder, ttl, free).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %chain(&e), "cannot claim runs");
                    Vec::new()
                })
            };
            let got = claimed.len();
            for lease in claimed {
                let worker = self.clone();
                tasks.spawn(async move { worker.drive_claimed(lease).await });
            }
            if got > 0 && got == free {
                continue;
            }
            if free == 0 {
                // Full: only a run ending can let it take another.
                tokio::select! {
                    _ = &mut shutdown => break,
                    Some(done) = tasks.join_next() => count(&mut stats, done),
                }
                continue;
            }
            let wait = self.idle_wait(store.as_ref(), &names).await;
            tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => count(&mut stats, done),
                _ = store.wait_for_runs(wait) => {}
            }
        }
        self.draining.store(true, Ordering::Relaxed);
        for stop in lock(&self.in_flight).iter() {
            stop.store(true, Ordering::Relaxed);
        }
        while let Some(done) = tasks.join_next().await {
            count(&mut stats, done);
        }
        Ok(stats)
    }

    /// How long to sleep with nothing to claim: until the next due time, at most `poll`.
    async fn idle_wait(&self, store: &dyn Store, names: &[String]) -> Duration {
        let poll = self.config.poll;
        match store.next_ready_at(names).await {
            Ok(Some(at)) => {
                let due = Duration::from_millis(at.saturating_sub(timestamp_ms()).max(0) as u64);
                due.clamp(Duration::from_millis(5), poll)
            }
            _ => poll,
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        self.agents.values().next().expect("checked in setup").0.store()
    }

    /// Drives the run whose session lease `lease` is, then records where it got.
    async fn drive_claimed(&self, lease: Lease) -> Result<Driven, RunError> {
        let driven = self.drive_leased(&lease.session).await;
        if let Err(e) = &driven {
            tracing::warn!(run = %lease.session, error = %chain(e), "drive failed");
        }
        // Gives the claim back if the session was never opened under it (else a no-op: the
        // session's own lease superseded it and was released on close).
        if let Err(e) = self.store().release_lease(&lease.session, lease.token).await {
            tracing::debug!(run = %lease.session, error = %chain(&e), "could not release a claim; it will expire");
        }
        driven
    }

    async fn drive_leased(&self, id: &str) -> Result<Driven, RunError> {
        let runs = Runs::new(self.store());
        let run = runs.get(id).await?;
        let Some((host, agent)) = self.agents.get(&run.agent) else { return Ok(Driven::Released) };
        if run.status.is_final() || run.ready_at_ms.is_none_or(|at| at > timestamp_ms()) {
            // Changed since the claim: nothing to do now.
            return Ok(Driven::Released);
        }
        let mut session = host.open_session(id).await?;
        let stop = Arc::new(AtomicBool::new(self.draining.load(Ordering::Relaxed)));
        lock(&self.in_flight).push(stop.clone());
        let watcher = tokio::spawn(watch_for_cancel(runs.clone(), id.to_owned(), stop.clone(), self.config.poll));
        let inbox =
            Inbox { decisions: run.body.decisions.clone(), signals: run.body.signals.clone(), cancelled: stop.clone() };
        let mut log = |event: crate::agent::AgentEvent| tracing::info!(run = %id, "{event}");
        let result = agent.advance(&mut session, run.body.goal.clone(), &inbox, &mut log).await;
        watcher.abort();
        lock(&self.in_flight).retain(|s| !Arc::ptr_eq(s, &stop));
        let recorded = record(&self.config, &runs, id, &result, session.lease_token()).await;
        session.close().await?;
        recorded
    }
}

/// Writes where a drive left run `id`, fenced by the session's lease, unless it was
/// cancelled meanwhile (a cancel is never overwritten).
pub(super) async fn record(
    config: &WorkerConfig,
    runs: &Runs,
    id: &str,
    result: &Result<AgentOutcome, AgentError>,
    lease: Option<u64>,
) -> Result<Driven, RunError> {
    if let Err(AgentError::Call(CallError::LeaseLost { .. } | CallError::Conflict { .. })) = result {
        return Ok(Driven::Released);
    }
    for _ in 0..CHANGE_ATTEMPTS {
        let mut run = runs.get(id).await?;
        if run.status == RunStatus::Cancelled {
            return Ok(Driven::Status(RunStatus::Cancelled));
        }
        let driven = apply(config, &mut run, result);
        match runs.store().update_run(&run.next_record(), lease).await {
            Ok(()) => return Ok(driven),
            Err(StoreError::RunConflict { .. }) => continue,
            Err(StoreError::LeaseLost { .. }) => return Ok(Driven::Released),
            Err(e) => return Err(e.into()),
        }
    }
    Err(RunError::Busy(id.to_owned()))
}

/// Sets `run`'s status, wait and outcome from what its drive came back with.
fn apply(config: &WorkerConfig, run: &mut Run, result: &Result<AgentOutcome, AgentError>) -> Driven {
    let now = timestamp_ms();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            run.body.failed_attempts += 1;
            run.body.last_error = Some(chain(error).to_string());
            if is_permanent(error) || run.body.failed_attempts >= config.max_failed_attempts {
                run.status = RunStatus::Failed;
                run.ready_at_ms = None;
                run.body.outcome =
                    Some(format!("gave up after {} failed drives: {}", run.body.failed_attempts, chain(error)));
                return Driven::Status(RunStatus::Failed);
            }
            let delay = config.retry_after.saturating_mul(1 << (run.body.failed_attempts - 1).min(16));
            run.status = RunStatus::Running;
            run.ready_at_ms = Some(now.saturating_add(delay.as_millis() as i64));
            return Driven::Released;
        }
    };
    run.body.failed_attempts = 0;
    run.body.last_error = None;
    run.body.steps = outcome.last_step;
    run.body.signals.retain(|s| !outcome.consumed_signals.contains(&s.id));
    run.body.waiting = None;
    let (status, ready) = match &outcome.stop {
        Stop::Answer(answer) => {
            run.body.outcome = Some(answer.clone());
            (RunStatus::Done, None)
        }
        stop @ (Stop::TurnLimit { .. } | Stop::Budget { .. }) => {
            run.body.outcome = Some(stop.to_string());
            (RunStatus::Failed, None)
        }
        // Asked to stop by the drain, not by a cancel (that one is never overwritten):
        // hand it back for another worker.
        Stop::Cancelled => {
            run.status = RunStatus::Running;
            run.ready_at_ms = Some(now);
            return Driven::Released;
        }
        Stop::Waiting(waiting) => {
            let arrived = match &waiting.wait {
                Wait::Approval { .. } => run.body.decisions.contains_key(&waiting.step),
                Wait::Event { name, .. } => run.body.signals.iter().any(|s| s.name == *name),
                Wait::Timer { .. } | Wait::Retry { .. } => false,
            };
            run.body.waiting = Some(waiting.clone());
            match arrived {
                // What it waits for came while it was being driven.
                true => (RunStatus::Running, Some(now)),
                false => (RunStatus::Waiting, waiting.wait.ready_at_ms()),
            }
        }
    };
    run.status = status;
    run.ready_at_ms = ready;
    match status {
        RunStatus::Running => Driven::Released,
        status => Driven::Status(status),
    }
}

/// An error no retry can get past: the run, its record or its agent is wrong.
fn is_permanent(error: &AgentError) -> bool {
    matches!(
        error,
        AgentError::InvalidConfig(_)
            | AgentError::SessionNotEmpty { .. }
            | AgentError::NotAnAgentSession { .. }
            | AgentError::Record { .. }
            | AgentError::Mismatch { .. }
            | AgentError::NoModelProvider
    )
}

fn count(stats: &mut WorkerStats, done: Result<Result<Driven, RunError>, tokio::task::JoinError>) {
    stats.drives += 1;
    match done {
        Ok(Ok(Driven::Status(s))) if s.is_final() => stats.ended += 1,
        Ok(Ok(Driven::Status(_))) => stats.suspended += 1,
        Ok(Ok(Driven::Released)) => stats.released += 1,
        Ok(Err(_)) | Err(_) => stats.errors += 1,
    }
}

/// Raises `stop` once run `id` is cancelled, looking every `every`.
pub(super) async fn watch_for_cancel(runs: Runs, id: String, stop: Arc<AtomicBool>, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(50)));
    loop {
        ticks.tick().await;
        if let Ok(run) = runs.get(&id).await
            && run.status == RunStatus::Cancelled
        {
            stop.store(true, Ordering::Relaxed);
            return;
        }
    }
}
