//! One live tool instance: a wasmtime store holding the guest and its capability contexts.
//! An instance belongs to exactly one session; nothing in it is shared.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use wasmtime::component::{InstancePre, Linker, ResourceTable, ResourceTableError};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::{self, stateful, tool as tool_export};
use crate::capability::audit::Auditor;
use crate::capability::filesystem::AuditedFilesystem;
use crate::capability::in_flight::InFlight;
use crate::capability::log::LogCtx;
use crate::capability::model::ModelCtx;
use crate::capability::network::{HttpGate, OutgoingHttp};
use crate::capability::random::{SecureRandom, SessionRng};
use crate::capability::sockets::SocketGate;
use crate::capability::state::StateCtx;
use crate::capability::workspace::LiveWorkspace;
use crate::capability::{self, CapabilityHost, clocks, filesystem, random, sockets, workspace};
use crate::charges::{HostLimitExceeded, StepCharges};
use crate::contract::CapabilityRow;
use crate::engine::{Engine, GuestLimiter, Limits, MemoryLimitExceeded};
use crate::error::{CallError, HostResource, Source, ToolFailure, TrapKind};
use crate::journal::{Journal, RandomState, SharedJournal, lock};
use crate::model::ModelProvider;
use crate::policy::ToolGrants;
use crate::store::{self, StateScope};

/// Data of one instance's store.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_gate: HttpGate,
    audit: Auditor,
    limiter: GuestLimiter,
    pub(crate) state: StateCtx,
    log: LogCtx,
    model: ModelCtx,
    /// The step's journal, whose charges the epoch callback checks.
    journal: SharedJournal,
    /// The seeded secure stream that steps committed before journaled entropy drew from.
    seeded_secure: SessionRng,
    /// The largest single `get-random-bytes` answer: a host buffer, bounded by the tool's memory.
    max_random_draw: u64,
    /// Epoch ticks the current call may still run before it is interrupted.
    cpu_ticks_left: u64,
    /// Whether a filesystem call may have changed a file since the last workspace scan.
    fs_dirty: Arc<AtomicBool>,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_gate }
    }
}

impl CapabilityHost for InstanceState {
    fn state(&mut self) -> &mut StateCtx {
        &mut self.state
    }

    fn log(&mut self) -> &mut LogCtx {
        &mut self.log
    }

    fn model(&mut self) -> &mut ModelCtx {
        &mut self.model
    }

    fn filesystem(&mut self) -> AuditedFilesystem<'_> {
        AuditedFilesystem {
            view: WasiFilesystemCtxView { ctx: self.wasi.filesystem(), table: &mut self.table },
            audit: &self.audit,
            dirty: &self.fs_dirty,
            journal: &self.journal,
        }
    }

    fn sockets(&mut self) -> SocketGate<'_> {
        SocketGate { audit: &self.audit }
    }

    fn secure_random(&mut self) -> SecureRandom<'_> {
        SecureRandom { journal: &self.journal, legacy: &mut self.seeded_secure, max_draw: self.max_random_draw }
    }

    fn outgoing_http(&mut self) -> OutgoingHttp<'_> {
        OutgoingHttp { table: &mut self.table, gate: &mut self.http_gate }
    }
}

/// The linker every tool is instantiated with: WASI and every capability (see
/// [`capability::add_to_linker`]).
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<InstanceState>> {
    let mut linker: Linker<InstanceState> = Linker::new(engine);
    capability::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// What it takes to instantiate a tool: the linked component and where its exports are.
pub(crate) struct Blueprint {
    pub pre: InstancePre<InstanceState>,
    pub tool_indices: tool_export::GuestIndices,
    pub stateful_indices: Option<stateful::GuestIndices>,
    /// Lowercase hex sha256 of the component.
    pub digest: String,
}

/// What bounds one guest call: the tool it runs (named in errors) and the tool's limits.
#[derive(Clone, Copy)]
pub(crate) struct CallBounds<'a> {
    pub tool: &'a str,
    pub limits: &'a Limits,
}

/// What a call that ran to completion returned.
pub(crate) type CallOutcome = Result<String, ToolFailure>;

/// What an instance runs on behalf of: its session, and what backs its capabilities.
pub(crate) struct InstanceEnv<'a> {
    pub session: &'a str,
    /// The seed of the session's random streams.
    pub seed: &'a [u8; 32],
    pub store: Arc<dyn store::Store>,
    pub models: Option<Arc<dyn ModelProvider>>,
    /// What the tool requests and is not granted: filesystem and env requests among them
    /// are recorded as denials when the instance starts (WASI hands over the environment
    /// and the preopens as a whole, so there is no later use to deny).
    pub ungranted: &'a [CapabilityRow],
}

pub(crate) struct Instance {
    store: Store<InstanceState>,
    tool: tool_export::Guest,
    stateful: Option<stateful::Guest>,
    journal: SharedJournal,
    secure_rng: SessionRng,
    insecure_rng: SessionRng,
    /// The session workspace, when the tool is granted one.
    workspace: Option<LiveWorkspace>,
    /// Digest of the component this instance runs, to notice a reloaded tool.
    pub(crate) digest: String,
    /// Steps run since the last snapshot was taken or restored.
    pub(crate) steps_since_snapshot: u32,
}

impl Instance {
    /// Instantiates `tool` for `session`, with `grants` deciding what its imports may do.
    pub async fn new(
        engine: &Engine,
        blueprint: &Blueprint,
        tool_name: &str,
        env: InstanceEnv<'_>,
        grants: &ToolGrants,
    ) -> Result<Self, CallError> {
        let session = env.session;
        let scope = StateScope { session: session.to_owned(), tool: tool_name.to_owned() };
        let journal = Journal::new();
        let max_written = grants.workspace.as_ref().map_or(u64::MAX, |w| w.quota_bytes);
        lock(&journal).charges = StepCharges::new(&grants.limits).with_max_written_bytes(max_written);
        let secure_rng = SessionRng::new(env.seed, tool_name, "secure");
        let insecure_rng = SessionRng::new(env.seed, tool_name, "insecure");
        let audit = Auditor::new(session.to_owned(), tool_name.to_owned(), env.store.clone(), journal.clone());
        let max_random_draw = (grants.limits.memory_bytes / 4).max(4096);
        let wasi = wasi_ctx(grants, &env, tool_name, &journal, &audit, &insecure_rng, max_random_draw).await?;
        let mut table = ResourceTable::new();
        table.set_max_capacity(grants.limits.max_handles);
        let data = InstanceState {
            wasi: wasi.ctx,
            table,
            http: WasiHttpCtx::new(),
            http_gate: HttpGate::new(
                Arc::new(grants.network.clone()),
                audit.clone(),
                InFlight {
                    session: session.to_owned(),
                    tool: tool_name.to_owned(),
                    store: env.store.clone(),
                    journal: journal.clone(),
                },
            ),
            audit,
            limiter: GuestLimiter::new(grants.limits.memory_bytes.min(engine.max_memory_bytes())),
            state: StateCtx::new(scope, Arc::new(grants.state.clone()), env.store.clone(), journal.clone()),
            log: LogCtx::new(session.to_owned(), tool_name.to_owned(), journal.clone()),
            model: ModelCtx::new(
                session.to_owned(),
                tool_name.to_owned(),
                Arc::new(grants.models.clone()),
                env.models,
                env.store,
                journal.clone(),
            ),
            journal: journal.clone(),
            seeded_secure: secure_rng.clone(),
            max_random_draw,
            cpu_ticks_left: engine.ticks_for(grants.limits.cpu_time),
            fs_dirty: wasi.fs_dirty,
        };
        let mut wasm_store = Store::new(engine.wasmtime(), data);
        wasm_store.limiter(|s| &mut s.limiter);
        // Each tick a guest runs it yields to the executor (so one busy guest cannot starve
        // other sessions on the same thread) and spends one tick of its CPU budget.
        // A step past a host limit ends here at the latest (a WASI call that cannot trap,
        // e.g. a clock read or an audited refusal, only marks it).
        wasm_store.epoch_deadline_callback(|mut ctx| {
            let data = ctx.data_mut();
            crate::journal::within_limits(&data.journal)?;
            if data.cpu_ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            data.cpu_ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        wasm_store.set_epoch_deadline(1);
        if engine.consumes_fuel() {
            // Instantiation runs guest code too; each call re-arms the budget.
            let _ = wasm_store.set_fuel(grants.limits.fuel.unwrap_or(u64::MAX));
        }
        let fail = |e: wasmtime::Error| CallError::Instantiate {
            tool: tool_name.to_owned(),
            reason: "instantiating the component failed".into(),
            source: Some(Source::new(e)),
        };
        let instance = blueprint.pre.instantiate_async(&mut wasm_store).await.map_err(fail)?;
        let tool = blueprint.tool_indices.load(&mut wasm_store, &instance).map_err(fail)?;
        let stateful = blueprint
            .stateful_indices
            .as_ref()
            .map(|i| i.load(&mut wasm_store, &instance))
            .transpose()
            .map_err(fail)?;
        Ok(Self {
            store: wasm_store,
            tool,
            stateful,
            journal,
            secure_rng,
            insecure_rng,
            workspace: wasi.workspace,
            digest: blueprint.digest.clone(),
            steps_since_snapshot: 0,
        })
    }

    /// Resets the per-call CPU budget (and fuel, when the engine meters it).
    fn arm(&mut self, engine: &Engine, limits: &Limits) {
        self.store.data_mut().cpu_ticks_left = engine.ticks_for(limits.cpu_time);
        self.store.set_epoch_deadline(1);
        if engine.consumes_fuel() {
            // Cannot fail: the engine meters fuel.
            let _ = self.store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
    }

    pub async fn describe(
        &mut self,
        engine: &Engine,
        limits: &Limits,
    ) -> Result<bindings::types::Descriptor, wasmtime::Error> {
        self.arm(engine, limits);
        self.tool.call_describe(&mut self.store).await
    }

    /// Runs `call`. `Err` means the instance is unusable (trap, deadline, memory) and must
    /// be dropped.
    #[allow(clippy::ptr_arg)] // the generated binding takes `&String`
    ///
    /// The call is bounded by `wall_time`, host calls included; a step past one of its host
    /// limits (see [`StepCharges`]) fails with [`CallError::HostLimit`] even if it returned.
    pub async fn call(
        &mut self,
        engine: &Engine,
        bounds: CallBounds<'_>,
        input: &String,
    ) -> Result<CallOutcome, CallError> {
        let limits = *bounds.limits;
        self.arm(engine, &limits);
        let call = self.tool.call_call(&mut self.store, input);
        let returned = if limits.wall_time == Duration::MAX {
            call.await
        } else {
            match tokio::time::timeout(limits.wall_time, call).await {
                Ok(returned) => returned,
                Err(_) => {
                    return Err(CallError::WallDeadline { tool: bounds.tool.to_owned(), limit: limits.wall_time });
                }
            }
        };
        let failure = match returned {
            Ok(Ok(output)) => {
                self.charged(bounds)?;
                return Ok(Ok(output));
            }
            Ok(Err(e)) => match e {
                bindings::types::ToolError::InvalidInput(m) => ToolFailure::InvalidInput(m),
                bindings::types::ToolError::Denied(m) => ToolFailure::Denied(m),
                bindings::types::ToolError::Failed(m) => ToolFailure::Failed(m),
            },
            Err(trap) => return Err(classify(trap, bounds.tool, &limits)),
        };
        self.charged(bounds)?;
        // The failure is committed as the step's outcome: bounded like output.
        let bytes = match &failure {
            ToolFailure::InvalidInput(m) | ToolFailure::Denied(m) | ToolFailure::Failed(m) => m.len(),
        };
        if bytes > limits.max_error_bytes {
            return Err(host_limit(bounds.tool, HostResource::ToolError, limits.max_error_bytes, bytes));
        }
        Ok(Err(failure))
    }

    /// Fails if the step passed a host limit that no trap reported.
    fn charged(&self, bounds: CallBounds<'_>) -> Result<(), CallError> {
        match lock(&self.journal).charges.exceeded() {
            Some(e) => Err(CallError::HostLimit {
                tool: bounds.tool.to_owned(),
                resource: e.resource,
                limit: e.limit,
                used: e.used,
            }),
            None => Ok(()),
        }
    }

    pub fn state(&mut self) -> &mut StateCtx {
        &mut self.store.data_mut().state
    }

    pub fn workspace(&mut self) -> Option<&mut LiveWorkspace> {
        self.workspace.as_mut()
    }

    pub fn journal(&self) -> &SharedJournal {
        &self.journal
    }

    pub fn is_stateful(&self) -> bool {
        self.stateful.is_some()
    }

    pub fn random_state(&self) -> RandomState {
        RandomState {
            seed: self.secure_rng.seed(),
            secure: self.secure_rng.position(),
            insecure: self.insecure_rng.position(),
        }
    }

    /// Puts the random streams where `state` says.
    pub fn seek_random(&self, state: &RandomState) {
        self.secure_rng.seek(&state.seed, state.secure);
        self.insecure_rng.seek(&state.seed, state.insecure);
    }

    /// The tool's snapshot, if it exports one. A trap here makes the instance unusable.
    pub async fn snapshot(&mut self, engine: &Engine, bounds: CallBounds<'_>) -> Result<Option<Vec<u8>>, CallError> {
        let Some(stateful) = self.stateful.clone() else { return Ok(None) };
        let limits = *bounds.limits;
        self.arm(engine, &limits);
        let snapshot = match tokio::time::timeout(limits.wall_time, stateful.call_snapshot(&mut self.store)).await {
            Ok(snapshot) => snapshot.map_err(|e| classify(e, bounds.tool, &limits))?,
            Err(_) => return Err(CallError::WallDeadline { tool: bounds.tool.to_owned(), limit: limits.wall_time }),
        };
        if snapshot.len() > limits.max_snapshot_bytes {
            return Err(host_limit(bounds.tool, HostResource::Snapshot, limits.max_snapshot_bytes, snapshot.len()));
        }
        Ok(Some(snapshot))
    }

    /// Restores a snapshot into this (fresh) instance. `Ok(Err(reason))`: the tool refused it.
    pub async fn restore(
        &mut self,
        engine: &Engine,
        bounds: CallBounds<'_>,
        bytes: &[u8],
    ) -> Result<Result<(), String>, CallError> {
        let Some(stateful) = self.stateful.clone() else { return Ok(Err("the tool exports no restore".into())) };
        let limits = *bounds.limits;
        self.arm(engine, &limits);
        stateful.call_restore(&mut self.store, bytes).await.map_err(|e| classify(e, bounds.tool, &limits))
    }
}

/// An instance's WASI context and what the capabilities living in it hand back.
struct WasiParts {
    ctx: WasiCtx,
    /// The session workspace, when the tool is granted one.
    workspace: Option<LiveWorkspace>,
    /// Set by the filesystem layer on every mutating call (see [`LiveWorkspace`]).
    fs_dirty: Arc<AtomicBool>,
}

/// Builds the WASI context, each capability that lives in it configuring its part: no args,
/// stdio, sockets or name lookups; env and preopens only as granted; clocks and randomness
/// virtual, so a replayed step sees what the original saw. Requests WASI hands over as a
/// whole (env, preopens) that are not granted are audited as denied here.
async fn wasi_ctx(
    grants: &ToolGrants,
    env: &InstanceEnv<'_>,
    tool: &str,
    journal: &SharedJournal,
    audit: &Auditor,
    insecure: &SessionRng,
    max_random_draw: u64,
) -> Result<WasiParts, CallError> {
    let mut wasi = WasiCtxBuilder::new();
    clocks::configure(&mut wasi, journal);
    random::configure(&mut wasi, insecure, tool, max_random_draw);
    sockets::configure(&mut wasi, audit);
    filesystem::configure(&mut wasi, &grants.filesystem, tool)?;
    let fs_dirty = Arc::new(AtomicBool::new(false));
    let workspace = workspace::configure(&mut wasi, grants.workspace.as_ref(), &fs_dirty, tool)?;
    capability::env::configure(&mut wasi, &grants.env, env.session, tool);
    for row in env.ungranted {
        if let Some(reason) = capability::denied_at_start(row.capability) {
            audit.deny(row.capability, row.requested.as_deref().unwrap_or_default(), reason).await;
        }
    }
    Ok(WasiParts { ctx: wasi.build(), workspace, fs_dirty })
}

fn host_limit(tool: &str, resource: HostResource, limit: usize, used: usize) -> CallError {
    CallError::HostLimit { tool: tool.to_owned(), resource, limit: limit as u64, used: used as u64 }
}

/// Turns an aborted call into the error a caller can act on.
fn classify(error: wasmtime::Error, tool: &str, limits: &Limits) -> CallError {
    let tool = tool.to_owned();
    if let Some(m) = error.downcast_ref::<MemoryLimitExceeded>() {
        return CallError::MemoryLimit { tool, limit_bytes: m.limit_bytes, requested_bytes: m.requested_bytes };
    }
    if let Some(e) = error.downcast_ref::<HostLimitExceeded>() {
        return CallError::HostLimit { tool, resource: e.resource, limit: e.limit, used: e.used };
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        let limit = limits.max_handles as u64;
        return CallError::HostLimit { tool, resource: HostResource::Handles, limit, used: limit + 1 };
    }
    let trap = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return CallError::Deadline { tool, limit: limits.cpu_time };
        }
        Some(Trap::OutOfFuel) => {
            return CallError::FuelExhausted { tool, limit: limits.fuel.unwrap_or(u64::MAX) };
        }
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::MemoryOutOfBounds) => TrapKind::MemoryOutOfBounds,
        Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
        Some(other) => TrapKind::Other(other.to_string()),
        None => TrapKind::Other(format!("{error:#}")),
    };
    CallError::Trap { tool, trap }
}
