//! Language-model calls through the host. The host holds the provider keys, enforces the
//! tool's grant and budgets, and journals every response so a resumed session never pays for
//! the same call twice.
//!
//! ```ignore
//! let reply = model::complete("default", "Summarize: ...")?;
//! ```

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

/// Sends `request` to the model behind `alias`.
pub fn chat(alias: &str, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
    wit::chat(alias, request)
}

/// One user prompt in, the reply text out.
pub fn complete(alias: &str, prompt: &str) -> Result<String, ModelError> {
    chat(alias, &ChatRequest::new(vec![Message::user(prompt)])).map(|r| r.text)
}
