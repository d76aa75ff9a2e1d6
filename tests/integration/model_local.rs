//! The real local model (SmolLM2-135M through llama.cpp, installed on first use by scripts/setup) through
//! both endpoints: plain completions, schema-constrained answers, the JSON-Schema tool mode,
//! streaming progress, and the summarizer tool end to end.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use toolhost::model::{
    ChatRequest, FinishReason, LocalModel, LocalModelChoice, Message, ModelProvider, ModelRouter, ProgressKind, Role,
    ToolChoice, ToolDefinition,
};
use toolhost::{Host, HostConfig, ModelGrant, Policy, ToolGrants};

use crate::support::engine_config;

/// The fast model: these tests check plumbing, not reasoning.
fn local_model() -> &'static LocalModel {
    crate::support::local_model(LocalModelChoice::Small)
}

fn router() -> ModelRouter {
    ModelRouter::from_config(&local_model().models_config()).unwrap()
}

fn user(text: &str) -> Message {
    Message { role: Role::User, content: text.into(), tool_calls: Vec::new(), tool_call_id: None }
}

fn request(messages: Vec<Message>, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        messages,
        tools: Vec::new(),
        tool_choice: None,
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        stop: Vec::new(),
        response_schema: None,
    }
}

const ALIASES: [&str; 2] = ["local", "local-anthropic"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_completions_through_both_endpoints() {
    let router = router();
    for alias in ALIASES {
        let answer = router.chat(alias, &request(vec![user("What is the capital of France?")], 24), "t:1:0").await;
        let answer = answer.unwrap_or_else(|e| panic!("{alias}: {e:?}"));
        assert!(!answer.text.trim().is_empty(), "{alias}: empty answer");
        assert!(answer.tool_calls.is_empty());
        assert!(matches!(answer.finish_reason, FinishReason::Stop | FinishReason::Length), "{alias}");
        assert!(answer.usage.input_tokens > 5 && answer.usage.output_tokens > 0, "{alias}: {:?}", answer.usage);
        assert!(answer.usage.output_tokens <= 24, "{alias}: max_tokens holds: {:?}", answer.usage);
        assert_eq!(answer.model, "smollm2-135m");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_constrained_answers_parse_through_both_endpoints() {
    let router = router();
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    });
    for alias in ALIASES {
        let mut ask = request(vec![user("Name the capital city of France and its country.")], 60);
        ask.response_schema = Some(schema.to_string());
        let answer = router.chat(alias, &ask, "t:1:0").await.unwrap_or_else(|e| panic!("{alias}: {e:?}"));
        let value: Value =
            serde_json::from_str(&answer.text).unwrap_or_else(|e| panic!("{alias}: {e}: {}", answer.text));
        assert!(value["city"].is_string() && value["country"].is_string(), "{alias}: {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_tool_mode_yields_tool_calls() {
    let router = router();
    let weather = ToolDefinition {
        name: "weather".into(),
        description: "Current weather for a city.".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
            .to_string(),
    };
    for alias in ALIASES {
        let mut ask = request(vec![user("What is the weather in Paris right now?")], 60);
        ask.tools = vec![weather.clone()];
        ask.tool_choice = Some(ToolChoice::Required);
        let answer = router.chat(alias, &ask, "t:1:0").await.unwrap_or_else(|e| panic!("{alias}: {e:?}"));
        assert_eq!(answer.finish_reason, FinishReason::ToolCalls, "{alias}: {answer:?}");
        assert_eq!(answer.tool_calls.len(), 1, "{alias}");
        assert_eq!(answer.tool_calls[0].name, "weather");
        let arguments: Value = serde_json::from_str(&answer.tool_calls[0].arguments).unwrap();
        assert!(arguments["city"].is_string(), "{alias}: {arguments}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_report_their_text_as_it_arrives() {
    for alias in ALIASES {
        let pieces = Arc::new(Mutex::new(String::new()));
        let sink = pieces.clone();
        let router = router().with_progress(Arc::new(move |event| {
            if let ProgressKind::Text(piece) = event.kind {
                sink.lock().unwrap().push_str(piece);
            }
        }));
        let answer = router.chat(alias, &request(vec![user("Say hello.")], 16), "t:1:0").await.unwrap();
        assert!(!answer.text.is_empty());
        assert_eq!(*pieces.lock().unwrap(), answer.text, "{alias}: the streamed pieces make up the answer");
        assert!(answer.usage.output_tokens > 0, "{alias}: usage arrives at the end of the stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summarizer_tool_calls_the_local_model() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let summarizer = toolhost::guest_build::build(workspace, &["summarizer"]).unwrap().remove(0);
    let mut config = local_model().models_config();
    let target = config.aliases["local"].clone();
    config.aliases.insert("default".into(), target);
    let grant = ToolGrants {
        models: ModelGrant { max_tokens_per_call: Some(400), ..ModelGrant::aliases(["default"]) },
        ..ToolGrants::default()
    };
    let host = Host::new(HostConfig {
        engine: engine_config(),
        policy: Policy::deny_all().with_tool("summarizer", grant),
        models: Some(Arc::new(ModelRouter::from_config(&config).unwrap())),
        ..HostConfig::default()
    })
    .unwrap();
    let tool = host.load_tool(&summarizer).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let text = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was built by \
                Gustave Eiffel's company for the 1889 World's Fair and is now a global icon of France.";
    let out = session.call(&tool, &json!({"text": text, "max_words": 20})).await.unwrap();
    assert!(!out["summary"].as_str().unwrap().is_empty(), "{out}");
    assert!(out["key_points"].is_array(), "{out}");
    assert_eq!(out["model"], "smollm2-135m");
    assert!(out["output_tokens"].as_u64().unwrap() <= 400, "the grant caps the answer: {out}");

    // The answer is journaled: the step's record holds it.
    let steps = host.store().steps(session.id(), None, 0).await.unwrap();
    assert!(matches!(steps[0].journal[..], [toolhost::JournalEntry::Model { ref result, .. }] if result.is_ok()));
}
