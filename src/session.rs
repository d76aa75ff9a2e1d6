//! A session: the unit of isolation and of durability. It has one instance per tool it has
//! called (created on first use, never shared with another session), and every call is a
//! step that commits atomically to the store: its input and output, its journal, its state
//! writes and the tool's snapshot.
//!
//! Idle instances are held by the host's live-instance budget ([`crate::budget`]), which may
//! hibernate (drop) them to make room for others. An instance that is not live (hibernated,
//! after a restart, a trap, or in a fork) is rebuilt on the next call: the latest snapshot is
//! restored, then the tool's later steps are replayed from their journals, checking that
//! each produces the recorded output. A tool declared stateless is never replayed.
//!
//! A tool whose last step in the session ran another component (another sha256) is upgraded
//! as its policy's `on_upgrade` says, and the switch is committed as an `upgraded` step (see
//! [`crate::contract::OnUpgrade`]); a refusal commits nothing.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

use crate::budget::{Live, Slot};
use crate::contract::{OnUpgrade, Upgrade, UpgradeVia};
use crate::error::{CallError, Source, ToolFailure, chain};
use crate::instance::{Instance, InstanceEnv};
use crate::journal::{RandomState, StepInFlight, lock};
use crate::lease::LeaseKeeper;
use crate::runtime::Runtime;
pub use crate::runtime::SnapshotPolicy;
use crate::store::{AuditEvent, SessionRecord, StepCommit, StepOutcome, StepRecord, StoreError};
use crate::tool::{Tool, ToolKind};

/// A sequence of steps with its own instances and state. Calls take `&mut self`: a session
/// runs one step at a time, while many sessions run concurrently.
pub struct Session {
    record: SessionRecord,
    runtime: Arc<Runtime>,
    /// This handle's place in the host's budget for each tool it has called. The instance
    /// itself is in the budget while idle, and in the running call's hands while busy.
    slots: HashMap<String, Slot>,
    /// Held while the session is open, when the host leases sessions.
    lease: Option<LeaseKeeper>,
    /// Whether the store may hold a pending journal for this session: true when opened (a
    /// crashed host may have left one) and while a step runs; false once this handle has
    /// committed or cleared, so later steps skip the read.
    pending_possible: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.record.id)
            .field("last_step", &self.record.last_step)
            .field("live_instances", &self.live_instances().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// How a tool's instance was brought to the session's last committed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuild {
    /// The step whose snapshot was restored, if any.
    pub restored_from: Option<u64>,
    /// Steps replayed from their journals after it.
    pub replayed: u32,
    /// Instantiation, restore and replay together.
    pub elapsed: std::time::Duration,
    /// Of `elapsed`: reading the snapshot (from the budget's cache or the store).
    pub snapshot_read: std::time::Duration,
    /// Of `elapsed`: the guest's `restore` of the snapshot.
    pub restore: std::time::Duration,
    /// Of `elapsed`: reading the steps to replay and replaying them.
    pub replay: std::time::Duration,
}

impl Session {
    pub(crate) fn new(record: SessionRecord, runtime: Arc<Runtime>) -> Self {
        Self { record, runtime, slots: HashMap::new(), lease: None, pending_possible: true }
    }

    /// Drops every instance of this session (they ran ahead of, or lost, the store).
    fn drop_instances(&mut self) {
        let budget = &self.runtime.instances;
        for slot in self.slots.values() {
            budget.forget(*slot);
        }
    }

    pub(crate) fn with_lease(mut self, lease: Option<LeaseKeeper>) -> Self {
        self.lease = lease;
        self
    }

    /// The fencing token of this session's lease, when the host leases sessions.
    pub fn lease_token(&self) -> Option<u64> {
        self.lease.as_ref().map(LeaseKeeper::token)
    }

    /// Closes the session and releases its lease at once, so another host can take it over
    /// without waiting for expiry. Dropping a session releases it in the background.
    pub async fn close(mut self) -> Result<(), StoreError> {
        match self.lease.take() {
            Some(lease) => lease.release().await,
            None => Ok(()),
        }
    }

    /// The call error for a store error in `tool`'s step: a lost lease (marked on the
    /// keeper, so the session stops working), another writer's step, or the store's failure.
    fn store_failed(&self, tool: &str, error: StoreError) -> CallError {
        if let (Some(lease), StoreError::LeaseLost { reason, .. }) = (&self.lease, &error) {
            lease.mark_lost(reason.clone());
        }
        let (tool, session) = (tool.to_owned(), self.record.id.clone());
        match error {
            e @ StoreError::LeaseLost { .. } => CallError::LeaseLost { tool, session, source: e },
            e @ StoreError::Conflict { .. } => CallError::Conflict { tool, session, source: e },
            e => CallError::Store { tool, source: e },
        }
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The last committed step (0 before the first).
    pub fn last_step(&self) -> u64 {
        self.record.last_step
    }

    /// The session this one was forked from, and at which step.
    pub fn forked_from(&self) -> Option<(&str, u64)> {
        self.record.forked_from.as_ref().map(|(id, at)| (id.as_str(), *at))
    }

    /// Tools with a live instance in this session (not hibernated).
    pub fn live_instances(&self) -> impl Iterator<Item = &str> {
        let budget = &self.runtime.instances;
        self.slots.iter().filter(|(_, slot)| budget.is_idle(**slot)).map(|(name, _)| name.as_str())
    }

    /// Calls `tool` with `input` as one durable step. The input is validated against the
    /// tool's schema, the call runs under the tool's limits, and the step commits only if the
    /// call ran to completion (with output or with the tool's own error). A trap, deadline or
    /// memory overrun drops the instance and commits nothing; other sessions are unaffected.
    pub async fn call(&mut self, tool: &Tool, input: &serde_json::Value) -> Result<serde_json::Value, CallError> {
        let name = tool.name().to_owned();
        tool.validate_input(input).map_err(|errors| CallError::InvalidInput { tool: name.clone(), errors })?;
        let input_text = input.to_string();
        // A session that cannot show it still holds its lease does no work, and calls no
        // model, that the store would refuse to commit.
        if let Some(lease) = &self.lease
            && let Err(e) = lease.ensure_valid().await
        {
            self.drop_instances();
            return Err(self.store_failed(&name, e));
        }
        let (mut instance, _) = self.check_out(tool).await?;
        let seq = self.record.last_step + 1;
        let store = self.runtime.store();
        let store_error = |e: StoreError| CallError::Store { tool: name.clone(), source: e };

        // A step that crashed before commit left its journal: re-run it from there, so the
        // model answers it already paid for are not asked for again.
        let pending =
            if self.pending_possible { store.pending(&self.record.id).await.map_err(store_error)? } else { None };
        // From here until the commit, this step may leave a pending journal behind.
        self.pending_possible = true;
        let lease = self.lease_token();
        {
            let mut journal = lock(instance.journal());
            match pending {
                Some(p) if p.seq == seq && p.tool == name && p.input == input_text => {
                    journal.begin_replay(p.journal, false)
                }
                _ => journal.begin_live(),
            }
            journal.step = Some(StepInFlight { seq, input: input_text.clone(), lease });
        }

        // After a fork, the session's own steps draw from its fresh seed.
        if instance.random_state().seed != self.record.seed {
            instance.seek_random(&RandomState { seed: self.record.seed, secure: 0, insecure: 0 });
        }
        let engine = &self.runtime.engine;
        let outcome = match instance.call(engine, tool.bounds(), &input_text).await {
            Ok(outcome) => outcome,
            Err(aborted) => return Err(self.abort(&name, instance, aborted).await),
        };
        let finished = lock(instance.journal()).finish();
        let journal = match finished {
            Ok(entries) => entries,
            Err(reason) => {
                let diverged = CallError::ReplayDiverged {
                    tool: name.clone(),
                    session: self.record.id.clone(),
                    step: seq,
                    reason,
                    source: None,
                };
                return Err(self.abort(&name, instance, diverged).await);
            }
        };
        let (output, step_outcome) = match outcome {
            Ok(text) => match check_output(tool, &text) {
                Ok(value) => (Ok(value), StepOutcome::Output(text)),
                Err(invalid) => return Err(self.abort(&name, instance, invalid).await),
            },
            Err(failure) => {
                (Err(CallError::Tool { tool: name.clone(), failure: failure.clone() }), StepOutcome::Failed(failure))
            }
        };

        let written = lock(instance.journal()).charges.written_bytes();
        let staged = match instance.workspace() {
            Some(workspace) => workspace.stage_for(&name, written).await,
            None => Ok(Default::default()),
        };
        let files = match staged {
            Ok(files) => files,
            Err(over) => return Err(self.abort(&name, instance, over).await),
        };
        let writes = instance.state().take_writes();
        let random = instance.random_state();
        let policy = self.runtime.snapshots;
        instance.steps_since_snapshot += 1;
        let snapshot = if instance.is_stateful() && instance.steps_since_snapshot >= policy.every {
            match instance.snapshot(engine, tool.bounds()).await {
                Ok(bytes) => bytes.map(Bytes::from),
                Err(aborted) => return Err(self.abort(&name, instance, aborted).await),
            }
        } else {
            None
        };
        let budget = &self.runtime.instances;
        // Kept for a rebuild after hibernation, so it need not read the store (the bytes are
        // shared with the commit, not copied).
        let cached = snapshot.clone().filter(|bytes| budget.caches(bytes.len()));
        let took_snapshot = snapshot.is_some();
        let commit = StepCommit {
            session: self.record.id.clone(),
            step: StepRecord {
                seq,
                tool: name.clone(),
                digest: tool.digest().to_owned(),
                input: input_text,
                outcome: step_outcome,
                journal,
                writes,
                random,
                committed_at_ms: crate::store::timestamp_ms(),
                files: files.changes,
            },
            snapshot,
            file_chunks: files.chunks,
            keep_snapshots: policy.keep,
            lease: self.lease.as_ref().map(LeaseKeeper::token),
        };
        if let Err(e) = store.commit_step(commit).await {
            let error = self.store_failed(&name, e);
            // The instance ran ahead of what is stored: it must be rebuilt from the store.
            drop(instance);
            self.drop_instances();
            return Err(error);
        }
        // The commit deleted the step's pending journal with it.
        self.pending_possible = false;
        self.record.last_step = seq;
        let slot = self.slots[&name];
        if took_snapshot {
            instance.steps_since_snapshot = 0;
            match cached {
                Some(bytes) => budget.cache_snapshot(slot, seq, bytes),
                None => budget.forget_snapshot(slot),
            }
        }
        if let Some(workspace) = instance.workspace() {
            workspace.committed();
        }
        budget.check_in(slot, instance);
        output
    }

    /// Commits a step the host itself took (not a tool call), e.g. the agent loop's model
    /// turns: `actor` names it (it must not be a valid tool name, so it never collides with
    /// a tool's steps and is never replayed into an instance), `input` and `output` are what
    /// happened. Returns the step's sequence number.
    pub async fn commit_host_step(
        &mut self,
        actor: &str,
        input: &serde_json::Value,
        output: &serde_json::Value,
        journal: Vec<crate::journal::JournalEntry>,
    ) -> Result<u64, CallError> {
        debug_assert!(!crate::tool::valid_name(actor), "host step actor `{actor}` could be a tool name");
        let seq = self.record.last_step + 1;
        let commit = StepCommit {
            session: self.record.id.clone(),
            step: StepRecord {
                seq,
                tool: actor.to_owned(),
                digest: String::new(),
                input: input.to_string(),
                outcome: StepOutcome::Output(output.to_string()),
                journal,
                writes: Vec::new(),
                random: RandomState { seed: self.record.seed, secure: 0, insecure: 0 },
                committed_at_ms: crate::store::timestamp_ms(),
                files: Vec::new(),
            },
            snapshot: None,
            file_chunks: Vec::new(),
            keep_snapshots: self.runtime.snapshots.keep,
            lease: self.lease.as_ref().map(LeaseKeeper::token),
        };
        if let Err(e) = self.runtime.store().commit_step(commit).await {
            // Someone else holds the session now: what is live ran ahead of the store.
            if matches!(e, StoreError::Conflict { .. } | StoreError::LeaseLost { .. }) {
                self.drop_instances();
            }
            return Err(self.store_failed(actor, e));
        }
        self.record.last_step = seq;
        Ok(seq)
    }

    /// The session's committed steps after step `after`, in order.
    ///
    /// The future holds no borrow of the session, so callers' futures (the agent loop's
    /// among them) stay `Send` whatever `Session` holds.
    pub fn steps(&self, after: u64) -> impl Future<Output = Result<Vec<StepRecord>, StoreError>> + Send + 'static {
        let (store, id) = (self.runtime.store(), self.record.id.clone());
        async move { store.steps(&id, None, after).await }
    }

    /// Starts (or rebuilds) this session's instance of `tool` now rather than on the next
    /// call, and says how; `None` if the instance was already live. Meeting a new component
    /// of a tool the session has used, it commits the upgrade (or fails as a call would).
    pub async fn prewarm(&mut self, tool: &Tool) -> Result<Option<Rebuild>, CallError> {
        let (live, rebuild) = self.check_out(tool).await?;
        self.runtime.instances.check_in(self.slots[tool.name()], live);
        Ok(rebuild)
    }

    /// This session's instance of `tool` for a call: the idle one, or one rebuilt in a place
    /// the budget admits (which may hibernate another session's idle instance).
    async fn check_out(&mut self, tool: &Tool) -> Result<(Live, Option<Rebuild>), CallError> {
        let name = tool.name();
        let budget = &self.runtime.instances;
        let slot = match self.slots.get(name) {
            Some(slot) => *slot,
            None => *self.slots.entry(name.to_owned()).or_insert_with(|| budget.new_slot()),
        };
        match budget.check_out(slot) {
            Some(live) if live.digest == tool.digest() => return Ok((live, None)),
            // Another component of the tool: rebuilt from the store, as an upgrade.
            Some(_) => budget.forget(slot),
            None => {}
        }
        let engine = &self.runtime.engine;
        if !wasmtime::Engine::same(tool.blueprint.pre.component().engine(), engine.wasmtime()) {
            return Err(CallError::Instantiate {
                tool: name.to_owned(),
                reason: "the tool was loaded by another host".into(),
                source: None,
            });
        }
        let place = budget.admit().await.map_err(|busy| CallError::Busy {
            tool: name.to_owned(),
            limit: busy.limit,
            waited: busy.waited,
        })?;
        let cached = budget.cached_snapshot(slot).filter(|(seq, _)| *seq <= self.record.last_step);
        let rebuilt = Rebuilder { record: &self.record, runtime: &self.runtime, cached }.rebuild(tool).await;
        let (instance, rebuild, upgrade) = match rebuilt {
            Ok(rebuilt) => rebuilt,
            Err(CallError::UpgradeRefused { tool, from, to, policy, reason }) => {
                self.audit_upgrade(name, (&from, &to), false, reason.clone()).await;
                return Err(CallError::UpgradeRefused { tool, from, to, policy, reason });
            }
            Err(e) => return Err(e),
        };
        let mut live = Live::new(instance, place);
        if let Some(upgrade) = upgrade {
            self.commit_upgrade(tool, &mut live, upgrade).await?;
        }
        Ok((live, Some(rebuild)))
    }

    /// Commits the `upgraded` step of `tool`, whose new component `live` now runs at the
    /// session's last step, with a snapshot of it (for a stateful tool), so later rebuilds
    /// start from the new component's own state. Audited.
    async fn commit_upgrade(&mut self, tool: &Tool, live: &mut Live, upgrade: Upgrade) -> Result<(), CallError> {
        let name = tool.name();
        let engine = &self.runtime.engine;
        let snapshot = match live.is_stateful() {
            true => live.snapshot(engine, tool.bounds()).await?.map(Bytes::from),
            false => None,
        };
        let seq = self.record.last_step + 1;
        let input = serde_json::json!({ "upgrade": { "from": upgrade.from, "to": upgrade.to } }).to_string();
        let summary = upgrade.to_string();
        let digests = (upgrade.from.clone(), upgrade.to.clone());
        let took_snapshot = snapshot.is_some();
        let budget = &self.runtime.instances;
        let cached = snapshot.clone().filter(|bytes| budget.caches(bytes.len()));
        let commit = StepCommit {
            session: self.record.id.clone(),
            step: StepRecord {
                seq,
                tool: name.to_owned(),
                digest: tool.digest().to_owned(),
                input,
                outcome: StepOutcome::Upgraded(upgrade),
                journal: Vec::new(),
                writes: Vec::new(),
                random: live.random_state(),
                committed_at_ms: crate::store::timestamp_ms(),
                files: Vec::new(),
            },
            snapshot,
            file_chunks: Vec::new(),
            keep_snapshots: self.runtime.snapshots.keep,
            lease: self.lease_token(),
        };
        if let Err(e) = self.runtime.store().commit_step(commit).await {
            self.drop_instances();
            return Err(self.store_failed(name, e));
        }
        // The commit deleted any pending journal with it.
        self.pending_possible = false;
        self.record.last_step = seq;
        if took_snapshot {
            live.steps_since_snapshot = 0;
            let slot = self.slots[name];
            match cached {
                Some(bytes) => budget.cache_snapshot(slot, seq, bytes),
                None => budget.forget_snapshot(slot),
            }
        }
        tracing::info!(session = %self.record.id, tool = name, step = seq, "upgraded {summary}");
        self.audit_upgrade(
            name,
            (&digests.0, &digests.1),
            true,
            format!("upgraded {summary}; committed as step {seq}"),
        )
        .await;
        Ok(())
    }

    /// Records an upgrade of `tool` from one digest to another, or its refusal, in the audit trail.
    async fn audit_upgrade(&self, tool: &str, (from, to): (&str, &str), allowed: bool, reason: String) {
        let request = format!("{from} -> {to}");
        let event = AuditEvent {
            at_ms: crate::store::timestamp_ms(),
            session: self.record.id.clone(),
            tool: tool.to_owned(),
            capability: "upgrade".into(),
            request,
            allowed,
            reason,
        };
        if let Err(e) = self.runtime.store().record_audit(&event).await {
            tracing::warn!(session = %self.record.id, tool, error = %chain(&e), "could not audit a tool upgrade");
        }
    }

    /// Drops the instance of `tool` with everything its aborted call did.
    async fn abort(&mut self, tool: &str, instance: Live, why: CallError) -> CallError {
        tracing::warn!(session = %self.record.id, tool, error = %chain(&why), "call aborted; dropping the instance");
        drop(instance);
        if self.lease.as_ref().is_some_and(LeaseKeeper::is_lost) {
            // The pending journal now belongs to the lease's new holder.
            return why;
        }
        // A later attempt of this step starts over rather than replaying the aborted one.
        match self.runtime.store().clear_pending(&self.record.id, self.lease_token()).await {
            Ok(()) => self.pending_possible = false,
            Err(StoreError::LeaseLost { reason, .. }) => {
                if let Some(lease) = &self.lease {
                    lease.mark_lost(reason);
                }
            }
            Err(e) => {
                tracing::warn!(session = %self.record.id, error = %chain(&e), "could not clear the aborted step's journal")
            }
        }
        why
    }
}

/// Brings instances to a session's last committed step. It borrows only what it reads (never
/// the session's live instances), so a session's futures stay `Send` for `tokio::spawn`.
struct Rebuilder<'a> {
    record: &'a SessionRecord,
    runtime: &'a Runtime,
    /// The session's latest snapshot of the tool, if the budget's cache holds it.
    cached: Option<(u64, Bytes)>,
}

impl Rebuilder<'_> {
    fn env(&self) -> InstanceEnv<'_> {
        InstanceEnv {
            session: &self.record.id,
            seed: &self.record.seed,
            store: self.runtime.store(),
            models: self.runtime.model_provider(),
            ungranted: &[],
        }
    }

    async fn instantiate(&self, tool: &Tool) -> Result<Instance, CallError> {
        let env = InstanceEnv { ungranted: &tool.ungranted, ..self.env() };
        Instance::new(&self.runtime.engine, &tool.blueprint, tool.name(), env, &tool.grants).await
    }

    /// A fresh instance brought to the session's last committed step: restore the newest
    /// snapshot, then replay the tool's later steps. A tool declared stateless is only
    /// instantiated, its random streams put where its last step left them. When the tool's
    /// last step ran another component, this is an upgrade, done as the tool's `on_upgrade`
    /// says; it fails with [`CallError::UpgradeRefused`] if that cannot be done, and returns
    /// the [`Upgrade`] to commit if it can.
    async fn rebuild(&self, tool: &Tool) -> Result<(Instance, Rebuild, Option<Upgrade>), CallError> {
        let name = tool.name();
        let started = std::time::Instant::now();
        let previous = match self.record.last_step {
            0 => None,
            at => self
                .runtime
                .store()
                .last_step_of(&self.record.id, name, at)
                .await
                .map_err(|e| CallError::Store { tool: name.to_owned(), source: e })?,
        };
        let Some(from) = previous.as_ref().map(|s| s.digest.as_str()).filter(|d| *d != tool.digest()) else {
            let (instance, rebuild, _) = self.restore_and_replay(tool, previous.as_ref(), None, started).await?;
            return Ok((instance, rebuild, None));
        };
        let upgrading = Upgrading { tool, from, policy: tool.grants.on_upgrade };
        if upgrading.policy == OnUpgrade::Refuse {
            return Err(upgrading.refused("its policy refuses a new component in a running session".into()));
        }
        match self.restore_and_replay(tool, previous.as_ref(), Some(&upgrading), started).await {
            Ok((instance, rebuild, via)) => {
                let upgrade = Upgrade {
                    from: from.to_owned(),
                    to: tool.digest().to_owned(),
                    via,
                    restored_from: rebuild.restored_from,
                    replayed: rebuild.replayed,
                };
                Ok((instance, rebuild, Some(upgrade)))
            }
            // The host's own failures are not the new component's: they stay what they are.
            Err(
                e @ (CallError::Store { .. }
                | CallError::Busy { .. }
                | CallError::Conflict { .. }
                | CallError::LeaseLost { .. }
                | CallError::Instantiate { .. }
                | CallError::UpgradeRefused { .. }),
            ) => Err(e),
            // The cause goes in the reason, not a source: the message ends with what to do.
            Err(e) => Err(upgrading
                .refused(format!("bringing the new component to the session's last step failed: {}", chain(&e)))),
        }
    }

    /// The work of [`Self::rebuild`]: `previous` is the tool's last committed step, and
    /// `upgrading` says whether (and how) a new component takes the session over.
    async fn restore_and_replay(
        &self,
        tool: &Tool,
        previous: Option<&StepRecord>,
        upgrading: Option<&Upgrading<'_>>,
        started: std::time::Instant,
    ) -> Result<(Instance, Rebuild, UpgradeVia), CallError> {
        let name = tool.name();
        let store = self.runtime.store();
        let id = &self.record.id;
        let store_error = |e: StoreError| CallError::Store { tool: name.to_owned(), source: e };
        let mut instance = self.instantiate(tool).await?;
        let zero = std::time::Duration::ZERO;
        let fresh = |instance, via| {
            let rebuild = Rebuild {
                restored_from: None,
                replayed: 0,
                elapsed: started.elapsed(),
                snapshot_read: zero,
                restore: zero,
                replay: zero,
            };
            Ok((instance, rebuild, via))
        };
        if self.record.last_step == 0 {
            return fresh(instance, UpgradeVia::Stateless);
        }
        if tool.kind() == ToolKind::Stateless {
            if let Some(last) = previous {
                instance.seek_random(&last.random);
            }
            self.materialize(&mut instance, name, self.record.last_step).await?;
            return fresh(instance, UpgradeVia::Stateless);
        }

        let (mut replay_after, mut snapshot_read, mut restore) = (0, zero, zero);
        let read_started = std::time::Instant::now();
        let from_snapshot = upgrading.is_none_or(|u| u.policy == OnUpgrade::Snapshot);
        if from_snapshot
            && instance.is_stateful()
            && let Some((seq, bytes)) = self.latest_snapshot(name, upgrading.is_some()).await.map_err(store_error)?
        {
            snapshot_read = read_started.elapsed();
            self.materialize(&mut instance, name, seq).await?;
            let restore_started = std::time::Instant::now();
            let restored = instance.restore(&self.runtime.engine, tool.bounds(), &bytes).await?;
            restore = restore_started.elapsed();
            match (restored, upgrading) {
                (Ok(()), _) => replay_after = seq,
                (Err(reason), Some(upgrading)) => {
                    return Err(
                        upgrading.refused(format!("the new component refused the snapshot of step {seq}: {reason}"))
                    );
                }
                (Err(reason), None) => {
                    tracing::warn!(session = %id, tool = name, step = seq, %reason,
                        "the tool refused its snapshot; rebuilding by full replay");
                    drop(instance);
                    instance = self.instantiate(tool).await?;
                }
            }
        }
        let replay_started = std::time::Instant::now();
        // With a workspace, what the replayed steps must leave in it: the files as of the last
        // step, read from the store's file changes alone.
        let expected_files = match instance.workspace() {
            Some(_) => Some(store.workspace_at(id, name, self.record.last_step).await.map_err(store_error)?),
            None => None,
        };
        // From the snapshot's step on, which carries the random position.
        let steps = store.steps(id, Some(name), replay_after.saturating_sub(1)).await.map_err(store_error)?;
        let mut steps =
            steps.into_iter().filter(|s| s.seq >= replay_after && s.seq <= self.record.last_step).peekable();
        if replay_after > 0 {
            let snapshot_step = steps.next().filter(|s| s.seq == replay_after).ok_or_else(|| {
                store_error(StoreError::corrupt(format!(
                    "the step of `{name}`'s snapshot at {replay_after} is missing"
                )))
            })?;
            instance.seek_random(&snapshot_step.random);
        }
        // An `upgraded` step is no call: there is nothing to replay.
        let steps: Vec<StepRecord> = steps.filter(|s| !matches!(s.outcome, StepOutcome::Upgraded(_))).collect();
        let limit = tool.grants.limits.max_replay_steps;
        if steps.len() as u64 > u64::from(limit) {
            return Err(CallError::ReplayTooLong {
                tool: name.to_owned(),
                session: id.clone(),
                steps: steps.len() as u64,
                limit,
            });
        }
        let mut replayed = 0;
        for step in &steps {
            self.replay_step(&mut instance, tool, step).await?;
            replayed += 1;
        }
        instance.steps_since_snapshot = replayed;
        if let (Some(workspace), Some(expected)) = (instance.workspace(), expected_files) {
            workspace.verify(expected).await.map_err(|reason| CallError::ReplayDiverged {
                tool: name.to_owned(),
                session: id.clone(),
                step: self.record.last_step,
                reason,
                source: None,
            })?;
        }
        let rebuild = Rebuild {
            restored_from: (replay_after > 0).then_some(replay_after),
            replayed,
            elapsed: started.elapsed(),
            snapshot_read,
            restore,
            replay: replay_started.elapsed(),
        };
        tracing::debug!(session = %id, tool = name, ?rebuild, "rebuilt instance");
        let via = match upgrading.map(|u| u.policy) {
            Some(OnUpgrade::Replay) => UpgradeVia::Replay,
            _ if replay_after > 0 => UpgradeVia::Snapshot,
            _ => UpgradeVia::ReplayWithoutSnapshot,
        };
        Ok((instance, rebuild, via))
    }

    /// Fills a fresh instance's workspace with its files as of step `at` (a fork's: its
    /// parent's as of the fork step, then its own).
    async fn materialize(&self, instance: &mut Instance, tool: &str, at: u64) -> Result<(), CallError> {
        let Some(workspace) = instance.workspace() else { return Ok(()) };
        let store = self.runtime.store();
        let store_error = |e: StoreError| CallError::Store { tool: tool.to_owned(), source: e };
        let manifest = store.workspace_at(&self.record.id, tool, at).await.map_err(store_error)?;
        workspace.materialize(store.as_ref(), manifest).await.map_err(store_error)
    }

    /// The newest snapshot of `tool` at or before the last committed step: from the budget's
    /// cache when it holds it (and it is the same component's), else from the store.
    async fn latest_snapshot(&self, tool: &str, upgrading: bool) -> Result<Option<(u64, Bytes)>, StoreError> {
        if let Some(cached) = self.cached.as_ref().filter(|_| !upgrading) {
            return Ok(Some(cached.clone()));
        }
        let stored = self.runtime.store().latest_snapshot(&self.record.id, tool, self.record.last_step).await?;
        Ok(stored.map(|(seq, bytes)| (seq, Bytes::from(bytes))))
    }

    /// Re-runs a committed step against its journal and checks it ends the same way.
    async fn replay_step(&self, instance: &mut Instance, tool: &Tool, step: &StepRecord) -> Result<(), CallError> {
        let diverged_by = |reason: String, source: Option<Source>| CallError::ReplayDiverged {
            tool: tool.name().to_owned(),
            session: self.record.id.clone(),
            step: step.seq,
            reason,
            source,
        };
        let diverged = |reason: String| diverged_by(reason, None);
        // Streams switch seeds at a fork point: a step draws from the seed it recorded.
        if instance.random_state().seed != step.random.seed {
            instance.seek_random(&RandomState { seed: step.random.seed, secure: 0, insecure: 0 });
        }
        // A step that moved the seeded secure stream predates journaled entropy.
        let seeded = instance.random_state().secure != step.random.secure;
        {
            let mut journal = lock(instance.journal());
            journal.begin_replay(step.journal.clone(), true);
            if seeded {
                journal.replay_seeded_random();
            }
        }
        let outcome = instance.call(&self.runtime.engine, tool.bounds(), &step.input).await;
        let journal = lock(instance.journal()).finish();
        instance.state().take_writes();
        if let Some(workspace) = instance.workspace() {
            workspace.replayed();
        }
        let outcome = outcome.map_err(|e| diverged_by("the replay failed".into(), Some(Source::new(e))))?;
        journal.map_err(diverged)?;
        let matches = match (&outcome, &step.outcome) {
            (Ok(text), StepOutcome::Output(recorded)) => text == recorded,
            (Err(failure), StepOutcome::Failed(recorded)) => failure == recorded,
            _ => false,
        };
        if !matches {
            return Err(diverged(format!(
                "it returned {} where {} was recorded",
                describe(&outcome),
                describe_recorded(&step.outcome)
            )));
        }
        if instance.random_state() != step.random {
            return Err(diverged("it drew a different amount of randomness".into()));
        }
        Ok(())
    }
}

/// A new component of a tool taking a session over, under the tool's `on_upgrade`.
struct Upgrading<'a> {
    tool: &'a Tool,
    /// The digest of the component the tool's last step ran.
    from: &'a str,
    policy: OnUpgrade,
}

impl Upgrading<'_> {
    fn refused(&self, reason: String) -> CallError {
        CallError::UpgradeRefused {
            tool: self.tool.name().to_owned(),
            from: self.from.to_owned(),
            to: self.tool.digest().to_owned(),
            policy: self.policy,
            reason,
        }
    }
}

fn describe(outcome: &Result<String, ToolFailure>) -> String {
    match outcome {
        Ok(text) => format!("output {}", truncate(text)),
        Err(failure) => format!("error `{failure}`"),
    }
}

fn describe_recorded(outcome: &StepOutcome) -> String {
    match outcome {
        StepOutcome::Output(text) => format!("output {}", truncate(text)),
        StepOutcome::Failed(failure) => format!("error `{failure}`"),
        StepOutcome::Upgraded(upgrade) => format!("an upgrade {upgrade}"),
    }
}

fn truncate(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn check_output(tool: &Tool, text: &str) -> Result<serde_json::Value, CallError> {
    let limit = tool.grants.limits.max_output_bytes;
    if text.len() > limit {
        return Err(CallError::OutputTooLarge { tool: tool.name().to_owned(), bytes: text.len(), limit });
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| CallError::InvalidOutput { tool: tool.name().to_owned(), reason: format!("not JSON: {e}") })?;
    tool.validate_output(&value).map_err(|errors| CallError::InvalidOutput {
        tool: tool.name().to_owned(),
        reason: format!("does not match the output schema: {}", errors.join("; ")),
    })?;
    Ok(value)
}

impl Drop for Session {
    /// Frees this handle's places in the budget: nothing else can reach its instances now.
    fn drop(&mut self) {
        self.drop_instances();
    }
}

/// Embedders spawn sessions on tokio's multi-threaded runtime: their futures must be `Send`.
#[allow(dead_code)]
fn session_futures_are_send(session: &mut Session, tool: &Tool, input: &serde_json::Value) {
    fn is_send<T: Send>(_: T) {}
    is_send(session.call(tool, input));
    is_send(session.prewarm(tool));
    is_send(session.steps(0));
}
