//! Agents served as MCP tools: a call starts a run (see [`crate::run`]) toward the goal it
//! gives, and its task follows the run. Workers drive the run, in this process or any other
//! on the store; the MCP server only starts, shows, decides and cancels it.
//!
//! An approval the run waits for is asked of the client the 2026-07-28 way: the task turns
//! `input_required` with an `elicitation/create` form in `inputRequests` (the multi round-trip
//! request shape), keyed by the wait's step so a key is never reused; a `tasks/update`
//! answering it with `accept` approves the call, `decline` (with an optional `reason`) or
//! `cancel` denies it, and the denial reaches the model as the call's result.

use std::sync::Arc;

use rmcp::model::{
    CallToolResult, ContentBlock, DetailedTask, InputRequests, InputResponses, JsonObject, TaskPayload, Tool as McpTool,
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
        let goal = arguments.get("goal").and_then(Value::as_str).filter(|g| !g.trim().is_empty());
        let goal = goal.ok_or("`goal` must be a non-empty string")?;
        self.runs()
            .create(&self.agent.host, None, &self.agent.name, Goal::new(goal))
            .await
            .map_err(|e| chain(&e).to_string())
    }
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
fn ended(run: &Run) -> CallToolResult {
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

/// For clients that take no tasks (all 2025-11-25 ones): waits until the run ends or
/// suspends (at most [`BLOCKING_WAIT`]) and says where it is; a person decides an approval
/// it waits for with `toolhost runs approve|deny`.
pub(crate) async fn wait_blocking(runs: &Runs, id: &str) -> CallToolResult {
    let deadline = tokio::time::Instant::now() + BLOCKING_WAIT;
    loop {
        let run = match runs.get(id).await {
            Ok(run) => run,
            Err(e) => {
                return CallToolResult::error(vec![ContentBlock::text(format!("cannot read run {id}: {}", chain(&e)))]);
            }
        };
        if run.status.is_final() {
            return ended(&run);
        }
        let suspended = run.status == RunStatus::Waiting;
        if suspended || tokio::time::Instant::now() >= deadline {
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
            return result;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
