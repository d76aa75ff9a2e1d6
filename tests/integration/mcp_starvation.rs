//! One tool's hung calls do not starve other clients: 16 MCP clients each leave a call
//! sleeping (until its wall deadline), and a 17th client's calculator call is answered at once.

use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::mcp::{McpLimits, McpServer};
use toolhost::{Limits, Policy};

use crate::mcp_multihost::Client;
use crate::support::{grants, guests, host};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_hung_calls_leave_a_seventeenth_clients_call_unhindered() {
    let hung = Limits { wall_time: Duration::from_secs(20), ..Limits::default() };
    let policy = Policy::grant_requested().with_tool("hostile", grants(&["scratch"], hung));
    let host = host(policy);
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    let limits = McpLimits::default();
    assert_eq!(limits.max_concurrent_calls, 16);
    let server = McpServer::new(host, vec![hostile, calculator], limits).unwrap();

    let mut sleepers = Vec::new();
    for _ in 0..16 {
        let mut client = Client::connect(&server).await;
        let call = json!({"name": "hostile", "arguments": {"attack": "sleep", "ms": 600_000}});
        client.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call})).await;
        sleepers.push(client);
    }
    // Let every sleeping call reach its sleep (each opens a session and an instance first).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut bystander = Client::connect(&server).await;
    let started = Instant::now();
    let answer =
        bystander.request("tools/call", json!({"name": "calculator", "arguments": {"expression": "6 * 7"}})).await;
    let took = started.elapsed();
    assert_ne!(answer["result"]["isError"], json!(true), "{answer}");
    assert!(answer["result"].to_string().contains("42"), "{answer}");
    assert!(took < Duration::from_secs(1), "the 17th client's call took {took:?} behind 16 hung calls");
    drop(sleepers);
}
