//! MCP benchmark: what the protocol adds to a tool call. The same calculator call is timed
//! as a direct `Session::call` (the baseline), as `tools/call` over the stdio framing
//! (newline-delimited JSON-RPC on an in-process pipe, so no process boundary is counted), and
//! as `tools/call` over streamable HTTP on loopback. Sessions live in memory, so the store's
//! commit is the same small cost in every row. Prints a table.
//!
//!     cargo bench --bench mcp

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use toolhost::mcp::{HttpOptions, McpLimits, McpServer};
use toolhost::{EngineConfig, Host, HostConfig, Policy, Tool};

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

const CALLS: usize = 2_000;
const WARMUP: usize = 100;
const PROTOCOL: &str = "2025-11-25";

fn input() -> Value {
    json!({"expression": "2 * (3 + 4) ^ 2"})
}

fn call_request(id: usize) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "calculator", "arguments": input()}})
}

fn initialize_request() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
           "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                      "clientInfo": {"name": "toolhost-bench", "version": "0"}}})
}

/// The JSON-RPC response in `body`: a JSON object, or the non-empty `data:` line of an SSE
/// stream (rmcp opens it with an empty priming event).
fn response(body: &str) -> Value {
    let data = body.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).find(|d| !d.is_empty());
    let text = data.unwrap_or(body.trim());
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON-RPC response ({e}): {body}"))
}

/// Checks a `tools/call` answer is the calculator's result, not an error.
fn check(answer: &Value) {
    let result = &answer["result"];
    assert_eq!(result["isError"], json!(false), "{answer}");
    assert!(result.to_string().contains("98"), "{answer}");
}

async fn timed<F, Fut>(mut call: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS + WARMUP {
        let started = Instant::now();
        call(i + 1).await;
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    stats(samples)
}

async fn direct(host: &Host, tool: &Tool) -> Stats {
    let mut session = host.new_session().await.unwrap();
    let input = input();
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS + WARMUP {
        let started = Instant::now();
        black_box(session.call(tool, &input).await.unwrap());
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    stats(samples)
}

async fn stdio(server: &McpServer) -> Stats {
    let (client, server_end) = tokio::io::duplex(1 << 20);
    let (server_read, server_write) = tokio::io::split(server_end);
    let server = server.clone();
    let serving = tokio::spawn(async move { server.serve_stream(server_read, server_write).await });
    let (read, mut write) = tokio::io::split(client);
    let mut lines = BufReader::new(read).lines();

    write.write_all(format!("{}\n", initialize_request()).as_bytes()).await.unwrap();
    let initialized = response(&lines.next_line().await.unwrap().expect("an initialize answer"));
    assert_eq!(initialized["result"]["protocolVersion"], PROTOCOL, "{initialized}");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    write.write_all(format!("{note}\n").as_bytes()).await.unwrap();

    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS + WARMUP {
        let started = Instant::now();
        write.write_all(format!("{}\n", call_request(i + 1)).as_bytes()).await.unwrap();
        let answer = lines.next_line().await.unwrap().expect("an answer");
        let elapsed = started.elapsed();
        if i == 0 {
            check(&response(&answer));
        }
        black_box(answer);
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    drop(write);
    drop(lines);
    serving.await.unwrap().unwrap();
    stats(samples)
}

async fn http(server: &McpServer) -> Stats {
    let options = HttpOptions { addr: ([127, 0, 0, 1], 0).into(), ..HttpOptions::default() };
    let running = server.serve_http(options).await.unwrap();
    let url = running.url();
    let client = reqwest::Client::new();
    let post = |body: Value, session: Option<&str>| {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .body(body.to_string());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };

    let answer = post(initialize_request(), None).await.unwrap();
    assert!(answer.status().is_success(), "initialize: {}", answer.status());
    let session = answer.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let initialized = response(&answer.text().await.unwrap());
    assert_eq!(initialized["result"]["protocolVersion"], PROTOCOL, "{initialized}");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert!(post(note, Some(&session)).await.unwrap().status().is_success());

    let result = timed(|id| {
        let sent = post(call_request(id), Some(&session));
        async move {
            let answer = sent.await.unwrap();
            assert!(answer.status().is_success(), "tools/call: {}", answer.status());
            let body = answer.text().await.unwrap();
            if id == 1 {
                check(&response(&body));
            }
            black_box(body);
        }
    })
    .await;
    running.shutdown().await.unwrap();
    result
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["calculator"]).expect("building the calculator tool");
    let cache = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let rows = runtime.block_on(async {
        let engine =
            EngineConfig { cache_dir: Some(cache.path().into()), max_instances: 64, ..EngineConfig::default() };
        let host = Host::new(HostConfig { engine, policy: Policy::deny_all(), ..HostConfig::default() }).unwrap();
        let tool = host.load_tool(&paths[0]).await.unwrap();
        let server = McpServer::new(host.clone(), vec![tool.clone()], McpLimits::default()).unwrap();
        vec![
            ("Session::call, direct (baseline)", direct(&host, &tool).await),
            ("MCP tools/call, stdio framing (in-process pipe)", stdio(&server).await),
            ("MCP tools/call, streamable HTTP (loopback)", http(&server).await),
        ]
    });

    let baseline = rows[0].1.median.as_secs_f64();
    println!("\ntoolhost MCP benchmark (calculator tool, {CALLS} calls per row, protocol {PROTOCOL})\n");
    println!("| {:<48} | {:>10} | {:>10} | {:>12} |", "measurement", "median", "p99", "x direct");
    println!("|{:-<50}|{:-<12}|{:-<12}|{:-<14}|", "", "", "", "");
    for (name, s) in &rows {
        let ratio = s.median.as_secs_f64() / baseline;
        println!("| {name:<48} | {:>10.2?} | {:>10.2?} | {ratio:>11.1}x |", s.median, s.p99);
    }
}
