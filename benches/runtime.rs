//! Runtime benchmark: instantiation per session, warm call round trip, and the same logic
//! run natively as the baseline. Prints a table.
//!
//!     cargo bench --bench runtime
//!
//! Figures are medians (and p99) over many iterations in one process, so the ratios compare
//! like with like on whatever machine runs it.

#[path = "../examples/tools/calculator/src/eval.rs"]
mod eval;

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use toolhost::{EngineConfig, Host, HostConfig, Policy};

const INSTANTIATIONS: usize = 2_000;
const CALLS: usize = 20_000;
const WARMUP: usize = 200;

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

/// The calculator's work done natively: JSON text in, evaluate, JSON text out.
fn native_call(input: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Input {
        expression: String,
    }
    let input: Input = serde_json::from_str(input).unwrap();
    let value = eval::evaluate(&input.expression).unwrap();
    serde_json::to_string(&json!({ "value": value })).unwrap()
}

fn host(pooling: bool, cache_dir: &Path) -> Host {
    let engine =
        EngineConfig { cache_dir: Some(cache_dir.into()), pooling, max_instances: 64, ..EngineConfig::default() };
    Host::new(HostConfig { engine, policy: Policy::deny_all(), ..HostConfig::default() }).unwrap()
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
        let mut calls = Vec::with_capacity(CALLS);
        for i in 0..CALLS + WARMUP {
            let started = Instant::now();
            let out = session.call(&tool, &input).await.unwrap();
            let elapsed = started.elapsed();
            black_box(out);
            if i >= WARMUP {
                calls.push(elapsed);
            }
        }
        let warm = stats(calls);

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
            ("warm call round trip, sandboxed", warm),
            ("fresh instance per session, pooling", inst_pool),
            ("fresh instance per session, on demand", inst_demand),
            ("new session + first call + drop, pooling", lifecycle),
        ]
    });

    let baseline = rows[0].1.median.as_secs_f64();
    println!("\ntoolhost runtime benchmark (calculator tool, {CALLS} calls, {INSTANTIATIONS} instantiations)\n");
    println!("| {:<42} | {:>10} | {:>10} | {:>12} |", "measurement", "median", "p99", "x native");
    println!("|{:-<44}|{:-<12}|{:-<12}|{:-<14}|", "", "", "", "");
    for (name, s) in &rows {
        let ratio = s.median.as_secs_f64() / baseline;
        println!("| {name:<42} | {:>10.2?} | {:>10.2?} | {ratio:>11.1}x |", s.median, s.p99);
    }
}
