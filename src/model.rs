//! Model providers: what answers a tool's granted `model.chat` calls. The host holds them
//! (and their keys); tools only name an alias.

use async_trait::async_trait;

pub use crate::bindings::model::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelError, ProviderFailure, Role, ToolCall, ToolChoice,
    ToolDefinition, Usage,
};

/// Answers chat requests for model aliases.
#[async_trait]
pub trait ModelProvider: Send + Sync + 'static {
    /// Sends `request` to the model behind `alias`.
    ///
    /// `call_id` names this call stably across crashes (session, step, call within the step).
    /// The host persists each response before the step goes on, so a response it received is
    /// never asked for again; but a crash between the provider answering and that write can
    /// send the same call again after resume. A provider that supports idempotency keys
    /// should pass `call_id` as one, which makes the call exactly-once end to end.
    async fn chat(&self, alias: &str, request: &ChatRequest, call_id: &str) -> Result<ChatResponse, ModelError>;
}
