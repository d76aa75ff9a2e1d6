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
    async fn chat(&self, alias: &str, request: &ChatRequest) -> Result<ChatResponse, ModelError>;
}
