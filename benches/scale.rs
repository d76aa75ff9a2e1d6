//! Scale benchmark: what an open session costs on one host, how fast a hibernated session
//! comes back, and how resume cost depends on history. Each figure comes with a baseline
//! measured in the same run. Prints tables.
//!
//!     cargo bench --bench scale
//!
//! RSS is the process's `VmRSS`, so the figures include the in-memory store's copy of every
//! session's steps, state and snapshots; the per-session row subtracts a baseline of the same
//! sessions created without any call.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::store::Durability;
use toolhost::{
    EngineConfig, Host, HostConfig, InstanceBudget, Limits, MemoryStore, Policy, Session, SnapshotPolicy, SqliteStore,
    Store, Tool,
};

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

const OPEN_SESSIONS: usize = 100_000;
/// Overrides [`OPEN_SESSIONS`] (e.g. for a quick run of an unoptimized build).
const OPEN_SESSIONS_VAR: &str = "TOOLHOST_BENCH_SESSIONS";
const LIVE: u32 = 1_000;
const REACTIVATIONS: usize = 2_000;
/// Notes each reactivated session holds: a small state and a large one.
const NOTES: [usize; 2] = [10, 1_000];
const RESUMES: usize = 20;
const HISTORIES: [u64; 3] = [10, 1_000, 100_000];
const SNAPSHOT_BYTES: usize = 1 << 20;
const REPLAYED_STEPS: usize = 10;

fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).expect("kB") * 1024
}

/// Minor page faults of the process so far (`minflt`, the 10th field of `/proc/self/stat`):
/// each is a first touch of a 4 KiB page, which the kernel zeroes.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name (field 2) is parenthesized and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')').expect("(comm)") + 2..];
    after_name.split_whitespace().nth(7).and_then(|v| v.parse().ok()).expect("minflt")
}

fn host(store: Arc<dyn Store>, cache: &Path, live: u32, policy: Policy, snapshots: SnapshotPolicy) -> Host {
    let engine = EngineConfig { cache_dir: Some(cache.into()), max_instances: live + 8, ..EngineConfig::default() };
    let instances = InstanceBudget { live: Some(live), ..InstanceBudget::default() };
    Host::with_store(HostConfig { engine, policy, snapshots, instances, ..HostConfig::default() }, store).unwrap()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn us(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} us", d.as_secs_f64() * 1e6)
    }
}

/// 100,000 sessions opened and called once each (then idle), 1,000 instances live.
async fn open_sessions(paths: &Paths, cache: &Path) {
    let sessions_wanted = std::env::var(OPEN_SESSIONS_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(OPEN_SESSIONS);
    println!("\n{sessions_wanted} open sessions, {LIVE} live instances (calculator, memory store)\n");
    println!("| {:<52} | {:>10} | {:>12} | {:>14} |", "what", "time", "RSS added", "per session");
    println!("|{:-<54}|{:-<12}|{:-<14}|{:-<16}|", "", "", "", "");
    // Baseline: the same number of sessions created, never called (store record + handle).
    let rss_start = vm_rss();
    let h = host(Arc::new(MemoryStore::new()), cache, LIVE, Policy::deny_all(), SnapshotPolicy::default());
    let started = Instant::now();
    let mut bare: Vec<Session> = Vec::with_capacity(sessions_wanted);
    for _ in 0..sessions_wanted {
        bare.push(h.new_session().await.unwrap());
    }
    let bare_time = started.elapsed();
    let bare_rss = vm_rss().saturating_sub(rss_start);
    let line = |what: &str, time: Duration, rss: u64| {
        println!(
            "| {what:<52} | {:>10} | {:>8.1} MiB | {:>10.2} KiB |",
            us(time),
            mib(rss),
            rss as f64 / 1024.0 / sessions_wanted as f64
        );
    };
    line("sessions created, no call (baseline)", bare_time, bare_rss);

    // Measured while the baseline's sessions stay open: no freed memory is reused.
    let rss_start = vm_rss();
    let called = host(Arc::new(MemoryStore::new()), cache, LIVE, Policy::deny_all(), SnapshotPolicy::default());
    let calculator = called.load_tool(&paths.calculator).await.unwrap();
    let rss_start = rss_start.max(vm_rss());
    let started = Instant::now();
    let mut sessions: Vec<Session> = Vec::with_capacity(sessions_wanted);
    for i in 0..sessions_wanted {
        let mut session = called.new_session().await.unwrap();
        session.call(&calculator, &json!({"expression": format!("{i} + 1")})).await.unwrap();
        sessions.push(session);
    }
    let time = started.elapsed();
    let rss = vm_rss().saturating_sub(rss_start);
    let stats = called.instance_stats();
    line("sessions created + one call each, kept open", time, rss);
    // Still with every session above open, so its growth reuses no freed memory either.
    let per_live = live_instance_cost(paths, cache).await;
    let hibernated = rss.saturating_sub(bare_rss + u64::from(LIVE) * per_live);
    println!(
        "\nhost RSS {:.0} MiB in all, both sets open (target < 1 GiB); {} live, {} hibernated; a hibernated \
         session adds ~{:.2} KiB over a bare one (its step record in the store included; target <= 4 KiB)",
        mib(vm_rss()),
        stats.live,
        stats.hibernated,
        hibernated as f64 / 1024.0 / (sessions_wanted - LIVE as usize) as f64,
    );
    drop((sessions, bare, called, h));
}

/// Resident bytes of this process's memory mappings, by address range.
struct Mapping {
    start: u64,
    end: u64,
    rss: u64,
}

fn mappings() -> Vec<Mapping> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut found: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            found.push(Mapping { start, end, rss: 0 });
        } else if let (Some(rest), Some(last)) = (line.strip_prefix("Rss:"), found.last_mut()) {
            last.rss = rest.trim().trim_end_matches("kB").trim().parse::<u64>().expect("Rss in kB") * 1024;
        }
    }
    found
}

/// What a host's instance pools reserve (created with the host, before any instance): the
/// mappings that appeared, at least `MIN_POOL` large. The largest holds linear memories.
fn pools(before: &[Mapping], after: &[Mapping]) -> Vec<(u64, u64)> {
    const MIN_POOL: u64 = 64 << 20;
    let mut pools: Vec<(u64, u64)> = after
        .iter()
        .filter(|m| m.end - m.start >= MIN_POOL && !before.iter().any(|b| b.start == m.start && b.end == m.end))
        .map(|m| (m.start, m.end))
        .collect();
    pools.sort_by_key(|(start, end)| std::cmp::Reverse(end - start));
    pools
}

/// Resident bytes inside each of `ranges`, and outside all of them.
fn resident(maps: &[Mapping], ranges: &[(u64, u64)]) -> (Vec<u64>, u64) {
    let mut inside = vec![0; ranges.len()];
    let mut outside = 0;
    for m in maps {
        match ranges.iter().position(|(start, end)| m.start >= *start && m.end <= *end) {
            Some(i) => inside[i] += m.rss,
            None => outside += m.rss,
        }
    }
    (inside, outside)
}

/// Live instances: RSS of 1,000 live instances against the same sessions before their first
/// call, split into the guests' linear memories, the other pools (async stacks, tables) and
/// the rest (the host's heap: stores, WASI contexts, journals, step records).
async fn live_instance_cost(paths: &Paths, cache: &Path) -> u64 {
    const N: usize = 1_000;
    let no_host = mappings();
    let h = host(Arc::new(MemoryStore::new()), cache, N as u32, Policy::deny_all(), SnapshotPolicy::default());
    let pools = pools(&no_host, &mappings());
    let calculator = h.load_tool(&paths.calculator).await.unwrap();
    let mut sessions = Vec::with_capacity(N);
    for _ in 0..N {
        sessions.push(h.new_session().await.unwrap());
    }
    let before = vm_rss();
    let (pooled_before, rest_before) = resident(&mappings(), &pools);
    for (i, s) in sessions.iter_mut().enumerate() {
        s.call(&calculator, &json!({"expression": format!("{i}")})).await.unwrap();
    }
    let after = vm_rss();
    let (pooled_after, rest_after) = resident(&mappings(), &pools);
    let per = |bytes: u64| bytes as f64 / 1024.0 / N as f64;
    let total = per(after.saturating_sub(before));
    let grown: Vec<f64> = pooled_after.iter().zip(&pooled_before).map(|(a, b)| per(a.saturating_sub(*b))).collect();
    let guest = grown.first().copied().unwrap_or(0.0);
    let other_pools: f64 = grown.iter().skip(1).sum();
    let rest = per(rest_after.saturating_sub(rest_before));
    println!(
        "\nper live instance (calculator, first call + step record included): {total:.1} KiB of host RSS: \
         {guest:.1} KiB the guest's linear memory, {other_pools:.1} KiB async stack and tables (pools), \
         {rest:.1} KiB heap and other; beyond the guest's pages {:.1} KiB (target <= 64 KiB)",
        total - guest
    );
    (total * 1024.0) as u64
}

/// A hibernated stateful session's next call, snapshot in the cache, against a warm call,
/// for notes sessions holding `NOTES` notes each (the state, and so the snapshot the guest
/// decodes, stays that size: the measured calls are `get`s).
async fn reactivation(paths: &Paths, cache: &Path) {
    println!("\nreactivation of a hibernated stateful session (notes, snapshot in the cache, budget of 1)\n");
    println!("| {:<58} | {:>10} | {:>10} | {:>8} |", "what", "p50", "p99", "x warm");
    println!("|{:-<60}|{:-<12}|{:-<12}|{:-<10}|", "", "", "", "");
    for notes_held in NOTES {
        reactivation_with(paths, cache, notes_held).await;
    }
}

async fn reactivation_with(paths: &Paths, cache: &Path, notes_held: usize) {
    let h = host(Arc::new(MemoryStore::new()), cache, 1, Policy::grant_requested(), SnapshotPolicy::default());
    let notes = h.load_tool(&paths.notes).await.unwrap();
    let seeded = |h: Host, notes: Arc<Tool>| async move {
        let mut session = h.new_session().await.unwrap();
        for n in 0..notes_held {
            let add = json!({"op": "add", "title": format!("note {n}"), "body": "a body of a few words"});
            session.call(&notes, &add).await.unwrap();
        }
        session
    };
    let get = json!({"op": "get", "id": 1});
    let mut warm_session = seeded(h.clone(), notes.clone()).await;
    let snapshots = h.store().snapshots(warm_session.id()).await.unwrap();
    let snapshot_bytes = snapshots.last().map_or(0, |s| s.bytes);
    let mut warm = Vec::with_capacity(REACTIVATIONS);
    for _ in 0..REACTIVATIONS + 50 {
        let started = Instant::now();
        warm_session.call(&notes, &get).await.unwrap();
        warm.push(started.elapsed());
    }
    drop(warm_session);
    let (mut a, mut b) = (seeded(h.clone(), notes.clone()).await, seeded(h.clone(), notes.clone()).await);
    let (mut calls, mut rebuilds, mut restores) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..REACTIVATIONS + 50 {
        let session = if n % 2 == 0 { &mut a } else { &mut b };
        // The other session's call hibernated this one's instance (budget of 1).
        let started = Instant::now();
        let rebuild = session.prewarm(&notes).await.unwrap();
        let rebuilt = started.elapsed();
        session.call(&notes, &get).await.unwrap();
        calls.push(started.elapsed());
        if let Some(r) = rebuild.filter(|r| r.restored_from.is_some()) {
            assert_eq!(r.replayed, 0);
            rebuilds.push(rebuilt);
            restores.push(r.restore);
        }
    }
    let stats_line = |what: &str, s: &Stats, base: Duration| {
        println!(
            "| {what:<58} | {:>10} | {:>10} | {:>7.1}x |",
            us(s.median),
            us(s.p99),
            s.median.as_secs_f64() / base.as_secs_f64()
        );
    };
    let warm = stats(warm.split_off(50));
    let calls = stats(calls.split_off(50));
    let skip = 50.min(rebuilds.len() / 2);
    let (rebuilds, restores) = (stats(rebuilds.split_off(skip)), stats(restores.split_off(skip)));
    let kib = snapshot_bytes as f64 / 1024.0;
    stats_line(&format!("{notes_held} notes ({kib:.1} KiB snapshot): warm `get`, live (baseline)"), &warm, warm.median);
    stats_line("  reactivation: instantiate + restore from the cache", &rebuilds, warm.median);
    stats_line("    of which the guest's restore (decode)", &restores, warm.median);
    stats_line("  reactivation + the call", &calls, warm.median);
    let cache_hits = h.instance_stats().snapshot_cache_hits;
    assert!(cache_hits as usize >= REACTIVATIONS, "{cache_hits} snapshot cache hits");
}

/// Resume after a restart of a session whose tool took `steps` steps.
async fn resume_after(h: &Host, tool: &Tool, id: &str) -> (Stats, u32) {
    let mut samples = Vec::with_capacity(RESUMES);
    let mut replayed = 0;
    let rounds = if tool.kind() == toolhost::ToolKind::Stateless { RESUMES } else { RESUMES / 4 };
    for _ in 0..rounds + 1 {
        let started = Instant::now();
        let mut session = h.open_session(id).await.unwrap();
        let rebuild = session.prewarm(tool).await.unwrap().expect("rebuilt");
        samples.push(started.elapsed());
        replayed = rebuild.replayed;
    }
    (stats(samples.split_off(1)), replayed)
}

async fn resume_by_history(paths: &Paths, cache: &Path) {
    let limits = Limits { max_replay_steps: 200_000, ..Limits::default() };
    let grants = toolhost::ToolGrants { limits, ..toolhost::ToolGrants::default() };
    let policy = Policy::deny_all().with_tool("hostile", grants);
    let h = host(Arc::new(MemoryStore::new()), cache, 8, policy, SnapshotPolicy::default());
    let calculator = h.load_tool(&paths.calculator).await.unwrap();
    let hostile = h.load_tool(&paths.hostile).await.unwrap();
    println!("\nresume of a session by its tool's history (memory store; open + rebuild)\n");
    println!("| {:<52} | {:>10} | {:>10} | {:>9} |", "tool, steps", "p50", "p99", "replayed");
    println!("|{:-<54}|{:-<12}|{:-<12}|{:-<11}|", "", "", "", "");
    for steps in HISTORIES {
        for (tool, label) in [(&calculator, "calculator, declared stateless"), (&hostile, "echo (plain, replayed)")] {
            let mut session = h.new_session().await.unwrap();
            for i in 0..steps {
                let input = if tool.name() == "calculator" {
                    json!({"expression": format!("{i} + 1")})
                } else {
                    json!({"attack": "echo", "n": i})
                };
                session.call(tool, &input).await.unwrap();
            }
            let id = session.id().to_owned();
            drop(session);
            let (s, replayed) = resume_after(&h, tool, &id).await;
            println!(
                "| {:<52} | {:>10} | {:>10} | {replayed:>9} |",
                format!("{label}, {steps}"),
                us(s.median),
                us(s.p99)
            );
            h.delete_session(&id).await.unwrap();
        }
    }
}

/// The durable bench's 1 MiB snapshot + 10 replayed steps on SQLite, by phase.
async fn big_snapshot_resume(paths: &Paths, cache: &Path, data: &Path) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data.join("scale.db"), Durability::Full).unwrap());
    let filling = host(store.clone(), cache, 8, Policy::deny_all(), SnapshotPolicy::default());
    let ballast = filling.load_tool(&paths.ballast).await.unwrap();
    let mut session = filling.new_session().await.unwrap();
    session.call(&ballast, &json!({"op": "fill", "bytes": SNAPSHOT_BYTES, "seed": 42})).await.unwrap();
    let id = session.id().to_owned();
    drop(session);
    let poking = host(store.clone(), cache, 8, Policy::deny_all(), SnapshotPolicy { every: u32::MAX, keep: 3 });
    let ballast = poking.load_tool(&paths.ballast).await.unwrap();
    let mut session = poking.open_session(&id).await.unwrap();
    for i in 0..REPLAYED_STEPS {
        session.call(&ballast, &json!({"op": "poke", "offset": i * 1000, "letter": "z"})).await.unwrap();
    }
    drop(session);

    let h = host(store.clone(), cache, 8, Policy::deny_all(), SnapshotPolicy::default());
    let ballast = h.load_tool(&paths.ballast).await.unwrap();
    let (mut total, mut read, mut restore, mut replay, mut raw_read) = (vec![], vec![], vec![], vec![], vec![]);
    let mut faults = vec![];
    for _ in 0..RESUMES + 3 {
        let (started, faults_before) = (Instant::now(), minor_faults());
        let mut session = h.open_session(&id).await.unwrap();
        let rebuild = session.prewarm(&ballast).await.unwrap().expect("rebuilt");
        total.push(started.elapsed());
        faults.push(minor_faults() - faults_before);
        read.push(rebuild.snapshot_read);
        restore.push(rebuild.restore);
        replay.push(rebuild.replay);
        let started = Instant::now();
        let (_, bytes) = store.latest_snapshot(&id, "ballast", i64::MAX as u64).await.unwrap().expect("a snapshot");
        raw_read.push(started.elapsed());
        assert!(bytes.len() >= SNAPSHOT_BYTES);
    }
    println!("\nresume: 1 MiB snapshot + {REPLAYED_STEPS} steps to replay, SQLite (p50 of {RESUMES})\n");
    println!("| {:<52} | {:>10} | {:>10} |", "phase", "p50", "p99");
    println!("|{:-<54}|{:-<12}|{:-<12}|", "", "", "");
    for (what, samples) in [
        ("open + rebuild, in all", total),
        ("  snapshot read (chunks + reassembly)", read),
        ("  guest restore (JSON decode of 1 MiB)", restore),
        ("  steps read + 10 replayed", replay),
        ("Store::latest_snapshot alone (baseline)", raw_read),
    ] {
        let s = stats(samples.into_iter().skip(3).collect());
        println!("| {what:<52} | {:>10} | {:>10} |", us(s.median), us(s.p99));
    }
    faults.sort_unstable();
    let faults = faults[faults.len() / 2];
    println!(
        "\nminor page faults per resume (p50): {faults}, {:.1} MiB of pages touched for the first time \
         (the snapshot's copy into the guest and the guest's decoded state)",
        mib(faults * 4096)
    );
}

struct Paths {
    calculator: std::path::PathBuf,
    notes: std::path::PathBuf,
    hostile: std::path::PathBuf,
    ballast: std::path::PathBuf,
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = toolhost::guest_build::build(workspace, &["calculator", "notes", "hostile", "ballast"])
        .expect("building the tools");
    let paths = Paths {
        calculator: built[0].clone(),
        notes: built[1].clone(),
        hostile: built[2].clone(),
        ballast: built[3].clone(),
    };
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(workspace.join("target")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        open_sessions(&paths, cache.path()).await;
        reactivation(&paths, cache.path()).await;
        resume_by_history(&paths, cache.path()).await;
        big_snapshot_resume(&paths, cache.path(), data.path()).await;
    });
}
