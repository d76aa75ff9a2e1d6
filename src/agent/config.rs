//! What an agent run is given: the goal (stored with the run) and the loop's settings (given
//! again on resume, so a run can be resumed with a higher limit).

use serde::{Deserialize, Serialize};

/// What the agent is asked to achieve. Stored as the run's first step, so `resume` needs
/// only the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    pub text: String,
    /// An optional plan: tasks worked through in order, one tool-calling turn each, before the
    /// final answer. Small models reach a goal far more reliably through a plan; capable
    /// models do well with none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
}

impl Goal {
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), tasks: Vec::new() }
    }

    pub fn with_task(mut self, task: Task) -> Self {
        self.tasks.push(task);
        self
    }
}

/// One task of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub description: String,
    /// The tool this task must use (sent as the request's tool choice). Without it the model
    /// picks among all tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

impl Task {
    pub fn new(description: impl Into<String>) -> Self {
        Self { description: description.into(), tool: None }
    }

    pub fn using(description: impl Into<String>, tool: impl Into<String>) -> Self {
        Self { description: description.into(), tool: Some(tool.into()) }
    }
}

/// How the model is asked for tool calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolCalling {
    /// The request lists the tools; the provider returns structured tool calls.
    #[default]
    Native,
    /// For models without tool calling (small local ones): the request carries no tools but
    /// a JSON Schema the reply must match, `{"tool": <one of the tools' names>, "input":
    /// <that tool's input schema>}` or `{"tool": "final_answer", "input": {"answer": ...}}`,
    /// and the conversation so far is condensed into one prompt.
    Constrained,
}

/// The loop's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The model alias (from the host's model configuration) the agent talks to.
    pub model: String,
    pub tool_calling: ToolCalling,
    /// Replaces the default system prompt.
    pub system_prompt: Option<String>,
    /// Model turns after which the run stops without a final answer.
    pub max_turns: u32,
    /// Input plus output tokens over the whole run, as the provider reports them; the run
    /// stops before a turn once they are spent.
    pub token_budget: Option<u64>,
    /// `max-tokens` of each request (lowered to what is left of the budget).
    pub max_tokens_per_turn: Option<u32>,
    pub temperature: Option<f32>,
    /// Tool output longer than this is cut before it is shown to the model.
    pub max_result_chars: usize,
    /// Offer the model the run's own wait actions (`sleep`, `wait_until`, `wait_for_event`):
    /// the run suspends durably and continues when the time or the event comes.
    pub waits: bool,
    /// The longest a wait action may wait, in seconds.
    pub max_wait_seconds: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            tool_calling: ToolCalling::Native,
            system_prompt: None,
            max_turns: 12,
            token_budget: None,
            max_tokens_per_turn: Some(512),
            temperature: Some(0.0),
            max_result_chars: 2000,
            waits: false,
            max_wait_seconds: 30 * 24 * 3600,
        }
    }
}

impl AgentConfig {
    pub fn new(model: impl Into<String>) -> Self {
        Self { model: model.into(), ..Self::default() }
    }
}
