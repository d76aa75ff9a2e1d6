//! The HTTP providers: OpenAI-compatible and Anthropic endpoints, and the alias router.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::progress::{Progress, ProgressListener};
use super::transport::{KeyHeader, Transport};
use super::{
    ChatRequest, ChatResponse, FinishReason, ModelConfigError, ModelError, ModelProvider, ModelsConfig, ProviderConfig,
    ProviderKind, ToolMode, anthropic, openai, structured,
};

/// One OpenAI-compatible or Anthropic endpoint.
#[derive(Debug)]
pub struct HttpProvider {
    transport: Transport,
}

impl HttpProvider {
    /// `name` is the provider's name in messages. Reads the API key from the environment
    /// variable the config names (and fails if it is unset).
    pub fn new(name: &str, config: &ProviderConfig) -> Result<Self, ModelConfigError> {
        let header = match config.kind {
            ProviderKind::Openai => KeyHeader::Bearer,
            ProviderKind::Anthropic => KeyHeader::XApiKey,
        };
        Ok(Self { transport: Transport::new(name, config, header)? })
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.transport.config
    }

    /// Sends `request` to `model`. With a `listener`, the answer streams and reports progress.
    pub async fn chat(
        &self,
        model: &str,
        request: &ChatRequest,
        call_id: &str,
        alias: &str,
        listener: Option<&ProgressListener>,
    ) -> Result<ChatResponse, ModelError> {
        let config = &self.transport.config;
        let progress = Progress { alias, call_id, listener };
        let stream = config.stream || progress.is_listening();
        let fold = config.tool_mode == ToolMode::JsonSchema && structured::needs_folding(request);
        let folded = fold.then(|| structured::fold_tools(request));
        let sent = folded.as_ref().unwrap_or(request);
        let mut response = match config.kind {
            ProviderKind::Openai => openai::chat(&self.transport, model, sent, call_id, &progress, stream).await?,
            ProviderKind::Anthropic => {
                anthropic::chat(&self.transport, model, sent, call_id, &progress, stream).await?
            }
        };
        if fold {
            let (text, calls) = structured::unfold_answer(&response.text, request)
                .map_err(|e| self.transport.malformed(format!("{e} (finish reason {:?})", response.finish_reason)))?;
            if !calls.is_empty() {
                response.finish_reason = FinishReason::ToolCalls;
            }
            response.text = text;
            response.tool_calls = calls;
        }
        // An answer cut off at `max-tokens` goes back as it is, with finish reason `length`:
        // the caller decides whether a partial answer is worth anything.
        if let Some(schema) = &request.response_schema
            && response.tool_calls.is_empty()
            && response.finish_reason != FinishReason::Length
        {
            structured::check_answer(&response.text, schema)
                .map_err(|e| self.transport.malformed(format!("{e} (finish reason {:?})", response.finish_reason)))?;
        }
        Ok(response)
    }
}

/// Maps tool-visible aliases to provider models. The provider a host normally uses.
#[derive(Clone, Default)]
pub struct ModelRouter {
    routes: BTreeMap<String, (Arc<HttpProvider>, String)>,
    listener: Option<ProgressListener>,
}

impl std::fmt::Debug for ModelRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: BTreeMap<_, _> = self.routes.iter().map(|(a, (p, m))| (a, (&p.transport.name, m))).collect();
        f.debug_struct("ModelRouter").field("routes", &routes).field("progress", &self.listener.is_some()).finish()
    }
}

impl ModelRouter {
    /// Builds every configured provider (reading their keys) and the alias table.
    pub fn from_config(config: &ModelsConfig) -> Result<Self, ModelConfigError> {
        config.validate()?;
        let mut providers = BTreeMap::new();
        for (name, provider) in &config.providers {
            providers.insert(name.clone(), Arc::new(HttpProvider::new(name, provider)?));
        }
        let routes = config
            .aliases
            .iter()
            .map(|(alias, target)| (alias.clone(), (providers[&target.provider].clone(), target.model.clone())))
            .collect();
        Ok(Self { routes, listener: None })
    }

    /// Reports the progress of every call to `listener`; answers then stream.
    pub fn with_progress(mut self, listener: ProgressListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The configured aliases, sorted.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}

#[async_trait]
impl ModelProvider for ModelRouter {
    async fn chat(&self, alias: &str, request: &ChatRequest, call_id: &str) -> Result<ChatResponse, ModelError> {
        let Some((provider, model)) = self.routes.get(alias) else {
            return Err(ModelError::InvalidRequest(format!(
                "model alias `{}` is not configured on this host",
                alias.escape_debug()
            )));
        };
        let result = provider.chat(model, request, call_id, alias, self.listener.as_ref()).await;
        if let Err(e) = &result {
            tracing::info!(alias, call_id, provider = %provider.transport.name, error = %e,
                "model call failed");
        }
        result
    }
}
