//! One live tool instance: a wasmtime store holding the guest and its capability contexts.
//! An instance belongs to exactly one session; nothing in it is shared.

use std::sync::Arc;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, stateful, tool as tool_export};
use crate::capability::log::LogCtx;
use crate::capability::model::ModelCtx;
use crate::capability::state::StateCtx;
use crate::engine::{Engine, GuestLimiter, Limits, MemoryLimitExceeded};
use crate::error::{CallError, ToolFailure, TrapKind};
use crate::policy::ToolGrants;
use crate::store::{StateScope, StateStore};
use crate::tool::{Blueprint, Tool};

/// Data of one instance's store.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
    pub(crate) state: StateCtx,
    log: LogCtx,
    model: ModelCtx,
    /// Epoch ticks the current call may still run before it is interrupted.
    cpu_ticks_left: u64,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The linker every tool is instantiated with: WASI (sandboxed by each instance's
/// `WasiCtx`) and the toolhost capabilities.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<InstanceState>> {
    let mut linker: Linker<InstanceState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::capability::state::add_to_linker(&mut linker, |s| &mut s.state)?;
    crate::capability::log::add_to_linker(&mut linker, |s| &mut s.log)?;
    crate::capability::model::add_to_linker(&mut linker, |s| &mut s.model)?;
    Ok(linker)
}

/// What a call that ran to completion returned.
pub(crate) type CallOutcome = Result<String, ToolFailure>;

pub(crate) struct Instance {
    store: Store<InstanceState>,
    tool: tool_export::Guest,
    #[allow(dead_code)] // snapshots are taken by durable sessions
    stateful: Option<stateful::Guest>,
    /// Digest of the component this instance runs, to notice a reloaded tool.
    pub(crate) digest: String,
}

impl Instance {
    /// Instantiates `tool` for `session`, with `grants` deciding what its imports may do.
    pub async fn new(
        engine: &Engine,
        blueprint: &Blueprint,
        tool_name: &str,
        session: &str,
        grants: &ToolGrants,
        store: Arc<dyn StateStore>,
    ) -> Result<Self, CallError> {
        let scope = StateScope { session: session.to_owned(), tool: tool_name.to_owned() };
        // No env, args, preopens, sockets or stdio: WASI is denied until the policy grants it.
        let wasi = WasiCtxBuilder::new().build();
        let data = InstanceState {
            wasi,
            table: ResourceTable::new(),
            limiter: GuestLimiter::new(grants.limits.memory_bytes.min(engine.max_memory_bytes())),
            state: StateCtx::new(scope, Arc::new(grants.state.clone()), store),
            log: LogCtx::new(session.to_owned(), tool_name.to_owned()),
            model: ModelCtx::new(session.to_owned(), tool_name.to_owned(), Arc::new(grants.models.clone())),
            cpu_ticks_left: engine.ticks_for(grants.limits.cpu_time),
        };
        let mut wasm_store = Store::new(engine.wasmtime(), data);
        wasm_store.limiter(|s| &mut s.limiter);
        // Each tick a guest runs it yields to the executor (so one busy guest cannot starve
        // other sessions on the same thread) and spends one tick of its CPU budget.
        wasm_store.epoch_deadline_callback(|mut ctx| {
            let data = ctx.data_mut();
            if data.cpu_ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            data.cpu_ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        wasm_store.set_epoch_deadline(1);
        let fail = |e: wasmtime::Error| CallError::Instantiate { tool: tool_name.to_owned(), reason: format!("{e:#}") };
        let instance = blueprint.pre.instantiate_async(&mut wasm_store).await.map_err(fail)?;
        let tool = blueprint.tool_indices.load(&mut wasm_store, &instance).map_err(fail)?;
        let stateful = blueprint
            .stateful_indices
            .as_ref()
            .map(|i| i.load(&mut wasm_store, &instance))
            .transpose()
            .map_err(fail)?;
        Ok(Self { store: wasm_store, tool, stateful, digest: blueprint.digest.clone() })
    }

    /// Resets the per-call CPU budget.
    fn arm(&mut self, engine: &Engine, limits: &Limits) {
        self.store.data_mut().cpu_ticks_left = engine.ticks_for(limits.cpu_time);
        self.store.set_epoch_deadline(1);
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
    pub async fn call(&mut self, engine: &Engine, tool: &Tool, input: &String) -> Result<CallOutcome, CallError> {
        let limits = tool.grants.limits;
        self.arm(engine, &limits);
        match self.tool.call_call(&mut self.store, input).await {
            Ok(Ok(output)) => Ok(Ok(output)),
            Ok(Err(e)) => Ok(Err(match e {
                bindings::types::ToolError::InvalidInput(m) => ToolFailure::InvalidInput(m),
                bindings::types::ToolError::Denied(m) => ToolFailure::Denied(m),
                bindings::types::ToolError::Failed(m) => ToolFailure::Failed(m),
            })),
            Err(trap) => Err(classify(trap, tool.name(), &limits)),
        }
    }

    pub fn state(&mut self) -> &mut StateCtx {
        &mut self.store.data_mut().state
    }
}

/// Turns an aborted call into the error a caller can act on.
fn classify(error: wasmtime::Error, tool: &str, limits: &Limits) -> CallError {
    let tool = tool.to_owned();
    if let Some(m) = error.downcast_ref::<MemoryLimitExceeded>() {
        return CallError::MemoryLimit { tool, limit_bytes: m.limit_bytes, requested_bytes: m.requested_bytes };
    }
    let trap = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return CallError::Deadline { tool, limit: limits.cpu_time };
        }
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::MemoryOutOfBounds) => TrapKind::MemoryOutOfBounds,
        Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
        Some(other) => TrapKind::Other(other.to_string()),
        None => TrapKind::Other(format!("{error:#}")),
    };
    CallError::Trap { tool, trap }
}
