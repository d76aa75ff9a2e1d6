//! Anthropic messages (`POST {base_url}/messages`).
//!
//! A response schema is asked for the way the messages API supports everywhere: a single
//! forced tool whose input schema is the response schema; its input is the answer.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::openai::{TOOL_CALL_CLOSE, TOOL_CALL_OPEN};
use super::progress::{Progress, ProgressKind};
use super::transport::Transport;
use super::{ChatRequest, ChatResponse, FinishReason, ModelError, Role, ToolCall, ToolChoice, Usage};

/// The forced tool that carries a schema-constrained answer.
const RESPOND_TOOL: &str = "respond";
/// The messages API requires `max_tokens`; used when neither the tool nor the grant set one.
const DEFAULT_MAX_TOKENS: u32 = 1024;

/// How the schema-constrained answer is carried.
#[derive(Clone, Copy)]
enum Respond {
    No,
    /// The input object is the answer.
    Object,
    /// The schema is not an object: the answer is the input's `value`.
    Wrapped,
}

pub(crate) async fn chat(
    transport: &Transport,
    model: &str,
    request: &ChatRequest,
    call_id: &str,
    progress: &Progress<'_>,
    stream: bool,
) -> Result<ChatResponse, ModelError> {
    let (body, respond) = request_body(transport, model, request, stream);
    let headers = [("anthropic-version", transport.config.anthropic_version.clone())];
    let response = transport.post("messages", &headers, &body, call_id, progress).await?;
    let mut answer = if stream {
        read_stream(transport, response, progress).await?
    } else {
        let value = transport.json_body(response).await?;
        parse_response(transport, &value)?
    };
    if !matches!(respond, Respond::No) {
        answer = unwrap_respond(transport, answer, respond)?;
    }
    Ok(answer)
}

fn request_body(transport: &Transport, model: &str, request: &ChatRequest, stream: bool) -> (Value, Respond) {
    let mut system = Vec::new();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, blocks) = match m.role {
            Role::System => {
                system.push(m.content.clone());
                continue;
            }
            Role::User => ("user", text_block(&m.content)),
            Role::Assistant => {
                let mut blocks = text_block(&m.content);
                for call in &m.tool_calls {
                    let input: Value = serde_json::from_str(&call.arguments).unwrap_or(json!({}));
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
                }
                ("assistant", blocks)
            }
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content,
                })],
            ),
        };
        // The API wants alternating roles: merge neighbours (e.g. several tool results).
        match messages.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => messages.push((role.to_owned(), blocks)),
        }
    }

    let mut tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "input_schema": serde_json::from_str::<Value>(&t.parameters).unwrap_or(json!({"type": "object"})),
            })
        })
        .collect();
    let mut tool_choice = request.tool_choice.as_ref().map(|choice| match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Named(name) => json!({"type": "tool", "name": name}),
    });
    let mut respond = Respond::No;
    if let (Some(schema), true) = (&request.response_schema, request.tools.is_empty()) {
        let schema: Value = serde_json::from_str(schema).unwrap_or(json!({}));
        let (input_schema, how) = if schema.get("type").and_then(Value::as_str) == Some("object") {
            (schema, Respond::Object)
        } else {
            (json!({"type": "object", "properties": {"value": schema}, "required": ["value"]}), Respond::Wrapped)
        };
        tools.push(json!({
            "name": RESPOND_TOOL,
            "description": "Give your answer. Its input is the answer.",
            "input_schema": input_schema,
        }));
        tool_choice = Some(json!({"type": "tool", "name": RESPOND_TOOL}));
        respond = how;
    }

    let mut stop = request.stop.clone();
    let forced = tool_choice.as_ref().is_some_and(|c| c["type"] == "any" || c["type"] == "tool");
    if transport.config.prefill_tool_calls && forced {
        match messages.last_mut() {
            Some((role, blocks)) if role == "assistant" => blocks.push(json!({"type": "text", "text": TOOL_CALL_OPEN})),
            _ => messages.push(("assistant".into(), text_block(TOOL_CALL_OPEN))),
        }
        stop.push(TOOL_CALL_CLOSE.into());
    }

    let messages: Vec<Value> =
        messages.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("max_tokens".into(), request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into());
    body.insert("messages".into(), messages.into());
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if !stop.is_empty() {
        body.insert("stop_sequences".into(), json!(stop));
    }
    if !tools.is_empty() {
        body.insert("tools".into(), tools.into());
    }
    if let Some(choice) = tool_choice {
        body.insert("tool_choice".into(), choice);
    }
    if stream {
        body.insert("stream".into(), true.into());
    }
    (Value::Object(body), respond)
}

fn text_block(text: &str) -> Vec<Value> {
    // The API rejects empty text blocks.
    if text.is_empty() { Vec::new() } else { vec![json!({"type": "text", "text": text})] }
}

/// Turns the forced `respond` call back into answer text.
fn unwrap_respond(transport: &Transport, mut answer: ChatResponse, how: Respond) -> Result<ChatResponse, ModelError> {
    let Some(position) = answer.tool_calls.iter().position(|c| c.name == RESPOND_TOOL) else {
        return Err(transport.malformed(format!(
            "the answer does not use the forced `{RESPOND_TOOL}` tool (stop reason {:?})",
            answer.finish_reason
        )));
    };
    let call = answer.tool_calls.remove(position);
    let input: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
    answer.text = match how {
        Respond::Wrapped => input.get("value").cloned().unwrap_or(Value::Null).to_string(),
        _ => input.to_string(),
    };
    answer.finish_reason = FinishReason::Stop;
    Ok(answer)
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("end_turn" | "stop_sequence" | "pause_turn") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// Input tokens count those read from or written to the prompt cache too.
fn input_tokens(usage: &Value) -> u64 {
    ["input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]
        .iter()
        .filter_map(|k| usage.get(*k).and_then(Value::as_u64))
        .sum()
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn parse_response(transport: &Transport, value: &Value) -> Result<ChatResponse, ModelError> {
    let content = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| transport.malformed("no `content` array in the answer"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => {
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| transport.malformed("a `tool_use` block has no name"))?;
                let input = block.get("input").cloned().unwrap_or(json!({}));
                if !input.is_object() {
                    return Err(transport.malformed(format!("the input of tool call `{name}` is not an object")));
                }
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                tool_calls.push(ToolCall { id, name: name.to_owned(), arguments: input.to_string() });
            }
            _ => {}
        }
    }
    let usage = value.get("usage").cloned().unwrap_or(Value::Null);
    Ok(ChatResponse {
        text,
        tool_calls,
        finish_reason: finish_reason(value.get("stop_reason").and_then(Value::as_str)),
        usage: Usage {
            input_tokens: clamp(input_tokens(&usage)),
            output_tokens: clamp(usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(0)),
        },
        model: value.get("model").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

enum Block {
    Text,
    Tool { id: String, name: String, json: String },
}

async fn read_stream(
    transport: &Transport,
    response: reqwest::Response,
    progress: &Progress<'_>,
) -> Result<ChatResponse, ModelError> {
    let mut events = std::pin::pin!(transport.events(response));
    let mut text = String::new();
    let mut blocks: BTreeMap<u64, Block> = BTreeMap::new();
    let mut stop_reason = None;
    let mut usage = Usage { input_tokens: 0, output_tokens: 0 };
    let mut model = String::new();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| transport.event_error(e))?;
        if event.data.trim().is_empty() {
            continue;
        }
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| transport.malformed(format!("a stream event is not JSON: {e}")))?;
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match data.get("type").and_then(Value::as_str).unwrap_or(event.event.as_str()) {
            "message_start" => {
                let message = &data["message"];
                model = message.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
                usage.input_tokens = clamp(input_tokens(&message["usage"]));
            }
            "content_block_start" => {
                let block = &data["content_block"];
                let started = match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let name = block.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                        progress.emit(ProgressKind::ToolCall { name: &name });
                        let id = block.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                        Block::Tool { id, name, json: String::new() }
                    }
                    _ => Block::Text,
                };
                blocks.insert(index, started);
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match (delta.get("type").and_then(Value::as_str), blocks.get_mut(&index)) {
                    (Some("text_delta"), _) => {
                        let piece = delta.get("text").and_then(Value::as_str).unwrap_or_default();
                        text.push_str(piece);
                        progress.emit(ProgressKind::Text(piece));
                    }
                    (Some("input_json_delta"), Some(Block::Tool { json, .. })) => {
                        json.push_str(delta.get("partial_json").and_then(Value::as_str).unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"].get("stop_reason").and_then(Value::as_str) {
                    stop_reason = Some(reason.to_owned());
                }
                if let Some(out) = data["usage"].get("output_tokens").and_then(Value::as_u64) {
                    usage.output_tokens = clamp(out);
                }
            }
            "message_stop" => {
                let mut tool_calls = Vec::new();
                for block in blocks.into_values() {
                    if let Block::Tool { id, name, json } = block {
                        let input: Value = if json.trim().is_empty() {
                            json!({})
                        } else {
                            serde_json::from_str(&json).map_err(|e| {
                                transport.malformed(format!("the input of tool call `{name}` is not JSON: {e}"))
                            })?
                        };
                        if !input.is_object() {
                            return Err(
                                transport.malformed(format!("the input of tool call `{name}` is not an object"))
                            );
                        }
                        tool_calls.push(ToolCall { id, name, arguments: input.to_string() });
                    }
                }
                progress.emit(ProgressKind::Finished { usage });
                return Ok(ChatResponse {
                    text,
                    tool_calls,
                    finish_reason: finish_reason(stop_reason.as_deref()),
                    usage,
                    model,
                });
            }
            "error" => {
                let message = data["error"].get("message").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(transport.reported(message));
            }
            _ => {}
        }
    }
    Err(transport.truncated())
}
