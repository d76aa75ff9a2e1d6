//! Between the WIT `model` bindings and toolhost's own model types: requests come in from
//! the guest, answers and errors go back to it. Everything past this boundary (providers,
//! the journal, the agent) uses the [`crate::contract`] types.

use crate::bindings::model as wit;
use crate::contract::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelError, Role, ToolCall, ToolChoice, ToolDefinition,
};

fn role(role: wit::Role) -> Role {
    match role {
        wit::Role::System => Role::System,
        wit::Role::User => Role::User,
        wit::Role::Assistant => Role::Assistant,
        wit::Role::Tool => Role::Tool,
    }
}

fn tool_call(call: wit::ToolCall) -> ToolCall {
    ToolCall { id: call.id, name: call.name, arguments: call.arguments }
}

fn message(m: wit::Message) -> Message {
    Message {
        role: role(m.role),
        content: m.content,
        tool_calls: m.tool_calls.into_iter().map(tool_call).collect(),
        tool_call_id: m.tool_call_id,
    }
}

fn tool_choice(choice: wit::ToolChoice) -> ToolChoice {
    match choice {
        wit::ToolChoice::Auto => ToolChoice::Auto,
        wit::ToolChoice::None => ToolChoice::None,
        wit::ToolChoice::Required => ToolChoice::Required,
        wit::ToolChoice::Named(name) => ToolChoice::Named(name),
    }
}

/// The guest's request as ours.
pub(super) fn request(r: wit::ChatRequest) -> ChatRequest {
    ChatRequest {
        messages: r.messages.into_iter().map(message).collect(),
        tools: r
            .tools
            .into_iter()
            .map(|t| ToolDefinition { name: t.name, description: t.description, parameters: t.parameters })
            .collect(),
        tool_choice: r.tool_choice.map(tool_choice),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        stop: r.stop,
        response_schema: r.response_schema,
    }
}

fn finish_reason(reason: FinishReason) -> wit::FinishReason {
    match reason {
        FinishReason::Stop => wit::FinishReason::Stop,
        FinishReason::Length => wit::FinishReason::Length,
        FinishReason::ToolCalls => wit::FinishReason::ToolCalls,
        FinishReason::ContentFilter => wit::FinishReason::ContentFilter,
        FinishReason::Other => wit::FinishReason::Other,
    }
}

/// Our answer as the guest's.
pub(super) fn response(r: ChatResponse) -> wit::ChatResponse {
    wit::ChatResponse {
        text: r.text,
        tool_calls: r
            .tool_calls
            .into_iter()
            .map(|c| wit::ToolCall { id: c.id, name: c.name, arguments: c.arguments })
            .collect(),
        finish_reason: finish_reason(r.finish_reason),
        usage: wit::Usage { input_tokens: r.usage.input_tokens, output_tokens: r.usage.output_tokens },
        model: r.model,
    }
}

/// Our error as the guest's.
pub(super) fn error(e: ModelError) -> wit::ModelError {
    match e {
        ModelError::Denied(m) => wit::ModelError::Denied(m),
        ModelError::BudgetExceeded(m) => wit::ModelError::BudgetExceeded(m),
        ModelError::RateLimited(m) => wit::ModelError::RateLimited(m),
        ModelError::Timeout(m) => wit::ModelError::Timeout(m),
        ModelError::ProviderError(f) => {
            wit::ModelError::ProviderError(wit::ProviderFailure { status: f.status, message: f.message })
        }
        ModelError::InvalidRequest(m) => wit::ModelError::InvalidRequest(m),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn the_legacy_fingerprint_is_the_one_recorded_from_the_bindings() {
        let message = |content: &str| wit::Message {
            role: wit::Role::Tool,
            content: content.into(),
            tool_calls: vec![wit::ToolCall { id: "1".into(), name: "t".into(), arguments: "{}".into() }],
            tool_call_id: Some("1".into()),
        };
        let wit_request = wit::ChatRequest {
            messages: vec![message("a"), message("b")],
            tools: vec![wit::ToolDefinition { name: "t".into(), description: "d".into(), parameters: "{}".into() }],
            tool_choice: Some(wit::ToolChoice::Named("t".into())),
            max_tokens: Some(9),
            temperature: Some(0.25),
            stop: vec!["x".into()],
            response_schema: Some("{}".into()),
        };
        // What journals before the contract types recorded: postcard of the bindings' types.
        let recorded = hex::encode(Sha256::digest(postcard::to_stdvec(&("default", &wit_request)).unwrap()));
        assert_eq!(request(wit_request).legacy_fingerprint("default"), recorded);
    }
}
