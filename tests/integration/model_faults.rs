//! Model providers against a fault-injecting fake provider on 127.0.0.1: retries, bounded
//! failures, deadlines, malformed and oversized answers, truncated streams, budgets, rate
//! limits, grants, and the API key kept out of every output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use toolhost::model::{
    ChatRequest, Message, ModelError, ModelProvider, ModelRouter, ModelsConfig, ProgressKind, ProviderConfig,
    ProviderKind, RetryPolicy, Role,
};
use toolhost::{CallError, Host, HostConfig, ModelGrant, Policy, SqliteStore, ToolFailure};

use crate::support::{engine_config, grants, guests, tight_limits};

const KEY_VAR: &str = "TOOLHOST_TEST_FAKE_PROVIDER_KEY";
const KEY: &str = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK";
const MAX_RESPONSE: u64 = 256 << 10;

/// Requests seen per scenario.
#[derive(Default)]
struct Seen {
    hits: HashMap<String, usize>,
    bodies: Vec<Value>,
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Seen>>,
}

impl Fake {
    fn hits(&self, scenario: &str) -> usize {
        self.seen.lock().unwrap().hits.get(scenario).copied().unwrap_or(0)
    }
}

fn openai_answer(text: &str) -> Value {
    json!({
        "id": "fake", "object": "chat.completion", "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    })
}

fn sse(events: &[Value], done: bool) -> String {
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    body
}

fn delta(text: &str) -> Value {
    json!({"model": "fake-model", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

async fn handle(
    State(fake): State<Fake>,
    Path((scenario, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hit = {
        let mut seen = fake.seen.lock().unwrap();
        seen.bodies.push(request.clone());
        let hits = seen.hits.entry(scenario.clone()).or_default();
        *hits += 1;
        *hits
    };
    let json_response = |status: StatusCode, value: Value| {
        (status, [("content-type", "application/json")], value.to_string()).into_response()
    };
    let prompt =
        request["messages"].as_array().and_then(|m| m.last()).map(|m| m["content"].to_string()).unwrap_or_default();
    let echo = format!("echo {prompt} max_tokens={}", request["max_tokens"]);
    match scenario.as_str() {
        "ok" if rest == "messages" => json_response(
            StatusCode::OK,
            json!({
                "id": "msg", "type": "message", "role": "assistant", "model": "fake-claude",
                "content": [{"type": "text", "text": echo}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 5},
            }),
        ),
        "ok" => json_response(StatusCode::OK, openai_answer(&echo)),
        "tools" => json_response(
            StatusCode::OK,
            json!({
                "model": "fake-model",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_9", "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            }),
        ),
        "flaky" if hit == 1 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "slow down").into_response(),
        "flaky" => json_response(StatusCode::OK, openai_answer("after a retry")),
        "busy" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "slow down").into_response(),
        "broken" => {
            json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": {"message": "upstream exploded"}}))
        }
        "unauthorized" => {
            // A misbehaving server that echoes the credentials it was sent.
            let sent = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            json_response(StatusCode::UNAUTHORIZED, json!({"error": {"message": format!("bad credentials: {sent}")}}))
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            json_response(StatusCode::OK, openai_answer("too late"))
        }
        "malformed" => {
            (StatusCode::OK, [("content-type", "application/json")], "{\"choices\": [{\"mess").into_response()
        }
        "wrong-shape" => json_response(StatusCode::OK, json!({"choices": []})),
        "bad-arguments" => json_response(
            StatusCode::OK,
            json!({"choices": [{"finish_reason": "tool_calls", "message": {"content": null,
                "tool_calls": [{"id": "c", "function": {"name": "weather", "arguments": "{city: Oslo"}}]}}]}),
        ),
        "oversized" => {
            let text = "x".repeat(MAX_RESPONSE as usize * 2);
            json_response(StatusCode::OK, openai_answer(&text))
        }
        "stream" => {
            let usage =
                json!({"model": "fake-model", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}});
            let done = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            let body = sse(&[delta("Hel"), delta("lo"), delta("!"), done, usage], true);
            (StatusCode::OK, [("content-type", "text/event-stream")], body).into_response()
        }
        "truncated" => {
            let body = sse(&[delta("Hel"), delta("lo")], false);
            (StatusCode::OK, [("content-type", "text/event-stream")], body).into_response()
        }
        "cut" => {
            // The connection breaks mid-stream.
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from(sse(&[delta("Hel")], false))),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")),
            ];
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(futures_util::StreamExt::then(
                    futures_util::stream::iter(chunks),
                    |chunk| async {
                        // Let the first chunk reach the client before the connection breaks.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        chunk
                    },
                )))
                .unwrap()
        }
        _ => (StatusCode::NOT_FOUND, "no such scenario").into_response(),
    }
}

async fn start_fake() -> (SocketAddr, Fake) {
    let fake = Fake::default();
    let app = Router::new().route("/{scenario}/v1/{*rest}", axum::routing::post(handle)).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, fake)
}

fn set_key() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: set once, before any provider reads it; no other code touches this variable.
        unsafe { std::env::set_var(KEY_VAR, KEY) };
    });
}

const SCENARIOS: &[&str] = &[
    "ok",
    "tools",
    "flaky",
    "busy",
    "broken",
    "unauthorized",
    "hang",
    "malformed",
    "wrong-shape",
    "bad-arguments",
    "oversized",
    "stream",
    "truncated",
    "cut",
];

/// One alias per scenario (OpenAI kind), plus `ok-anthropic`.
fn config(addr: SocketAddr) -> ModelsConfig {
    set_key();
    let mut config = ModelsConfig::default();
    for scenario in SCENARIOS {
        let provider = ProviderConfig {
            api_key_env: Some(KEY_VAR.into()),
            timeout_secs: 1,
            retry: RetryPolicy { max_retries: 2, initial_backoff_ms: 10, max_backoff_ms: 50 },
            max_response_bytes: MAX_RESPONSE,
            stream: matches!(*scenario, "stream" | "truncated" | "cut"),
            ..ProviderConfig::new(ProviderKind::Openai, format!("http://{addr}/{scenario}/v1"))
        };
        config = config.with_provider(*scenario, provider).with_alias(*scenario, *scenario, "fake-model");
    }
    let anthropic = ProviderConfig {
        api_key_env: Some(KEY_VAR.into()),
        ..ProviderConfig::new(ProviderKind::Anthropic, format!("http://{addr}/ok/v1"))
    };
    config.with_provider("anthropic", anthropic).with_alias("ok-anthropic", "anthropic", "fake-claude")
}

fn ask(prompt: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: prompt.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }],
        tools: Vec::new(),
        tool_choice: None,
        max_tokens: None,
        temperature: None,
        stop: Vec::new(),
        response_schema: None,
    }
}

fn provider_status(error: &ModelError) -> Option<u16> {
    match error {
        ModelError::ProviderError(f) => f.status,
        _ => None,
    }
}

#[tokio::test]
async fn provider_errors_are_typed_and_precise() {
    let (addr, fake) = start_fake().await;
    let router = ModelRouter::from_config(&config(addr)).unwrap();
    let chat = |alias: &'static str| {
        let router = router.clone();
        async move { router.chat(alias, &ask("hi"), "s:1:0").await }
    };

    let ok = chat("ok").await.unwrap();
    assert!(ok.text.starts_with("echo \"hi\""), "{}", ok.text);
    assert_eq!((ok.usage.input_tokens, ok.usage.output_tokens, ok.model.as_str()), (10, 5, "fake-model"));

    let anthropic = chat("ok-anthropic").await.unwrap();
    assert_eq!((anthropic.usage.input_tokens, anthropic.usage.output_tokens), (10, 5), "cache reads count as input");
    assert_eq!(anthropic.model, "fake-claude");
    let sent = fake.seen.lock().unwrap().bodies.last().unwrap().clone();
    assert_eq!(sent["max_tokens"], 1024, "the messages API needs max_tokens");

    let tools = chat("tools").await.unwrap();
    assert_eq!(tools.tool_calls.len(), 1);
    assert_eq!(tools.tool_calls[0].name, "weather");
    assert_eq!(serde_json::from_str::<Value>(&tools.tool_calls[0].arguments).unwrap(), json!({"city": "Oslo"}));

    // 429 then success: retried inside one call.
    assert_eq!(chat("flaky").await.unwrap().text, "after a retry");
    assert_eq!(fake.hits("flaky"), 2);

    // 429 forever: bounded, then rate-limited.
    assert!(matches!(chat("busy").await, Err(ModelError::RateLimited(m)) if m.contains("429")));
    assert_eq!(fake.hits("busy"), 3, "one try and two retries");

    // 500 forever: bounded retries, then the provider's status and message.
    let broken = chat("broken").await.unwrap_err();
    assert_eq!(provider_status(&broken), Some(500));
    assert!(broken.to_string().contains("upstream exploded"), "{broken:?}");
    assert_eq!(fake.hits("broken"), 3);

    // 4xx is not retried.
    let unauthorized = chat("unauthorized").await.unwrap_err();
    assert_eq!(provider_status(&unauthorized), Some(401));
    assert_eq!(fake.hits("unauthorized"), 1);

    let started = std::time::Instant::now();
    assert!(matches!(chat("hang").await, Err(ModelError::Timeout(m)) if m.contains("1s")));
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline holds: {:?}", started.elapsed());

    for (alias, expected) in [
        ("malformed", "malformed response"),
        ("wrong-shape", "choices[0]"),
        ("bad-arguments", "not JSON"),
        ("oversized", "exceeds 262144 bytes"),
        ("truncated", "ended before it was complete"),
        ("cut", "broke off"),
    ] {
        let error = chat(alias).await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ModelError::ProviderError(_)), "{alias}: {error:?}");
        assert!(text.contains(expected), "{alias}: {text}");
    }

    // Nothing above broke the host side: the next call is answered.
    assert!(chat("ok").await.is_ok());
}

#[tokio::test]
async fn streaming_reports_progress_and_assembles_the_answer() {
    let (addr, _fake) = start_fake().await;
    let pieces = Arc::new(Mutex::new(Vec::new()));
    let sink = pieces.clone();
    let router = ModelRouter::from_config(&config(addr)).unwrap().with_progress(Arc::new(move |event| {
        if let ProgressKind::Text(piece) = event.kind {
            sink.lock().unwrap().push(format!("{}:{piece}", event.call_id));
        }
    }));
    let answer = router.chat("stream", &ask("hi"), "s:1:0").await.unwrap();
    assert_eq!(answer.text, "Hello!");
    assert_eq!((answer.usage.input_tokens, answer.usage.output_tokens), (4, 3));
    assert_eq!(*pieces.lock().unwrap(), ["s:1:0:Hel", "s:1:0:lo", "s:1:0:!"]);
}

fn model_policy(grant: ModelGrant) -> Policy {
    let mut hostile = grants(&["scratch"], tight_limits());
    hostile.models = grant;
    Policy::deny_all().with_tool("hostile", hostile)
}

async fn host_with(addr: SocketAddr, grant: ModelGrant, store: Arc<SqliteStore>) -> Host {
    let router = ModelRouter::from_config(&config(addr)).unwrap();
    let config = HostConfig {
        engine: engine_config(),
        policy: model_policy(grant),
        models: Some(Arc::new(router)),
        ..HostConfig::default()
    };
    Host::with_store(config, store).unwrap()
}

fn ask_model(alias: &str, prompt: &str) -> Value {
    json!({"attack": "ask-model", "model": alias, "prompt": prompt})
}

fn tool_failure(result: Result<Value, CallError>) -> ToolFailure {
    match result {
        Err(CallError::Tool { failure, .. }) => failure,
        other => panic!("expected the tool's error, got {other:?}"),
    }
}

#[tokio::test]
async fn guests_get_typed_errors_and_the_host_keeps_serving() {
    let (addr, _fake) = start_fake().await;
    let all: Vec<&str> = SCENARIOS.to_vec();
    let host = host_with(addr, ModelGrant::aliases(all), Arc::new(SqliteStore::temporary().unwrap())).await;
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.new_session().await.unwrap();

    for (alias, expected) in [
        ("hang", "model call timed out"),
        ("busy", "model rate limited"),
        ("broken", "(HTTP 500)"),
        ("malformed", "malformed response"),
        ("oversized", "exceeds"),
        ("truncated", "ended before"),
    ] {
        let failure = tool_failure(session.call(&hostile, &ask_model(alias, "hi")).await);
        assert!(matches!(&failure, ToolFailure::Failed(m) if m.contains(expected)), "{alias}: {failure:?}");
        // The same session goes on.
        let out = session.call(&hostile, &ask_model("ok", "still there?")).await.unwrap();
        assert!(out["padding"].as_str().unwrap().contains("still there?"));
    }
    // Each failed call is a committed step with its answer journaled: 12 steps.
    assert_eq!(session.last_step(), 12);
}

#[tokio::test]
async fn budgets_rates_and_grants_are_enforced_and_audited() {
    let (addr, fake) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("budget.db");
    let open_store = || Arc::new(SqliteStore::open(&db, toolhost::store::Durability::Full).unwrap());
    // 15 tokens per answer; a budget of 40 allows three calls (0, 15, 30 < 40).
    let grant = ModelGrant {
        aliases: ["ok".to_string()].into(),
        max_tokens_per_call: Some(20),
        session_token_budget: Some(40),
        calls_per_minute: None,
    };
    let host = host_with(addr, grant.clone(), open_store()).await;
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let id = session.id().to_owned();

    let first = session.call(&hostile, &ask_model("ok", "one")).await.unwrap();
    assert!(first["padding"].as_str().unwrap().ends_with("max_tokens=20"), "capped by the grant: {first}");
    session.call(&hostile, &ask_model("ok", "two")).await.unwrap();
    drop(session);
    drop(host);

    // A new host (a restart) rebuilds the instance by replaying its steps from the journal:
    // the replayed answers are not paid for, nor counted, again.
    let host = host_with(addr, grant, open_store()).await;
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let third = session.call(&hostile, &ask_model("ok", "three")).await.unwrap();
    assert!(third["padding"].as_str().unwrap().ends_with("max_tokens=10"), "capped by what is left: {third}");
    assert_eq!(fake.hits("ok"), 3);
    let refused = tool_failure(session.call(&hostile, &ask_model("ok", "four")).await);
    assert!(
        matches!(&refused, ToolFailure::Failed(m) if m.contains("budget exceeded") && m.contains("45 of its 40")),
        "{refused:?}"
    );
    assert_eq!(fake.hits("ok"), 3, "a refused call never reaches the provider");

    // Not granted: denied.
    let denied = tool_failure(session.call(&hostile, &ask_model("broken", "x")).await);
    assert!(matches!(&denied, ToolFailure::Denied(m) if m.contains("not granted")), "{denied:?}");
    assert_eq!(fake.hits("broken"), 0);

    // The session goes on after refusals.
    assert_eq!(session.call(&hostile, &json!({"attack": "echo", "n": 7})).await.unwrap()["echo"], 7);

    let events = host.store().audit_events(Some(&id)).await.unwrap();
    let model_events: Vec<_> = events.iter().filter(|e| e.capability == "model").collect();
    assert_eq!(model_events.iter().filter(|e| e.allowed).count(), 3, "{model_events:#?}");
    assert!(model_events.iter().any(|e| !e.allowed && e.request == "budget ok"));
    assert!(model_events.iter().any(|e| !e.allowed && e.request == "chat broken"));

    // Rate: two calls per minute for this tool.
    let rate = ModelGrant { calls_per_minute: Some(2), ..ModelGrant::aliases(["ok"]) };
    let host = host_with(addr, rate, Arc::new(SqliteStore::temporary().unwrap())).await;
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    session.call(&hostile, &ask_model("ok", "a")).await.unwrap();
    session.call(&hostile, &ask_model("ok", "b")).await.unwrap();
    let limited = tool_failure(session.call(&hostile, &ask_model("ok", "c")).await);
    assert!(
        matches!(&limited, ToolFailure::Failed(m) if m.contains("rate limited") && m.contains("2 times per minute")),
        "{limited:?}"
    );
    // Another session has its own count.
    let mut other = host.new_session().await.unwrap();
    other.call(&hostile, &ask_model("ok", "d")).await.unwrap();
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything traced by this test process, from the moment the first test asks for it.
fn captured_logs() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            // Global, so events on every thread (host, providers, reqwest, hyper, the fake
            // server) are captured; no other test installs a subscriber.
            tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
            captured
        })
        .clone()
}

#[test]
fn the_api_key_never_leaves_the_provider() {
    let captured = captured_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut outputs: Vec<String> = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("key.db");
    runtime.block_on(async {
        let (addr, fake) = start_fake().await;
        let store = Arc::new(SqliteStore::open(&db, toolhost::store::Durability::Full).unwrap());
        let host = host_with(addr, ModelGrant::aliases(SCENARIOS.to_vec()), store.clone()).await;
        let hostile = host.load_tool(&guests().hostile).await.unwrap();
        let mut session = host.new_session().await.unwrap();
        for alias in ["unauthorized", "ok", "broken", "hang"] {
            outputs.push(format!("{:?}", session.call(&hostile, &ask_model(alias, "secret?")).await));
        }
        assert!(fake.hits("unauthorized") == 1 && fake.hits("ok") == 1);
        outputs.push(format!("{:?}", host.store().audit_events(None).await.unwrap()));
        outputs.push(format!("{:?}", ModelRouter::from_config(&config(addr)).unwrap()));
    });
    // Journals, pending steps and the audit trail, as stored: every byte of the database.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        outputs.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("model call failed"), "the capture works");
    assert!(outputs[0].contains("[redacted]"), "the echoed key was scrubbed: {}", outputs[0]);
    for (what, text) in std::iter::once(("logs", &logs)).chain(outputs.iter().map(|o| ("output", o))) {
        assert!(!text.contains(KEY), "the key leaked into {what}: {text}");
        assert!(!text.contains("9f8e7d6c5b4a"), "part of the key leaked into {what}");
    }
}
