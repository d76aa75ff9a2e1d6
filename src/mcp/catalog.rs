//! How loaded tools look to MCP clients: their `tools/list` entries (built from each tool's
//! `describe`) and how a call's outcome becomes a `CallToolResult`.

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, MetaObject as Meta, Tool as McpTool};
use serde_json::{Value, json};

use super::{HANDLE_ARGUMENT, HANDLE_META_KEY, McpError};
use crate::error::CallError;
use crate::source::chain;
use crate::tool::Tool;

/// One served tool: the host's tool and its MCP definition.
pub(crate) struct Entry {
    pub tool: Arc<Tool>,
    pub definition: McpTool,
    /// Whether the handle travels in the `session_handle` argument (false when the tool's
    /// own schema already has a property of that name; then only `_meta` carries it).
    pub handle_in_arguments: bool,
}

/// The served tools, by name, in the order they were given.
pub(crate) struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    pub fn new(tools: Vec<Arc<Tool>>) -> Result<Self, McpError> {
        let mut entries = Vec::with_capacity(tools.len());
        let mut by_name = HashMap::new();
        for tool in tools {
            let name = tool.name().to_owned();
            if let Some(&existing) = by_name.get(&name) {
                let first: &Entry = &entries[existing];
                return Err(McpError::DuplicateTool {
                    name,
                    first: first.tool.path().to_owned(),
                    second: tool.path().to_owned(),
                });
            }
            let entry = entry(tool)?;
            by_name.insert(name, entries.len());
            entries.push(entry);
        }
        Ok(Self { entries, by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    pub fn definitions(&self) -> Vec<McpTool> {
        self.entries.iter().map(|e| e.definition.clone()).collect()
    }
}

fn entry(tool: Arc<Tool>) -> Result<Entry, McpError> {
    let descriptor = tool.descriptor();
    let unsupported = |reason: String| McpError::UnsupportedTool { name: descriptor.name.clone(), reason };
    let Value::Object(mut input) = descriptor.input_schema.clone() else {
        return Err(unsupported("its input schema is not a JSON object".into()));
    };
    // MCP tool arguments are always objects, and clients require `type: "object"` at the root.
    match input.get("type") {
        None => {
            input.insert("type".into(), json!("object"));
        }
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => {
            return Err(unsupported(format!("its input is of type {other}; MCP tool arguments are objects")));
        }
    }
    let handle_in_arguments = !declares_property(&input, HANDLE_ARGUMENT);
    if handle_in_arguments {
        add_handle_property(&mut input);
    } else {
        tracing::warn!(tool = %descriptor.name, "the tool has its own `{HANDLE_ARGUMENT}` argument; \
            its session handle travels only in `_meta`");
    }

    let output = descriptor.output_schema.as_ref().and_then(|schema| match schema {
        Value::Object(o) if o.get("type").is_none_or(|t| t == "object") => {
            let mut o = o.clone();
            o.insert("type".into(), json!("object"));
            Some(Arc::new(o))
        }
        _ => {
            tracing::warn!(tool = %descriptor.name, "the output schema does not describe an object; \
                not advertised over MCP (results are still returned as text)");
            None
        }
    });

    let mut definition = McpTool::new(descriptor.name.clone(), descriptor.description.clone(), Arc::new(input));
    definition.output_schema = output;
    let mut meta = Meta::new();
    meta.0.insert("dev.toolhost/version".into(), json!(descriptor.version));
    meta.0.insert("dev.toolhost/kind".into(), json!(tool.kind()));
    definition.meta = Some(meta);
    Ok(Entry { tool, definition, handle_in_arguments })
}

fn declares_property(schema: &JsonObject, name: &str) -> bool {
    let own = schema.get("properties").and_then(Value::as_object).is_some_and(|p| p.contains_key(name));
    own || branches(schema)
        .any(|b| b.get("properties").and_then(Value::as_object).is_some_and(|p| p.contains_key(name)))
}

fn branches(schema: &JsonObject) -> impl Iterator<Item = &JsonObject> {
    ["oneOf", "anyOf", "allOf"]
        .into_iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_object)
}

/// Adds the optional `session_handle` argument at the root and to every top-level
/// alternative that closes its properties (`additionalProperties: false`), so a client that
/// validates arguments against the schema accepts it in every shape the tool takes.
fn add_handle_property(schema: &mut JsonObject) {
    let property = json!({
        "type": "string",
        "description": "The session to run this call in: the `session_handle` a previous result returned. \
            Omit it to use this connection's session. State persists per session, across server restarts.",
    });
    let insert = |object: &mut JsonObject| {
        let properties = object.entry("properties").or_insert_with(|| json!({}));
        if let Value::Object(p) = properties {
            p.insert(HANDLE_ARGUMENT.into(), property.clone());
        }
    };
    insert(schema);
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(alternatives)) = schema.get_mut(key) {
            for alternative in alternatives.iter_mut().filter_map(Value::as_object_mut) {
                if alternative.get("additionalProperties") == Some(&Value::Bool(false))
                    || alternative.contains_key("properties")
                {
                    insert(alternative);
                }
            }
        }
    }
}

fn handle_meta(handle: &str, step: Option<u64>) -> Meta {
    let mut meta = Meta::new();
    meta.0.insert(HANDLE_META_KEY.into(), json!(handle));
    if let Some(step) = step {
        meta.0.insert("dev.toolhost/step".into(), json!(step));
    }
    meta
}

/// The text block that tells the model which session it is in, so it can pass it back.
fn handle_block(handle: &str) -> ContentBlock {
    ContentBlock::text(format!("{HANDLE_ARGUMENT}: {handle}"))
}

/// A committed step's output.
pub(crate) fn success(entry: &Entry, handle: &str, step: u64, output: Value) -> CallToolResult {
    let text = output.to_string();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text), handle_block(handle)]);
    if entry.definition.output_schema.is_some() || output.is_object() {
        result.structured_content = Some(output);
    }
    result.meta = Some(handle_meta(handle, Some(step)));
    result
}

/// A call that did not produce output: the tool's own error, a denial, a trap, a limit.
/// Reported to the client as a tool error (`isError`), which the model can read and act on.
pub(crate) fn failure(handle: Option<&str>, error: &CallError) -> CallToolResult {
    error_result(handle, error.kind().code(), &chain(error).to_string())
}

/// A tool error the server raises itself (an unknown or malformed handle, a busy server).
pub(crate) fn error_result(handle: Option<&str>, kind: &str, message: &str) -> CallToolResult {
    let mut content = vec![ContentBlock::text(message.to_owned())];
    let mut meta = Meta::new();
    if let Some(handle) = handle {
        content.push(handle_block(handle));
        meta = handle_meta(handle, None);
    }
    meta.0.insert("dev.toolhost/error".into(), json!(kind));
    let mut result = CallToolResult::error(content);
    result.meta = Some(meta);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_tells_the_client_its_whole_chain() {
        let io = std::io::Error::other("the disk is full");
        let store = crate::store::StoreError::backend("sqlite", io);
        let error = CallError::Store { tool: "notes".into(), source: store };
        let result = serde_json::to_value(failure(Some("h1"), &error)).unwrap();
        assert_eq!(result["isError"], true, "{result}");
        assert_eq!(result["_meta"]["dev.toolhost/error"], "store", "{result}");
        let text = result["content"][0]["text"].as_str().unwrap();
        assert_eq!(text, "the store failed during a call to `notes`: store backend: sqlite: the disk is full");
    }

    #[test]
    fn handle_goes_into_closed_alternatives_and_the_root() {
        let mut schema = json!({
            "type": "object",
            "oneOf": [
                {"type": "object", "additionalProperties": false, "properties": {"op": {"const": "a"}}},
                {"type": "object", "additionalProperties": false, "properties": {"op": {"const": "b"}}},
            ]
        })
        .as_object()
        .unwrap()
        .clone();
        assert!(!declares_property(&schema, HANDLE_ARGUMENT));
        add_handle_property(&mut schema);
        assert!(schema["properties"][HANDLE_ARGUMENT].is_object());
        for alternative in schema["oneOf"].as_array().unwrap() {
            assert!(alternative["properties"][HANDLE_ARGUMENT].is_object());
        }
        assert!(declares_property(&schema, HANDLE_ARGUMENT));
        // The result validates an argument object carrying a handle.
        let validator = jsonschema::validator_for(&Value::Object(schema)).unwrap();
        assert!(validator.is_valid(&json!({"op": "a", "session_handle": "h"})));
        assert!(!validator.is_valid(&json!({"op": "a", "other": 1})));
    }
}
