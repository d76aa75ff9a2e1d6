//! Model requests and answers as toolhost keeps them: what the journal records, what
//! providers take and give, what the agent and the MCP layer pass around. They mirror the
//! WIT `model` interface and are converted from and to its bindings at the model capability.
//! Field order matches the WIT records, so their postcard encoding (positional) is the one
//! journals written before these types existed used.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call; `tool_call_id` names the call it answers.
    Tool,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider-assigned id, echoed back in the `tool` message that answers it.
    pub id: String,
    pub name: String,
    /// The arguments as a JSON object.
    pub arguments: String,
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Set on assistant messages that requested tool calls.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Set on `tool` messages.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: String,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call a tool.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Named(String),
}

/// One chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Vec<ToolDefinition>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// Upper bound on generated tokens; the grant may lower it.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub stop: Vec<String>,
    /// If set, the reply text is JSON conforming to this schema.
    #[serde(default)]
    pub response_schema: Option<String>,
}

/// Why the model stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Other,
}

/// Tokens a call used, as the provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// One chat answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The provider's model id that answered.
    pub model: String,
}

/// A provider's failure: its HTTP status, when there was a response, and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderFailure {
    pub status: Option<u16>,
    pub message: String,
}

/// Why a model call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelError {
    /// The alias is not granted to this tool.
    Denied(String),
    /// The session's token budget is spent.
    BudgetExceeded(String),
    /// The grant's calls-per-minute limit, or the provider's, was hit.
    RateLimited(String),
    Timeout(String),
    ProviderError(ProviderFailure),
    /// The request is malformed (bad JSON Schema, empty messages, ...).
    InvalidRequest(String),
}

/// One line, for logs, progress, the audit trail and the agent's errors.
impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "denied: {m}"),
            Self::BudgetExceeded(m) => write!(f, "budget exceeded: {m}"),
            Self::RateLimited(m) => write!(f, "rate limited: {m}"),
            Self::Timeout(m) => write!(f, "timed out: {m}"),
            Self::ProviderError(ProviderFailure { status: Some(status), message }) => {
                write!(f, "provider error (HTTP {status}): {message}")
            }
            Self::ProviderError(ProviderFailure { status: None, message }) => write!(f, "provider error: {message}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
        }
    }
}

impl std::error::Error for ModelError {}

impl ChatRequest {
    /// The replay fingerprint of a call of `model` with this request: sha256 of its canonical
    /// form (JSON with object keys sorted, members that are null or empty lists or objects
    /// left out), so a field a later 0.1.x adds with such a default leaves it unchanged.
    pub fn fingerprint(&self, model: &str) -> String {
        canonical_digest(&(model, self))
    }

    /// The fingerprint journals recorded before [`ChatRequest::fingerprint`]: sha256 of the
    /// postcard encoding of `(model, request)`, which these types reproduce byte for byte.
    pub fn legacy_fingerprint(&self, model: &str) -> String {
        // Postcard fails only on sequences of unknown length: none here.
        let bytes = postcard::to_stdvec(&(model, self)).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }

    /// Whether `recorded` (from a journal, old or new) fingerprints this call of `model`.
    pub fn has_fingerprint(&self, model: &str, recorded: &str) -> bool {
        recorded == self.fingerprint(model) || recorded == self.legacy_fingerprint(model)
    }
}

/// sha256 (hex) of `value`'s canonical JSON form (see [`ChatRequest::fingerprint`]).
pub(crate) fn canonical_digest<T: Serialize>(value: &T) -> String {
    // Serializing our own types to JSON fails only for maps with non-string keys: none here.
    let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Writes `value` canonically: sorted object keys, defaulted members left out.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !is_default(v)).collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(member, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What a member added later without a value serializes as.
fn is_default(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.is_empty(),
        serde_json::Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: "hello".into(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            }],
            tools: Vec::new(),
            tool_choice: Some(ToolChoice::Auto),
            max_tokens: Some(64),
            temperature: Some(0.5),
            stop: Vec::new(),
            response_schema: None,
        }
    }

    /// `ChatRequest` as a later 0.1.x might declare it: two fields added with defaults.
    #[derive(Serialize)]
    struct NewerChatRequest {
        messages: Vec<NewerMessage>,
        tools: Vec<ToolDefinition>,
        tool_choice: Option<ToolChoice>,
        max_tokens: Option<u32>,
        temperature: Option<f32>,
        stop: Vec<String>,
        response_schema: Option<String>,
        seed: Option<u64>,
        logit_bias: Vec<(String, f32)>,
    }

    #[derive(Serialize)]
    struct NewerMessage {
        role: Role,
        content: String,
        tool_calls: Vec<ToolCall>,
        tool_call_id: Option<String>,
        name: Option<String>,
    }

    fn newer(r: ChatRequest) -> NewerChatRequest {
        NewerChatRequest {
            messages: r
                .messages
                .into_iter()
                .map(|m| NewerMessage {
                    role: m.role,
                    content: m.content,
                    tool_calls: m.tool_calls,
                    tool_call_id: m.tool_call_id,
                    name: None,
                })
                .collect(),
            tools: r.tools,
            tool_choice: r.tool_choice,
            max_tokens: r.max_tokens,
            temperature: r.temperature,
            stop: r.stop,
            response_schema: r.response_schema,
            seed: None,
            logit_bias: Vec::new(),
        }
    }

    #[test]
    fn a_request_with_new_defaulted_fields_keeps_its_fingerprint() {
        let fingerprint = request().fingerprint("default");
        assert_eq!(canonical_digest(&("default", newer(request()))), fingerprint);
        let mut seeded = newer(request());
        seeded.seed = Some(7);
        assert_ne!(canonical_digest(&("default", seeded)), fingerprint, "a set new field is a different request");
    }

    #[test]
    fn the_fingerprint_tells_requests_and_models_apart_and_accepts_the_legacy_one() {
        let r = request();
        let mut other = request();
        other.messages[0].content = "hello!".into();
        assert_ne!(r.fingerprint("default"), other.fingerprint("default"));
        assert_ne!(r.fingerprint("default"), r.fingerprint("other"));
        assert!(r.has_fingerprint("default", &r.legacy_fingerprint("default")));
        assert!(r.has_fingerprint("default", &r.fingerprint("default")));
        assert!(!r.has_fingerprint("default", &other.legacy_fingerprint("default")));
    }
}
