//! Language-model calls through the host. The host holds the provider keys, enforces the
//! tool's grant and budgets, and journals every response so a resumed session never pays for
//! the same call twice.
//!
//! ```ignore
//! let reply = model::complete("default", "Summarize: ...")?;
//!
//! // A typed answer: the host asks the model for JSON matching `Summary`'s schema.
//! #[derive(Deserialize, JsonSchema)]
//! struct Summary { summary: String, key_points: Vec<String> }
//! let request = ChatRequest::new(vec![Message::user("Summarize: ...")]).max_tokens(200);
//! let (summary, response) = model::structured::<Summary>("default", request)?;
//! ```

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::ToolError;
use crate::bindings::toolhost::tool::model as wit;
pub use crate::bindings::toolhost::tool::model::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelError, Role, ToolCall, ToolChoice, ToolDefinition, Usage,
};

impl From<ModelError> for ToolError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Denied(m) => ToolError::Denied(format!("model call denied: {m}")),
            ModelError::BudgetExceeded(m) => ToolError::Failed(format!("model budget exceeded: {m}")),
            ModelError::RateLimited(m) => ToolError::Failed(format!("model rate limited: {m}")),
            ModelError::Timeout(m) => ToolError::Failed(format!("model call timed out: {m}")),
            ModelError::ProviderError(p) => ToolError::Failed(match p.status {
                Some(status) => format!("model provider error (HTTP {status}): {}", p.message),
                None => format!("model provider error: {}", p.message),
            }),
            ModelError::InvalidRequest(m) => ToolError::Failed(format!("invalid model request: {m}")),
        }
    }
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }

    /// The result of the tool call `tool_call_id`, for the model to read.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self { tool_call_id: Some(tool_call_id.into()), ..Self::text(Role::Tool, content) }
    }

    fn text(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }
}

impl ChatRequest {
    /// A request with these messages and every option unset.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            tools: Vec::new(),
            tool_choice: None,
            max_tokens: None,
            temperature: None,
            stop: Vec::new(),
            response_schema: None,
        }
    }
}

impl ChatRequest {
    /// Caps the generated tokens (the host's grant may cap them lower).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Adds a stop sequence.
    pub fn stop(mut self, sequence: impl Into<String>) -> Self {
        self.stop.push(sequence.into());
        self
    }

    /// Offers a tool whose arguments are `A` (their JSON Schema is derived).
    pub fn tool<A: JsonSchema>(mut self, name: impl Into<String>, description: impl Into<String>) -> Self {
        self.tools.push(ToolDefinition {
            name: name.into(),
            description: description.into(),
            parameters: schema_of::<A>(),
        });
        self
    }

    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }

    /// Asks for a reply that is JSON matching `T`'s schema.
    pub fn response_schema_for<T: JsonSchema>(mut self) -> Self {
        self.response_schema = Some(schema_of::<T>());
        self
    }
}

fn schema_of<T: JsonSchema>() -> String {
    serde_json::to_string(&schemars::schema_for!(T)).expect("a JSON Schema always serializes")
}

impl ToolCall {
    /// The arguments decoded as `A`.
    pub fn arguments_as<A: DeserializeOwned>(&self) -> Result<A, ToolError> {
        serde_json::from_str(&self.arguments)
            .map_err(|e| ToolError::Failed(format!("the model's arguments for `{}` do not decode: {e}", self.name)))
    }
}

/// Sends `request` to the model behind `alias`.
pub fn chat(alias: &str, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
    wit::chat(alias, request)
}

/// One user prompt in, the reply text out.
pub fn complete(alias: &str, prompt: &str) -> Result<String, ModelError> {
    chat(alias, &ChatRequest::new(vec![Message::user(prompt)])).map(|r| r.text)
}

/// Sends `request` asking for JSON matching `T`'s schema, and decodes the reply. The host
/// checks the reply against the schema before it returns.
pub fn structured<T: DeserializeOwned + JsonSchema>(
    alias: &str,
    request: ChatRequest,
) -> Result<(T, ChatResponse), ToolError> {
    let response = chat(alias, &request.response_schema_for::<T>())?;
    let value = serde_json::from_str(&response.text)
        .map_err(|e| ToolError::Failed(format!("the model's reply does not decode: {e}")))?;
    Ok((value, response))
}
