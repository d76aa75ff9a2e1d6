//! Builds the next model request from the goal, the tools and the run so far.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::action::{Action, FINAL_ANSWER};
use super::config::{AgentConfig, ToolCalling};
use super::record::{CallResult, Transcript};
use super::signature;
use super::waits;
use crate::model::{ChatRequest, Message, Role, ToolCall, ToolChoice, ToolDefinition};
use crate::tool::Tool;

/// Longest final answer a constrained turn may give.
const MAX_ANSWER_CHARS: u64 = 400;
/// Longest string a constrained turn may write into a tool's input, unless the tool's schema
/// or the turn's token limit sets a shorter one.
const MAX_INPUT_STRING_CHARS: u64 = 400;
/// Strings in one constrained reply may take this share of its token limit each (an ASCII
/// character is at least one token's worth), leaving room for the other fields and the JSON.
const STRING_SHARE_OF_TOKENS: u64 = 4;
/// No string bound is shorter than this, however few tokens a turn has.
const MIN_INPUT_STRING_CHARS: u64 = 16;
/// Most items a constrained turn may write into an array of a tool's input.
const MAX_INPUT_ARRAY_ITEMS: u64 = 8;

const NATIVE_SYSTEM: &str = "You are an agent that reaches a goal by calling tools. Call the tools you need, \
     one step at a time, and use their results. When the goal is reached, reply with the final answer as plain text \
     and call no tool.";

const CONSTRAINED_SYSTEM: &str = "You are an agent that reaches a goal by calling tools. Reply with one JSON \
     object: {\"tool\": NAME, \"input\": {...}}. When the goal is reached, use the tool final_answer with \
     {\"answer\": TEXT}.";

/// Which task of the plan the next turn works on: one per turn that called tools.
fn current_task(transcript: &Transcript) -> usize {
    transcript.turns.iter().filter(|t| matches!(t.action, Action::Calls(_))).count()
}

/// What the next turn may do.
enum Choice<'a> {
    /// Any tool, or the final answer.
    Any,
    /// This tool (a task names it).
    Tool(&'a str),
    /// Only the final answer: the plan is done.
    Answer,
}

fn choice(transcript: &Transcript) -> Choice<'_> {
    let tasks = &transcript.goal.tasks;
    if tasks.is_empty() {
        return Choice::Any;
    }
    match tasks.get(current_task(transcript)) {
        Some(task) => task.tool.as_deref().map_or(Choice::Any, Choice::Tool),
        None => Choice::Answer,
    }
}

/// The line that tells the model what to do now.
fn instruction(transcript: &Transcript) -> String {
    let tasks = &transcript.goal.tasks;
    let index = current_task(transcript);
    match tasks.get(index) {
        Some(task) => format!("Task {} of {}: {}", index + 1, tasks.len(), task.description),
        None if tasks.is_empty() => "Choose the next step.".into(),
        None => format!("All tasks are done. Give the final answer to the goal: {}", transcript.goal.text),
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (cut at {max} characters)", &text[..end])
}

fn result_text(result: &CallResult, max: usize) -> String {
    match result {
        CallResult::Output(text) => cut(text, max),
        CallResult::Error(error) => cut(&format!("error: {error}"), max),
    }
}

fn message(role: Role, content: String) -> Message {
    Message { role, content, tool_calls: Vec::new(), tool_call_id: None }
}

/// The request for the next turn; `max_tokens` is already bounded by the budget.
pub(crate) fn request(
    config: &AgentConfig,
    tools: &[Arc<Tool>],
    transcript: &Transcript,
    max_tokens: Option<u32>,
) -> ChatRequest {
    let mut request = match config.tool_calling {
        ToolCalling::Native => native(config, tools, transcript),
        ToolCalling::Constrained => constrained(config, tools, transcript, max_tokens),
    };
    request.max_tokens = max_tokens;
    request.temperature = config.temperature;
    request
}

fn native(config: &AgentConfig, tools: &[Arc<Tool>], transcript: &Transcript) -> ChatRequest {
    let system = config.system_prompt.clone().unwrap_or_else(|| NATIVE_SYSTEM.into());
    let mut goal = format!("Goal: {}", transcript.goal.text);
    if !transcript.goal.tasks.is_empty() {
        goal.push_str("\n\nPlan:");
        for (i, task) in transcript.goal.tasks.iter().enumerate() {
            goal.push_str(&format!("\n{}. {}", i + 1, task.description));
        }
    }
    let mut messages = vec![message(Role::System, system), message(Role::User, goal)];
    for turn in &transcript.turns {
        match &turn.action {
            Action::Calls(calls) => {
                let mut assistant = message(Role::Assistant, turn.response.text.clone());
                assistant.tool_calls = calls
                    .iter()
                    .map(|c| ToolCall { id: c.id.clone(), name: c.tool.clone(), arguments: c.arguments.clone() })
                    .collect();
                messages.push(assistant);
                for (call, result) in calls.iter().zip(&turn.results) {
                    let mut answer = message(Role::Tool, result_text(result, config.max_result_chars));
                    answer.tool_call_id = Some(call.id.clone());
                    messages.push(answer);
                }
            }
            Action::Invalid(reason) => {
                messages.push(message(Role::Assistant, turn.response.text.clone()));
                messages.push(message(Role::User, format!("That reply could not be used: {reason}")));
            }
            Action::Final(answer) => messages.push(message(Role::Assistant, answer.clone())),
        }
    }
    if !transcript.goal.tasks.is_empty() {
        messages.push(message(Role::User, instruction(transcript)));
    }
    let (definitions, tool_choice) = match choice(transcript) {
        Choice::Any => {
            (tools.iter().map(|t| definition(t)).chain(wait_definitions(config)).collect(), ToolChoice::Auto)
        }
        Choice::Tool(name) => {
            (tools.iter().filter(|t| t.name() == name).map(|t| definition(t)).collect(), ToolChoice::Named(name.into()))
        }
        Choice::Answer => (Vec::new(), ToolChoice::None),
    };
    ChatRequest {
        messages,
        tools: definitions,
        tool_choice: Some(tool_choice),
        max_tokens: None,
        temperature: None,
        stop: Vec::new(),
        response_schema: None,
    }
}

/// The run's own wait actions, when the agent offers them.
fn wait_definitions(config: &AgentConfig) -> Vec<ToolDefinition> {
    if !config.waits {
        return Vec::new();
    }
    waits::action_schemas(config.max_wait_seconds)
        .into_iter()
        .map(|(name, description, schema)| ToolDefinition {
            name: name.into(),
            description: description.into(),
            parameters: schema.to_string(),
        })
        .collect()
}

fn definition(tool: &Tool) -> ToolDefinition {
    let d = tool.descriptor();
    ToolDefinition {
        name: d.name.clone(),
        description: d.description.clone(),
        parameters: clean_schema(&d.input_schema).to_string(),
    }
}

/// A tool's input schema without the keys that only document it, so it can be embedded.
fn clean_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut map = map.clone();
            map.shift_remove("$schema");
            map.shift_remove("title");
            Value::Object(map)
        }
        other => other.clone(),
    }
}

/// One prompt with the goal, what earlier calls returned, and what to do now; small models
/// copy earlier replies when shown a long conversation, and do better with this.
fn constrained(
    config: &AgentConfig,
    tools: &[Arc<Tool>],
    transcript: &Transcript,
    max_tokens: Option<u32>,
) -> ChatRequest {
    let string_bound = max_tokens.map_or(MAX_INPUT_STRING_CHARS, |tokens| {
        (u64::from(tokens) / STRING_SHARE_OF_TOKENS).clamp(MIN_INPUT_STRING_CHARS, MAX_INPUT_STRING_CHARS)
    });
    let allowed: Vec<&Arc<Tool>> = match choice(transcript) {
        Choice::Any => tools.iter().collect(),
        Choice::Tool(name) => tools.iter().filter(|t| t.name() == name).collect(),
        Choice::Answer => Vec::new(),
    };
    let mut system = config.system_prompt.clone().unwrap_or_else(|| CONSTRAINED_SYSTEM.into());
    system.push_str("\n\nTools:");
    for tool in &allowed {
        system.push_str(&format!("\n- {}: {}\n  input:", tool.name(), tool.descriptor().description));
        for line in signature::describe_input(&tool.descriptor().input_schema, "    ") {
            system.push('\n');
            system.push_str(&line);
        }
    }
    let waits_now = config.waits && matches!(choice(transcript), Choice::Any);
    if waits_now {
        for (name, description, _) in waits::action_schemas(config.max_wait_seconds) {
            system.push_str(&format!("\n- {name}: {description}"));
        }
    }
    system.push_str(&format!("\n- {FINAL_ANSWER}: ends the run with the answer to the goal."));

    let mut prompt = format!("Goal: {}", transcript.goal.text);
    let mut results = String::new();
    for turn in &transcript.turns {
        match &turn.action {
            Action::Calls(calls) => {
                for (call, result) in calls.iter().zip(&turn.results) {
                    results.push_str(&format!("\n- {}: {}", call.tool, result_text(result, config.max_result_chars)));
                }
            }
            Action::Invalid(reason) => results.push_str(&format!("\n- (a reply was rejected: {reason})")),
            Action::Final(_) => {}
        }
    }
    if !results.is_empty() {
        prompt.push_str("\n\nResults so far:");
        prompt.push_str(&results);
    }
    prompt.push_str("\n\n");
    prompt.push_str(&instruction(transcript));

    let mut defs: [(&str, Map<String, Value>); 2] = [("$defs", Map::new()), ("definitions", Map::new())];
    let mut options: Vec<Value> = allowed
        .iter()
        .map(|tool| {
            let mut input = clean_schema(&tool.descriptor().input_schema);
            bound_input(&mut input, string_bound);
            // Definitions must sit at the root for `$ref`s to resolve once embedded.
            for (key, defs) in &mut defs {
                if let Some(Value::Object(found)) = input.as_object_mut().and_then(|m| m.shift_remove(*key)) {
                    defs.extend(found);
                }
            }
            option(tool.name(), input)
        })
        .collect();
    if waits_now {
        options.extend(
            waits::action_schemas(config.max_wait_seconds).into_iter().map(|(name, _, schema)| option(name, schema)),
        );
    }
    let answers_now = matches!(choice(transcript), Choice::Any | Choice::Answer);
    if answers_now {
        options.push(option(
            FINAL_ANSWER,
            // Bounded, so a grammar-constrained model that keeps talking still closes its JSON
            // within the turn's token budget instead of being cut off mid-string.
            json!({
                "type": "object",
                "properties": {"answer": {"type": "string", "maxLength": MAX_ANSWER_CHARS}},
                "required": ["answer"]
            }),
        ));
    }
    let mut schema = if options.len() == 1 { options.remove(0) } else { json!({"oneOf": options}) };
    for (key, defs) in defs {
        if !defs.is_empty() {
            schema[key] = Value::Object(defs);
        }
    }
    ChatRequest {
        messages: vec![message(Role::System, system), message(Role::User, prompt)],
        tools: Vec::new(),
        tool_choice: None,
        max_tokens: None,
        temperature: None,
        stop: Vec::new(),
        response_schema: Some(schema.to_string()),
    }
}

/// Gives every free-form string in `schema` a `maxLength` of at most `max_chars`, and every
/// array a `maxItems` of at most [`MAX_INPUT_ARRAY_ITEMS`]. A small model under a grammar can
/// repeat itself until the turn's tokens run out, and a reply cut off mid-string is no reply
/// at all; bounded, it closes its JSON and the tool judges the input. Only the grammar sees
/// the bounds: the host validates the call against the tool's own schema.
fn bound_input(schema: &mut Value, max_chars: u64) {
    match schema {
        Value::Object(node) => {
            let free = !node.contains_key("const") && !node.contains_key("enum");
            if free && has_type(node, "string") {
                tighten(node, ("minLength", "maxLength"), max_chars);
            }
            if has_type(node, "array") {
                tighten(node, ("minItems", "maxItems"), MAX_INPUT_ARRAY_ITEMS);
            }
            node.values_mut().for_each(|child| bound_input(child, max_chars));
        }
        Value::Array(items) => items.iter_mut().for_each(|child| bound_input(child, max_chars)),
        _ => {}
    }
}

fn has_type(node: &Map<String, Value>, name: &str) -> bool {
    match node.get("type") {
        Some(Value::String(t)) => t == name,
        Some(Value::Array(types)) => types.iter().any(|t| t == name),
        _ => false,
    }
}

/// Sets the upper bound `keys.1` to `max`, keeping the node's own bound where it is tighter
/// and never going below its lower bound `keys.0` (which would leave nothing valid).
fn tighten(node: &mut Map<String, Value>, (min_key, max_key): (&str, &str), max: u64) {
    let own = |key: &str| node.get(key).and_then(Value::as_u64);
    let bound = own(max_key).map_or(max, |own| own.min(max)).max(own(min_key).unwrap_or(0));
    node.insert(max_key.into(), bound.into());
}

fn option(name: &str, input: Value) -> Value {
    json!({
        "type": "object",
        "properties": {"tool": {"const": name}, "input": input},
        "required": ["tool", "input"],
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::bound_input;

    #[test]
    fn free_strings_and_arrays_are_bounded_within_their_own_limits() {
        let mut schema = json!({
            "type": "object",
            "properties": {
                "free": {"type": "string"},
                "short": {"type": "string", "maxLength": 10},
                "long": {"type": ["string", "null"], "minLength": 60},
                "op": {"type": "string", "const": "add"},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 12},
                "count": {"type": "integer"}
            },
            "$defs": {"Nested": {"type": "string"}}
        });
        bound_input(&mut schema, 50);
        let p = &schema["properties"];
        assert_eq!(p["free"]["maxLength"], 50);
        assert_eq!(p["short"]["maxLength"], 10, "a tighter bound of the tool's own stays");
        assert_eq!(p["long"]["maxLength"], 60, "never below the lower bound");
        assert!(p["op"].get("maxLength").is_none() && p["kind"].get("maxLength").is_none());
        assert_eq!(p["tags"]["maxItems"], 12);
        assert_eq!(p["tags"]["items"]["maxLength"], 50);
        assert!(p["count"].get("maxLength").is_none());
        assert_eq!(schema["$defs"]["Nested"]["maxLength"], 50);
    }
}
