//! Model configuration: the providers the host talks to and the aliases tools see.
//!
//! ```toml
//! [providers.local]
//! kind = "openai"                       # or "anthropic"
//! base_url = "http://127.0.0.1:8080/v1"
//! api_key_env = "LOCAL_MODEL_KEY"       # optional: the key is read from this variable
//! timeout_secs = 120
//! tool_mode = "json-schema"             # or "native" (default)
//! retry = { max_retries = 2, initial_backoff_ms = 250, max_backoff_ms = 5000 }
//!
//! [aliases.default]
//! provider = "local"
//! model = "smollm2-135m"
//! ```
//!
//! The key itself never appears in configuration, policy, logs, errors, journal or audit
//! trail: only the name of the variable that holds it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// `POST {base_url}/chat/completions` (OpenAI, vLLM, llama.cpp, most gateways).
    Openai,
    /// `POST {base_url}/messages` (Anthropic, and llama.cpp's `/v1/messages`).
    Anthropic,
}

/// How tool definitions reach the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolMode {
    /// The provider's own tool calling.
    #[default]
    Native,
    /// For models that cannot emit native tool calls: the tools become one JSON Schema the
    /// answer must match (`{"tool": name, "arguments": {...}}` or `{"answer": ...}`), and the
    /// host turns the answer back into tool calls. Needs a provider that constrains output to
    /// a schema (OpenAI `response_format`; Anthropic: a forced tool).
    JsonSchema,
}

/// Bounded retries for 429, 5xx and connection failures. All attempts together are one
/// journaled call: the guest sees only the final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// Delay before the first retry; doubles each retry (with jitter), capped below.
    pub initial_backoff_ms: u64,
    /// Cap on one delay, including a provider's `Retry-After`.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 2, initial_backoff_ms: 250, max_backoff_ms: 5_000 }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self { max_retries: 0, ..Self::default() }
    }

    /// The delay before retry `retry` (0-based): exponential with up to 25% jitter, or the
    /// provider's `Retry-After` if it asked for one, both capped.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let cap = Duration::from_millis(self.max_backoff_ms);
        if let Some(after) = retry_after {
            return after.min(cap);
        }
        let base = self.initial_backoff_ms.saturating_mul(1u64 << retry.min(20));
        let jitter = base / 4 * u64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255;
        Duration::from_millis(base.saturating_add(jitter)).min(cap)
    }
}

/// One provider endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Everything before `/chat/completions` or `/messages`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the API key; none for keyless local servers.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Whole-request deadline (connect, wait, and read the full answer).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub tool_mode: ToolMode,
    /// Stream answers (SSE) even without a progress listener.
    #[serde(default)]
    pub stream: bool,
    /// Larger answers (body bytes, or streamed bytes) fail with a provider error.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// For servers with a Hermes-style chat template (e.g. the local model): when a tool
    /// call is required, prefill the assistant turn with `<tool_call>` and stop at
    /// `</tool_call>`, which makes small models emit the call.
    #[serde(default)]
    pub prefill_tool_calls: bool,
    /// `anthropic-version` header (Anthropic kind only).
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
}

fn default_timeout_secs() -> u64 {
    120
}

fn default_max_response_bytes() -> u64 {
    8 << 20
}

fn default_anthropic_version() -> String {
    "2023-06-01".into()
}

impl ProviderConfig {
    /// A provider of `kind` at `base_url` with every option at its default.
    pub fn new(kind: ProviderKind, base_url: impl Into<String>) -> Self {
        Self {
            kind,
            base_url: base_url.into(),
            api_key_env: None,
            timeout_secs: default_timeout_secs(),
            retry: RetryPolicy::default(),
            tool_mode: ToolMode::default(),
            stream: false,
            max_response_bytes: default_max_response_bytes(),
            prefill_tool_calls: false,
            anthropic_version: default_anthropic_version(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// What a tool-visible alias names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    /// A key of [`ModelsConfig::providers`].
    pub provider: String,
    /// The provider's model id.
    pub model: String,
}

/// Providers and aliases, usually read from a TOML file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    pub providers: BTreeMap<String, ProviderConfig>,
    pub aliases: BTreeMap<String, AliasConfig>,
}

/// Why a model configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    #[error("cannot read the model configuration {path}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    /// `source`: the TOML error, with the line and the key.
    #[error("the model configuration {origin} is not valid TOML for this schema")]
    Parse { origin: String, source: crate::source::Source },
    #[error("alias `{alias}` names provider `{provider}`, which is not configured")]
    UnknownProvider { alias: String, provider: String },
    #[error("provider `{provider}`: base_url `{url}` is not an http(s) URL")]
    BadUrl { provider: String, url: String },
    #[error("provider `{provider}`: the API key variable `{var}` is not set (or not UTF-8)")]
    MissingKey { provider: String, var: String },
    /// `source`: reqwest's error.
    #[error("cannot build the HTTP client")]
    Client(#[source] crate::source::Source),
}

impl ModelsConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ModelConfigError> {
        toml::from_str(text)
            .map_err(|e| ModelConfigError::Parse { origin: origin.into(), source: crate::source::Source::new(e) })
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelConfigError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Adds provider `name`.
    pub fn with_provider(mut self, name: impl Into<String>, provider: ProviderConfig) -> Self {
        self.providers.insert(name.into(), provider);
        self
    }

    /// Makes `alias` name `model` on `provider`.
    pub fn with_alias(
        mut self,
        alias: impl Into<String>,
        provider: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        self.aliases.insert(alias.into(), AliasConfig { provider: provider.into(), model: model.into() });
        self
    }

    /// Checks references and URLs (not keys: those are read when the router is built).
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        for (name, provider) in &self.providers {
            let url = provider.base_url.as_str();
            if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() {
                return Err(ModelConfigError::BadUrl { provider: name.clone(), url: url.to_owned() });
            }
        }
        for (alias, target) in &self.aliases {
            if !self.providers.contains_key(&target.provider) {
                return Err(ModelConfigError::UnknownProvider {
                    alias: alias.clone(),
                    provider: target.provider.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
            [providers.local]
            kind = "openai"
            base_url = "http://127.0.0.1:8080/v1"
            api_key_env = "LOCAL_MODEL_KEY"
            tool_mode = "json-schema"
            retry = { max_retries = 3 }

            [aliases.default]
            provider = "local"
            model = "smollm2-135m"
        "#;
        let config = ModelsConfig::from_toml(text, "test").unwrap();
        config.validate().unwrap();
        let local = &config.providers["local"];
        assert_eq!(local.kind, ProviderKind::Openai);
        assert_eq!(local.tool_mode, ToolMode::JsonSchema);
        assert_eq!(local.retry.max_retries, 3);
        assert_eq!(local.retry.initial_backoff_ms, 250);
        assert_eq!(local.timeout_secs, 120);
        assert_eq!(config.aliases["default"].model, "smollm2-135m");
    }

    #[test]
    fn rejects_unknown_fields_bad_urls_and_dangling_aliases() {
        let unknown = "[providers.a]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key = \"sk-1\"\n";
        assert!(matches!(ModelsConfig::from_toml(unknown, "t"), Err(ModelConfigError::Parse { .. })));
        let bad_url = ModelsConfig::default().with_provider("a", ProviderConfig::new(ProviderKind::Openai, "ftp://x"));
        assert!(matches!(bad_url.validate(), Err(ModelConfigError::BadUrl { .. })));
        let dangling = ModelsConfig::default().with_alias("m", "nowhere", "x");
        assert!(matches!(dangling.validate(), Err(ModelConfigError::UnknownProvider { .. })));
    }

    #[test]
    fn backoff_grows_is_capped_and_honors_retry_after() {
        let policy = RetryPolicy { max_retries: 5, initial_backoff_ms: 100, max_backoff_ms: 1_000 };
        let first = policy.delay(0, None);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125), "{first:?}");
        let third = policy.delay(2, None);
        assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(500), "{third:?}");
        assert_eq!(policy.delay(10, None), Duration::from_millis(1_000));
        assert_eq!(policy.delay(0, Some(Duration::from_secs(60))), Duration::from_millis(1_000));
        assert_eq!(policy.delay(0, Some(Duration::from_millis(10))), Duration::from_millis(10));
    }
}
