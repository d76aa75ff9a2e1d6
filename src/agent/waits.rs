//! Runs that wait: for a person's approval of a call, for a time, for a named event, or for
//! the delay a tool asked for before it is called again.
//!
//! A wait is two committed steps around the call it holds up: `agent.wait` (what the call
//! waits for, with any deadline fixed when it began) and `agent.resolved` (what ended it: the
//! decision, the time, the event's payload, the timeout). Both are read back like every other
//! step, so a run suspended with no process, no instance and no lease continues on any host:
//! what is still awaited is in its log, and what has arrived meanwhile is handed in through
//! an [`Inbox`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ToolFailure;

pub(crate) const WAIT: &str = "agent.wait";
pub(crate) const RESOLVED: &str = "agent.resolved";

/// The agent's own actions (offered when [`super::AgentConfig::waits`] is on): names no tool
/// may take then.
pub const SLEEP: &str = "sleep";
pub const WAIT_UNTIL: &str = "wait_until";
pub const WAIT_FOR_EVENT: &str = "wait_for_event";
pub const WAIT_ACTIONS: [&str; 3] = [SLEEP, WAIT_UNTIL, WAIT_FOR_EVENT];

/// How many times one call is retried at a tool's request before its error goes to the model.
pub const MAX_TOOL_RETRIES: u32 = 5;
/// The longest delay a tool may ask for.
pub const MAX_RETRY_DELAY_SECS: u64 = 24 * 3600;
/// What a tool's `failed` message starts with to ask for a delayed retry:
/// `retry-after=SECONDS; why`.
pub const RETRY_PREFIX: &str = "retry-after=";

/// What a suspended call waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Wait {
    /// A person's decision on a call to `tool` with `input`.
    Approval { tool: String, input: Value },
    /// A time (ms since the Unix epoch): the agent's `sleep` or `wait_until`.
    Timer { until_ms: i64 },
    /// An event named `name`, or its deadline.
    Event { name: String, deadline_ms: Option<i64> },
    /// The time `tool` asked to be called again at (its `attempt`-th retry).
    Retry { tool: String, until_ms: i64, attempt: u32 },
}

impl Wait {
    /// When the run can go on without anything arriving; `None`: only a decision or an
    /// event moves it.
    pub fn ready_at_ms(&self) -> Option<i64> {
        match self {
            Self::Approval { .. } | Self::Event { deadline_ms: None, .. } => None,
            Self::Timer { until_ms } | Self::Retry { until_ms, .. } => Some(*until_ms),
            Self::Event { deadline_ms, .. } => *deadline_ms,
        }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Approval { tool, input } => write!(f, "approval of a call to `{tool}` with {input}"),
            Self::Timer { until_ms } => write!(f, "the time {}", show_time(*until_ms)),
            Self::Event { name, deadline_ms: None } => write!(f, "the event `{name}`"),
            Self::Event { name, deadline_ms: Some(at) } => {
                write!(f, "the event `{name}` until {}", show_time(*at))
            }
            Self::Retry { tool, until_ms, attempt } => {
                write!(f, "retry {attempt} of `{tool}` at {}", show_time(*until_ms))
            }
        }
    }
}

/// `ms` since the Unix epoch as RFC 3339, UTC.
pub fn show_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| format!("{ms} ms"), |t| t.to_rfc3339())
}

/// Where a run is suspended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The `agent.wait` step: decisions name it.
    pub step: u64,
    /// The model's id of the call held up.
    pub call: String,
    pub wait: Wait,
}

/// A person's decision on a call waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// Make the call, with `edit` as its input instead of the model's when given.
    Approve {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edit: Option<Value>,
        by: String,
    },
    /// Do not make it; the model is told `reason` as the call's result.
    Deny { reason: String, by: String },
}

/// An event sent to a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// Unique within the run, in order of arrival.
    pub id: u64,
    pub name: String,
    pub payload: Value,
}

/// What has arrived for a run from outside since it suspended.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    /// Decisions by the `agent.wait` step they answer.
    pub decisions: BTreeMap<u64, Decision>,
    /// Events in the order they arrived; one already consumed by the run is skipped.
    pub signals: Vec<Signal>,
    /// Set from outside to stop the run before its next step.
    pub cancelled: Arc<AtomicBool>,
}

impl Inbox {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// What ended a wait: the input of an `agent.resolved` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Resolution {
    Decided { decision: Decision },
    TimerFired { at_ms: i64 },
    Event { signal: Signal },
    EventTimedOut { name: String, at_ms: i64 },
    RetryDue { at_ms: i64 },
}

/// The input of an `agent.wait` step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WaitStep {
    pub call: String,
    pub wait: Wait,
}

/// The input of an `agent.resolved` step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResolvedStep {
    pub call: String,
    pub resolution: Resolution,
}

/// What a resolution means for the call it held up.
pub(crate) enum Outcome {
    /// The call's result, as the model is told it.
    Result(Result<String, String>),
    /// Make the call now, with this input.
    Call(Option<Value>),
}

impl Resolution {
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Decided { decision: Decision::Approve { edit, .. } } => Outcome::Call(edit.clone()),
            Self::Decided { decision: Decision::Deny { reason, by } } => {
                Outcome::Result(Err(format!("the call was denied by {by}: {reason}")))
            }
            Self::TimerFired { at_ms } => Outcome::Result(Ok(json!({"woke_at": show_time(*at_ms)}).to_string())),
            Self::Event { signal } => {
                Outcome::Result(Ok(json!({"event": signal.name, "payload": signal.payload}).to_string()))
            }
            Self::EventTimedOut { name, at_ms } => Outcome::Result(Ok(json!({
                "event": name, "timed_out": true, "at": show_time(*at_ms)
            })
            .to_string())),
            Self::RetryDue { .. } => Outcome::Call(None),
        }
    }
}

/// The delay a tool asked for with its failure, if it did (and how to tell it it may not).
pub(crate) fn retry_request(failure: &ToolFailure) -> Option<Result<u64, String>> {
    let ToolFailure::Failed(message) = failure else { return None };
    let rest = message.strip_prefix(RETRY_PREFIX)?;
    let seconds = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap_or_default();
    Some(match seconds.parse::<u64>() {
        Ok(s) if s <= MAX_RETRY_DELAY_SECS => Ok(s),
        _ => Err(format!("a retry delay must be whole seconds up to {MAX_RETRY_DELAY_SECS}, not `{rest}`")),
    })
}

/// What one of the agent's own wait actions asks for, from the model's arguments, at `now_ms`.
pub(crate) fn parse_action(tool: &str, input: &Value, now_ms: i64, max_secs: u64) -> Result<Wait, String> {
    let seconds = |key: &str| -> Result<Option<i64>, String> {
        match input.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(s) if s >= 0.0 && s <= max_secs as f64 => Ok(Some((s * 1000.0).round() as i64)),
                _ => Err(format!("`{key}` must be a number of seconds from 0 to {max_secs}, not {v}")),
            },
        }
    };
    match tool {
        SLEEP => {
            let ms = seconds("seconds")?.ok_or("`sleep` needs `seconds`")?;
            Ok(Wait::Timer { until_ms: now_ms.saturating_add(ms) })
        }
        WAIT_UNTIL => {
            let text = input.get("time").and_then(Value::as_str).ok_or("`wait_until` needs `time` (RFC 3339)")?;
            let at = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| format!("`time` is not an RFC 3339 time ({e}): {text:?}"))?
                .timestamp_millis();
            if at.saturating_sub(now_ms) > (max_secs as i64).saturating_mul(1000) {
                return Err(format!("`time` is more than {max_secs} seconds away"));
            }
            Ok(Wait::Timer { until_ms: at })
        }
        _ => {
            let name = input.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err("`wait_for_event` needs a `name` of 1 to 128 printable characters".into());
            }
            let deadline_ms = seconds("timeout_seconds")?.map(|ms| now_ms.saturating_add(ms));
            Ok(Wait::Event { name: name.to_owned(), deadline_ms })
        }
    }
}

/// The JSON Schemas of the wait actions, for the model.
pub(crate) fn action_schemas(max_secs: u64) -> [(&'static str, &'static str, Value); 3] {
    [
        (
            SLEEP,
            "Pause the run for a number of seconds; it resumes on its own, on any worker.",
            json!({"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": max_secs}},
                   "required": ["seconds"]}),
        ),
        (
            WAIT_UNTIL,
            "Pause the run until a time (RFC 3339, e.g. 2026-01-01T09:00:00Z).",
            json!({"type": "object", "properties": {"time": {"type": "string"}}, "required": ["time"]}),
        ),
        (
            WAIT_FOR_EVENT,
            "Pause the run until the named event arrives (its payload is the result), or the timeout passes.",
            json!({"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 128},
                "timeout_seconds": {"type": "number", "minimum": 0, "maximum": max_secs}},
                "required": ["name"]}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_actions_are_checked() {
        let now = 1_000_000;
        assert_eq!(parse_action(SLEEP, &json!({"seconds": 2.5}), now, 60), Ok(Wait::Timer { until_ms: now + 2500 }));
        assert!(parse_action(SLEEP, &json!({"seconds": -1}), now, 60).is_err());
        assert!(parse_action(SLEEP, &json!({"seconds": 61}), now, 60).is_err());
        assert!(parse_action(SLEEP, &json!({}), now, 60).is_err());
        let until = parse_action(WAIT_UNTIL, &json!({"time": "1970-01-01T00:16:50Z"}), now, 60).unwrap();
        assert_eq!(until, Wait::Timer { until_ms: 1_010_000 });
        assert!(parse_action(WAIT_UNTIL, &json!({"time": "tomorrow"}), now, 60).is_err());
        assert!(parse_action(WAIT_UNTIL, &json!({"time": "2999-01-01T00:00:00Z"}), now, 60).is_err());
        let event = parse_action(WAIT_FOR_EVENT, &json!({"name": "paid", "timeout_seconds": 1}), now, 60).unwrap();
        assert_eq!(event, Wait::Event { name: "paid".into(), deadline_ms: Some(now + 1000) });
        assert!(parse_action(WAIT_FOR_EVENT, &json!({"name": "a\nb"}), now, 60).is_err());
    }

    #[test]
    fn only_a_well_formed_retry_request_is_one() {
        let failed = |m: &str| ToolFailure::Failed(m.into());
        assert_eq!(retry_request(&failed("retry-after=30; busy")), Some(Ok(30)));
        assert!(matches!(retry_request(&failed("retry-after=lots")), Some(Err(_))));
        assert!(matches!(retry_request(&failed("retry-after=99999999")), Some(Err(_))));
        assert_eq!(retry_request(&failed("busy")), None);
        assert_eq!(retry_request(&ToolFailure::InvalidInput("retry-after=3".into())), None);
    }
}
