//! Agents served as MCP tools: a call starts a run (see [`crate::run`]) toward the goal it
//! gives, and its task follows the run. Workers drive the run, in this process or any other
//! on the store; the MCP server only starts, shows, decides and cancels it.
//!
//! An approval the run waits for is asked of the client the 2026-07-28 way, as an
//! `elicitation/create` form in `inputRequests` keyed by the wait's step (so a key is never
//! reused): `accept` approves the call, `decline` (with an optional `reason`) or `cancel`
//! denies it, and the denial reaches the model as the call's result. A client that takes
//! tasks finds the request in its task (`input_required`) and answers with `tasks/update`.
//! A 2026-07-28 client that does not gets the multi round-trip shape of SEP-2322 on the call
//! itself: an `InputRequiredResult` (`resultType: "input_required"`) with the request and a
//! `requestState` naming the run; it retries the call with `inputResponses` and that state,
//! and the retry answers, waits again, and returns the result (or the next request). The run
//! is in the store, so the retry may reach any server on it, also after a restart. Older
//! clients, which have no such result, get where the run is when it suspends (as before).

use std::sync::Arc;

use rmcp::model::{
    CallToolResult, ContentBlock, DetailedTask, InputRequests, InputRequiredResult, InputResponses, JsonObject,
    TaskPayload, Tool as McpTool,
};
use serde_json::{Value, json};

use super::tasks::{Progress, StoredTask};
use crate::agent::{Goal, Wait, Waiting};
use crate::host::Host;
use crate::run::{Run, RunError, Runs};
use crate::source::chain;
use crate::store::RunStatus;

/// An agent served as a tool: a call of it starts a run of agent `name` (the name workers
/// know it by) in a new session of `host`'s store.
#[derive(Clone)]
pub struct McpAgent {
    pub name: String,
    pub description: String,
    pub host: Host,
}

pub(crate) struct AgentEntry {
    pub agent: McpAgent,
    pub definition: McpTool,
}

impl AgentEntry {
    pub fn new(agent: McpAgent) -> Self {
        let Value::Object(schema) = json!({
            "type": "object",
            "properties": {"goal": {"type": "string", "minLength": 1, "description": "What the agent is to achieve."}},
            "required": ["goal"],
        }) else {
            unreachable!()
        };
        let description = format!(
            "{} Starts a run of agent `{}` toward `goal`; the run is durable (it outlives this server) and \
             may ask you to approve a tool call.",
            agent.description, agent.name
        );
        let definition = McpTool::new(agent.name.clone(), description.trim().to_owned(), Arc::new(schema));
        Self { agent, definition }
    }

    pub fn runs(&self) -> Runs {
        Runs::new(self.agent.host.store())
    }

    /// Starts a run toward the call's `goal`.
    pub async fn start(&self, arguments: &JsonObject) -> Result<Run, String> {
        let goal = goal(arguments)?;
        let run = self.runs().create(&self.agent.host, None, &self.agent.name, Goal::new(goal)).await;
        let run = run.map_err(|e| chain(&e).to_string())?;
        tracing::info!(run = %run.id, agent = %run.agent, "started a run over MCP");
        Ok(run)
    }

    /// The run a retried call's `requestState` names, checked as the untrusted input it is:
    /// one this server could have minted, for a run of this agent toward the call's goal.
    pub async fn resumed(&self, state: &str, arguments: &JsonObject) -> Result<Run, String> {
        let refused = |why: &str| format!("invalid requestState: {why}");
        let id = state.strip_prefix(STATE_PREFIX).ok_or_else(|| refused("not one this server issued"))?;
        if id.is_empty() || id.len() > MAX_RUN_ID_BYTES || id.chars().any(char::is_control) {
            return Err(refused("not one this server issued"));
        }
        let run = match self.runs().get(id).await {
            Ok(run) => run,
            Err(RunError::NotFound(_)) => return Err(refused("it names no run")),
            Err(e) => return Err(format!("cannot read the run the requestState names: {}", chain(&e))),
        };
        if run.agent != self.agent.name || run.body.goal.text != goal(arguments)? {
            return Err(refused("it names a run of another call"));
        }
        Ok(run)
    }
}

fn goal(arguments: &JsonObject) -> Result<&str, String> {
    let goal = arguments.get("goal").and_then(Value::as_str).filter(|g| !g.trim().is_empty());
    Ok(goal.ok_or("`goal` must be a non-empty string")?)
}

/// What a `requestState` starts with; the rest is the run's id. It is a handle, not state:
/// the run's record holds everything, so nothing in it needs sealing.
const STATE_PREFIX: &str = "toolhost-run/1:";
/// Longer ids are not ones [`Runs::create`] makes (nor a person would give).
const MAX_RUN_ID_BYTES: usize = 256;

/// The SEP-2322 answer to a call whose run waits for the client's approval: the question,
/// and the state the client sends back with its answer.
pub(crate) fn input_required(run: &Run) -> Option<InputRequiredResult> {
    let (waiting, tool, input) = pending_approval(run)?;
    let requests = ask_for_approval(run, waiting.step, tool, input);
    Some(InputRequiredResult::new(Some(requests), Some(format!("{STATE_PREFIX}{}", run.id))))
}

/// The key of the input request that asks for the decision on the wait at `step`.
fn approval_key(step: u64) -> String {
    format!("approval-{step}")
}

/// The approval run `run` waits for and nobody has decided yet.
fn pending_approval(run: &Run) -> Option<(&Waiting, &str, &Value)> {
    let waiting = run.body.waiting.as_ref().filter(|_| run.status == RunStatus::Waiting)?;
    let Wait::Approval { tool, input } = &waiting.wait else { return None };
    (!run.body.decisions.contains_key(&waiting.step)).then_some((waiting, tool.as_str(), input))
}

fn ask_for_approval(run: &Run, step: u64, tool: &str, input: &Value) -> InputRequests {
    let message = format!(
        "Agent run {} wants to call `{tool}` with {input}. Accept to let the call run; decline (with a \
         reason, which the agent is told) to refuse it.",
        run.id
    );
    let requests = json!({
        approval_key(step): {
            "method": "elicitation/create",
            "params": {
                "mode": "form",
                "message": message,
                "requestedSchema": {
                    "type": "object",
                    "properties": {"reason": {"type": "string", "title": "Reason", "description": "Why, if you decline"}},
                },
            },
        },
    });
    serde_json::from_value(requests).expect("a well-formed elicitation request")
}

/// The call's result once the run ended: its answer, or why it failed (a tool error).
pub(crate) fn ended(run: &Run) -> CallToolResult {
    let outcome = run.body.outcome.clone().unwrap_or_default();
    let structured = json!({"run": run.id, "status": run.status, "answer": outcome});
    let mut result = match run.status {
        RunStatus::Done => CallToolResult::success(vec![ContentBlock::text(outcome)]),
        _ => CallToolResult::error(vec![ContentBlock::text(format!("run {} {}: {outcome}", run.id, run.status))]),
    };
    result.structured_content = Some(structured);
    result
}

/// The `tasks/get` view of a run's task.
pub(crate) fn detailed(task: &StoredTask, run: &Run) -> DetailedTask {
    if task.body.progress == Progress::Cancelled || run.status == RunStatus::Cancelled {
        return DetailedTask::new(task.view(run.body.outcome.clone()), TaskPayload::Cancelled);
    }
    if let Some((waiting, tool, input)) = pending_approval(run) {
        let message = format!("waiting for approval of a call to `{tool}`");
        let input_requests = ask_for_approval(run, waiting.step, tool, input);
        return DetailedTask::new(task.view(Some(message)), TaskPayload::InputRequired { input_requests });
    }
    if run.status.is_final() {
        let result = serde_json::to_value(ended(run)).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default();
        return DetailedTask::new(task.view(None), TaskPayload::Completed { result });
    }
    let message = match (&run.body.waiting, run.status) {
        (Some(waiting), RunStatus::Waiting) => format!("waiting for {}", waiting.wait),
        _ => "running".to_owned(),
    };
    DetailedTask::new(task.view(Some(message)), TaskPayload::Working)
}

/// Applies the client's answers to what the run asked: only the approval it waits for now;
/// other keys (answered already, never asked) are ignored, as the Tasks extension says.
pub(crate) async fn answer(runs: &Runs, run: &Run, responses: &InputResponses, by: &str) -> Result<(), RunError> {
    let Some((waiting, _, _)) = pending_approval(run) else { return Ok(()) };
    let Some(response) = responses.get(&approval_key(waiting.step)) else { return Ok(()) };
    let action = response.get("action").and_then(Value::as_str).unwrap_or("cancel");
    let decided = match action {
        "accept" => runs.approve(&run.id, None, by).await,
        _ => {
            let reason = response
                .pointer("/content/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.trim().is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the MCP client answered `{action}`"));
            runs.deny(&run.id, &reason, by).await
        }
    };
    match decided {
        // Decided meanwhile (another poll, a person at the command line): nothing to do.
        Ok(_) | Err(RunError::NotAwaitingApproval { .. } | RunError::WrongState { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How long a client without tasks waits for a run to end or suspend.
pub(crate) const BLOCKING_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Where a call of an agent's tool left its run, for a client that takes no tasks.
pub(crate) enum Blocked {
    /// The run ended, suspended on something else than the client, or is still running.
    Result(CallToolResult),
    /// The run waits for an approval nobody has given: see [`input_required`].
    Approval(Box<Run>),
}

/// For clients that take no tasks: waits until the run ends or suspends (at most
/// [`BLOCKING_WAIT`]). An approval it waits for comes back as [`Blocked::Approval`] for a
/// client that can be asked; for others, [`suspended`] says where the run is.
pub(crate) async fn wait_blocking(runs: &Runs, id: &str) -> Blocked {
    let deadline = tokio::time::Instant::now() + BLOCKING_WAIT;
    loop {
        let run = match runs.get(id).await {
            Ok(run) => run,
            Err(e) => {
                let error =
                    CallToolResult::error(vec![ContentBlock::text(format!("cannot read run {id}: {}", chain(&e)))]);
                return Blocked::Result(error);
            }
        };
        if run.status.is_final() {
            return Blocked::Result(ended(&run));
        }
        if pending_approval(&run).is_some() {
            return Blocked::Approval(Box::new(run));
        }
        if run.status == RunStatus::Waiting || tokio::time::Instant::now() >= deadline {
            return Blocked::Result(suspended(&run));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Where a run that has not ended is, for a client that cannot answer it: a person decides
/// an approval it waits for with `toolhost runs approve|deny`.
pub(crate) fn suspended(run: &Run) -> CallToolResult {
    let id = &run.id;
    let suspended = run.status == RunStatus::Waiting;
    let waits_for = run.body.waiting.as_ref().filter(|_| suspended).map(|w| w.wait.to_string());
    let text = match &waits_for {
        Some(wait) => format!(
            "run {id} is waiting for {wait}; it goes on once that arrives (an approval: \
             `toolhost runs approve {id}` or `toolhost runs deny {id} --reason ...`)"
        ),
        None => format!("run {id} is still running; see `toolhost runs show {id}`"),
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({"run": id, "status": run.status, "waits_for": waits_for}));
    result
}
