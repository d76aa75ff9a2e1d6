//! Hostile-tool benchmark: for each attack class, the host's peak RSS growth and the wall
//! time of the call, against the same figures for a well-behaved call; and the warm call
//! round trip (which carries the per-call host accounting) against the native baseline.
//!
//!     cargo bench --bench hostile
//!
//! Peak RSS is per process (`VmHWM` after resetting it through `/proc/self/clear_refs`), so
//! the attacks run one at a time on one thread.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost::{EngineConfig, Host, HostConfig, Limits, Policy, ToolGrants};

#[path = "support/native.rs"]
mod native;
#[path = "support/stats.rs"]
mod support;

use native::native_call;
use support::{Stats, stats};

const CALLS: usize = 20_000;
const WARMUP: usize = 200;
const ATTACK_RUNS: usize = 3;
const MANY: u64 = 1_000_000_000;

fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap() * 1024
}

fn limits() -> Limits {
    Limits {
        cpu_time: Duration::from_millis(500),
        wall_time: Duration::from_secs(1),
        max_journal_bytes: 1 << 20,
        max_handles: 256,
        ..Limits::default()
    }
}

/// Attack classes: (name, input).
fn attacks() -> Vec<(&'static str, Value)> {
    vec![
        ("clock reads in a loop", json!({"attack": "wall-clock-loop", "reads": MANY})),
        ("alternating clocks", json!({"attack": "alternating-clock-loop", "reads": MANY})),
        ("1 MiB value read in a loop", json!({"attack": "read-loop", "key": "big", "bytes": 1 << 20, "reads": MANY})),
        ("delete flood", json!({"attack": "delete-flood", "keys": MANY})),
        ("tcp socket flood", json!({"attack": "tcp-socket-flood", "count": MANY})),
        ("sleep past the wall deadline", json!({"attack": "sleep", "ms": 600_000})),
        ("pollable flood", json!({"attack": "pollable-flood", "count": MANY})),
        ("20 MB tool error", json!({"attack": "huge-error", "bytes": 20_000_000})),
        ("log flood", json!({"attack": "log-flood", "lines": MANY, "bytes": 1000})),
        ("denied-namespace flood", json!({"attack": "denied-state-flood", "count": MANY})),
    ]
}

/// Wall time and peak RSS growth of one call of `input`, worst of `ATTACK_RUNS`.
async fn measure(host: &Host, tool: &toolhost::Tool, input: &Value) -> (Duration, u64, String) {
    let (mut worst_time, mut worst_rss, mut outcome) = (Duration::ZERO, 0, String::new());
    for _ in 0..ATTACK_RUNS {
        let mut session = host.new_session().await.unwrap();
        session.prewarm(tool).await.unwrap();
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = status_bytes("VmRSS:");
        let started = Instant::now();
        let result = session.call(tool, input).await;
        let elapsed = started.elapsed();
        let growth = status_bytes("VmHWM:").saturating_sub(before);
        worst_time = worst_time.max(elapsed);
        worst_rss = worst_rss.max(growth);
        outcome = match result {
            Ok(_) => "ok".into(),
            Err(e) => format!("{e}").chars().take(60).collect(),
        };
    }
    (worst_time, worst_rss, outcome)
}

async fn warm(session: &mut toolhost::Session, tool: &toolhost::Tool, input: &Value) -> Stats {
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS + WARMUP {
        let started = Instant::now();
        black_box(session.call(tool, input).await.unwrap());
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    stats(samples)
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["hostile", "calculator"]).expect("building the tools");
    let cache = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut grants = ToolGrants { limits: limits(), ..ToolGrants::default() };
        grants.state.namespaces.insert("scratch".into(), toolhost::Access::ReadWrite);
        // The calculator twice: with the default limits, and with the wall deadline off, the
        // one piece of the accounting a configuration can switch off (same run, same build).
        let no_wall = ToolGrants { limits: Limits { wall_time: Duration::MAX, ..Limits::default() }, ..ToolGrants::default() };
        let policy = Policy::deny_all().with_tool("hostile", grants);
        let policy_no_wall = Policy::deny_all().with_tool("calculator", no_wall);
        let engine = EngineConfig { cache_dir: Some(cache.path().into()), max_instances: 64, ..EngineConfig::default() };
        let host = Host::new(HostConfig { engine: engine.clone(), policy, ..HostConfig::default() }).unwrap();
        let hostile = host.load_tool(&paths[0]).await.unwrap();
        let calculator = host.load_tool(&paths[1]).await.unwrap();
        let host_no_wall = Host::new(HostConfig { engine, policy: policy_no_wall, ..HostConfig::default() }).unwrap();
        let calculator_no_wall = host_no_wall.load_tool(&paths[1]).await.unwrap();

        let echo = json!({"attack": "echo", "n": 1});
        let (base_time, base_rss, _) = measure(&host, &hostile, &echo).await;
        println!("\ntoolhost hostile-tool benchmark (worst of {ATTACK_RUNS} runs; limits: cpu 500 ms, wall 1 s, journal 1 MiB, memory 64 MiB)\n");
        println!("| {:<34} | {:>10} | {:>9} | {:>12} | {:<60} |", "call", "wall", "x well", "peak RSS +", "outcome");
        println!("|{:-<36}|{:-<12}|{:-<11}|{:-<14}|{:-<62}|", "", "", "", "", "");
        let row = |name: &str, time: Duration, rss: u64, outcome: &str| {
            let ratio = time.as_secs_f64() / base_time.as_secs_f64();
            println!(
                "| {name:<34} | {:>10.2?} | {ratio:>8.0}x | {:>8.1} MiB | {outcome:<60} |",
                time,
                rss as f64 / (1 << 20) as f64
            );
        };
        row("well-behaved call (baseline)", base_time, base_rss, "ok");
        for (name, input) in attacks() {
            let (time, rss, outcome) = measure(&host, &hostile, &input).await;
            row(name, time, rss, &outcome);
        }

        let input = json!({"expression": "2 * (3 + 4) ^ 2"});
        let text = input.to_string();
        let mut native = Vec::with_capacity(CALLS);
        for i in 0..CALLS + WARMUP {
            let started = Instant::now();
            black_box(native_call(black_box(&text)));
            if i >= WARMUP {
                native.push(started.elapsed());
            }
        }
        let native = stats(native);
        let mut session = host.new_session().await.unwrap();
        let warm_calc = warm(&mut session, &calculator, &input).await;
        let warm_echo = warm(&mut session, &hostile, &echo).await;
        let mut session = host_no_wall.new_session().await.unwrap();
        let warm_no_wall = warm(&mut session, &calculator_no_wall, &input).await;
        println!("\n| {:<46} | {:>10} | {:>10} | {:>10} |", "warm call (host accounting included)", "median", "p99", "x native");
        println!("|{:-<48}|{:-<12}|{:-<12}|{:-<12}|", "", "", "", "");
        for (name, s) in [
            ("native call, calculator logic (baseline)", &native),
            ("warm calculator call, wall deadline off", &warm_no_wall),
            ("warm calculator call, session in memory", &warm_calc),
            ("warm hostile echo call, session in memory", &warm_echo),
        ] {
            let ratio = s.median.as_secs_f64() / native.median.as_secs_f64();
            println!("| {name:<46} | {:>10.2?} | {:>10.2?} | {ratio:>9.1}x |", s.median, s.p99);
        }
    });
}
