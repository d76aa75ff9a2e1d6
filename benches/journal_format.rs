//! Journal format benchmark: the cost of the versioned, self-describing step journal (JSON
//! behind a version tag) against the postcard encoding it replaced, on the journals of real
//! durable steps (the durable bench's calculator calls, notes steps with state reads and
//! writes, and a journaled model answer), set beside the durable step commit the encoding is
//! part of. Baselines are measured in the same run. Prints tables.
//!
//!     cargo bench --bench journal_format
//!
//! The store commits with fsync (`Durability::Full`) on the working tree's disk.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::contract::{ChatResponse, FinishReason, Usage, decode_journal, encode_journal};
use toolhost::store::Durability;
use toolhost::{EngineConfig, Host, HostConfig, JournalEntry, Policy, SnapshotPolicy, SqliteStore, Store};

const STEPS: usize = 300;
const WARMUP: usize = 30;
const ROUNDS: usize = 200;

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

/// Runs `STEPS` durable steps of each kind; returns the commit latencies and the session id.
async fn run_steps(host: &Host, paths: &[std::path::PathBuf]) -> (Stats, String) {
    let calculator = host.load_tool(&paths[0]).await.unwrap();
    let notes = host.load_tool(&paths[1]).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let mut steps = Vec::with_capacity(STEPS);
    for i in 0..STEPS + WARMUP {
        let started = Instant::now();
        let call = match i % 3 {
            0 => session.call(&calculator, &json!({ "expression": format!("{i} * 2 + 1") })).await,
            1 => session.call(&notes, &json!({ "op": "add", "title": format!("n{i}"), "body": "some text" })).await,
            _ => session.call(&notes, &json!({ "op": "list" })).await,
        };
        black_box(call.unwrap());
        if i >= WARMUP {
            steps.push(started.elapsed());
        }
    }
    (stats(steps), session.id().to_owned())
}

/// A step that made one model call, as the model capability journals it.
fn model_journal() -> Vec<JournalEntry> {
    let response = ChatResponse {
        text: "The total is 12.85 euros; I filed a note with it.".into(),
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
        usage: Usage { input_tokens: 230, output_tokens: 43 },
        model: "qwen2.5-coder-1.5b".into(),
    };
    vec![
        JournalEntry::WallClockRun { start_nanos: 1_764_000_000_000_000_000, count: 2 },
        JournalEntry::Model { model: "default".into(), request: "0f".repeat(32), result: Ok(response) },
    ]
}

/// Median time of `f` over `ROUNDS` rounds, per journal.
fn per_journal(journals: usize, mut f: impl FnMut()) -> Duration {
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        f();
        samples.push(started.elapsed() / journals as u32);
    }
    stats(samples).median
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["calculator", "notes"]).expect("building the tools");
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(workspace.join("target")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    let (commit, mut journals) = runtime.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(data.path().join("bench.db"), Durability::Full).unwrap());
        let engine = EngineConfig { cache_dir: Some(cache.path().into()), ..EngineConfig::default() };
        // No snapshots: they would prune the journals of the steps they cover.
        let snapshots = SnapshotPolicy { every: u32::MAX, keep: 1 };
        let config = HostConfig { engine, policy: Policy::grant_requested(), snapshots, ..HostConfig::default() };
        let host = Host::with_store(config, store.clone()).unwrap();
        let (commit, id) = run_steps(&host, &paths).await;
        let journals: Vec<Vec<JournalEntry>> =
            store.steps(&id, None, 0).await.unwrap().into_iter().map(|s| s.journal).collect();
        (commit, journals)
    });
    journals.push(model_journal());
    let entries: usize = journals.iter().map(Vec::len).sum();
    let legacy: Vec<Vec<u8>> = journals.iter().map(|j| postcard::to_stdvec(j).unwrap()).collect();
    let current: Vec<Vec<u8>> = journals.iter().map(|j| encode_journal(j).unwrap()).collect();
    for (bytes, journal) in legacy.iter().chain(&current).zip(journals.iter().chain(&journals)) {
        assert_eq!(&decode_journal(bytes).unwrap(), journal, "both encodings decode to the same journal");
    }
    let n = journals.len();
    let decode_old = per_journal(n, || {
        for bytes in &legacy {
            black_box(postcard::from_bytes::<Vec<JournalEntry>>(bytes).unwrap());
        }
    });
    let decode_new = per_journal(n, || {
        for bytes in &current {
            black_box(decode_journal(bytes).unwrap());
        }
    });
    let encode_old = per_journal(n, || {
        for journal in &journals {
            black_box(postcard::to_stdvec(journal).unwrap());
        }
    });
    let encode_new = per_journal(n, || {
        for journal in &journals {
            black_box(encode_journal(journal).unwrap());
        }
    });
    let size = |blobs: &[Vec<u8>]| blobs.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;

    println!("\njournal encodings: {n} step journals ({entries} entries) of calculator, notes and model steps\n");
    println!("| {:<44} | {:>12} | {:>10} |", "measurement (per step journal)", "median", "x postcard");
    println!("|{:-<46}|{:-<14}|{:-<12}|", "", "", "");
    let ratio = |new: Duration, old: Duration| new.as_secs_f64() / old.as_secs_f64();
    println!("| {:<44} | {:>12.2?} | {:>9.2}x |", "decode, postcard (baseline)", decode_old, 1.0);
    println!("| {:<44} | {:>12.2?} | {:>9.2}x |", "decode, versioned JSON", decode_new, ratio(decode_new, decode_old));
    println!("| {:<44} | {:>12.2?} | {:>9.2}x |", "encode, postcard (baseline)", encode_old, 1.0);
    println!("| {:<44} | {:>12.2?} | {:>9.2}x |", "encode, versioned JSON", encode_new, ratio(encode_new, encode_old));
    println!("| {:<44} | {:>10.0} B | {:>9.2}x |", "bytes, postcard (baseline)", size(&legacy), 1.0);
    println!(
        "| {:<44} | {:>10.0} B | {:>9.2}x |",
        "bytes, versioned JSON",
        size(&current),
        size(&current) / size(&legacy)
    );

    let extra = encode_new.saturating_sub(encode_old);
    println!("\nstep commit (SQLite, fsync), the same run\n");
    println!("| {:<44} | {:>12} | {:>12} |", "measurement", "median", "p99");
    println!("|{:-<46}|{:-<14}|{:-<14}|", "", "", "");
    println!("| {:<44} | {:>12.2?} | {:>12.2?} |", "durable step, versioned JSON journal", commit.median, commit.p99);
    println!(
        "| {:<44} | {:>12.2?} | {:>11.2}% |",
        "JSON encode over postcard, share of a step",
        extra,
        100.0 * extra.as_secs_f64() / commit.median.as_secs_f64()
    );
}
