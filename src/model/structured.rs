//! Checks on requests and answers, and the JSON-Schema tool mode: for a model that cannot
//! emit native tool calls, its tools become one schema the answer must match, and the answer
//! is turned back into tool calls.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{ChatRequest, Message, ModelError, Role, ToolCall, ToolChoice};

/// Checks what the host can check before any provider sees the request.
pub fn validate_request(request: &ChatRequest) -> Result<(), ModelError> {
    let invalid = |m: String| Err(ModelError::InvalidRequest(m));
    if request.messages.is_empty() {
        return invalid("the request has no messages".into());
    }
    for (i, message) in request.messages.iter().enumerate() {
        if message.role == Role::Tool && message.tool_call_id.as_deref().is_none_or(str::is_empty) {
            return invalid(format!("message {i} has role `tool` but no tool-call-id"));
        }
        for call in &message.tool_calls {
            if let Err(e) = serde_json::from_str::<Value>(&call.arguments) {
                return invalid(format!("message {i}: the arguments of tool call `{}` are not JSON: {e}", call.id));
            }
        }
    }
    let mut names = BTreeSet::new();
    for tool in &request.tools {
        if tool.name.is_empty() || tool.name.len() > 64 {
            return invalid(format!("tool name `{}` must be 1-64 characters", tool.name.escape_debug()));
        }
        if !names.insert(tool.name.as_str()) {
            return invalid(format!("tool `{}` is defined twice", tool.name));
        }
        let schema = compile(&tool.parameters).map_err(|e| {
            ModelError::InvalidRequest(format!("the parameters of tool `{}` are not a JSON Schema: {e}", tool.name))
        })?;
        if schema.get("type").is_some_and(|t| t != "object") {
            return invalid(format!("the parameters of tool `{}` must describe an object", tool.name));
        }
    }
    match &request.tool_choice {
        Some(ToolChoice::Required) if request.tools.is_empty() => {
            return invalid("tool-choice `required` with no tools".into());
        }
        Some(ToolChoice::Named(name)) if !names.contains(name.as_str()) => {
            return invalid(format!("tool-choice names `{}`, which is not among the tools", name.escape_debug()));
        }
        _ => {}
    }
    if let Some(schema) = &request.response_schema {
        compile(schema)
            .map_err(|e| ModelError::InvalidRequest(format!("the response schema is not a JSON Schema: {e}")))?;
    }
    if request.max_tokens == Some(0) {
        return invalid("max-tokens must be at least 1".into());
    }
    if let Some(t) = request.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return invalid(format!("temperature {t} is outside 0..=2"));
    }
    Ok(())
}

/// Parses and compiles a schema given as JSON text.
fn compile(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::validator_for(&value).map_err(|e| e.to_string())?;
    Ok(value)
}

/// Checks an answer against the request's response schema.
pub(crate) fn check_answer(text: &str, schema: &str) -> Result<(), String> {
    let schema: Value = serde_json::from_str(schema).map_err(|e| e.to_string())?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { e.to_string() } else { format!("at `{at}`: {e}") }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("the answer does not match the response schema: {}", errors.join("; ")))
    }
}

/// Whether the JSON-Schema tool mode has anything to fold for `request`.
pub(crate) fn needs_folding(request: &ChatRequest) -> bool {
    !request.tools.is_empty() || request.messages.iter().any(|m| m.role == Role::Tool || !m.tool_calls.is_empty())
}

/// `request` without tools: the tools are described in a system message, the answer must
/// match a schema choosing one tool call or a direct answer, and earlier tool calls and
/// results are written into the conversation as text.
pub(crate) fn fold_tools(request: &ChatRequest) -> ChatRequest {
    let choice = request.tool_choice.clone().unwrap_or(ToolChoice::Auto);
    let offered: Vec<_> = match &choice {
        ToolChoice::None => Vec::new(),
        ToolChoice::Named(name) => request.tools.iter().filter(|t| &t.name == name).collect(),
        ToolChoice::Auto | ToolChoice::Required => request.tools.iter().collect(),
    };
    let answer_schema = match &request.response_schema {
        Some(text) => serde_json::from_str(text).unwrap_or(json!({})),
        None => json!({"type": "string"}),
    };
    let mut variants: Vec<Value> = offered
        .iter()
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {
                    "tool": {"const": tool.name},
                    "arguments": serde_json::from_str::<Value>(&tool.parameters).unwrap_or(json!({})),
                },
                "required": ["tool", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let may_answer = matches!(choice, ToolChoice::Auto | ToolChoice::None) || offered.is_empty();
    if may_answer {
        variants.push(json!({
            "type": "object",
            "properties": {"answer": answer_schema},
            "required": ["answer"],
            "additionalProperties": false,
        }));
    }
    // `type: object` at the top too: Anthropic requires it of a tool's input schema.
    let schema = if variants.len() == 1 { variants.remove(0) } else { json!({"type": "object", "anyOf": variants}) };

    let mut instruction = String::new();
    if !offered.is_empty() {
        instruction.push_str("You can call these tools:\n");
        for tool in &offered {
            instruction
                .push_str(&format!("- {}: {} Arguments schema: {}\n", tool.name, tool.description, tool.parameters));
        }
        instruction.push_str("To call a tool, reply with {\"tool\": <tool name>, \"arguments\": <arguments object>}.");
        if may_answer {
            instruction.push_str(" To answer directly, reply with {\"answer\": <your answer>}.");
        }
    }

    let mut messages: Vec<Message> = Vec::with_capacity(request.messages.len() + 1);
    if !instruction.is_empty() {
        match request.messages.first() {
            Some(first) if first.role == Role::System => {
                messages.push(Message { content: format!("{}\n\n{instruction}", first.content), ..first.clone() })
            }
            _ => messages.push(text_message(Role::System, instruction)),
        }
    }
    let skip_first = !messages.is_empty() && request.messages.first().is_some_and(|m| m.role == Role::System);
    for message in request.messages.iter().skip(usize::from(skip_first)) {
        messages.push(match message.role {
            Role::Tool => text_message(
                Role::User,
                format!("Result of tool call {}:\n{}", message.tool_call_id.as_deref().unwrap_or("?"), message.content),
            ),
            _ if !message.tool_calls.is_empty() => {
                let mut content = message.content.clone();
                for call in &message.tool_calls {
                    let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&json!({"tool": call.name, "arguments": arguments}).to_string());
                }
                text_message(message.role, content)
            }
            _ => message.clone(),
        });
    }
    ChatRequest {
        messages,
        tools: Vec::new(),
        tool_choice: None,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        stop: request.stop.clone(),
        response_schema: Some(schema.to_string()),
    }
}

fn text_message(role: Role, content: String) -> Message {
    Message { role, content, tool_calls: Vec::new(), tool_call_id: None }
}

/// Reads a folded answer back: the text of a direct answer, or one tool call.
pub(crate) fn unfold_answer(text: &str, request: &ChatRequest) -> Result<(String, Vec<ToolCall>), String> {
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if let Some(name) = value.get("tool").and_then(Value::as_str) {
        if !request.tools.iter().any(|t| t.name == name) {
            return Err(format!("the answer calls `{}`, which is not among the tools", name.escape_debug()));
        }
        let arguments = value.get("arguments").cloned().unwrap_or(json!({}));
        if !arguments.is_object() {
            return Err(format!("the arguments of the call to `{name}` are not an object"));
        }
        let call = ToolCall { id: "call_0".into(), name: name.to_owned(), arguments: arguments.to_string() };
        return Ok((String::new(), vec![call]));
    }
    match value.get("answer") {
        Some(Value::String(text)) if request.response_schema.is_none() => Ok((text.clone(), Vec::new())),
        Some(answer) => Ok((answer.to_string(), Vec::new())),
        None => Err("the answer has neither `tool` nor `answer`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ToolDefinition;

    fn weather_request(choice: Option<ToolChoice>) -> ChatRequest {
        ChatRequest {
            messages: vec![text_message(Role::User, "Weather in Paris?".into())],
            tools: vec![ToolDefinition {
                name: "weather".into(),
                description: "Current weather for a city.".into(),
                parameters: r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#.into(),
            }],
            tool_choice: choice,
            max_tokens: None,
            temperature: None,
            stop: Vec::new(),
            response_schema: None,
        }
    }

    #[test]
    fn folded_schema_accepts_calls_and_answers_and_unfolds_them() {
        let request = weather_request(None);
        let folded = fold_tools(&request);
        assert!(folded.tools.is_empty());
        assert_eq!(folded.messages[0].role, Role::System);
        let schema = folded.response_schema.unwrap();
        check_answer(r#"{"tool":"weather","arguments":{"city":"Paris"}}"#, &schema).unwrap();
        check_answer(r#"{"answer":"sunny"}"#, &schema).unwrap();
        assert!(check_answer(r#"{"tool":"weather","arguments":{}}"#, &schema).is_err());
        assert!(check_answer(r#"{"tool":"rm","arguments":{"city":"x"}}"#, &schema).is_err());

        let (text, calls) = unfold_answer(r#"{"tool":"weather","arguments":{"city":"Paris"}}"#, &request).unwrap();
        assert_eq!(text, "");
        assert_eq!(calls[0].name, "weather");
        assert_eq!(serde_json::from_str::<Value>(&calls[0].arguments).unwrap(), json!({"city": "Paris"}));
        assert_eq!(unfold_answer(r#"{"answer":"sunny"}"#, &request).unwrap().0, "sunny");
        assert!(unfold_answer("not json", &request).is_err());
    }

    #[test]
    fn required_choice_leaves_no_direct_answer() {
        let schema = fold_tools(&weather_request(Some(ToolChoice::Required))).response_schema.unwrap();
        assert!(check_answer(r#"{"answer":"sunny"}"#, &schema).is_err());
        check_answer(r#"{"tool":"weather","arguments":{"city":"Oslo"}}"#, &schema).unwrap();
    }

    #[test]
    fn invalid_requests_are_named() {
        let mut request = weather_request(Some(ToolChoice::Named("nope".into())));
        assert!(matches!(validate_request(&request), Err(ModelError::InvalidRequest(m)) if m.contains("nope")));
        request.tool_choice = None;
        request.tools[0].parameters = "{not json".into();
        assert!(matches!(validate_request(&request), Err(ModelError::InvalidRequest(m)) if m.contains("weather")));
        request.tools.clear();
        request.response_schema = Some(r#"{"type": 12}"#.into());
        assert!(matches!(validate_request(&request), Err(ModelError::InvalidRequest(_))));
        request.response_schema = None;
        request.messages.clear();
        assert!(matches!(validate_request(&request), Err(ModelError::InvalidRequest(_))));
    }
}
