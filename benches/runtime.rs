//! Runtime benchmark: instantiation per session, warm call round trip (on the in-memory
//! store, and as a durable step on SQLite), and the same logic run natively as the baseline.
//! Prints a table.
//!
//!     cargo bench --bench runtime
//!
//! Figures are medians (and p99) over many iterations in one process, so the ratios compare
//! like with like on whatever machine runs it.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use toolhost::store::Durability;
use toolhost::{EngineConfig, Host, HostConfig, Policy, Session, SqliteStore, Tool};

const INSTANTIATIONS: usize = 2_000;
const CALLS: usize = 20_000;
const WARMUP: usize = 200;

#[path = "support/native.rs"]
mod native;
#[path = "support/stats.rs"]
mod support;

use native::native_call;
use support::{Stats, stats};

fn config(pooling: bool, cache_dir: &Path) -> HostConfig {
    let engine =
        EngineConfig { cache_dir: Some(cache_dir.into()), pooling, max_instances: 64, ..EngineConfig::default() };
    HostConfig { engine, policy: Policy::deny_all(), ..HostConfig::default() }
}

/// A host whose sessions live in memory (`Host::new`).
fn host(pooling: bool, cache_dir: &Path) -> Host {
    Host::new(config(pooling, cache_dir)).unwrap()
}

/// Calls `tool` with `input` over and over in one session, timing each round trip.
async fn warm_calls(session: &mut Session, tool: &Tool, input: &serde_json::Value) -> Stats {
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS + WARMUP {
        let started = Instant::now();
        let out = session.call(tool, input).await.unwrap();
        let elapsed = started.elapsed();
        black_box(out);
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    stats(samples)
}

async fn instantiation(host: &Host, tool: &toolhost::Tool) -> Stats {
    let mut samples = Vec::with_capacity(INSTANTIATIONS);
    for i in 0..INSTANTIATIONS + WARMUP {
        let mut session = host.new_session().await.unwrap();
        let started = Instant::now();
        session.prewarm(tool).await.unwrap();
        let elapsed = started.elapsed();
        drop(black_box(session));
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    stats(samples)
}

async fn session_lifecycle(host: &Host, tool: &toolhost::Tool, input: &serde_json::Value) -> Stats {
    let mut samples = Vec::with_capacity(INSTANTIATIONS);
    for i in 0..INSTANTIATIONS + WARMUP {
        let started = Instant::now();
        let mut session = host.new_session().await.unwrap();
        black_box(session.call(tool, input).await.unwrap());
        drop(session);
        let elapsed = started.elapsed();
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    stats(samples)
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["calculator"]).expect("building the calculator tool");
    let cache = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let input = json!({"expression": "2 * (3 + 4) ^ 2"});
    let input_text = input.to_string();
    assert_eq!(native_call(&input_text), r#"{"value":98.0}"#);

    let rows = runtime.block_on(async {
        let pooled = host(true, cache.path());
        let on_demand = host(false, cache.path());
        let tool = pooled.load_tool(&paths[0]).await.unwrap();
        let tool_on_demand = on_demand.load_tool(&paths[0]).await.unwrap();

        let inst_pool = instantiation(&pooled, &tool).await;
        let inst_demand = instantiation(&on_demand, &tool_on_demand).await;
        let lifecycle = session_lifecycle(&pooled, &tool, &input).await;

        let mut session = pooled.new_session().await.unwrap();
        let warm = warm_calls(&mut session, &tool, &input).await;

        // The same calls as durable steps: each commits to SQLite with an fsync before it returns.
        let db = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(db.path().join("sessions.db"), Durability::Full).unwrap();
        let durable = Host::with_store(config(true, cache.path()), std::sync::Arc::new(store)).unwrap();
        let tool_durable = durable.load_tool(&paths[0]).await.unwrap();
        let mut session = durable.new_session().await.unwrap();
        let warm_durable = warm_calls(&mut session, &tool_durable, &input).await;

        let mut native = Vec::with_capacity(CALLS);
        for i in 0..CALLS + WARMUP {
            let started = Instant::now();
            black_box(native_call(black_box(&input_text)));
            let elapsed = started.elapsed();
            if i >= WARMUP {
                native.push(elapsed);
            }
        }
        let native = stats(native);
        vec![
            ("native call, same logic (baseline)", native),
            ("warm call round trip, session in memory", warm),
            ("warm call as a durable step, SQLite (fsync)", warm_durable),
            ("fresh instance per session, pooling", inst_pool),
            ("fresh instance per session, on demand", inst_demand),
            ("new session + first call + drop, pooling", lifecycle),
        ]
    });

    let baseline = rows[0].1.median.as_secs_f64();
    println!("\ntoolhost runtime benchmark (calculator tool, {CALLS} calls, {INSTANTIATIONS} instantiations)\n");
    println!("| {:<46} | {:>10} | {:>10} | {:>12} |", "measurement", "median", "p99", "x native");
    println!("|{:-<48}|{:-<12}|{:-<12}|{:-<14}|", "", "", "", "");
    for (name, s) in &rows {
        let ratio = s.median.as_secs_f64() / baseline;
        println!("| {name:<46} | {:>10.2?} | {:>10.2?} | {ratio:>11.1}x |", s.median, s.p99);
    }
}
