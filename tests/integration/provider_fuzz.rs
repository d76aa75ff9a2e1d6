//! Property tests of the provider response paths: whatever status, headers and body a
//! provider sends (JSON, SSE, garbage, hostile `Retry-After`), the host answers with a
//! typed `ModelError` or a response, promptly, and never panics. A scripted HTTP server on
//! 127.0.0.1 sends each case's bytes verbatim, so headers need not be valid for any library.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolhost::model::{
    ChatRequest, HttpProvider, Message, ModelError, ProgressListener, ProviderConfig, ProviderKind, RetryPolicy, Role,
    ToolDefinition,
};

/// The bytes the server answers every request with, and how many requests it saw.
#[derive(Default)]
struct Script {
    response: Vec<u8>,
    requests: usize,
}

struct Server {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    runtime: tokio::runtime::Runtime,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = script.clone();
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, shared.clone()));
            }
        });
        Server { addr, script, runtime }
    })
}

/// Reads one request (headers, then `content-length` bytes of body) and writes the script.
async fn answer(mut socket: tokio::net::TcpStream, script: Arc<Mutex<Script>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let body_start = loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while request.len() < body_start + length {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let response = {
        let mut script = script.lock().unwrap();
        script.requests += 1;
        script.response.clone()
    };
    let _ = socket.write_all(&response).await;
    let _ = socket.shutdown().await;
}

fn provider(kind: ProviderKind, stream: bool) -> HttpProvider {
    let config = ProviderConfig {
        timeout_secs: 5,
        retry: RetryPolicy { max_retries: 1, initial_backoff_ms: 1, max_backoff_ms: 5 },
        max_response_bytes: 16 << 10,
        stream,
        ..ProviderConfig::new(kind, format!("http://{}/v1", server().addr))
    };
    HttpProvider::new("fuzzed", &config).unwrap()
}

fn request(schema: bool) -> ChatRequest {
    ChatRequest {
        messages: vec![Message { role: Role::User, content: "hi".into(), tool_calls: Vec::new(), tool_call_id: None }],
        tools: vec![ToolDefinition {
            name: "weather".into(),
            description: "Weather.".into(),
            parameters: r#"{"type":"object","properties":{"city":{"type":"string"}}}"#.into(),
        }],
        tool_choice: None,
        max_tokens: None,
        temperature: None,
        stop: Vec::new(),
        response_schema: schema.then(|| r#"{"type":"object"}"#.to_owned()),
    }
}

/// Sends one request against the current script.
fn chat(kind: ProviderKind, stream: bool, schema: bool) -> Result<toolhost::model::ChatResponse, ModelError> {
    let provider = provider(kind, stream);
    let listener: ProgressListener = Arc::new(|_| {});
    let listener = stream.then_some(&listener);
    server().runtime.block_on(provider.chat("m", &request(schema), "call-1", "alias", listener))
}

/// The server holds one script at a time: tests take turns with it (libtest runs them on
/// parallel threads).
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn script(response: Vec<u8>) {
    *server().script.lock().unwrap() = Script { response, requests: 0 };
}

fn requests() -> usize {
    server().script.lock().unwrap().requests
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["tool_use", "text", "stop", "tool_calls", "message_stop", "[DONE]", "{}", "weather"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "choices",
            "message",
            "content",
            "tool_calls",
            "function",
            "name",
            "arguments",
            "index",
            "id",
            "delta",
            "usage",
            "prompt_tokens",
            "type",
            "text",
            "input",
            "partial_json",
            "content_block",
            "stop_reason",
            "error",
            "model",
            "finish_reason",
            "output_tokens",
            "input_tokens",
            "value",
            "tool",
            "answer",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Plausible answers of both protocols, for the parsers to get past their first checks.
fn shaped_answer() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), json_value()).prop_map(|(content, calls, usage)| {
        json!({
            "choices": [{"message": {"content": content, "tool_calls": calls}, "delta": {"content": content, "tool_calls": calls}}],
            "content": [{"type": "tool_use", "name": "respond", "input": usage}, {"type": "text", "text": content}],
            "usage": usage,
            "type": "content_block_delta",
            "delta": {"type": "input_json_delta", "partial_json": content},
        })
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let event = prop_oneof![
        json_value().prop_map(|v| format!("data: {v}\n\n")),
        shaped_answer().prop_map(|v| format!("data: {v}\n\n")),
        Just("data: [DONE]\n\n".to_owned()),
        "[ -~]{0,20}".prop_map(|s| format!("event: {s}\ndata: {s}\n\n")),
        "[ -~\n\r:]{0,40}",
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        shaped_answer().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(event, 0..8).prop_map(|e| e.concat().into_bytes()),
        // Past `max_response_bytes`.
        Just(vec![b'x'; 20 << 10]),
    ]
}

fn retry_after() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{15,40}",
        "-?[0-9]{0,3}\\.?[0-9]{0,3}(e[+-]?[0-9]{1,3})?",
        Just("1e20".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        any::<u32>().prop_map(|s| httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(s.into()))),
        "[ -~]{0,30}",
    ]
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec![200u16, 200, 200, 201, 204, 400, 401, 404, 429, 429, 500, 502, 503]);
    let content_type =
        prop::sample::select(vec!["application/json", "text/event-stream", "text/plain", "\u{7f}bad", ""]);
    let extra = prop::collection::vec("[a-z-]{1,12}: [ -~]{0,30}", 0..3);
    (status, prop::option::of(retry_after()), content_type, extra, body(), any::<bool>()).prop_map(
        |(status, retry_after, content_type, extra, body, length)| {
            let mut head = format!("HTTP/1.1 {status} Whatever\r\nconnection: close\r\n");
            if let Some(value) = retry_after {
                head.push_str(&format!("retry-after: {value}\r\n"));
            }
            if !content_type.is_empty() {
                head.push_str(&format!("content-type: {content_type}\r\n"));
            }
            for line in extra {
                head.push_str(&line);
                head.push_str("\r\n");
            }
            if length {
                head.push_str(&format!("content-length: {}\r\n", body.len()));
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            bytes
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn any_provider_answer_is_a_response_or_a_typed_error(
        response in response(),
        anthropic in any::<bool>(),
        stream in any::<bool>(),
        schema in any::<bool>(),
    ) {
        let _turn = turn();
        script(response);
        let kind = if anthropic { ProviderKind::Anthropic } else { ProviderKind::Openai };
        let started = Instant::now();
        let result = chat(kind, stream, schema);
        // Retries are bounded by the policy (one retry, at most 5 ms apart) whatever the
        // provider asks for, and every case answers at once: nothing may wait on a timeout.
        prop_assert!(started.elapsed() < Duration::from_secs(4), "took {:?}: {result:?}", started.elapsed());
        prop_assert!(requests() <= 2, "{} requests", requests());
        if let Ok(answer) = &result {
            for call in &answer.tool_calls {
                let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
                prop_assert!(arguments.is_object(), "{answer:?}");
            }
        }
    }
}

#[test]
fn a_huge_retry_after_is_clamped_not_a_panic() {
    let _turn = turn();
    for value in ["1e20", "18446744073709551616", "1e308", "-5", "NaN", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        script(format!("HTTP/1.1 429 Too Many\r\nretry-after: {value}\r\ncontent-length: 0\r\n\r\n").into_bytes());
        let started = Instant::now();
        let err = chat(ProviderKind::Openai, false, false).unwrap_err();
        assert!(matches!(err, ModelError::RateLimited(_)), "{value}: {err:?}");
        // Retried once, after at most the policy's 5 ms cap.
        assert_eq!(requests(), 2, "{value}");
        assert!(started.elapsed() < Duration::from_secs(2), "{value}: {:?}", started.elapsed());
    }
}
