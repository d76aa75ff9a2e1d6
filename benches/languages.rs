//! The cost of a tool's language: the same measurements for a Rust tool (the baseline), a
//! Python tool (componentize-py) and a TypeScript tool (componentize-js), in one run:
//! component size, first compile, load from the compile cache, a fresh instance (pooling,
//! copy-on-write), a warm call round trip, and snapshot + restore of a ~100 KiB state.
//!
//!     cargo bench --bench languages
//!
//! Warm calls and instances use each language's smallest call (Rust: the calculator on `1 + 1`;
//! Python and TypeScript: their hostile fixture's `echo`). The state is 100 KiB of text in each
//! tool's own snapshot format (Rust: the ballast fixture; Python: a 100 KiB CSV loaded into the
//! table example; TypeScript: the hostile fixture's `fill`). Snapshot cost is a step's round
//! trip with a snapshot after it minus the same step without; restore is the guest's
//! `restore` when a reopened session rebuilds the tool.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost::{EngineConfig, Host, HostConfig, Policy, SnapshotPolicy};

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

const CALLS: usize = 2_000;
const INSTANCES: usize = 300;
const SNAPSHOT_STEPS: usize = 100;
const RESTORES: usize = 30;
const CACHE_LOADS: usize = 5;
const WARMUP: usize = 20;
const STATE_BYTES: usize = 100 << 10;

/// One language's tools and inputs.
struct Language {
    name: &'static str,
    /// The tool for size, compile, instance and warm call measurements, and its smallest call.
    small: PathBuf,
    small_input: Value,
    /// The stateful tool, the call that gives it a ~100 KiB state, and a cheap step after it.
    stateful: PathBuf,
    fill: Value,
    step: Value,
}

fn languages(workspace: &Path) -> Vec<Language> {
    let target = workspace.join("target");
    let rust = toolhost::guest_build::build(workspace, &["calculator", "ballast"]).expect("building the Rust tools");
    let python = |dir: &str| {
        toolhost::python_build::build(&workspace.join(dir), &workspace.join(".venv-sdk"), &target.join("python-tools"))
            .unwrap_or_else(|e| panic!("building {dir}: {e}"))
    };
    let js = |dir: &str| {
        toolhost::js_build::build(&workspace.join(dir), &workspace.join(".node-sdk"), &target.join("js-tools"))
            .unwrap_or_else(|e| panic!("building {dir}: {e}"))
    };
    let csv: String = std::iter::once("id,name,city\n".to_owned())
        .chain((0..).map(|i| format!("{i},name{i},city{}\n", i % 17)))
        .scan(0, |size, line| {
            *size += line.len();
            (*size <= STATE_BYTES).then_some(line)
        })
        .collect();
    vec![
        Language {
            name: "Rust",
            small: rust[0].clone(),
            small_input: json!({"expression": "1 + 1"}),
            stateful: rust[1].clone(),
            fill: json!({"op": "fill", "bytes": STATE_BYTES, "seed": 7}),
            step: json!({"op": "poke", "offset": 5, "letter": "q"}),
        },
        Language {
            name: "Python",
            small: python("tests/fixtures/hostile-py"),
            small_input: json!({"attack": "echo", "n": 1}),
            stateful: python("examples/tools/table-py"),
            fill: json!({"op": "load", "table": "t", "csv": csv}),
            step: json!({"op": "list"}),
        },
        Language {
            name: "TypeScript",
            small: js("tests/fixtures/hostile-js"),
            small_input: json!({"attack": "echo", "n": 1}),
            stateful: js("tests/fixtures/hostile-js"),
            fill: json!({"attack": "fill", "n": STATE_BYTES}),
            step: json!({"attack": "echo", "n": 1}),
        },
    ]
}

fn host(cache_dir: Option<&Path>, snapshots: SnapshotPolicy) -> Host {
    let engine =
        EngineConfig { cache_dir: cache_dir.map(Path::to_owned), max_instances: 64, ..EngineConfig::default() };
    let policy = Policy::deny_all().on_ungranted(toolhost::OnUngranted::DenyAtUse);
    Host::new(HostConfig { engine, policy, snapshots, ..HostConfig::default() }).unwrap()
}

const NO_SNAPSHOTS: SnapshotPolicy = SnapshotPolicy { every: u32::MAX, keep: 1 };
const EVERY_STEP: SnapshotPolicy = SnapshotPolicy { every: 1, keep: 2 };

/// Times `run` `count` times after a warm-up.
async fn sample<F: AsyncFnMut() -> Duration>(count: usize, mut run: F) -> Stats {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + WARMUP {
        let elapsed = run().await;
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    stats(samples)
}

async fn timed<T>(future: impl Future<Output = T>) -> Duration {
    let started = Instant::now();
    black_box(future.await);
    started.elapsed()
}

struct Row {
    size: u64,
    first_compile: Duration,
    cache_load: Stats,
    instance: Stats,
    warm_call: Stats,
    snapshot: Duration,
    restore: Stats,
}

async fn measure(language: &Language) -> Row {
    let size = std::fs::metadata(&language.small).unwrap().len();
    let first_compile = timed(host(None, NO_SNAPSHOTS).load_tool(&language.small)).await;
    let cache = tempfile::tempdir().unwrap();
    host(Some(cache.path()), NO_SNAPSHOTS).load_tool(&language.small).await.unwrap();
    let cache_load = sample(CACHE_LOADS, async || {
        let fresh = host(Some(cache.path()), NO_SNAPSHOTS);
        timed(fresh.load_tool(&language.small)).await
    })
    .await;

    let plain = host(Some(cache.path()), NO_SNAPSHOTS);
    let small = plain.load_tool(&language.small).await.unwrap();
    let instance = sample(INSTANCES, async || {
        let mut session = plain.new_session().await.unwrap();
        timed(session.prewarm(&small)).await
    })
    .await;
    let mut session = plain.new_session().await.unwrap();
    let warm_call = sample(CALLS, async || timed(session.call(&small, &language.small_input)).await).await;

    let (without, with, restore) = state_costs(language, cache.path()).await;
    let snapshot = with.median.saturating_sub(without.median);
    Row { size, first_compile, cache_load, instance, warm_call, snapshot, restore }
}

/// A step on a ~100 KiB state without and with a snapshot after it, and the restore of that
/// snapshot into a fresh instance.
async fn state_costs(language: &Language, cache: &Path) -> (Stats, Stats, Stats) {
    let mut steps = Vec::new();
    for policy in [NO_SNAPSHOTS, EVERY_STEP] {
        let host = host(Some(cache), policy);
        let tool = host.load_tool(&language.stateful).await.unwrap();
        let mut session = host.new_session().await.unwrap();
        session.call(&tool, &language.fill).await.unwrap();
        steps.push(sample(SNAPSHOT_STEPS, async || timed(session.call(&tool, &language.step)).await).await);
    }
    let host = host(Some(cache), EVERY_STEP);
    let tool = host.load_tool(&language.stateful).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    session.call(&tool, &language.fill).await.unwrap();
    let id = session.id().to_owned();
    drop(session);
    let restore = sample(RESTORES, async || {
        let mut session = host.open_session(&id).await.unwrap();
        let rebuild = session.prewarm(&tool).await.unwrap().expect("rebuilt");
        assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(1), 0), "{rebuild:?}");
        rebuild.restore
    })
    .await;
    let with = steps.pop().unwrap();
    (steps.pop().unwrap(), with, restore)
}

fn ratio(value: f64, baseline: f64) -> String {
    if baseline > 0.0 { format!("{:.1}x", value / baseline) } else { "-".into() }
}

fn print(rows: &[(&str, Row)]) {
    let base = &rows[0].1;
    let cell = |d: Duration, b: Duration| format!("{d:.2?} ({})", ratio(d.as_secs_f64(), b.as_secs_f64()));
    println!("\ntoolhost languages benchmark: medians, (x Rust); {CALLS} warm calls, {INSTANCES} instances\n");
    println!(
        "| language | component | first compile | load from cache | fresh instance | warm call | snapshot 100 KiB | restore 100 KiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, r) in rows {
        println!(
            "| {name} | {:.1} MiB ({}) | {} | {} | {} | {} | {} | {} |",
            r.size as f64 / (1 << 20) as f64,
            ratio(r.size as f64, base.size as f64),
            cell(r.first_compile, base.first_compile),
            cell(r.cache_load.median, base.cache_load.median),
            cell(r.instance.median, base.instance.median),
            cell(r.warm_call.median, base.warm_call.median),
            cell(r.snapshot, base.snapshot),
            cell(r.restore.median, base.restore.median),
        );
    }
    println!("\np99: instance / warm call / restore");
    for (name, r) in rows {
        println!("  {name}: {:.2?} / {:.2?} / {:.2?}", r.instance.p99, r.warm_call.p99, r.restore.p99);
    }
    if let Some((_, python)) = rows.iter().find(|(name, _)| *name == "Python") {
        let verdict = |d: Duration, target: Duration| if d <= target { "met" } else { "missed" };
        println!(
            "\ntargets: Python fresh instance {:.2?} (<= 2 ms: {}), Python warm call {:.2?} (<= 50 us: {})",
            python.instance.median,
            verdict(python.instance.median, Duration::from_millis(2)),
            python.warm_call.median,
            verdict(python.warm_call.median, Duration::from_micros(50)),
        );
    }
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let languages = languages(workspace);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rows: Vec<(&str, Row)> =
        languages.iter().map(|language| (language.name, runtime.block_on(measure(language)))).collect();
    print(&rows);
}
