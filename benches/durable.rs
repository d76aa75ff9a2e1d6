//! Durability benchmark: what a durable step costs, how steps scale across concurrent
//! sessions, how fast a session resumes, and what a snapshot costs per step. Each figure
//! comes with a baseline measured in the same run. Prints tables.
//!
//!     cargo bench --bench durable
//!
//! Every store here commits with fsync (`Durability::Full`) on the machine's disk.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::store::Durability;
use toolhost::{EngineConfig, Host, HostConfig, Policy, SnapshotPolicy, SqliteStore, Store, Tool};

const COMMITS: usize = 1_000;
const WARMUP: usize = 50;
const CONCURRENT_SESSIONS: usize = 100;
const STEPS_PER_SESSION: usize = 40;
const RESUMES: usize = 30;
const SNAPSHOT_BYTES: usize = 1 << 20;
const REPLAYED_STEPS: usize = 10;
const POKES: usize = 20;

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats { median: at(0.5), p99: at(0.99) }
}

struct Tools {
    calculator: Arc<Tool>,
    ballast: Arc<Tool>,
}

fn host(store: Arc<dyn Store>, cache: &Path, snapshots: SnapshotPolicy) -> Host {
    let engine = EngineConfig { cache_dir: Some(cache.into()), max_instances: 256, ..EngineConfig::default() };
    let config = HostConfig { engine, policy: Policy::deny_all(), snapshots, ..HostConfig::default() };
    Host::with_store(config, store).expect("host")
}

async fn load(host: &Host, paths: &[std::path::PathBuf]) -> Tools {
    Tools { calculator: host.load_tool(&paths[0]).await.unwrap(), ballast: host.load_tool(&paths[1]).await.unwrap() }
}

/// The floor a durable commit stands on: one small row per transaction, fsynced, in the
/// same journal mode, with nothing of toolhost around it.
fn raw_sqlite_commit(dir: &Path) -> Stats {
    let conn = rusqlite::Connection::open(dir.join("raw.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE steps (session TEXT, seq INTEGER, body BLOB, PRIMARY KEY (session, seq))",
    )
    .unwrap();
    let body = vec![7u8; 200];
    let mut samples = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS + WARMUP {
        let started = Instant::now();
        let tx = conn.unchecked_transaction().unwrap();
        tx.execute("INSERT INTO steps VALUES ('s', ?1, ?2)", rusqlite::params![i as i64, body]).unwrap();
        tx.commit().unwrap();
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    stats(samples)
}

/// One session calling the stateless calculator: each call is a durable step.
async fn sequential_steps(host: &Host, tool: &Tool) -> Stats {
    let mut session = host.new_session().await.unwrap();
    let mut samples = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS + WARMUP {
        let input = json!({ "expression": format!("{i} * 2 + 1") });
        let started = Instant::now();
        black_box(session.call(tool, &input).await.unwrap());
        if i >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    stats(samples)
}

/// Steps per second of `sessions` sessions stepping at once (group commit shares fsyncs).
async fn concurrent_steps(host: &Host, tool: &Arc<Tool>, sessions: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sessions {
        let (host, tool) = (host.clone(), tool.clone());
        tasks.spawn(async move {
            let mut session = host.new_session().await.unwrap();
            for i in 0..STEPS_PER_SESSION {
                session.call(&tool, &json!({ "expression": format!("{i} + 1") })).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    (sessions * STEPS_PER_SESSION) as f64 / started.elapsed().as_secs_f64()
}

/// A ballast session with a 1 MiB state: filled (snapshot taken), then `REPLAYED_STEPS`
/// pokes committed without snapshots, so a resume restores 1 MiB and replays 10 steps.
async fn prepare_resume(store: &Arc<dyn Store>, cache: &Path, paths: &[std::path::PathBuf]) -> String {
    let filling = host(store.clone(), cache, SnapshotPolicy::default());
    let tools = load(&filling, paths).await;
    let mut session = filling.new_session().await.unwrap();
    session.call(&tools.ballast, &json!({"op": "fill", "bytes": SNAPSHOT_BYTES, "seed": 42})).await.unwrap();
    let id = session.id().to_owned();
    drop(session);
    let poking = host(store.clone(), cache, SnapshotPolicy { every: u32::MAX, keep: 3 });
    let tools = load(&poking, paths).await;
    let mut session = poking.open_session(&id).await.unwrap();
    for i in 0..REPLAYED_STEPS {
        session.call(&tools.ballast, &json!({"op": "poke", "offset": i * 1000, "letter": "z"})).await.unwrap();
    }
    id
}

/// Time to bring a session's ballast instance back: open + restore + replay.
async fn resume(host: &Host, tool: &Tool, id: &str) -> Stats {
    let mut samples = Vec::with_capacity(RESUMES);
    for _ in 0..RESUMES + 3 {
        let started = Instant::now();
        let mut session = host.open_session(id).await.unwrap();
        session.prewarm(tool).await.unwrap();
        samples.push(started.elapsed());
    }
    stats(samples.split_off(3))
}

/// Stored bytes added per step by a 1 MiB state that changes by one byte per step, with a
/// snapshot after every step, all kept (pruning would hide the growth): (step record bytes,
/// new snapshot chunk bytes) per step, and the snapshot's size.
async fn bytes_per_step(store: &Arc<dyn Store>, cache: &Path, paths: &[std::path::PathBuf]) -> (f64, f64, u64) {
    let host = host(store.clone(), cache, SnapshotPolicy { every: 1, keep: u32::MAX });
    let tool = load(&host, paths).await.ballast;
    let tool = &*tool;
    let mut session = host.new_session().await.unwrap();
    session.call(tool, &json!({"op": "fill", "bytes": SNAPSHOT_BYTES, "seed": 7})).await.unwrap();
    let before = store.storage_stats(session.id()).await.unwrap();
    for i in 0..POKES {
        session.call(tool, &json!({"op": "poke", "offset": 4096 + i * 50_000, "letter": "q"})).await.unwrap();
    }
    let after = store.storage_stats(session.id()).await.unwrap();
    let snapshot_bytes = store.snapshots(session.id()).await.unwrap().last().map_or(0, |s| s.bytes);
    let per = |a: u64, b: u64| (a - b) as f64 / POKES as f64;
    (per(after.step_bytes, before.step_bytes), per(after.chunk_bytes, before.chunk_bytes), snapshot_bytes)
}

fn row(name: &str, s: &Stats, baseline: Duration) {
    let ratio = s.median.as_secs_f64() / baseline.as_secs_f64();
    println!("| {name:<52} | {:>10.2?} | {:>10.2?} | {ratio:>8.1}x |", s.median, s.p99);
}

fn header(title: &str, baseline: &str) {
    println!("\n{title}\n");
    println!("| {:<52} | {:>10} | {:>10} | {:>9} |", "measurement", "median", "p99", baseline);
    println!("|{:-<54}|{:-<12}|{:-<12}|{:-<11}|", "", "", "", "");
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["calculator", "ballast"]).expect("building the tools");
    let cache = tempfile::tempdir().unwrap();
    // On the working tree's disk, not tmpfs: fsync must mean what it means in production.
    let data = tempfile::tempdir_in(workspace.join("target")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    let raw = raw_sqlite_commit(data.path());
    runtime.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(data.path().join("bench.db"), Durability::Full).unwrap());
        let host = host(store.clone(), cache.path(), SnapshotPolicy::default());
        let tools = load(&host, &paths).await;

        let step = sequential_steps(&host, &tools.calculator).await;
        let one = concurrent_steps(&host, &tools.calculator, 1).await;
        let many = concurrent_steps(&host, &tools.calculator, CONCURRENT_SESSIONS).await;

        let id = prepare_resume(&store, cache.path(), &paths).await;
        let resumed = resume(&host, &tools.ballast, &id).await;
        let mut fresh = Vec::with_capacity(RESUMES);
        for _ in 0..RESUMES {
            let mut session = host.new_session().await.unwrap();
            let started = Instant::now();
            session.prewarm(&tools.ballast).await.unwrap();
            fresh.push(started.elapsed());
        }
        let fresh = stats(fresh);
        let (step_bytes, chunk_bytes, snapshot_bytes) = bytes_per_step(&store, cache.path(), &paths).await;

        header("durable steps on SQLite (WAL, synchronous=FULL)", "x raw");
        row("raw SQLite insert + fsync commit (baseline)", &raw, raw.median);
        row("durable step: calculator call + commit", &step, raw.median);

        println!("\nthroughput ({STEPS_PER_SESSION} steps per session)\n");
        println!("| {:<52} | {:>12} | {:>9} |", "sessions stepping at once", "steps/s", "x 1");
        println!("|{:-<54}|{:-<14}|{:-<11}|", "", "", "");
        println!("| {:<52} | {one:>12.0} | {:>8.1}x |", "1 (baseline)", 1.0);
        println!("| {:<52} | {many:>12.0} | {:>8.1}x |", CONCURRENT_SESSIONS, many / one);

        header(&format!("resume: 1 MiB snapshot + {REPLAYED_STEPS} steps to replay ({RESUMES} resumes)"), "x fresh");
        row("fresh instance, nothing to restore (baseline)", &fresh, fresh.median);
        row("open session + restore snapshot + replay 10 steps", &resumed, fresh.median);

        println!("\nstored bytes per step: 1 MiB state, one byte changed per step, snapshot every step\n");
        println!("| {:<52} | {:>12} | {:>9} |", "what", "bytes/step", "x state");
        println!("|{:-<54}|{:-<14}|{:-<11}|", "", "", "");
        let ratio = |b: f64| b / snapshot_bytes as f64;
        println!("| {:<52} | {:>12} | {:>8.3}x |", "full snapshot copy (baseline)", snapshot_bytes, 1.0);
        println!("| {:<52} | {chunk_bytes:>12.0} | {:>8.3}x |", "new snapshot chunks", ratio(chunk_bytes));
        println!(
            "| {:<52} | {step_bytes:>12.0} | {:>8.3}x |",
            "step record (input, output, journal)",
            ratio(step_bytes)
        );
    });
}
