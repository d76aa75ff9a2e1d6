//! Quickstart: build the example tools, load them into a host, and run a short session.
//!
//!     cargo run --example quickstart
//!
//! Shows the path a service takes: one `Host` per process, a `Session` per conversation,
//! tools granted exactly what the policy says, typed errors for everything that goes wrong.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use toolhost::{EngineConfig, Host, HostConfig, Policy, Session, Tool};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("building the example tools for wasm32-wasip2 ...");
    let started = Instant::now();
    let paths =
        toolhost::guest_build::build(workspace, &["calculator", "notes"]).context("building the example tools")?;
    println!("  built in {:.1?}\n", started.elapsed());

    // Grant each tool what it asks for: the notes tool asks for its `notes` state namespace.
    let engine = EngineConfig { cache_dir: EngineConfig::default_cache_dir(), ..EngineConfig::default() };
    let host = Host::new(HostConfig { engine, policy: Policy::grant_requested(), ..HostConfig::default() })?;
    let mut tools = Vec::new();
    for path in &paths {
        let started = Instant::now();
        let tool = host.load_tool(path).await?;
        println!(
            "loaded {:<10} {:?}, {:?} compile cache, {:.1?}",
            tool.name(),
            tool.kind(),
            tool.cache_status(),
            started.elapsed()
        );
        tools.push(tool);
    }
    let (calculator, notes) = (&tools[0], &tools[1]);

    let mut session = host.new_session().await?;
    println!("\nsession {}", session.id());
    step(&mut session, calculator, json!({"expression": "2 * (3 + 4) ^ 2"})).await;
    step(&mut session, notes, json!({"op": "add", "title": "WASM tools", "body": "components isolate each session"}))
        .await;
    step(&mut session, notes, json!({"op": "add", "title": "Groceries", "body": "apples, wasm-shaped crackers"})).await;
    step(&mut session, notes, json!({"op": "search", "query": "wasm"})).await;
    println!("\nwhat goes wrong comes back typed:");
    step(&mut session, calculator, json!({"expression": "1 / 0"})).await;
    step(&mut session, calculator, json!({"expr": "1 + 1"})).await;

    let mut other = host.new_session().await?;
    println!("\nanother session {} sees none of it:", other.id());
    step(&mut other, notes, json!({"op": "list"})).await;
    Ok(())
}

async fn step(session: &mut Session, tool: &Tool, input: serde_json::Value) {
    let started = Instant::now();
    let result = session.call(tool, &input).await;
    let elapsed = started.elapsed();
    match result {
        Ok(output) => println!("  {:<10} {input}\n  {:<10} -> {output}  ({elapsed:.1?})", tool.name(), ""),
        Err(error) => println!("  {:<10} {input}\n  {:<10} -> error: {error}  ({elapsed:.1?})", tool.name(), ""),
    }
}
