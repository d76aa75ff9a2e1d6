//! Model providers: what answers a tool's granted `model.chat` calls. The host holds them
//! (and their keys); tools only name an alias.
//!
//! [`ModelRouter`] is the provider a host normally uses: built from a [`ModelsConfig`], it maps
//! each alias to an OpenAI-compatible or Anthropic endpoint ([`HttpProvider`]), with
//! deadlines, bounded retries, size limits and optional streaming progress. [`LocalModel`]
//! starts the offline local model for development, tests and examples.

#[cfg(feature = "models")]
mod anthropic;
#[cfg(feature = "models")]
mod config;
#[cfg(feature = "models")]
mod http;
#[cfg(feature = "models")]
mod local;
#[cfg(feature = "models")]
mod openai;
#[cfg_attr(not(feature = "models"), allow(dead_code))]
mod progress;
#[cfg_attr(not(feature = "models"), allow(dead_code))]
mod structured;
#[cfg(feature = "models")]
mod transport;

use async_trait::async_trait;

pub use crate::contract::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelError, ProviderFailure, Role, ToolCall, ToolChoice,
    ToolDefinition, Usage,
};
#[cfg(feature = "models")]
pub use config::{AliasConfig, ModelConfigError, ModelsConfig, ProviderConfig, ProviderKind, RetryPolicy, ToolMode};
#[cfg(feature = "models")]
pub use http::{HttpProvider, ModelRouter};
#[cfg(feature = "models")]
pub use local::{LocalModel, LocalModelChoice, LocalModelError, LocalModelOptions, ensure_installed};
pub use progress::{ProgressEvent, ProgressKind, ProgressListener};
pub use structured::validate_request;

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
