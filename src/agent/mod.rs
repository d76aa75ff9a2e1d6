//! The agent loop: a model chooses among sandboxed tools, step after step, until it gives a
//! final answer, the turn limit or the token budget stops it.
//!
//! Every model turn and every tool call is a committed step of the run's session (see
//! [`record`] for the layout), so a run survives a crash: [`Agent::resume`] reads the session
//! back and continues after its last committed step, without sending a completed model
//! request again or re-running a committed tool call.
//!
//! ```ignore
//! // Compiled for real in examples/research_agent.rs.
//! let host = Host::with_store(HostConfig { policy, models: Some(provider), ..Default::default() }, store)?;
//! let tools = vec![host.load_tool("calculator.wasm").await?, host.load_tool("notes.wasm").await?];
//! let agent = Agent::new(&host, AgentConfig::new("local"), tools)?;
//! let mut session = host.new_session().await?;
//! let outcome = agent.start(&mut session, Goal::new("What is 17 * 23? Keep a note."), &mut |event| println!("{event}")).await?;
//! println!("{}", outcome.stop);
//! // After a crash, in a new process:
//! let mut session = host.open_session(&id).await?;
//! let outcome = agent.resume(&mut session, &mut |event| println!("{event}")).await?;
//! ```

mod action;
mod config;
mod prompt;
mod record;
mod signature;
mod waits;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

pub use action::FINAL_ANSWER;
pub use config::{AgentConfig, Goal, Task, ToolCalling};
pub use waits::{
    Decision, Inbox, MAX_TOOL_RETRIES, RETRY_PREFIX, SLEEP, Signal, WAIT_ACTIONS, WAIT_FOR_EVENT, WAIT_UNTIL, Wait,
    Waiting, show_time,
};

use crate::error::{CallError, Fault};
use crate::host::Host;
use crate::journal::{JournalEntry, request_digest};
use crate::model::{ChatResponse, ModelError, ModelProvider};
use crate::session::Session;
use crate::source::chain;
use crate::store::StoreError;
use crate::tool::Tool;
use action::{Action, PlannedCall};
pub(crate) use record::GOAL as GOAL_STEP;
use record::{CallResult, ModelStepInput, ToolErrorInput, ToolErrorOutput, Transcript, Turn};
use waits::{Resolution, ResolvedStep, WaitStep};

/// Why a run could not go on. A stop by the loop's own limits is not an error: see [`Stop`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the host has no model provider: configure `HostConfig::models` to run an agent")]
    NoModelProvider,
    #[error("invalid agent configuration: {0}")]
    InvalidConfig(String),
    #[error("session `{session}` already has {steps} steps; start an agent in a new session, or resume it")]
    SessionNotEmpty { session: String, steps: u64 },
    #[error("session `{session}` is not an agent run: {reason}")]
    NotAnAgentSession { session: String, reason: String },
    /// `reason` says what is wrong with the step; `source`, if any, is the JSON error.
    #[error("the agent run in session `{session}` cannot be read back at step {step}: {reason}")]
    Record { session: String, step: u64, reason: String, source: Option<crate::source::Source> },
    #[error("session `{session}` was started {reason}")]
    Mismatch { session: String, reason: String },
    /// The model call of turn `turn` failed; nothing of that turn was committed, so resuming
    /// sends it again.
    #[error("model turn {turn} failed: {error}")]
    Model { turn: u32, error: ModelError },
    /// The session's store failed, or the session was advanced elsewhere, or an instance could
    /// not be (re)built: the run stops at its last committed step.
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The model gave its final answer.
    Answer(String),
    /// `max_turns` model turns ran without a final answer.
    TurnLimit { max_turns: u32 },
    /// The token budget is spent.
    Budget { budget: u64, used: u64 },
    /// The run is suspended, durably: continue it with [`Agent::advance`] once the wait can
    /// end (the time passed, or the decision or event is in the [`Inbox`]).
    Waiting(Waiting),
    /// The inbox said to stop.
    Cancelled,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answer(answer) => write!(f, "final answer: {answer}"),
            Self::TurnLimit { max_turns } => write!(
                f,
                "stopped without a final answer: the turn limit ({max_turns} model turns) was reached; \
                 resume with a higher `max_turns` to continue"
            ),
            Self::Budget { budget, used } => write!(
                f,
                "stopped without a final answer: the token budget is spent ({used} of {budget} tokens used); \
                 resume with a higher `token_budget` to continue"
            ),
            Self::Waiting(waiting) => {
                write!(f, "waiting (step {}, call `{}`) for {}", waiting.step, waiting.call, waiting.wait)
            }
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// How a run ended, with what it consumed (over the whole run, resumes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOutcome {
    pub session: String,
    pub stop: Stop,
    pub turns: u32,
    pub tool_calls: u32,
    /// Input plus output tokens, as the provider reported them.
    pub tokens: u64,
    /// The session's last committed step.
    pub last_step: u64,
    /// Ids of the [`Signal`]s the run has consumed so far.
    pub consumed_signals: Vec<u64>,
}

impl AgentOutcome {
    pub fn answer(&self) -> Option<&str> {
        match &self.stop {
            Stop::Answer(answer) => Some(answer),
            _ => None,
        }
    }
}

/// Progress of a run, as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// A run was read back from its session and continues.
    Resumed { turns: u32, tool_calls: u32, tokens: u64, last_step: u64 },
    /// A model turn was answered and committed as `step`.
    ModelTurn { turn: u32, step: u64, elapsed: Duration, input_tokens: u32, output_tokens: u32, decision: String },
    /// A tool call finished (committed as `step`).
    ToolCall {
        turn: u32,
        step: u64,
        tool: String,
        arguments: String,
        elapsed: Duration,
        result: Result<String, String>,
    },
    /// A call began to wait (committed as `step`).
    Wait { step: u64, call: String, wait: Wait },
    /// A wait ended (committed as `step`): `how` it ended.
    Resolved { step: u64, call: String, how: String },
}

fn short(text: &str, max: usize) -> String {
    let flat = text.replace('\n', " ");
    if flat.chars().count() <= max { flat } else { format!("{}...", flat.chars().take(max).collect::<String>()) }
}

impl std::fmt::Display for AgentEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Resumed { turns, tool_calls, tokens, last_step } => write!(
                f,
                "resumed after step {last_step}: {turns} model turns and {tool_calls} tool calls kept ({tokens} tokens)"
            ),
            Self::ModelTurn { turn, step, elapsed, input_tokens, output_tokens, decision } => write!(
                f,
                "step {step:>3}  model turn {turn:<2} {:>7.2?}  {input_tokens:>5} in {output_tokens:>4} out  -> {}",
                elapsed,
                short(decision, 100)
            ),
            Self::ToolCall { step, tool, arguments, elapsed, result, .. } => {
                let shown = match result {
                    Ok(output) => short(output, 80),
                    Err(error) => format!("error: {}", short(error, 80)),
                };
                write!(f, "step {step:>3}  {tool:<13} {elapsed:>7.2?}  {} -> {shown}", short(arguments, 60))
            }
            Self::Wait { step, call, wait } => write!(f, "step {step:>3}  wait          call {call} waits for {wait}"),
            Self::Resolved { step, call, how } => {
                write!(f, "step {step:>3}  resolved      call {call}: {}", short(how, 80))
            }
        }
    }
}

/// An agent: a model alias, the tools it may call, and the loop's settings. Cheap to share;
/// one agent drives any number of sessions, one run per session.
pub struct Agent {
    config: AgentConfig,
    tools: Vec<Arc<Tool>>,
    provider: Arc<dyn ModelProvider>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("tools", &self.tools.iter().map(|t| t.name()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent that talks to `config.model` through `host`'s model provider and calls
    /// `tools` (loaded by `host`, with the grants its policy gives them).
    pub fn new(host: &Host, config: AgentConfig, tools: Vec<Arc<Tool>>) -> Result<Self, AgentError> {
        let provider = host.model_provider().ok_or(AgentError::NoModelProvider)?;
        Self::with_provider(config, tools, provider)
    }

    /// Like [`Agent::new`] with a provider of its own.
    pub fn with_provider(
        config: AgentConfig,
        tools: Vec<Arc<Tool>>,
        provider: Arc<dyn ModelProvider>,
    ) -> Result<Self, AgentError> {
        if config.model.trim().is_empty() {
            return Err(AgentError::InvalidConfig("no model alias is set".into()));
        }
        if config.max_turns == 0 {
            return Err(AgentError::InvalidConfig("`max_turns` must be at least 1".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for tool in &tools {
            if tool.name() == FINAL_ANSWER || (config.waits && WAIT_ACTIONS.contains(&tool.name())) {
                return Err(AgentError::InvalidConfig(format!("the tool name `{}` is reserved", tool.name())));
            }
            if !names.insert(tool.name()) {
                return Err(AgentError::InvalidConfig(format!("two tools are named `{}`", tool.name())));
            }
        }
        Ok(Self { config, tools, provider })
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    pub fn tools(&self) -> &[Arc<Tool>] {
        &self.tools
    }

    /// Starts a run towards `goal` in `session`, which must have no steps yet, and drives it
    /// until it stops.
    pub async fn start(
        &self,
        session: &mut Session,
        goal: Goal,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<AgentOutcome, AgentError> {
        self.start_with(session, goal, &Inbox::default(), events).await
    }

    /// Starts the run in a new session, or continues it after its last committed step, with
    /// what has arrived for it in `inbox`, until it stops or suspends ([`Stop::Waiting`]).
    pub async fn advance(
        &self,
        session: &mut Session,
        goal: Goal,
        inbox: &Inbox,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<AgentOutcome, AgentError> {
        if session.last_step() == 0 {
            self.start_with(session, goal, inbox, events).await
        } else {
            self.resume_with(session, inbox, events).await
        }
    }

    async fn start_with(
        &self,
        session: &mut Session,
        goal: Goal,
        inbox: &Inbox,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<AgentOutcome, AgentError> {
        if session.last_step() != 0 {
            return Err(AgentError::SessionNotEmpty { session: session.id().to_owned(), steps: session.last_step() });
        }
        if goal.text.trim().is_empty() {
            return Err(AgentError::InvalidConfig("the goal is empty".into()));
        }
        for task in &goal.tasks {
            if let Some(tool) = &task.tool
                && !self.tools.iter().any(|t| t.name() == tool)
            {
                return Err(AgentError::InvalidConfig(format!(
                    "task `{}` names the tool `{tool}`, which the agent does not have",
                    task.description
                )));
            }
        }
        let input = serde_json::to_value(&goal).expect("a goal serializes");
        let output = json!({"model": self.config.model, "tool_calling": self.config.tool_calling});
        session.commit_host_step(record::GOAL, &input, &output, Vec::new()).await?;
        let mut transcript = Transcript {
            goal,
            tool_calling: self.config.tool_calling,
            turns: Vec::new(),
            consumed_signals: Vec::new(),
        };
        self.drive(session, &mut transcript, inbox, events).await
    }

    /// Continues the run of `session` after its last committed step, until it stops. A run
    /// that has its final answer returns it without calling the model.
    pub async fn resume(
        &self,
        session: &mut Session,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<AgentOutcome, AgentError> {
        self.resume_with(session, &Inbox::default(), events).await
    }

    async fn resume_with(
        &self,
        session: &mut Session,
        inbox: &Inbox,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<AgentOutcome, AgentError> {
        let steps = session.steps(0).await?;
        let mut transcript = Transcript::read(session.id(), &steps)?.ok_or_else(|| AgentError::NotAnAgentSession {
            session: session.id().to_owned(),
            reason: "it has no steps".into(),
        })?;
        if transcript.tool_calling != self.config.tool_calling {
            return Err(AgentError::Mismatch {
                session: session.id().to_owned(),
                reason: format!(
                    "with tool calling {:?}, and cannot continue with {:?}",
                    transcript.tool_calling, self.config.tool_calling
                ),
            });
        }
        events(AgentEvent::Resumed {
            turns: transcript.turns.len() as u32,
            tool_calls: transcript.tool_calls(),
            tokens: transcript.tokens_used(),
            last_step: session.last_step(),
        });
        self.drive(session, &mut transcript, inbox, events).await
    }

    /// Starts the run in a new session, or resumes it if the session has steps.
    pub async fn run(
        &self,
        session: &mut Session,
        goal: Goal,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<AgentOutcome, AgentError> {
        if session.last_step() == 0 {
            self.start(session, goal, events).await
        } else {
            self.resume(session, events).await
        }
    }

    async fn drive(
        &self,
        session: &mut Session,
        transcript: &mut Transcript,
        inbox: &Inbox,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<AgentOutcome, AgentError> {
        loop {
            let progress = self.finish_turn(session, transcript, inbox, events).await?;
            let outcome = |stop| AgentOutcome {
                session: session.id().to_owned(),
                stop,
                turns: transcript.turns.len() as u32,
                tool_calls: transcript.tool_calls(),
                tokens: transcript.tokens_used(),
                last_step: session.last_step(),
                consumed_signals: transcript.consumed_signals.clone(),
            };
            if let Some(stop) = progress {
                return Ok(outcome(stop));
            }
            if let Some(answer) = transcript.final_answer() {
                return Ok(outcome(Stop::Answer(answer.to_owned())));
            }
            if inbox.is_cancelled() {
                return Ok(outcome(Stop::Cancelled));
            }
            if transcript.turns.len() as u32 >= self.config.max_turns {
                return Ok(outcome(Stop::TurnLimit { max_turns: self.config.max_turns }));
            }
            let used = transcript.tokens_used();
            let mut max_tokens = self.config.max_tokens_per_turn;
            if let Some(budget) = self.config.token_budget {
                if used >= budget {
                    return Ok(outcome(Stop::Budget { budget, used }));
                }
                let left = u32::try_from(budget - used).unwrap_or(u32::MAX);
                max_tokens = Some(max_tokens.map_or(left, |m| m.min(left)));
            }
            self.model_turn(session, transcript, max_tokens, events).await?;
        }
    }

    /// Works through the calls the open turn asked for, each to its result or its wait.
    /// Returns the stop if the run cannot go on now.
    async fn finish_turn(
        &self,
        session: &mut Session,
        transcript: &mut Transcript,
        inbox: &Inbox,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<Option<Stop>, AgentError> {
        let turn_number = transcript.turns.len() as u32;
        loop {
            let Some(turn) = transcript.turns.last() else { return Ok(None) };
            let Some(call) = turn.unanswered().first().cloned() else { return Ok(None) };
            if inbox.is_cancelled() {
                return Ok(Some(Stop::Cancelled));
            }
            let now = crate::store::timestamp_ms();
            match turn.wait.clone() {
                Some((_, waits::Wait::Retry { until_ms, .. })) if now >= until_ms => {
                    self.make_call(session, transcript, turn_number, &call, events).await?;
                }
                Some((step, wait)) => match self.resolution(&wait, step, inbox, transcript, now) {
                    Some(resolution) => self.resolve(session, transcript, &call, resolution, events).await?,
                    None => return Ok(Some(Stop::Waiting(Waiting { step, call: call.id, wait }))),
                },
                None => match self.wait_needed(turn, &call, now) {
                    Some(Ok(wait)) => self.begin_wait(session, transcript, &call, wait, events).await?,
                    Some(Err(reason)) => {
                        let result =
                            self.tool_error(session, turn_number, &call, reason, Instant::now(), events).await?;
                        transcript.turns.last_mut().expect("a turn is open").answer(result);
                    }
                    None => self.make_call(session, transcript, turn_number, &call, events).await?,
                },
            }
        }
    }

    /// Whether `call` must wait before it is made: one of the run's own wait actions (or why
    /// its arguments are unusable), or a call its tool's policy wants approved first.
    fn wait_needed(&self, turn: &Turn, call: &PlannedCall, now: i64) -> Option<Result<Wait, String>> {
        let input = call.input.as_ref();
        if self.config.waits && WAIT_ACTIONS.contains(&call.tool.as_str()) {
            let input = input.cloned().unwrap_or(serde_json::Value::Null);
            return Some(waits::parse_action(&call.tool, &input, now, self.config.max_wait_seconds));
        }
        let tool = self.tools.iter().find(|t| t.name() == call.tool)?;
        let input = input?;
        (turn.approved.is_none() && tool.grants().approval.requires(input))
            .then(|| Ok(Wait::Approval { tool: call.tool.clone(), input: input.clone() }))
    }

    /// What ends `wait` now, if anything does.
    fn resolution(
        &self,
        wait: &Wait,
        step: u64,
        inbox: &Inbox,
        transcript: &Transcript,
        now: i64,
    ) -> Option<Resolution> {
        match wait {
            Wait::Approval { .. } => {
                inbox.decisions.get(&step).map(|decision| Resolution::Decided { decision: decision.clone() })
            }
            Wait::Timer { until_ms } => (now >= *until_ms).then_some(Resolution::TimerFired { at_ms: now }),
            Wait::Event { name, deadline_ms } => {
                let arrived = inbox
                    .signals
                    .iter()
                    .find(|s| s.name == *name && !transcript.consumed_signals.contains(&s.id))
                    .map(|signal| Resolution::Event { signal: signal.clone() });
                arrived.or_else(|| {
                    deadline_ms
                        .filter(|at| now >= *at)
                        .map(|_| Resolution::EventTimedOut { name: name.clone(), at_ms: now })
                })
            }
            Wait::Retry { .. } => None,
        }
    }

    async fn begin_wait(
        &self,
        session: &mut Session,
        transcript: &mut Transcript,
        call: &PlannedCall,
        wait: Wait,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<(), AgentError> {
        let input = serde_json::to_value(WaitStep { call: call.id.clone(), wait: wait.clone() }).expect("serializes");
        let step = session.commit_host_step(waits::WAIT, &input, &json!({}), Vec::new()).await?;
        events(AgentEvent::Wait { step, call: call.id.clone(), wait: wait.clone() });
        transcript.turns.last_mut().expect("a turn is open").wait = Some((step, wait));
        Ok(())
    }

    async fn resolve(
        &self,
        session: &mut Session,
        transcript: &mut Transcript,
        call: &PlannedCall,
        resolution: Resolution,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<(), AgentError> {
        let input = serde_json::to_value(ResolvedStep { call: call.id.clone(), resolution: resolution.clone() })
            .expect("serializes");
        let step = session.commit_host_step(waits::RESOLVED, &input, &json!({}), Vec::new()).await?;
        if let Resolution::Event { signal } = &resolution {
            transcript.consumed_signals.push(signal.id);
        }
        let how = serde_json::to_string(&resolution).expect("serializes");
        events(AgentEvent::Resolved { step, call: call.id.clone(), how });
        transcript.turns.last_mut().expect("a turn is open").resolve(call, resolution.outcome());
        Ok(())
    }

    /// Makes the call (with its approved input, if it was approved) and records its result,
    /// or the delayed retry its tool asked for.
    async fn make_call(
        &self,
        session: &mut Session,
        transcript: &mut Transcript,
        turn_number: u32,
        call: &PlannedCall,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<(), AgentError> {
        let turn = transcript.turns.last_mut().expect("a turn is open");
        let input = turn.input_of(call);
        match self.execute(session, turn_number, call, input.as_ref(), events).await? {
            Executed::Result(result) => turn.answer(result),
            Executed::Failed(failure) => match turn.retry_wait(&call.tool, &failure, crate::store::timestamp_ms()) {
                Some(wait) => {
                    turn.retries += 1;
                    let step = session.last_step();
                    events(AgentEvent::Wait { step, call: call.id.clone(), wait: wait.clone() });
                    turn.wait = Some((step, wait));
                }
                None => turn.answer(CallResult::Error(record::tool_failure_text(&failure))),
            },
        }
        Ok(())
    }

    /// Asks the model for the next turn and commits its response before anything acts on it.
    async fn model_turn(
        &self,
        session: &mut Session,
        transcript: &mut Transcript,
        max_tokens: Option<u32>,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<(), AgentError> {
        let turn = transcript.turns.len() as u32 + 1;
        let request = prompt::request(&self.config, &self.tools, transcript, max_tokens);
        let digest = request_digest(&(&self.config.model, &request));
        // Stable across crashes: a provider that takes idempotency keys answers a resent
        // request from its cache.
        let call_id = format!("{}:{}:agent", session.id(), session.last_step() + 1);
        let started = Instant::now();
        let response = self
            .provider
            .chat(&self.config.model, &request, &call_id)
            .await
            .map_err(|error| AgentError::Model { turn, error })?;
        let elapsed = started.elapsed();
        let action = record::judge(self.config.tool_calling, &response, &transcript.goal, &transcript.turns);
        let input =
            serde_json::to_value(ModelStepInput { turn, model: self.config.model.clone(), request: digest.clone() })
                .expect("serializes");
        let output = serde_json::to_value(&response).expect("a response serializes");
        let journal = vec![JournalEntry::Model {
            model: self.config.model.clone(),
            request: digest,
            result: Ok(response.clone()),
        }];
        let step = session.commit_host_step(record::MODEL, &input, &output, journal).await?;
        events(AgentEvent::ModelTurn {
            turn,
            step,
            elapsed,
            input_tokens: response.usage.input_tokens,
            output_tokens: response.usage.output_tokens,
            decision: decision(&action),
        });
        transcript.turns.push(Turn::new(response, action));
        Ok(())
    }

    /// Runs one call in the session with `input`. Every outcome the model should hear about is
    /// committed: by the tool's own step, or by an `agent.tool-error` step when the call did
    /// not commit. A tool's own error comes back as is, since it may ask for a retry.
    async fn execute(
        &self,
        session: &mut Session,
        turn: u32,
        call: &PlannedCall,
        input: Option<&serde_json::Value>,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<Executed, AgentError> {
        let started = Instant::now();
        let tool = self.tools.iter().find(|t| t.name() == call.tool);
        let failure = match (tool, input) {
            (None, _) => {
                let names: Vec<&str> = self.tools.iter().map(|t| t.name()).collect();
                format!("there is no tool `{}`; the tools are: {}", call.tool.escape_debug(), names.join(", "))
            }
            (Some(_), None) => format!("the arguments must be a JSON object, not `{}`", short(&call.arguments, 200)),
            (Some(tool), Some(input)) => match session.call(tool, input).await {
                Ok(output) => {
                    let result = CallResult::Output(output.to_string());
                    self.report(events, turn, session.last_step(), call, started, &result);
                    return Ok(Executed::Result(result));
                }
                Err(CallError::Tool { failure, .. }) => {
                    let shown = CallResult::Error(record::tool_failure_text(&failure));
                    self.report(events, turn, session.last_step(), call, started, &shown);
                    return Ok(Executed::Failed(failure));
                }
                // The tool misbehaved on this input: the model hears why and may try otherwise.
                Err(e) if e.kind().fault() == Fault::Tool => chain(&e).to_string(),
                // The host failed, or the session moved on: stop at the last committed step.
                Err(e) => return Err(e.into()),
            },
        };
        self.tool_error(session, turn, call, failure, started, events).await.map(Executed::Result)
    }

    /// Commits why `call` could not run, as its result.
    async fn tool_error(
        &self,
        session: &mut Session,
        turn: u32,
        call: &PlannedCall,
        failure: String,
        started: Instant,
        events: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<CallResult, AgentError> {
        let input = serde_json::to_value(ToolErrorInput {
            call: call.id.clone(),
            tool: call.tool.clone(),
            arguments: call.arguments.clone(),
        })
        .expect("serializes");
        let output = serde_json::to_value(ToolErrorOutput { error: failure.clone() }).expect("serializes");
        let step = session.commit_host_step(record::TOOL_ERROR, &input, &output, Vec::new()).await?;
        let result = CallResult::Error(failure);
        self.report(events, turn, step, call, started, &result);
        Ok(result)
    }

    fn report(
        &self,
        events: &mut (dyn FnMut(AgentEvent) + Send),
        turn: u32,
        step: u64,
        call: &PlannedCall,
        started: Instant,
        result: &CallResult,
    ) {
        events(AgentEvent::ToolCall {
            turn,
            step,
            tool: call.tool.clone(),
            arguments: call.arguments.clone(),
            elapsed: started.elapsed(),
            result: match result {
                CallResult::Output(text) => Ok(text.clone()),
                CallResult::Error(error) => Err(error.clone()),
            },
        });
    }
}

/// What making a call came back with.
enum Executed {
    Result(CallResult),
    /// The tool's own error, committed as its step.
    Failed(crate::error::ToolFailure),
}

/// What a turn decided, for progress lines.
fn decision(action: &Action) -> String {
    match action {
        Action::Calls(calls) => {
            let names: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
            format!("call {}", names.join(", "))
        }
        Action::Final(answer) => format!("final answer: {answer}"),
        Action::Invalid(reason) => format!("unusable reply: {reason}"),
    }
}

/// The response of a committed model turn, for callers that show a run.
pub fn stored_response(step: &crate::store::StepRecord) -> Option<ChatResponse> {
    match (&step.outcome, step.tool == record::MODEL) {
        (crate::store::StepOutcome::Output(text), true) => serde_json::from_str(text).ok(),
        _ => None,
    }
}

/// The goal a run was started towards, from its session's first step (`None` if that step
/// is not an agent run's goal).
pub fn stored_goal(first: &crate::store::StepRecord) -> Option<Goal> {
    (first.seq == 1 && first.tool == record::GOAL).then(|| serde_json::from_str(&first.input).ok()).flatten()
}

/// Services run agents on tokio's multi-threaded runtime (`tokio::spawn`, axum handlers):
/// the loop's futures must be `Send`.
#[allow(dead_code)]
fn agent_futures_are_send(agent: &Agent, session: &mut Session, events: &mut (dyn FnMut(AgentEvent) + Send)) {
    fn is_send<T: Send>(_: T) {}
    is_send(agent.run(session, Goal::new("goal"), events));
}
