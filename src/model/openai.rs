//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::progress::{Progress, ProgressKind};
use super::transport::Transport;
use super::{ChatRequest, ChatResponse, FinishReason, ModelError, Role, ToolCall, ToolChoice, Usage};

/// What llama.cpp's Hermes-style template parses as the start and end of a tool call.
pub(crate) const TOOL_CALL_OPEN: &str = "<tool_call>\n";
pub(crate) const TOOL_CALL_CLOSE: &str = "</tool_call>";

pub(crate) async fn chat(
    transport: &Transport,
    model: &str,
    request: &ChatRequest,
    call_id: &str,
    progress: &Progress<'_>,
    stream: bool,
) -> Result<ChatResponse, ModelError> {
    let body = request_body(transport, model, request, stream);
    let response = transport.post("chat/completions", &[], &body, call_id, progress).await?;
    if stream {
        read_stream(transport, response, progress).await
    } else {
        let value = transport.json_body(response).await?;
        parse_response(transport, &value)
    }
}

fn request_body(transport: &Transport, model: &str, request: &ChatRequest, stream: bool) -> Value {
    let mut messages: Vec<Value> = request.messages.iter().map(message).collect();
    let mut stop = request.stop.clone();
    let forced = matches!(request.tool_choice, Some(ToolChoice::Required | ToolChoice::Named(_)));
    if transport.config.prefill_tool_calls && forced && !request.tools.is_empty() {
        messages.push(json!({"role": "assistant", "content": TOOL_CALL_OPEN}));
        stop.push(TOOL_CALL_CLOSE.into());
    }
    let mut body = json!({"model": model, "messages": messages});
    let fields = body.as_object_mut().expect("object");
    if let Some(max) = request.max_tokens {
        fields.insert("max_tokens".into(), max.into());
    }
    if let Some(t) = request.temperature {
        fields.insert("temperature".into(), json!(t));
    }
    if !stop.is_empty() {
        fields.insert("stop".into(), json!(stop));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": serde_json::from_str::<Value>(&t.parameters).unwrap_or(json!({})),
                }})
            })
            .collect();
        fields.insert("tools".into(), tools.into());
    }
    if let Some(choice) = &request.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(name) => json!({"type": "function", "function": {"name": name}}),
        };
        fields.insert("tool_choice".into(), choice);
    }
    if let Some(schema) = &request.response_schema {
        let schema: Value = serde_json::from_str(schema).unwrap_or(json!({}));
        fields.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
        );
    }
    if stream {
        fields.insert("stream".into(), true.into());
        fields.insert("stream_options".into(), json!({"include_usage": true}));
    }
    body
}

fn message(m: &super::Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut value = json!({"role": role, "content": m.content});
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        value["tool_calls"] = calls.into();
    }
    if let Some(id) = &m.tool_call_id {
        value["tool_call_id"] = id.clone().into();
    }
    value
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

fn usage(value: Option<&Value>) -> Usage {
    let field = |name: &str| {
        value.and_then(|u| u.get(name)).and_then(Value::as_u64).map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Usage { input_tokens: field("prompt_tokens"), output_tokens: field("completion_tokens") }
}

/// Checks that tool-call arguments are a JSON object (`{}` when empty).
fn arguments(transport: &Transport, name: &str, text: &str) -> Result<String, ModelError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    match serde_json::from_str::<Value>(text) {
        Ok(value) if value.is_object() => Ok(value.to_string()),
        Ok(_) => Err(transport.malformed(format!("the arguments of tool call `{name}` are not a JSON object"))),
        Err(e) => Err(transport.malformed(format!("the arguments of tool call `{name}` are not JSON: {e}"))),
    }
}

fn parse_response(transport: &Transport, value: &Value) -> Result<ChatResponse, ModelError> {
    let choice = value
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| transport.malformed("no `choices[0]` in the answer"))?;
    let message = choice.get("message").ok_or_else(|| transport.malformed("no `message` in `choices[0]`"))?;
    let text = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(transport.malformed("`message.content` is not a string")),
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls.as_array().ok_or_else(|| transport.malformed("`tool_calls` is not an array"))?;
        for (i, call) in calls.iter().enumerate() {
            let function = call.get("function").ok_or_else(|| transport.malformed("a tool call has no `function`"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| transport.malformed("a tool call has no function name"))?;
            let args = function.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            let id = call.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{i}"), str::to_owned);
            tool_calls.push(ToolCall { id, name: name.to_owned(), arguments: arguments(transport, name, args)? });
        }
    }
    Ok(ChatResponse {
        text,
        tool_calls,
        finish_reason: finish_reason(choice.get("finish_reason").and_then(Value::as_str)),
        usage: usage(value.get("usage")),
        model: value.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

async fn read_stream(
    transport: &Transport,
    response: reqwest::Response,
    progress: &Progress<'_>,
) -> Result<ChatResponse, ModelError> {
    let mut events = std::pin::pin!(transport.events(response));
    let mut text = String::new();
    let mut calls: BTreeMap<u64, PartialCall> = BTreeMap::new();
    let mut finish = None;
    let mut usage_seen = Usage { input_tokens: 0, output_tokens: 0 };
    let mut model = String::new();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| transport.event_error(e))?;
        let data = event.data.trim();
        if data == "[DONE]" {
            let mut tool_calls = Vec::with_capacity(calls.len());
            for (i, call) in calls.into_values().enumerate() {
                let id = if call.id.is_empty() { format!("call_{i}") } else { call.id };
                let arguments = arguments(transport, &call.name, &call.arguments)?;
                tool_calls.push(ToolCall { id, name: call.name, arguments });
            }
            progress.emit(ProgressKind::Finished { usage: usage_seen });
            return Ok(ChatResponse {
                text,
                tool_calls,
                finish_reason: finish_reason(finish.as_deref()),
                usage: usage_seen,
                model,
            });
        }
        if data.is_empty() {
            continue;
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| transport.malformed(format!("a stream event is not JSON: {e}")))?;
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("unknown error");
            return Err(transport.reported(message));
        }
        if let Some(m) = chunk.get("model").and_then(Value::as_str) {
            model = m.to_owned();
        }
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            usage_seen = usage(chunk.get("usage"));
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else { continue };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            finish = Some(reason.to_owned());
        }
        let Some(delta) = choice.get("delta") else { continue };
        if let Some(piece) = delta.get("content").and_then(Value::as_str) {
            text.push_str(piece);
            progress.emit(ProgressKind::Text(piece));
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let partial = calls.entry(index).or_default();
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                partial.id = id.to_owned();
            }
            if let Some(function) = call.get("function") {
                if let Some(name) = function.get("name").and_then(Value::as_str) {
                    partial.name.push_str(name);
                    progress.emit(ProgressKind::ToolCall { name });
                }
                if let Some(args) = function.get("arguments").and_then(Value::as_str) {
                    partial.arguments.push_str(args);
                }
            }
        }
    }
    Err(transport.truncated())
}
