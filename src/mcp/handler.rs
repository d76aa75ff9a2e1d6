//! The MCP request handler: one per stdio connection, per HTTP MCP session (2025-11-25) or
//! per HTTP request (2026-07-28, which has no sessions). All of them share one [`Shared`].

use std::sync::Arc;

use rmcp::ErrorData;
use rmcp::RoleServer;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, CreateTaskResult, GetTaskParams,
    GetTaskResult, Implementation, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool as McpTool, UpdateTaskParams,
};
use rmcp::service::RequestContext;
use serde_json::Value;
use tokio::sync::{OnceCell, Semaphore, oneshot};
use tokio::task::{JoinError, JoinHandle};

use super::agents::{self, AgentEntry};
use super::catalog::{self, Catalog};
use super::sessions::{HandleError, SessionPool, SharedSession};
use super::tasks::{self, Progress, StoredTask, TaskBoard, Work};
use super::{HANDLE_ARGUMENT, HANDLE_META_KEY};
use crate::error::Fault;
use crate::source::chain;
use crate::store::StepOutcome;

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub catalog: Catalog,
    pub pool: Arc<SessionPool>,
    /// Bounds the tool calls running at once, over all connections.
    pub calls: Arc<Semaphore>,
    /// Per tool: its share of `calls` ([`tool_share`]), taken before a permit of `calls`, so
    /// one tool's hung calls (until their wall deadline) leave permits for every other tool.
    pub tool_calls: std::collections::HashMap<String, Arc<Semaphore>>,
    pub tasks: TaskBoard,
    /// Agents served as tools (their runs in the pool's host's store).
    pub agents: std::collections::HashMap<String, AgentEntry>,
    /// How long a call of a client that takes tasks may run before it becomes one.
    pub task_after: Option<std::time::Duration>,
    /// Set once the task keeper ([`start_task_keeper`]) runs.
    pub keeping: std::sync::atomic::AtomicBool,
}

/// Starts, once per server, the loop that keeps its tasks: every renewal period it renews the
/// run tasks it holds (ending those whose runs ended) and takes over the tasks of dead
/// servers, running their calls again. The first pass is at once, so a restarted server
/// finishes what its predecessor left without waiting for a client to poll.
pub(crate) fn start_task_keeper(shared: &Arc<Shared>) {
    if shared.keeping.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    let weak = Arc::downgrade(shared);
    let period = shared.tasks.renew_every();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            keep_tasks(&shared).await;
        }
    });
}

async fn keep_tasks(shared: &Arc<Shared>) {
    shared.tasks.keep_runs(&crate::run::Runs::new(shared.pool.host().store())).await;
    match shared.tasks.orphans().await {
        Ok(won) => {
            for task in won.into_iter().filter(|t| matches!(t.body.work, Work::ToolCall { .. })) {
                tokio::spawn(resume(shared.clone(), task));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for orphaned tasks"),
    }
}

/// The calls one tool may run at once out of `max_concurrent_calls`: all but a quarter.
pub(crate) fn tool_share(max_concurrent_calls: usize) -> usize {
    let max = max_concurrent_calls.max(1);
    (max - (max / 4).max(1)).max(1)
}

/// Serves one connection. Its default session (for calls without a handle) is minted on
/// the first such call and kept for the connection's life.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    default_session: Arc<OnceCell<String>>,
}

impl Connection {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, default_session: Arc::new(OnceCell::new()) }
    }

    /// The session a call runs in: the handle it names, else the connection's own.
    async fn session_for(&self, handle: Option<String>) -> Result<(String, SharedSession), CallToolResult> {
        let pool = &self.shared.pool;
        let handle = match handle {
            Some(handle) => handle,
            None => {
                let minted = self
                    .default_session
                    .get_or_try_init(|| async { pool.create().await.map(|(handle, _)| handle) })
                    .await
                    .map_err(|e| {
                        catalog::error_result(None, "store", &format!("cannot create a session: {}", chain(&e)))
                    })?;
                minted.clone()
            }
        };
        match pool.get(&handle).await {
            Ok(session) => Ok((handle, session)),
            Err(e) => {
                let kind = match e {
                    HandleError::Malformed(_) => "malformed-handle",
                    HandleError::Unknown(_) => "unknown-handle",
                    HandleError::Leased { .. } => "leased",
                    HandleError::Store { .. } => "store",
                };
                Err(catalog::error_result(None, kind, &chain(&e).to_string()))
            }
        }
    }

    /// Runs a `tools/call`. With `client.tasks` (it declared the tasks extension), a call
    /// still running after [`super::McpLimits::task_after`] becomes a task: its row is
    /// written, the client gets the handle, and the call finishes in the background.
    async fn call(&self, request: CallToolRequestParams, client: &Client) -> Result<CallToolResponse, ErrorData> {
        if let Some(agent) = self.shared.agents.get(request.name.as_ref()) {
            return self.call_agent(agent, request, client).await;
        }
        let as_task = client.tasks;
        let entry = self
            .shared
            .catalog
            .get(&request.name)
            .ok_or_else(|| ErrorData::invalid_params(format!("unknown tool `{}`", request.name), None))?;
        let mut arguments = request.arguments.unwrap_or_default();
        let handle = match take_handle(&mut arguments, entry.handle_in_arguments, request.meta.as_deref()) {
            Ok(handle) => handle,
            Err(message) => return Ok(catalog::error_result(None, "malformed-handle", &message).into()),
        };
        let (handle, session) = match self.session_for(handle).await {
            Ok(found) => found,
            Err(result) => return Ok(result.into()),
        };
        let name = request.name.to_string();
        let (started, mut step_number) = oneshot::channel();
        // The step runs in its own task: if the client goes away mid-call, the step still
        // finishes and commits (or aborts cleanly) instead of being dropped half-way.
        let call = Call { shared: self.shared.clone(), tool: name.clone(), handle: handle.clone(), session };
        let mut step = tokio::spawn(call.clone().run(arguments.clone(), None, started));
        let task_after = self.shared.task_after.filter(|_| as_task);
        if let Some(after) = task_after
            && tokio::time::timeout(after, &mut step).await.is_err()
            && let Some(slot) = self.task_slot()
        {
            let known = step_number.try_recv().ok();
            let work = Work::ToolCall { tool: name, session: handle, input: arguments, step: known };
            match self.shared.tasks.create(work).await {
                Ok(task) => {
                    let id = task.id.clone();
                    let shared = self.shared.clone();
                    // A received number is gone from its channel: only an unreceived one is awaited.
                    let step_number = known.is_none().then_some(step_number);
                    tokio::spawn(async move { drive(&shared, &id, step, step_number, slot).await });
                    return Ok(CallToolResponse::Task(CreateTaskResult::new(task.view(None))));
                }
                // No durable task, no handle: the client waits for the result instead.
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "cannot create a task; answering when the call ends")
                }
            }
        }
        joined(step.await).map(Into::into)
    }

    /// The refusal of a call that would start a task past the limit.
    fn too_many_tasks(&self) -> CallToolResult {
        let working = self.shared.tasks.working();
        let message = format!("this server runs {working} tasks, as many as it may; try again once some have ended");
        catalog::error_result(None, "too-many-tasks", &message)
    }

    /// A slot for one more task, or `None` (logged) when this server runs as many as it may.
    fn task_slot(&self) -> Option<tasks::Slot> {
        let slot = self.shared.tasks.reserve();
        if slot.is_none() {
            tracing::info!(working = self.shared.tasks.working(), "at the task limit: no task for this call");
        }
        slot
    }
}

/// What the client of one request can take besides a plain result, and who it is.
pub(crate) struct Client {
    /// A task handle (it declared the tasks extension).
    tasks: bool,
    /// An `InputRequiredResult` with an elicitation in it (SEP-2322: a 2026-07-28 client
    /// that declares elicitation; rmcp refuses to send one to an older client).
    input_requests: bool,
    /// Who decides what it answers, in the audit trail.
    name: String,
}

impl Client {
    fn of(context: &RequestContext<RoleServer>) -> Self {
        let capabilities = context.client_capabilities();
        let modern = context.protocol_version().is_some_and(|v| !v.has_initialize());
        Self {
            tasks: capabilities.as_ref().is_some_and(|c| c.supports_tasks()),
            input_requests: modern && capabilities.as_ref().is_some_and(|c| c.elicitation.is_some()),
            name: format!("mcp:{}", context.client_info().map(|i| i.name).unwrap_or_else(|| "client".into())),
        }
    }
}

impl Connection {
    /// A call of an agent's tool: starts a run (or, on a retry carrying a `requestState`,
    /// takes up the run it names and applies the client's `inputResponses`). Then its task if
    /// the client takes tasks, else (as for any tool without tasks) the result once the run
    /// ends or suspends, or the approval it waits for as an input request.
    async fn call_agent(
        &self,
        agent: &AgentEntry,
        request: CallToolRequestParams,
        client: &Client,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        // Reserved before the run starts: a client at the limit gets no run (nor row) at all.
        let slot = match client.tasks {
            true => match self.task_slot() {
                Some(slot) => Some(slot),
                None => return Ok(self.too_many_tasks().into()),
            },
            false => None,
        };
        let run = match &request.request_state {
            Some(state) => {
                let run = agent.resumed(state, &arguments).await.map_err(|m| ErrorData::invalid_params(m, None))?;
                let responses = request.input_responses.unwrap_or_default();
                agents::answer(&agent.runs(), &run, &responses, &client.name).await.map_err(|e| {
                    ErrorData::internal_error(format!("cannot record the decision: {}", chain(&e)), None)
                })?;
                run
            }
            None => match agent.start(&arguments).await {
                Ok(run) => run,
                Err(message) => return Ok(catalog::error_result(None, "invalid-input", &message).into()),
            },
        };
        if let Some(slot) = slot {
            let task = self.shared.tasks.create(Work::Run { run: run.id.clone() }).await.map_err(store_failed)?;
            self.shared.tasks.hold(&task, slot);
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task.view(Some("running".into())))));
        }
        Ok(match agents::wait_blocking(&agent.runs(), &run.id).await {
            agents::Blocked::Result(result) => result.into(),
            agents::Blocked::Approval(run) => match agents::input_required(&run).filter(|_| client.input_requests) {
                Some(asked) => CallToolResponse::InputRequired(asked),
                None => agents::suspended(&run).into(),
            },
        })
    }

    fn runs(&self) -> crate::run::Runs {
        crate::run::Runs::new(self.shared.pool.host().store())
    }

    async fn run_of(&self, run: &str) -> Result<crate::run::Run, ErrorData> {
        self.runs()
            .get(run)
            .await
            .map_err(|e| ErrorData::internal_error(format!("cannot read run {run}: {}", chain(&e)), None))
    }
}

/// One tool call in one session, as a task or not.
#[derive(Clone)]
struct Call {
    shared: Arc<Shared>,
    tool: String,
    handle: String,
    session: SharedSession,
}

impl Call {
    /// Waits for the session (calls on a handle run one at a time) and the call permits,
    /// says which step the call runs as, and runs it; with `committed`, the step a task
    /// recorded before its server died, a step that did commit is answered from its record.
    async fn run(
        self,
        arguments: JsonObject,
        committed: Option<u64>,
        started: oneshot::Sender<u64>,
    ) -> Result<CallToolResult, ErrorData> {
        let entry = self
            .shared
            .catalog
            .get(&self.tool)
            .ok_or_else(|| ErrorData::invalid_params(format!("unknown tool `{}`", self.tool), None))?;
        let calls = self.shared.calls.clone();
        let tool_calls = self.shared.tool_calls.get(&self.tool).cloned().unwrap_or_else(|| calls.clone());
        // A call waiting behind another on the same handle holds no permit; nor does one
        // waiting for its tool's share.
        let mut session = self.session.clone().lock_owned().await;
        let (Ok(_tool_permit), Ok(_permit)) = (tool_calls.acquire_owned().await, calls.acquire_owned().await) else {
            return Err(ErrorData::internal_error("the server is shutting down", None));
        };
        if let Some(at) = committed.filter(|&at| session.last_step() >= at)
            && let Some(result) = self.committed_result(entry, at, &arguments).await
        {
            return Ok(result);
        }
        let _ = started.send(session.last_step() + 1);
        let input = Value::Object(arguments);
        let outcome = session.call(&entry.tool, &input).await;
        Ok(match outcome {
            Ok(output) => catalog::success(entry, &self.handle, session.last_step(), output),
            Err(error) => {
                if error.kind().fault() == Fault::StaleSession {
                    self.shared.pool.forget(&self.handle);
                }
                tracing::info!(session = %self.handle, tool = %self.tool, error = %chain(&error), "call failed");
                catalog::failure(Some(&self.handle), &error)
            }
        })
    }

    /// The result of step `at` if it is this call, committed before its server died.
    async fn committed_result(
        &self,
        entry: &catalog::Entry,
        at: u64,
        arguments: &JsonObject,
    ) -> Option<CallToolResult> {
        let store = self.shared.pool.host().store();
        let steps = match store.steps(&self.handle, Some(&self.tool), at - 1).await {
            Ok(steps) => steps,
            Err(e) => {
                tracing::warn!(session = %self.handle, error = %chain(&e), "cannot read a task's step; calling again");
                return None;
            }
        };
        let step = steps.into_iter().find(|s| s.seq == at)?;
        let input: Value = serde_json::from_str(&step.input).ok()?;
        if input.as_object() != Some(arguments) {
            return None;
        }
        tracing::info!(session = %self.handle, step = at, "a task's call had committed; answering from its step");
        Some(match step.outcome {
            StepOutcome::Output(text) => {
                let output = serde_json::from_str(&text).unwrap_or(Value::String(text));
                catalog::success(entry, &self.handle, at, output)
            }
            StepOutcome::Failed(failure) => catalog::error_result(Some(&self.handle), "tool", &failure.to_string()),
            // An upgrade, not the task's call: that call did not commit.
            StepOutcome::Upgraded(_) => return None,
        })
    }
}

/// A call task's outcome as a result or the JSON-RPC error it ended in.
fn joined(joined: Result<Result<CallToolResult, ErrorData>, JoinError>) -> Result<CallToolResult, ErrorData> {
    joined.map_err(|e| {
        tracing::error!(error = %chain(&e), "a tool call task failed");
        ErrorData::internal_error(format!("the call failed inside the server: {}", chain(&e)), None)
    })?
}

/// Sees task `id`'s call to its end: records the step it runs as, renews the claim while
/// it runs, and writes its result (unless the task was cancelled or taken over meanwhile).
async fn drive(
    shared: &Shared,
    id: &str,
    mut step: JoinHandle<Result<CallToolResult, ErrorData>>,
    mut step_number: Option<oneshot::Receiver<u64>>,
    _slot: tasks::Slot,
) {
    let board = &shared.tasks;
    let mut renew = tokio::time::interval(board.renew_every());
    renew.tick().await;
    let outcome = loop {
        tokio::select! {
            joined = &mut step => break joined,
            started = async { step_number.as_mut().expect("guarded").await }, if step_number.is_some() => {
                // A receiver is polled to its end once; without a number the call never ran.
                step_number = None;
                if let Ok(at) = started
                    && let Err(e) = board.started(id, at).await
                {
                    tracing::warn!(task = %id, error = %chain(&e), "cannot record a task's step");
                }
            }
            _ = renew.tick() => match board.renew(id).await {
                Ok(true) => {}
                Ok(false) => tracing::info!(task = %id, "the task was cancelled or taken over; its result will be dropped"),
                Err(e) => tracing::warn!(task = %id, error = %chain(&e), "cannot renew a task's claim"),
            },
        }
    };
    let progress = match joined(outcome) {
        Ok(result) => match serde_json::to_value(result) {
            Ok(Value::Object(result)) => Progress::Completed { result },
            _ => Progress::Failed { error: tasks::rpc_error(-32603, "the result does not serialize") },
        },
        Err(error) => Progress::Failed { error: tasks::rpc_error(error.code.0, &error.message) },
    };
    match board.finish(id, progress).await {
        Ok(true) => tracing::info!(task = %id, "task finished"),
        Ok(false) => tracing::info!(task = %id, "dropped the result of a task cancelled or taken over"),
        Err(e) => {
            tracing::warn!(task = %id, error = %chain(&e), "cannot record a task's result; it will be run again")
        }
    }
}

/// Runs a call task this server took over from a dead one.
async fn resume(shared: Arc<Shared>, task: StoredTask) {
    let Work::ToolCall { tool, session: handle, input, step } = task.body.work else { return };
    let session = match shared.pool.get(&handle).await {
        Ok(session) => session,
        Err(e @ HandleError::Leased { .. }) => {
            // Its dead server's session lease has not run out yet: a later poll retries.
            tracing::info!(task = %task.id, error = %chain(&e), "cannot take over a task yet");
            return;
        }
        Err(e) => {
            let result = catalog::error_result(Some(&handle), "unknown-handle", &chain(&e).to_string());
            let result = serde_json::to_value(result).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default();
            let _ = shared.tasks.finish(&task.id, Progress::Completed { result }).await;
            return;
        }
    };
    let call = Call { shared: shared.clone(), tool, handle, session };
    let (started, step_number) = oneshot::channel();
    let running = tokio::spawn(call.run(input, step, started));
    drive(&shared, &task.id, running, Some(step_number), shared.tasks.slot()).await;
}

/// Takes the session handle out of the call: the `session_handle` argument, else the
/// `dev.toolhost/session` request `_meta` entry.
fn take_handle(
    arguments: &mut JsonObject,
    in_arguments: bool,
    meta: Option<&rmcp::model::MetaObject>,
) -> Result<Option<String>, String> {
    let from_arguments = if in_arguments { arguments.shift_remove(HANDLE_ARGUMENT) } else { None };
    let value = from_arguments.or_else(|| meta.and_then(|m| m.0.get(HANDLE_META_KEY).cloned()));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(handle)) => Ok(Some(handle)),
        Some(other) => Err(format!("`{HANDLE_ARGUMENT}` must be a string, not {other}")),
    }
}

impl ServerHandler for Connection {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tasks().build())
            .with_server_info(Implementation::new("toolhost", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Each tool runs sandboxed in a durable session. Every result names its session in \
                 `session_handle` (text and `_meta.dev.toolhost/session`); pass it back as the \
                 `session_handle` argument to continue that session, also after a server restart. \
                 A call without a handle runs in this connection's session (stdio, or an MCP \
                 session over HTTP), or in a new session where there is none (2026-07-28 over HTTP). \
                 A client that declares the tasks extension gets a task handle for a call that \
                 takes long; the task outlives a server restart.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.shared.catalog.definitions();
        tools.extend(self.shared.agents.values().map(|a| a.definition.clone()));
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<McpTool> {
        let agent = || self.shared.agents.get(name).map(|a| a.definition.clone());
        self.shared.catalog.get(name).map(|e| e.definition.clone()).or_else(agent)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request, &Client::of(&context)).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let task = self.task(&request.task_id).await?;
        if let Work::Run { run } = &task.body.work {
            return Ok(GetTaskResult::new(agents::detailed(&task, &self.run_of(run).await?)));
        }
        if let Some(won) = self.shared.tasks.take_over(&task).await.map_err(store_failed)? {
            tokio::spawn(resume(self.shared.clone(), won.clone()));
            return Ok(GetTaskResult::new(won.detailed()));
        }
        Ok(GetTaskResult::new(task.detailed()))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // A tool call asks for no input: every response to one is to no outstanding request,
        // and is ignored as the extension says.
        let Work::Run { run } = self.task(&request.task_id).await?.body.work else { return Ok(()) };
        let run = self.run_of(&run).await?;
        agents::answer(&self.runs(), &run, &request.input_responses, &Client::of(&context).name)
            .await
            .map_err(|e| ErrorData::internal_error(format!("cannot record the decision: {}", chain(&e)), None))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Cooperative: the call goes on to its end (its step commits, as any step does);
        // the task stays cancelled and the result is dropped.
        let task = self.shared.tasks.cancel(&request.task_id).await.map_err(store_failed)?;
        let task = task.ok_or_else(|| no_task(&request.task_id))?;
        if let Work::Run { run } = &task.body.work {
            match self.runs().cancel(run, "cancelled by the MCP client").await {
                Ok(_) | Err(crate::run::RunError::WrongState { .. }) => {}
                Err(e) => {
                    return Err(ErrorData::internal_error(format!("cannot cancel run {run}: {}", chain(&e)), None));
                }
            }
        }
        Ok(())
    }
}

impl Connection {
    async fn task(&self, id: &str) -> Result<StoredTask, ErrorData> {
        self.shared.tasks.get(id).await.map_err(store_failed)?.ok_or_else(|| no_task(id))
    }
}

fn no_task(id: &str) -> ErrorData {
    ErrorData::invalid_params(format!("Failed to retrieve task: no task `{}`", id.escape_debug()), None)
}

fn store_failed(e: crate::store::StoreError) -> ErrorData {
    ErrorData::internal_error(format!("the task store failed: {}", chain(&e)), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_handle_comes_from_arguments_then_meta() {
        let mut args = json!({"op": "list", "session_handle": "abc"}).as_object().unwrap().clone();
        assert_eq!(take_handle(&mut args, true, None).unwrap().as_deref(), Some("abc"));
        assert!(!args.contains_key(HANDLE_ARGUMENT), "the tool never sees the handle");

        let mut meta = rmcp::model::MetaObject::new();
        meta.0.insert(HANDLE_META_KEY.into(), json!("from-meta"));
        let mut args = json!({"op": "list"}).as_object().unwrap().clone();
        assert_eq!(take_handle(&mut args, true, Some(&meta)).unwrap().as_deref(), Some("from-meta"));

        // A tool with its own `session_handle` argument keeps it.
        let mut args = json!({"session_handle": "mine"}).as_object().unwrap().clone();
        assert_eq!(take_handle(&mut args, false, None).unwrap(), None);
        assert!(args.contains_key(HANDLE_ARGUMENT));

        let mut args = json!({"session_handle": 7}).as_object().unwrap().clone();
        assert!(take_handle(&mut args, true, None).is_err());
    }
}
