//! The entry point for embedders: a [`Host`] loads tools and opens sessions.

use std::path::Path;
use std::sync::Arc;

use crate::budget::{InstanceBudget, InstanceStats, LiveInstances};
use crate::engine::{Engine, EngineConfig};
use crate::error::{HostError, LoadError, SessionError, Source};
use crate::instance::{Blueprint, Instance, InstanceEnv};
use crate::lease::{LeaseConfig, LeaseKeeper};
use crate::model::ModelProvider;
use crate::policy::{OnUngranted, Policy, ToolGrants};
use crate::runtime::{Runtime, SnapshotPolicy};
use crate::session::Session;
use crate::store::{
    AuditScope, MemoryStore, SessionRecord, SessionSummary, SnapshotInfo, StepRecord, StorageStats, Store, StoreError,
    TaskScope,
};
use crate::tool::{self, Loaded, Tool, ToolKind};

/// How a [`Host`] is built.
#[derive(Clone, Default)]
pub struct HostConfig {
    pub engine: EngineConfig,
    /// What each tool is granted; everything else is denied.
    pub policy: Policy,
    pub snapshots: SnapshotPolicy,
    /// Answers tools' granted model calls. Without one, granted calls fail with a
    /// `provider-error`.
    pub models: Option<Arc<dyn ModelProvider>>,
    /// Lease each session while it is open, so hosts sharing a store never both advance
    /// it (see [`LeaseConfig`]). `None`: one host per store, no leases.
    pub leases: Option<LeaseConfig>,
    /// How many instances stay alive across all sessions; past it the least recently used
    /// idle one is hibernated (see [`InstanceBudget`]).
    pub instances: InstanceBudget,
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostConfig")
            .field("engine", &self.engine)
            .field("policy", &self.policy)
            .field("snapshots", &self.snapshots)
            .field("models", &self.models.as_ref().map(|_| "configured"))
            .field("leases", &self.leases)
            .field("instances", &self.instances)
            .finish()
    }
}

/// Sessions [`Host::prune_sessions`] lists and deletes per round.
const PRUNE_BATCH: usize = 500;

/// What [`Host::prune_sessions`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Sessions deleted with their state, steps, snapshots, workspace files and audit events.
    pub sessions: Vec<String>,
    /// Ended sessions a host took again before they could be deleted: kept.
    pub kept_in_use: Vec<String>,
    /// Audit events removed: the pruned sessions', and older ones of sessions deleted before.
    pub audit_events: u64,
    /// MCP tasks removed: the pruned sessions', and those whose TTL ran out.
    pub tasks: u64,
}

/// Loads tools and runs sessions. Cheap to clone; clones share the engine, compile cache,
/// policy and store. Use one per process.
///
/// ```ignore
/// // Compiled for real in examples/quickstart.rs.
/// use toolhost::{Host, HostConfig, SqliteStore, store::Durability};
///
/// let store = Arc::new(SqliteStore::open("toolhost.db", Durability::Full)?);
/// let host = Host::with_store(HostConfig { policy: Policy::grant_requested(), ..Default::default() }, store)?;
/// let calculator = host.load_tool("calculator.wasm").await?;
/// let mut session = host.new_session().await?;
/// let out = session.call(&calculator, &serde_json::json!({"expression": "6 * 7"})).await?;
/// assert_eq!(out["value"], 42.0);
/// // Later, in another process: host.open_session(id).await? continues where it stopped.
/// ```
#[derive(Clone)]
pub struct Host {
    inner: Arc<Runtime>,
}

/// What a session holds, for inspection.
#[derive(Debug, Clone)]
pub struct SessionDetails {
    pub record: SessionRecord,
    pub steps: Vec<StepRecord>,
    /// (tool, namespace, key)
    pub state_keys: Vec<(String, String, String)>,
    pub snapshots: Vec<SnapshotInfo>,
    pub storage: StorageStats,
    /// Each tool's session workspace after the last step (tools with files only).
    pub workspaces: std::collections::BTreeMap<String, crate::capability::workspace::Manifest>,
}

/// How many steps a rebuild of one tool's instance would replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayLength {
    pub tool: String,
    /// The step of the latest snapshot the rebuild would restore, if any.
    pub snapshot: Option<u64>,
    /// The tool's steps after it: what a rebuild replays (none if the tool is declared
    /// stateless), checked against the tool's `max_replay_steps`.
    pub steps: u64,
}

impl SessionDetails {
    /// Per tool that took steps, what a rebuild would replay, in tool-name order.
    pub fn replay_lengths(&self) -> Vec<ReplayLength> {
        let mut by_tool: std::collections::BTreeMap<&str, ReplayLength> = std::collections::BTreeMap::new();
        for snapshot in &self.snapshots {
            let entry = by_tool.entry(&snapshot.tool).or_insert_with(|| ReplayLength {
                tool: snapshot.tool.clone(),
                snapshot: None,
                steps: 0,
            });
            entry.snapshot = entry.snapshot.max(Some(snapshot.seq));
        }
        for step in self.steps.iter().filter(|s| tool::valid_name(&s.tool)) {
            let entry = by_tool.entry(&step.tool).or_insert_with(|| ReplayLength {
                tool: step.tool.clone(),
                snapshot: None,
                steps: 0,
            });
            if entry.snapshot.is_none_or(|at| step.seq > at) {
                entry.steps += 1;
            }
        }
        by_tool.into_values().collect()
    }
}

/// A store failure as a session operation reports it: a running lease is `Leased`.
fn session_error(error: StoreError) -> SessionError {
    match error {
        StoreError::LeaseHeld { session, holder, expires_in_ms } => {
            SessionError::Leased { session, holder, expires_in: std::time::Duration::from_millis(expires_in_ms) }
        }
        StoreError::SessionNotFound(id) => SessionError::NotFound(id),
        e => SessionError::Store(e),
    }
}

/// How long `describe` may take at load, host calls included (it is granted nothing, so
/// it has nothing legitimate to wait for).
pub const DESCRIBE_WALL_TIME: std::time::Duration = std::time::Duration::from_secs(10);

fn random_seed() -> [u8; 32] {
    // uuid's v4 draws from the OS generator (getrandom).
    let mut seed = [0; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed
}

impl Host {
    /// A host whose sessions live in memory (a [`MemoryStore`]) and end with it: isolated,
    /// rebuilt after a trap, forkable, but not surviving the process. Use
    /// [`Host::with_store`] for sessions that must.
    pub fn new(config: HostConfig) -> Result<Self, HostError> {
        Self::with_store(config, Arc::new(MemoryStore::new()))
    }

    /// A host whose sessions live in `store`.
    pub fn with_store(mut config: HostConfig, store: Arc<dyn Store>) -> Result<Self, HostError> {
        config.engine.consume_fuel |= config.policy.uses_fuel();
        for (tool, grants) in &config.policy.tools {
            if grants.limits.memory_bytes > config.engine.max_memory_bytes {
                tracing::warn!(
                    tool = %tool, granted = grants.limits.memory_bytes, engine_max = config.engine.max_memory_bytes,
                    "the policy grants more memory than the engine allows any tool; the engine's cap applies"
                );
            }
        }
        let max = config.engine.max_instances;
        let live = config.instances.live.unwrap_or(max);
        if live == 0 || (config.engine.pooling && live > max) {
            return Err(HostError::Engine {
                reason: format!(
                    "the live-instance budget ({live}) must be between 1 and the engine's `max_instances` ({max})"
                ),
                source: None,
            });
        }
        let instances = LiveInstances::new(live as usize, &config.instances);
        let engine = Engine::new(&config.engine)?;
        let linker = crate::instance::linker(engine.wasmtime()).map_err(|e| HostError::Engine {
            reason: "cannot define the host's imports".into(),
            source: Some(Source::new(e)),
        })?;
        Ok(Self {
            inner: Arc::new(Runtime {
                engine,
                linker,
                policy: config.policy,
                snapshots: config.snapshots,
                models: config.models,
                store,
                leases: config.leases,
                instances,
            }),
        })
    }

    /// Live instances across this host's sessions, and how many were hibernated so far.
    pub fn instance_stats(&self) -> InstanceStats {
        self.inner.instances.stats()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    pub(crate) fn model_provider(&self) -> Option<Arc<dyn ModelProvider>> {
        self.inner.models.clone()
    }

    /// How this host leases sessions, if it does.
    pub fn lease_config(&self) -> Option<&LeaseConfig> {
        self.inner.leases.as_ref()
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Loads the tool component at `path`: checks it is a component of the tool world,
    /// compiles it (or reads the compile cache), asks it to describe itself and attaches the
    /// grants the policy gives it.
    pub async fn load_tool(&self, path: impl AsRef<Path>) -> Result<Arc<Tool>, LoadError> {
        let path = path.as_ref().to_owned();
        let bytes = tool::read_bounded(&path, self.inner.engine.max_component_bytes()).await?;
        self.load_tool_bytes(&path, bytes).await
    }

    /// Like [`Host::load_tool`], from bytes; `origin` names them in errors.
    pub async fn load_tool_bytes(&self, origin: &Path, bytes: Vec<u8>) -> Result<Arc<Tool>, LoadError> {
        let limit = self.inner.engine.max_component_bytes();
        if bytes.len() as u64 > limit {
            return Err(LoadError::TooLarge { path: origin.to_owned(), size: bytes.len() as u64, limit });
        }
        tool::check_component_header(origin, &bytes)?;
        let compiled = self.compile_bounded(origin, bytes).await?;

        let pre = self
            .inner
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| LoadError::UnsatisfiedImports { path: origin.to_owned(), source: Source::new(e) })?;
        let (tool_indices, stateful_indices) = tool::locate_exports(origin, self.inner.engine.wasmtime(), &pre)?;
        let kind = match (&stateful_indices, tool::declares_stateless(self.inner.engine.wasmtime(), &pre)) {
            (Some(_), _) => ToolKind::Stateful,
            (None, true) => ToolKind::Stateless,
            (None, false) => ToolKind::Plain,
        };
        let blueprint = Blueprint { pre, tool_indices, stateful_indices, digest: compiled.digest.clone() };

        // `describe` runs in a throwaway instance that is granted nothing.
        let describe_grants = ToolGrants::default();
        let describe_error = |source: Source| LoadError::Describe { path: origin.to_owned(), source };
        let env =
            InstanceEnv { session: "(describe)", seed: &[0; 32], store: self.store(), models: None, ungranted: &[] };
        let mut instance = Instance::new(&self.inner.engine, &blueprint, "(loading)", env, &describe_grants)
            .await
            .map_err(|e| describe_error(Source::new(e)))?;
        let describe = instance.describe(&self.inner.engine, &describe_grants.limits);
        let raw = tokio::time::timeout(DESCRIBE_WALL_TIME, describe)
            .await
            .map_err(|_| LoadError::DescribeDeadline { path: origin.to_owned(), limit: DESCRIBE_WALL_TIME })?
            .map_err(|e| describe_error(Source::new(e)))?;
        drop(instance);
        let (descriptor, input_validator, output_validator) = tool::parse_descriptor(origin, raw)?;

        let grants = self.inner.policy.grants_for(&descriptor);
        grants.check_pin(&compiled.digest).map_err(|m| LoadError::PinMismatch {
            path: origin.to_owned(),
            tool: descriptor.name.clone(),
            expected: m.expected,
            actual: m.actual,
        })?;
        self.check_identity(origin, &descriptor.name, &grants, &compiled.digest)?;
        tracing::info!(
            tool = %descriptor.name, version = %descriptor.version, kind = ?kind, cache = ?compiled.cache,
            path = %origin.display(), "loaded tool"
        );
        let loaded = Loaded {
            descriptor,
            kind,
            path: origin.to_owned(),
            cache: compiled.cache,
            blueprint,
            input_validator,
            output_validator,
        };
        let tool = loaded.into_tool(grants);
        if !tool.ungranted().is_empty() {
            let ungranted: Vec<String> = tool
                .ungranted()
                .iter()
                .map(|r| match &r.granted {
                    Some(granted) => format!(
                        "{} {} (granted only {granted})",
                        r.capability,
                        r.requested.as_deref().unwrap_or_default()
                    ),
                    None => format!("{} {}", r.capability, r.requested.as_deref().unwrap_or_default()),
                })
                .collect();
            match self.inner.policy.on_ungranted {
                OnUngranted::Refuse => {
                    return Err(LoadError::Ungranted {
                        path: origin.to_owned(),
                        tool: tool.name().to_owned(),
                        ungranted,
                    });
                }
                OnUngranted::DenyAtUse => tracing::warn!(
                    tool = %tool.name(), ungranted = %ungranted.join("; "),
                    "loaded a tool whose requests are not all granted; those uses will be denied"
                ),
            }
        }
        Ok(Arc::new(tool))
    }

    /// Grants go by the name a component gives itself: without a pin, any component calling
    /// itself `tool` gets them. Refused under `require_pins`; otherwise a loud warning when
    /// the grants reach outside the sandbox.
    fn check_identity(&self, origin: &Path, tool: &str, grants: &ToolGrants, digest: &str) -> Result<(), LoadError> {
        if grants.sha256.is_some() {
            return Ok(());
        }
        if self.inner.policy.require_pins && *grants != ToolGrants::default() {
            return Err(LoadError::Unpinned {
                path: origin.to_owned(),
                tool: tool.to_owned(),
                actual: digest.to_owned(),
            });
        }
        let sensitive = grants.identity_sensitive();
        if !sensitive.is_empty() {
            tracing::warn!(
                tool, grants = %sensitive.join(", "), sha256 = digest, path = %origin.display(),
                "UNPINNED tool granted {}: any component that calls itself `{tool}` gets these grants; \
                 pin it with `sha256 = \"{digest}\"` in its policy section (or set `require_pins = true`)",
                sensitive.join(", ")
            );
        }
        Ok(())
    }

    /// Compiles off the async executor (it is CPU-bound and can take seconds), within the
    /// engine's `max_compile_time`. cranelift cannot be interrupted: a compile past the limit
    /// finishes on its blocking thread and its result is dropped.
    async fn compile_bounded(&self, origin: &Path, bytes: Vec<u8>) -> Result<crate::engine::Compiled, LoadError> {
        let this = self.clone();
        let path = origin.to_owned();
        let limit = self.inner.engine.max_compile_time();
        let task = tokio::task::spawn_blocking(move || this.inner.engine.compile(&path, &bytes));
        match tokio::time::timeout(limit, task).await {
            Err(_) => {
                tracing::warn!(path = %origin.display(), ?limit, "component compile exceeded its time limit");
                Err(LoadError::CompileTimeout { path: origin.to_owned(), limit })
            }
            // The compiler task panicked or was cancelled.
            Ok(Err(e)) => Err(LoadError::Compile { path: origin.to_owned(), source: Source::new(e) }),
            Ok(Ok(compiled)) => compiled.map_err(|e| LoadError::Compile { path: e.path, source: e.source }),
        }
    }

    /// A new session with a random id.
    pub async fn new_session(&self) -> Result<Session, SessionError> {
        self.create_session(uuid::Uuid::new_v4().to_string()).await
    }

    /// A new session named `id` (fails if it exists).
    pub async fn create_session(&self, id: impl Into<String>) -> Result<Session, SessionError> {
        self.create_session_with_seed(id, random_seed()).await
    }

    /// A new session whose random streams are drawn from `seed`: two sessions with the same
    /// seed and the same calls see the same random bytes. For reproducible runs and tests;
    /// [`Host::create_session`] draws a fresh seed.
    pub async fn create_session_with_seed(
        &self,
        id: impl Into<String>,
        seed: [u8; 32],
    ) -> Result<Session, SessionError> {
        let record = SessionRecord {
            id: id.into(),
            seed,
            forked_from: None,
            created_at_ms: crate::store::timestamp_ms(),
            last_step: 0,
        };
        self.inner.store.create_session(&record).await?;
        let lease = self.lease(&record.id).await?;
        Ok(Session::new(record, self.inner.clone()).with_lease(lease))
    }

    /// Resumes session `id` at its last committed step. Instances are rebuilt on first use.
    pub async fn open_session(&self, id: &str) -> Result<Session, SessionError> {
        let lease = self.lease(id).await?;
        // Read after taking the lease: no other host advances the session from here on.
        let record = self.inner.store.session(id).await?.ok_or_else(|| SessionError::NotFound(id.to_owned()))?;
        Ok(Session::new(record, self.inner.clone()).with_lease(lease))
    }

    /// Like [`Host::open_session`], waiting up to `timeout` for another host's lease to be
    /// released or to expire: how a host takes over the sessions of a host that died.
    pub async fn open_session_waiting(&self, id: &str, timeout: std::time::Duration) -> Result<Session, SessionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.open_session(id).await {
                Err(SessionError::Leased { expires_in, .. }) if tokio::time::Instant::now() < deadline => {
                    let pause =
                        expires_in.clamp(std::time::Duration::from_millis(5), std::time::Duration::from_millis(100));
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause)).await;
                }
                result => return result,
            }
        }
    }

    /// The lease of session `id`, when this host leases sessions.
    async fn lease(&self, id: &str) -> Result<Option<LeaseKeeper>, SessionError> {
        let Some(config) = &self.inner.leases else { return Ok(None) };
        match LeaseKeeper::acquire(self.inner.store.clone(), id, config).await {
            Ok(keeper) => Ok(Some(keeper)),
            Err(e) => Err(session_error(e)),
        }
    }

    /// A new session that starts from step `at` of session `id` and then evolves on its own,
    /// with a fresh random seed.
    pub async fn fork_session(&self, id: &str, at: u64) -> Result<Session, SessionError> {
        let record = SessionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            seed: random_seed(),
            forked_from: Some((id.to_owned(), at)),
            created_at_ms: crate::store::timestamp_ms(),
            last_step: at,
        };
        self.inner.store.fork_session(id, at, &record).await.map_err(|e| match e {
            crate::store::StoreError::SessionNotFound(id) => SessionError::NotFound(id),
            e => SessionError::Store(e),
        })?;
        let lease = self.lease(&record.id).await?;
        Ok(Session::new(record, self.inner.clone()).with_lease(lease))
    }

    /// Deletes session `id` and everything it stored, its audit events included; `false` if
    /// there was none. Refused with [`SessionError::Leased`] while a host (this one included)
    /// has the session open.
    pub async fn delete_session(&self, id: &str) -> Result<bool, SessionError> {
        Ok(self.delete_with_audit(id).await.map_err(session_error)?.is_some())
    }

    /// Deletes session `id` and then its audit events and MCP tasks: how many of each, or
    /// `None` if there was no such session (its leftovers are removed all the same).
    async fn delete_with_audit(&self, id: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let deleted = self.inner.store.delete_session(id, None).await?;
        let events = self.inner.store.delete_audit(AuditScope::Session(id), i64::MAX).await?;
        let tasks = self.inner.store.delete_tasks(TaskScope::Session(id)).await?;
        Ok(deleted.then_some((events, tasks)))
    }

    /// [`Host::delete_session`], keeping the session's audit events (a later
    /// [`Host::prune_sessions`] removes them once they are older than its cutoff).
    pub async fn delete_session_keeping_audit(&self, id: &str) -> Result<bool, SessionError> {
        let deleted = self.inner.store.delete_session(id, None).await.map_err(session_error)?;
        self.inner.store.delete_tasks(TaskScope::Session(id)).await.map_err(session_error)?;
        Ok(deleted)
    }

    /// Retention: deletes every session that has ended `older_than` ago (no host holds its
    /// lease, nothing committed since), with its audit events, and the audit events older
    /// than that of sessions deleted before. Chunks go with their last reference. A session
    /// a host opens meanwhile is kept (the delete is fenced by its lease). With leases off,
    /// a session this host has open but idle past the cutoff is deleted too.
    pub async fn prune_sessions(&self, older_than: std::time::Duration) -> Result<PruneReport, SessionError> {
        let older_than = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let cutoff = crate::store::timestamp_ms().saturating_sub(older_than);
        let mut report = PruneReport::default();
        loop {
            let ended = self.inner.store.ended_sessions(cutoff, PRUNE_BATCH).await?;
            let deleted_before = report.sessions.len();
            for id in &ended {
                self.prune_one(id, &mut report).await?;
            }
            if ended.len() < PRUNE_BATCH || report.sessions.len() == deleted_before {
                break;
            }
        }
        report.audit_events += self.inner.store.delete_audit(AuditScope::DeletedSessions, cutoff).await?;
        report.tasks += self.inner.store.delete_tasks(TaskScope::ExpiredBy(crate::store::timestamp_ms())).await?;
        Ok(report)
    }

    /// Runs [`Host::prune_sessions`] every `every` in the background, logging what each round
    /// removed (target `toolhost::retention`); a failed round is logged and retried next time.
    /// Abort the handle to stop it.
    pub fn spawn_pruning(
        &self,
        older_than: std::time::Duration,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let host = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match host.prune_sessions(older_than).await {
                    Ok(r) => tracing::info!(target: "toolhost::retention", sessions = r.sessions.len(),
                        audit_events = r.audit_events, kept_in_use = r.kept_in_use.len(), "pruned"),
                    Err(e) => {
                        tracing::warn!(target: "toolhost::retention", error = %crate::source::chain(&e), "pruning failed")
                    }
                }
            }
        })
    }

    async fn prune_one(&self, id: &str, report: &mut PruneReport) -> Result<(), SessionError> {
        match self.delete_with_audit(id).await {
            Ok(Some((events, tasks))) => {
                report.audit_events += events;
                report.tasks += tasks;
                report.sessions.push(id.to_owned());
            }
            // Deleted meanwhile by someone else: not this prune's.
            Ok(None) => {}
            Err(StoreError::LeaseHeld { .. } | StoreError::LeaseLost { .. }) => report.kept_in_use.push(id.to_owned()),
            Err(e) => return Err(SessionError::Store(e)),
        }
        Ok(())
    }

    pub async fn list_sessions(&self) -> Result<Vec<SessionSummary>, SessionError> {
        Ok(self.inner.store.list_sessions().await?)
    }

    /// Steps, state keys, snapshots and stored bytes of session `id`.
    /// Writes the session's workspace files to `dir/TOOL/...` (see
    /// [`crate::capability::workspace::export`]); returns how many paths it wrote.
    pub async fn export_files(
        &self,
        id: &str,
        dir: &std::path::Path,
        overwrite: bool,
    ) -> Result<usize, crate::capability::workspace::ExportError> {
        let store = &self.inner.store;
        store.session(id).await?.ok_or_else(|| StoreError::SessionNotFound(id.to_owned()))?;
        let workspaces = crate::capability::workspace::workspaces(&store.steps(id, None, 0).await?);
        crate::capability::workspace::export(store.as_ref(), &workspaces, dir, overwrite).await
    }

    pub async fn session_details(&self, id: &str) -> Result<SessionDetails, SessionError> {
        let store = &self.inner.store;
        let record = store.session(id).await?.ok_or_else(|| SessionError::NotFound(id.to_owned()))?;
        let steps = store.steps(id, None, 0).await?;
        Ok(SessionDetails {
            workspaces: crate::capability::workspace::workspaces(&steps),
            steps,
            state_keys: store.state_keys(id).await?,
            snapshots: store.snapshots(id).await?,
            storage: store.storage_stats(id).await?,
            record,
        })
    }
}
