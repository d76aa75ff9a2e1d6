//! What a model reply asks the agent to do, in both tool-calling modes.

use serde_json::Value;

use super::config::ToolCalling;
use crate::model::{ChatResponse, FinishReason};

/// The name a constrained reply uses to end the run (reserved: no tool may take it).
pub const FINAL_ANSWER: &str = "final_answer";

/// One tool call a model turn asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedCall {
    /// Unique within its turn.
    pub id: String,
    pub tool: String,
    /// The arguments as sent by the model.
    pub arguments: String,
    /// The arguments, when they are a JSON object.
    pub input: Option<Value>,
}

/// What a reply means.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Calls(Vec<PlannedCall>),
    Final(String),
    /// The reply cannot be acted on; the reason is told to the model on the next turn.
    Invalid(String),
}

pub(crate) fn parse(mode: ToolCalling, response: &ChatResponse) -> Action {
    let action = match mode {
        ToolCalling::Native => parse_native(response),
        ToolCalling::Constrained => parse_constrained(&response.text),
    };
    match action {
        // A reply cut off at `max-tokens` is unusable even when what came parses as an answer:
        // a final answer cut short is not the answer. A tool call whose JSON closed stands.
        Action::Final(_) | Action::Invalid(_) if response.finish_reason == FinishReason::Length => {
            Action::Invalid(format!(
                "the reply was cut off at the turn's token limit ({} tokens): reply shorter",
                response.usage.output_tokens
            ))
        }
        action => action,
    }
}

fn parse_native(response: &ChatResponse) -> Action {
    if response.tool_calls.is_empty() {
        let text = response.text.trim();
        if text.is_empty() {
            return Action::Invalid("the reply was empty: call a tool or give the final answer".into());
        }
        return Action::Final(text.to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    let calls = response
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            // Ids echo back to the provider, so keep its own unless it gave none or repeated one.
            let id =
                if call.id.is_empty() || !seen.insert(call.id.clone()) { format!("call-{i}") } else { call.id.clone() };
            PlannedCall {
                id,
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
                input: object(&call.arguments),
            }
        })
        .collect();
    Action::Calls(calls)
}

fn object(text: &str) -> Option<Value> {
    serde_json::from_str::<Value>(text).ok().filter(Value::is_object)
}

fn parse_constrained(text: &str) -> Action {
    let value: Value = match serde_json::from_str(text.trim()) {
        Ok(value) => value,
        Err(e) => return Action::Invalid(format!("the reply is not JSON ({e}): reply with one JSON object")),
    };
    let Some(tool) = value.get("tool").and_then(Value::as_str) else {
        return Action::Invalid("the reply has no `tool` string".into());
    };
    let input = value.get("input").cloned().unwrap_or(Value::Null);
    if tool == FINAL_ANSWER {
        return match input.get("answer") {
            Some(Value::String(answer)) if !answer.trim().is_empty() => Action::Final(answer.trim().to_owned()),
            Some(answer) if !answer.is_null() => Action::Final(answer.to_string()),
            _ => Action::Invalid("`final_answer` needs `input.answer`".into()),
        };
    }
    let arguments = input.to_string();
    Action::Calls(vec![PlannedCall {
        id: "call-0".into(),
        tool: tool.to_owned(),
        arguments,
        input: Some(input).filter(Value::is_object),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ToolCall, Usage};

    fn response(text: &str, calls: Vec<ToolCall>) -> ChatResponse {
        ChatResponse {
            text: text.into(),
            tool_calls: calls,
            finish_reason: FinishReason::Stop,
            usage: Usage { input_tokens: 0, output_tokens: 0 },
            model: "m".into(),
        }
    }

    #[test]
    fn constrained_replies() {
        let call = parse_constrained(r#"{"tool": "calculator", "input": {"expression": "1+1"}}"#);
        let Action::Calls(calls) = call else { panic!("{call:?}") };
        assert_eq!(calls[0].tool, "calculator");
        assert_eq!(calls[0].input, Some(serde_json::json!({"expression": "1+1"})));
        assert_eq!(
            parse_constrained(r#"{"tool":"final_answer","input":{"answer":" 42 "}}"#),
            Action::Final("42".into())
        );
        assert!(matches!(parse_constrained("the answer is 42"), Action::Invalid(_)));
        assert!(matches!(parse_constrained(r#"{"tool":"final_answer","input":{}}"#), Action::Invalid(_)));
        let Action::Calls(calls) = parse_constrained(r#"{"tool":"notes","input":"list"}"#) else { panic!() };
        assert_eq!(calls[0].input, None, "a non-object input is kept only as text");
    }

    #[test]
    fn a_reply_cut_off_at_max_tokens_is_unusable_in_both_modes() {
        let mut cut = response(r#"{"tool":"final_answer","input":{"answer":"12"#, vec![]);
        cut.finish_reason = FinishReason::Length;
        cut.usage.output_tokens = 256;
        let reason = |action| match action {
            Action::Invalid(reason) => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason(parse(ToolCalling::Constrained, &cut)).contains("cut off at the turn's token limit (256"));
        cut.text = "The total is 1".into();
        assert!(reason(parse(ToolCalling::Native, &cut)).contains("cut off"), "a cut final answer is no answer");
        // A call whose JSON closed before the limit is still a call.
        cut.text = r#"{"tool":"calculator","input":{"expression":"1+1"}}"#.into();
        assert!(matches!(parse(ToolCalling::Constrained, &cut), Action::Calls(_)));
    }

    #[test]
    fn native_replies() {
        let calls = vec![
            ToolCall { id: "a".into(), name: "x".into(), arguments: "{}".into() },
            ToolCall { id: "a".into(), name: "y".into(), arguments: "[1]".into() },
        ];
        let Action::Calls(calls) = parse_native(&response("", calls)) else { panic!() };
        assert_eq!(calls[0].id, "a");
        assert_eq!(calls[1].id, "call-1", "a repeated id is replaced");
        assert_eq!(calls[1].input, None);
        assert_eq!(parse_native(&response(" done ", vec![])), Action::Final("done".into()));
        assert!(matches!(parse_native(&response("  ", vec![])), Action::Invalid(_)));
    }
}
