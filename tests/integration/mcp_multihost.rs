//! Two MCP servers on one shared store, as behind a load balancer: a handle is served by the
//! server that holds its session's lease; once that server has left the session idle past
//! its timeout, the lease is released and the other server serves the handle, with the
//! session's state, tool memory included.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines, ReadHalf, WriteHalf};
use toolhost::mcp::{HANDLE_ARGUMENT, HANDLE_META_KEY, McpLimits, McpServer};
use toolhost::{Host, HostConfig, LeaseConfig, Policy};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{engine_config, guests};

on_both_backends!(an_idle_handle_moves_to_the_other_server);

/// An MCP client on one in-process stdio connection (newline-delimited JSON-RPC).
pub(crate) struct Client {
    write: WriteHalf<DuplexStream>,
    lines: Lines<BufReader<ReadHalf<DuplexStream>>>,
    next_id: u64,
}

impl Client {
    pub(crate) async fn connect(server: &McpServer) -> Self {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (read, write) = tokio::io::split(theirs);
        let server = server.clone();
        tokio::spawn(async move { server.serve_stream(read, write).await });
        let (read, write) = tokio::io::split(ours);
        let mut client = Self { write, lines: BufReader::new(read).lines(), next_id: 0 };
        let init = client
            .request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "multihost-test", "version": "0"}}),
            )
            .await;
        assert!(init["result"]["serverInfo"].is_object(), "{init}");
        client.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        client
    }

    pub(crate) async fn send(&mut self, message: Value) {
        self.write.write_all(format!("{message}\n").as_bytes()).await.unwrap();
    }

    pub(crate) async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        let line = self.lines.next_line().await.unwrap().expect("the server answers");
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["id"], id, "{answer}");
        answer
    }

    /// A `tools/call` of the notes tool on `handle` (or the connection's session).
    async fn notes(&mut self, handle: Option<&str>, mut arguments: Value) -> Value {
        if let Some(handle) = handle {
            arguments[HANDLE_ARGUMENT] = json!(handle);
        }
        let answer = self.request("tools/call", json!({"name": "notes", "arguments": arguments})).await;
        answer["result"].clone()
    }
}

fn text(result: &Value) -> String {
    result["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n")
}

async fn server(db: &TestStore, holder: &str, idle: Duration) -> McpServer {
    let config = HostConfig {
        engine: engine_config(),
        policy: Policy::grant_requested(),
        leases: Some(LeaseConfig {
            holder: holder.into(),
            ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }),
        ..HostConfig::default()
    };
    let host = Host::with_store(config, db.open().await).unwrap();
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let limits = McpLimits { idle_session_timeout: Some(idle), ..McpLimits::default() };
    McpServer::new(host, vec![notes], limits).unwrap()
}

/// Lists the notes of `handle` through `client` until its server serves it (the other one
/// released it when its idle sweeper ran), refused as in use meanwhile; at most 20 s, so a
/// busy machine's late sweep still passes.
async fn until_served(client: &mut Client, handle: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = client.notes(Some(handle), json!({"op": "list"})).await;
        if listed["isError"] == json!(false) {
            return listed;
        }
        assert!(text(&listed).contains("in use on another server"), "{listed}");
        assert!(std::time::Instant::now() < deadline, "still refused after 20 s: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn an_idle_handle_moves_to_the_other_server(db: &TestStore) {
    let idle = Duration::from_millis(300);
    let (a, b) = (server(db, "server-a", idle).await, server(db, "server-b", idle).await);
    let (mut on_a, mut on_b) = (Client::connect(&a).await, Client::connect(&b).await);

    let added = on_a.notes(None, json!({"op": "add", "title": "moving", "body": "day"})).await;
    assert_eq!(added["isError"], json!(false), "{added}");
    let handle = added["_meta"][HANDLE_META_KEY].as_str().expect("the result names its session").to_owned();

    // Server A holds the session: B refuses it with a typed, retryable error, and A goes on.
    let refused = on_b.notes(Some(&handle), json!({"op": "list"})).await;
    assert_eq!(refused["isError"], json!(true), "{refused}");
    assert!(text(&refused).contains("in use on another server"), "{refused}");
    let listed = on_a.notes(Some(&handle), json!({"op": "list"})).await;
    assert_eq!(listed["isError"], json!(false), "{listed}");

    // Idle past the timeout, A closes the session and releases its lease: B takes it over,
    // with the note (state and the tool's in-memory index rebuilt from the store).
    let moved = until_served(&mut on_b, &handle).await;
    assert!(text(&moved).contains("moving"), "{moved}");
    let added = on_b.notes(Some(&handle), json!({"op": "add", "title": "second", "body": "note"})).await;
    assert_eq!(added["isError"], json!(false), "{added}");

    // Now B holds it; when B has been idle long enough, A serves it again, with both notes.
    let refused = on_a.notes(Some(&handle), json!({"op": "list"})).await;
    assert_eq!(refused["isError"], json!(true), "{refused}");
    let back = until_served(&mut on_a, &handle).await;
    let shown = text(&back);
    assert!(shown.contains("moving") && shown.contains("second"), "{back}");
}
