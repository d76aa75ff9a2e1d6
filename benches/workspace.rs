//! Workspace benchmark: what a session-workspace file write costs as part of a durable step,
//! against `state.set` of the same bytes in the same tool and run (the baseline), and what a
//! 1-byte change to a 1 MiB workspace file stores. Prints tables.
//!
//!     cargo bench --bench workspace
//!
//! SQLite with fsync (`Durability::Full`) on the working tree's disk. Steps alternate between
//! the workspace write and the state write, so both see the same disk. No snapshots are taken
//! (the fixture is stateful; a snapshot per step would cost both sides the same).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::store::Durability;
use toolhost::{
    Access, EngineConfig, Host, HostConfig, Policy, SnapshotPolicy, SqliteStore, StateGrant, Store, ToolGrants,
    WorkspaceGrant,
};

const STEPS: usize = 500;
const WARMUP: usize = 30;
const FILE_BYTES: usize = 4096;
const BIG_FILE: usize = 1 << 20;
const POKES: usize = 20;

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

fn host(store: Arc<dyn Store>, cache: &Path) -> Host {
    let engine = EngineConfig { cache_dir: Some(cache.into()), ..EngineConfig::default() };
    let grants = ToolGrants {
        state: StateGrant { namespaces: [("bench".to_owned(), Access::ReadWrite)].into(), ..StateGrant::default() },
        workspace: Some(WorkspaceGrant::at("/workspace")),
        ..ToolGrants::default()
    };
    let policy = Policy::deny_all().with_tool("files", grants);
    let snapshots = SnapshotPolicy { every: u32::MAX, keep: 1 };
    Host::with_store(HostConfig { engine, policy, snapshots, ..HostConfig::default() }, store).expect("host")
}

fn row(name: &str, s: &Stats, baseline: Duration) {
    let ratio = s.median.as_secs_f64() / baseline.as_secs_f64();
    println!("| {name:<52} | {:>10.2?} | {:>10.2?} | {ratio:>8.2}x |", s.median, s.p99);
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["files"]).expect("building the fixture");
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(workspace.join("target")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(data.path().join("bench.db"), Durability::Full).unwrap());
        let host = host(store.clone(), cache.path());
        let tool = host.load_tool(&paths[0]).await.unwrap();
        let mut session = host.new_session().await.unwrap();
        let (mut files, mut states) = (Vec::with_capacity(STEPS), Vec::with_capacity(STEPS));
        for i in 0..STEPS + WARMUP {
            for (to, samples) in [("file", &mut files), ("state", &mut states)] {
                let input = json!({"op": "put", "to": to, "key": "data.bin", "bytes": FILE_BYTES, "salt": i});
                let started = Instant::now();
                session.call(&tool, &input).await.unwrap();
                if i >= WARMUP {
                    samples.push(started.elapsed());
                }
            }
        }
        // Each workspace step is paired with the state step right after it: the median of the per-pair
        // ratios is steadier on a shared machine than the ratio of the medians.
        let mut ratios: Vec<f64> = files.iter().zip(&states).map(|(f, s)| f.as_secs_f64() / s.as_secs_f64()).collect();
        ratios.sort_by(f64::total_cmp);
        let paired = ratios[ratios.len() / 2];
        let (files, states) = (stats(files), stats(states));
        println!("\nworkspace write vs state.set, {FILE_BYTES} bytes per step (SQLite, synchronous=FULL)\n");
        println!("| {:<52} | {:>10} | {:>10} | {:>9} |", "measurement", "median", "p99", "x state");
        println!("|{:-<54}|{:-<12}|{:-<12}|{:-<11}|", "", "", "", "");
        row("state.set of 4 KiB + step commit (baseline)", &states, states.median);
        row("workspace: 4 KiB file write + scan + step commit", &files, states.median);
        println!("\nmedian of the {STEPS} per-pair ratios (workspace step / the state step right after it): {paired:.2}x (target <= 1.5x)");

        let mut session = host.new_session().await.unwrap();
        session.call(&tool, &json!({"op": "fill", "path": "big.bin", "bytes": BIG_FILE, "seed": 11})).await.unwrap();
        let chunks_of = |details: &toolhost::SessionDetails| -> HashSet<[u8; 32]> {
            details.workspaces["files"]["big.bin"].chunks().iter().copied().collect()
        };
        let before = store.storage_stats(session.id()).await.unwrap();
        let mut known = chunks_of(&host.session_details(session.id()).await.unwrap());
        let (mut new_chunks, mut scan) = (0usize, Vec::with_capacity(POKES));
        for i in 0..POKES {
            let input = json!({"op": "poke", "path": "big.bin", "offset": 4096 + i * 50_000, "byte": i});
            let started = Instant::now();
            session.call(&tool, &input).await.unwrap();
            scan.push(started.elapsed());
            let now = chunks_of(&host.session_details(session.id()).await.unwrap());
            new_chunks += now.difference(&known).count();
            known = now;
        }
        let after = store.storage_stats(session.id()).await.unwrap();
        let per = |a: u64, b: u64| (a - b) as f64 / POKES as f64;
        println!("\n1-byte change to a 1 MiB workspace file, per step ({POKES} steps)\n");
        println!("| {:<52} | {:>12} |", "measurement", "per step");
        println!("|{:-<54}|{:-<14}|", "", "");
        println!("| {:<52} | {:>12.1} |", "new chunks stored (target <= 2)", new_chunks as f64 / POKES as f64);
        println!("| {:<52} | {:>10.0} B |", "new chunk bytes stored", per(after.chunk_bytes, before.chunk_bytes));
        println!(
            "| {:<52} | {:>10.0} B |",
            "step record bytes (input, journal, file changes)",
            per(after.step_bytes, before.step_bytes)
        );
        println!("| {:<52} | {:>10.0} B |", "the file's logical size", BIG_FILE as f64);
        let scan = stats(scan);
        println!("| {:<52} | {:>12.2?} |", "step time, median (poke + 1 MiB scan + commit)", scan.median);
    });
}
