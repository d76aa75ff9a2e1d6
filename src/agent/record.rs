//! The agent's durable record: what a run looks like in its session's step log, and how a
//! resumed run reads it back.
//!
//! A run is a sequence of committed steps in one session:
//! - `agent.goal` (host step): the goal and its tasks, first;
//! - `agent.model` (host step): one model turn, its full response as the output;
//! - then one step per tool call that turn asked for, in order: the tool's own step (what
//!   [`Session::call`](crate::Session::call) commits), or an `agent.tool-error` host step when
//!   the call could not run to a committed step (unknown tool, invalid input, trap, ...).
//!
//! Actor names contain a `.`, which a tool name cannot, so host steps never collide with a
//! tool's steps and are never replayed into an instance. Because every model response is
//! committed before any tool it asked for runs, a resumed run re-sends no completed model
//! call and re-runs no committed tool call.

use serde::{Deserialize, Serialize};

use super::AgentError;
use super::action::{self, Action, PlannedCall};
use super::config::{Goal, ToolCalling};
use super::waits::{self, MAX_TOOL_RETRIES, Outcome, ResolvedStep, Wait, WaitStep};
use crate::error::ToolFailure;
use crate::model::ChatResponse;
use crate::source::Source;
use crate::store::{StepOutcome, StepRecord};

pub(crate) const GOAL: &str = "agent.goal";
pub(crate) const MODEL: &str = "agent.model";
pub(crate) const TOOL_ERROR: &str = "agent.tool-error";

/// The input of an `agent.model` step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ModelStepInput {
    pub turn: u32,
    pub model: String,
    /// sha256 of the request, to see in `sessions show` which turns asked the same thing.
    pub request: String,
}

/// The output of the `agent.goal` step: how the run talks to its model.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct GoalOutput {
    pub model: String,
    pub tool_calling: ToolCalling,
}

/// How a tool's own error is told to the model (the same live and when read back).
pub(crate) fn tool_failure_text(failure: &ToolFailure) -> String {
    format!("the tool reported an error: {failure}")
}

/// The input of an `agent.tool-error` step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ToolErrorInput {
    pub call: String,
    pub tool: String,
    pub arguments: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ToolErrorOutput {
    pub error: String,
}

/// What one tool call came back with, as the model is told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallResult {
    /// The tool's output JSON.
    Output(String),
    /// The tool's own error, or why the call could not run.
    Error(String),
}

/// One model turn and the results of the calls it asked for so far.
#[derive(Debug, Clone)]
pub(crate) struct Turn {
    pub response: ChatResponse,
    pub action: Action,
    pub results: Vec<CallResult>,
    /// What holds up the first unanswered call: the step that began the wait, and the wait.
    pub wait: Option<(u64, Wait)>,
    /// The first unanswered call was approved: make it with this input.
    pub approved: Option<serde_json::Value>,
    /// Times the first unanswered call was retried at its tool's request.
    pub retries: u32,
}

impl Turn {
    pub fn new(response: ChatResponse, action: Action) -> Self {
        Self { response, action, results: Vec::new(), wait: None, approved: None, retries: 0 }
    }

    /// Records the result of the first unanswered call; the next call starts afresh.
    pub fn answer(&mut self, result: CallResult) {
        self.results.push(result);
        self.wait = None;
        self.approved = None;
        self.retries = 0;
    }

    /// Applies the end of the first unanswered call's wait.
    pub fn resolve(&mut self, call: &PlannedCall, outcome: Outcome) {
        self.wait = None;
        match outcome {
            Outcome::Result(Ok(text)) => self.answer(CallResult::Output(text)),
            Outcome::Result(Err(text)) => self.answer(CallResult::Error(text)),
            Outcome::Call(edit) => self.approved = edit.or_else(|| call.input.clone()),
        }
    }

    /// The input the first unanswered call is made with.
    pub fn input_of(&self, call: &PlannedCall) -> Option<serde_json::Value> {
        self.approved.clone().or_else(|| call.input.clone())
    }

    /// A failed call whose tool asked to be called again later: the wait, if it may be.
    pub fn retry_wait(&self, tool: &str, failure: &ToolFailure, failed_at_ms: i64) -> Option<Wait> {
        let seconds = waits::retry_request(failure)?.ok()?;
        (self.retries < MAX_TOOL_RETRIES).then(|| Wait::Retry {
            tool: tool.to_owned(),
            until_ms: failed_at_ms.saturating_add(seconds as i64 * 1000),
            attempt: self.retries + 1,
        })
    }

    /// Calls of this turn that have no committed result yet.
    pub fn unanswered(&self) -> &[PlannedCall] {
        match &self.action {
            Action::Calls(calls) => &calls[self.results.len().min(calls.len())..],
            _ => &[],
        }
    }
}

/// What a committed response means for the run so far (`goal`, `earlier` turns): the same
/// live and when read back, so a resumed run sees the actions the live one saw.
///
/// On top of [`action::parse`]: with a plan in the constrained mode (small models), a final
/// answer must be grounded in what the tools returned: a number it states that no tool result
/// and not the goal shows makes it an unusable turn, and the model is asked again.
pub(crate) fn judge(mode: ToolCalling, response: &ChatResponse, goal: &Goal, earlier: &[Turn]) -> Action {
    let action = action::parse(mode, response);
    let Action::Final(answer) = &action else { return action };
    if mode != ToolCalling::Constrained || goal.tasks.is_empty() {
        return action;
    }
    let mut known = numbers(&goal.text);
    for task in &goal.tasks {
        known.extend(numbers(&task.description));
    }
    for result in earlier.iter().flat_map(|t| &t.results) {
        if let CallResult::Output(text) = result {
            known.extend(numbers(text));
        }
    }
    // An answer may round what a tool returned (`38.55` for `38.550000000000004`), to the
    // decimals it writes.
    let grounded = |(n, decimals): &(f64, i32)| {
        let scale = 10f64.powi(*decimals);
        known.iter().any(|(k, _)| ((k * scale).round() / scale - n).abs() < 1e-9)
    };
    match numbers(answer).into_iter().find(|n| !grounded(n)).map(|(n, _)| n) {
        Some(made_up) => Action::Invalid(format!(
            "the answer states {made_up}, which no tool result shows: answer from the results above"
        )),
        None => action,
    }
}

/// The decimal numbers in `text` (`12.85`, `3`), each with how many decimals it is written with.
fn numbers(text: &str) -> Vec<(f64, i32)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let tail = &rest[start..];
        let mut end = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
        // A fraction: `.` followed by a digit.
        if tail[end..].starts_with('.') && tail[end + 1..].starts_with(|c: char| c.is_ascii_digit()) {
            end += 1 + tail[end + 1..].find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len() - end - 1);
        }
        let written = &tail[..end];
        if let Ok(n) = written.parse::<f64>() {
            let decimals = written.split_once('.').map_or(0, |(_, fraction)| fraction.len() as i32);
            found.push((n, decimals));
        }
        rest = &tail[end..];
    }
    found
}

/// An agent run as read back from its session.
#[derive(Debug, Clone)]
pub(crate) struct Transcript {
    pub goal: Goal,
    /// The mode the run was started with; its stored responses are read in that mode.
    pub tool_calling: ToolCalling,
    pub turns: Vec<Turn>,
    /// Ids of the signals the run's event waits consumed.
    pub consumed_signals: Vec<u64>,
}

impl Transcript {
    pub fn tokens_used(&self) -> u64 {
        self.turns
            .iter()
            .map(|t| u64::from(t.response.usage.input_tokens) + u64::from(t.response.usage.output_tokens))
            .sum()
    }

    pub fn tool_calls(&self) -> u32 {
        self.turns.iter().map(|t| t.results.len() as u32).sum()
    }

    /// The final answer, if the run has one.
    pub fn final_answer(&self) -> Option<&str> {
        match self.turns.last().map(|t| &t.action) {
            Some(Action::Final(answer)) => Some(answer),
            _ => None,
        }
    }

    /// Reads a run from the steps of its session. Stored responses are parsed by the same
    /// function the live run used, so both see the same actions.
    pub fn read(session: &str, steps: &[StepRecord]) -> Result<Option<Self>, AgentError> {
        let record_error = |seq: u64, reason: String, source: Option<Source>| AgentError::Record {
            session: session.to_owned(),
            step: seq,
            reason,
            source,
        };
        let corrupt = |seq: u64, reason: String| record_error(seq, reason, None);
        let unparsed =
            |seq: u64, what: &str, e: serde_json::Error| record_error(seq, what.into(), Some(Source::new(e)));
        let Some(first) = steps.first() else { return Ok(None) };
        if first.tool != GOAL {
            return Err(AgentError::NotAnAgentSession {
                session: session.to_owned(),
                reason: format!("its first step is a call to `{}`, not an agent's goal", first.tool),
            });
        }
        let goal: Goal = serde_json::from_str(&first.input).map_err(|e| unparsed(first.seq, "the goal", e))?;
        let settings: GoalOutput = output_text(first)
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| corrupt(first.seq, "the goal step has no settings".into()))?;
        let mut turns: Vec<Turn> = Vec::new();
        let mut consumed_signals = Vec::new();
        for step in &steps[1..] {
            // The host switched a tool's component here: no turn of the agent's.
            if matches!(step.outcome, StepOutcome::Upgraded(_)) {
                continue;
            }
            if step.tool == MODEL {
                if let Some(open) = turns.last().filter(|t| !t.unanswered().is_empty()) {
                    let missing = &open.unanswered()[0];
                    return Err(corrupt(
                        step.seq,
                        format!("a model turn precedes the result of call `{}`", missing.id),
                    ));
                }
                let text = output_text(step).ok_or_else(|| corrupt(step.seq, "the model turn has no output".into()))?;
                let response: ChatResponse =
                    serde_json::from_str(text).map_err(|e| unparsed(step.seq, "the model response", e))?;
                let action = judge(settings.tool_calling, &response, &goal, &turns);
                turns.push(Turn::new(response, action));
                continue;
            }
            let turn = turns.last_mut().ok_or_else(|| {
                corrupt(step.seq, format!("a call to `{}` precedes the agent's first model turn", step.tool))
            })?;
            let call =
                turn.unanswered().first().cloned().ok_or_else(|| {
                    corrupt(step.seq, format!("a call to `{}` that no model turn asked for", step.tool))
                })?;
            if step.tool == waits::WAIT || step.tool == waits::RESOLVED {
                read_wait_step(step, turn, &call, &mut consumed_signals).map_err(|reason| corrupt(step.seq, reason))?;
                continue;
            }
            let result = if step.tool == TOOL_ERROR {
                let input: ToolErrorInput =
                    serde_json::from_str(&step.input).map_err(|e| unparsed(step.seq, "a tool error", e))?;
                if input.call != call.id {
                    return Err(corrupt(
                        step.seq,
                        format!("expected the result of call `{}`, found `{}`", call.id, input.call),
                    ));
                }
                let output: ToolErrorOutput = output_text(step)
                    .and_then(|t| serde_json::from_str(t).ok())
                    .ok_or_else(|| corrupt(step.seq, "a tool error without its message".into()))?;
                CallResult::Error(output.error)
            } else {
                let input: Option<serde_json::Value> = serde_json::from_str(&step.input).ok();
                if turn.wait.as_ref().is_some_and(|(_, w)| !matches!(w, Wait::Retry { .. })) {
                    return Err(corrupt(step.seq, format!("call `{}` ran while it was waiting", call.id)));
                }
                if step.tool != call.tool || input != turn.input_of(&call) {
                    return Err(corrupt(
                        step.seq,
                        format!("expected call `{}` to `{}`, found a call to `{}`", call.id, call.tool, step.tool),
                    ));
                }
                match &step.outcome {
                    // As the live run saw it: the output parsed, then printed compactly.
                    StepOutcome::Output(text) => match serde_json::from_str::<serde_json::Value>(text) {
                        Ok(value) => CallResult::Output(value.to_string()),
                        Err(e) => return Err(unparsed(step.seq, &format!("the output of `{}`", step.tool), e)),
                    },
                    StepOutcome::Failed(failure) => match turn.retry_wait(&step.tool, failure, step.committed_at_ms) {
                        Some(wait) => {
                            turn.retries += 1;
                            turn.wait = Some((step.seq, wait));
                            continue;
                        }
                        None => CallResult::Error(tool_failure_text(failure)),
                    },
                    StepOutcome::Upgraded(_) => continue,
                }
            };
            turn.answer(result);
        }
        Ok(Some(Self { goal, tool_calling: settings.tool_calling, turns, consumed_signals }))
    }
}

/// Reads an `agent.wait` or `agent.resolved` step of `call` into its turn.
fn read_wait_step(
    step: &StepRecord,
    turn: &mut Turn,
    call: &PlannedCall,
    consumed_signals: &mut Vec<u64>,
) -> Result<(), String> {
    if step.tool == waits::WAIT {
        let input: WaitStep = serde_json::from_str(&step.input).map_err(|e| format!("a wait: {e}"))?;
        if input.call != call.id || turn.wait.is_some() {
            return Err(format!("a wait for call `{}` where call `{}` was due", input.call, call.id));
        }
        turn.wait = Some((step.seq, input.wait));
        return Ok(());
    }
    let input: ResolvedStep = serde_json::from_str(&step.input).map_err(|e| format!("a resolution: {e}"))?;
    if input.call != call.id || turn.wait.is_none() {
        return Err(format!("the end of a wait of call `{}` that was not waiting", input.call));
    }
    if let waits::Resolution::Event { signal } = &input.resolution {
        consumed_signals.push(signal.id);
    }
    turn.resolve(call, input.resolution.outcome());
    Ok(())
}

fn output_text(step: &StepRecord) -> Option<&str> {
    match &step.outcome {
        StepOutcome::Output(text) => Some(text),
        StepOutcome::Failed(_) | StepOutcome::Upgraded(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Task;
    use crate::model::{FinishReason, Usage};

    fn turn(text: &str, results: Vec<CallResult>) -> Turn {
        let response = ChatResponse {
            text: text.into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage { input_tokens: 0, output_tokens: 0 },
            model: "m".into(),
        };
        let action = action::parse(ToolCalling::Constrained, &response);
        Turn { results, ..Turn::new(response, action) }
    }

    #[test]
    fn numbers_are_read_as_written() {
        assert_eq!(
            numbers("apples 3.50, total 12.85 (2 items) v1.2.3 x."),
            [(3.5, 2), (12.85, 2), (2.0, 0), (1.2, 1), (3.0, 0)]
        );
        assert_eq!(numbers("{\"value\":27.0} 5."), [(27.0, 1), (5.0, 0)]);
    }

    #[test]
    fn a_planned_final_answer_must_state_only_numbers_the_tools_returned() {
        let goal = Goal::new("Add up the prices.").with_task(Task::using("Add them.", "calculator"));
        let calc = turn(
            r#"{"tool":"calculator","input":{"expression":"3.5+9.35"}}"#,
            vec![CallResult::Output(r#"{"value":12.85}"#.into())],
        );
        let answer = |text: &str| turn(&format!(r#"{{"tool":"final_answer","input":{{"answer":"{text}"}}}}"#), vec![]);
        let judged = |text: &str, goal: &Goal| {
            judge(ToolCalling::Constrained, &answer(text).response, goal, std::slice::from_ref(&calc))
        };
        assert_eq!(judged("The total is 12.85 euros.", &goal), Action::Final("The total is 12.85 euros.".into()));
        // Rounded to the decimals it writes, as a float sum often must be.
        assert!(matches!(judged("About 12.9.", &goal), Action::Final(_)));
        let float = turn("{}", vec![CallResult::Output(r#"{"value":38.550000000000004}"#.into())]);
        let rounded = judge(ToolCalling::Constrained, &answer("38.55 in total").response, &goal, &[float]);
        assert!(matches!(rounded, Action::Final(_)), "{rounded:?}");
        assert!(matches!(judged("About 12.8.", &goal), Action::Invalid(_)));
        let Action::Invalid(reason) = judged("The total is 1.25.", &goal) else { panic!() };
        assert!(reason.contains("1.25, which no tool result shows"), "{reason}");
        // Without a plan the model is trusted, as in the native mode.
        let free = Goal::new("Add up the prices.");
        assert!(matches!(judged("The total is 1.25.", &free), Action::Final(_)));
    }

    fn step(seq: u64, tool: &str, input: serde_json::Value, output: &str) -> StepRecord {
        StepRecord {
            seq,
            tool: tool.into(),
            digest: String::new(),
            input: input.to_string(),
            outcome: StepOutcome::Output(output.into()),
            journal: Vec::new(),
            writes: Vec::new(),
            random: crate::journal::RandomState { seed: [0; 32], secure: 0, insecure: 0 },
            committed_at_ms: 0,
            files: Vec::new(),
        }
    }

    /// goal, then a native model turn asking for `calculator` with `6*7` as call `c0`.
    fn asked() -> Vec<StepRecord> {
        let response = ChatResponse {
            text: String::new(),
            tool_calls: vec![crate::model::ToolCall {
                id: "c0".into(),
                name: "calculator".into(),
                arguments: r#"{"expression":"6*7"}"#.into(),
            }],
            finish_reason: FinishReason::ToolCalls,
            usage: Usage { input_tokens: 1, output_tokens: 1 },
            model: "m".into(),
        };
        vec![
            step(1, GOAL, serde_json::json!({"text": "g"}), r#"{"model":"m","tool_calling":"native"}"#),
            step(2, MODEL, serde_json::json!({}), &serde_json::to_string(&response).unwrap()),
        ]
    }

    fn wait(seq: u64, call: &str) -> StepRecord {
        let wait = Wait::Approval { tool: "calculator".into(), input: serde_json::json!({"expression": "6*7"}) };
        step(seq, waits::WAIT, serde_json::to_value(WaitStep { call: call.into(), wait }).unwrap(), "{}")
    }

    fn approved(seq: u64, edit: serde_json::Value) -> StepRecord {
        let decision = waits::Decision::Approve { edit: Some(edit), by: "a".into() };
        let resolution = waits::Resolution::Decided { decision };
        step(seq, waits::RESOLVED, serde_json::to_value(ResolvedStep { call: "c0".into(), resolution }).unwrap(), "{}")
    }

    fn read(steps: &[StepRecord]) -> Result<Transcript, String> {
        Transcript::read("s", steps).map(|t| t.unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn waits_are_read_back_and_out_of_place_ones_are_corrupt() {
        let mut steps = asked();
        steps.push(wait(3, "c0"));
        let waiting = read(&steps).unwrap();
        assert!(matches!(waiting.turns[0].wait, Some((3, Wait::Approval { .. }))));
        steps.push(approved(4, serde_json::json!({"expression": "6*8"})));
        steps.push(step(5, "calculator", serde_json::json!({"expression": "6*8"}), r#"{"value":48.0}"#));
        let done = read(&steps).unwrap();
        assert_eq!(done.turns[0].results, [CallResult::Output(r#"{"value":48.0}"#.into())]);

        // The model's input where the approved edit was due.
        steps[4] = step(5, "calculator", serde_json::json!({"expression": "6*7"}), r#"{"value":42.0}"#);
        assert!(read(&steps).unwrap_err().contains("expected call `c0`"));
        // A call that ran while it waited; a wait for another call; an end of no wait.
        let mut ran = asked();
        ran.extend([wait(3, "c0"), step(4, "calculator", serde_json::json!({"expression": "6*7"}), "{}")]);
        assert!(read(&ran).unwrap_err().contains("ran while it was waiting"));
        let mut other = asked();
        other.push(wait(3, "c9"));
        assert!(read(&other).unwrap_err().contains("a wait for call `c9`"));
        let mut unasked = asked();
        unasked.push(approved(3, serde_json::json!({})));
        assert!(read(&unasked).unwrap_err().contains("was not waiting"));
    }
}
