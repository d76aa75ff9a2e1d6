//! One host, many open sessions: the pool holds `max_instances` live instances; past the
//! live-instance budget idle instances are hibernated and rebuilt transparently on their
//! session's next call; a call that finds every instance busy waits, then gets `Busy`; a tool
//! declared stateless resumes without replaying; a plain tool's replay is capped.
//!
//! Memory is measured per process, so the 20,000-session test re-runs itself alone in a child
//! process.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost::{
    CallError, EngineConfig, Host, HostConfig, InstanceBudget, LeaseConfig, Limits, Policy, Session, ToolKind,
};

use crate::backends::TestStore;
use crate::support::{engine_config, grants, guests};

fn host_with(engine: EngineConfig, instances: InstanceBudget) -> Host {
    Host::new(HostConfig { engine, policy: Policy::grant_requested(), instances, ..HostConfig::default() }).unwrap()
}

fn budget(live: u32) -> InstanceBudget {
    InstanceBudget { live: Some(live), ..InstanceBudget::default() }
}

fn add(title: &str) -> Value {
    json!({"op": "add", "title": title, "body": format!("body of {title}")})
}

fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).expect("a number of kB") * 1024
}

/// A permutation of `0..n` from a fixed seed (xorshift), so failures reproduce.
fn shuffled(n: usize, mut seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    order
}

/// wasmtime's pool defaults to 1,000 async stacks; every dimension must follow
/// `max_instances`, so more sessions than that each keep a live instance.
#[tokio::test]
async fn the_pool_holds_max_instances_sessions_each_with_a_live_instance() {
    const SESSIONS: u32 = 1_050;
    let engine = EngineConfig { max_instances: SESSIONS, ..engine_config() };
    let host = host_with(engine, InstanceBudget::default());
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let mut session = host.new_session().await.unwrap();
        let out = session.call(&calculator, &json!({"expression": format!("{i} + 1")})).await;
        assert_eq!(out.unwrap_or_else(|e| panic!("session {i}: {e}"))["value"], f64::from(i + 1));
        sessions.push(session);
    }
    let stats = host.instance_stats();
    assert_eq!((stats.limit, stats.live, stats.idle, stats.hibernated), (1_050, 1_050, 1_050, 0), "{stats:?}");
    assert!(sessions.iter().all(|s| s.live_instances().eq(["calculator"])));
    drop(sessions);
    assert_eq!(host.instance_stats().live, 0, "closed sessions free their places");
}

/// A budget over the engine's pool is refused up front rather than failing at instantiation.
#[test]
fn a_budget_over_the_pool_is_refused() {
    let engine = EngineConfig { max_instances: 8, ..engine_config() };
    let refused = Host::new(HostConfig { engine, instances: budget(9), ..HostConfig::default() });
    let error = refused.err().expect("refused").to_string();
    assert!(error.contains("live-instance budget (9)") && error.contains("`max_instances` (8)"), "{error}");
}

const CHILD: &str = "TOOLHOST_SCALE_CHILD";
const MANY_SESSIONS: usize = 20_000;
const MANY_BUDGET: u32 = 500;

/// Runs the 20,000 sessions alone in a child process: RSS is per process.
#[test]
fn twenty_thousand_open_sessions_share_500_live_instances() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        return runtime.block_on(many_sessions());
    }
    let text = crate::support::run_in_child("scale::twenty_thousand_open_sessions_share_500_live_instances", CHILD);
    assert!(text.contains("sessions: 20000"), "the child ran nothing:\n{text}");
}

/// Sessions are called from this many tasks, interleaved, each owning a share of them.
const CALLERS: usize = 4;

async fn many_sessions() {
    let engine = EngineConfig { max_instances: MANY_BUDGET + 8, ..engine_config() };
    let host = host_with(engine, budget(MANY_BUDGET));
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let rss_start = vm_rss_bytes();
    let started = Instant::now();
    let mut shares: Vec<Vec<(usize, Session)>> = (0..CALLERS).map(|_| Vec::new()).collect();
    for i in 0..MANY_SESSIONS {
        shares[i % CALLERS].push((i, host.new_session().await.unwrap()));
    }
    let opened = started.elapsed();
    let callers = shares.into_iter().enumerate().map(|(caller, mut share)| {
        let notes = notes.clone();
        tokio::spawn(async move {
            for round in 1..=2u64 {
                for at in shuffled(share.len(), round * 10 + caller as u64) {
                    let (i, session) = &mut share[at];
                    let out = session.call(&notes, &add(&format!("s{i} r{round}"))).await;
                    let out = out.unwrap_or_else(|e| panic!("session {i}, round {round}: {e}"));
                    // The tool's own counters: restored from its snapshot after hibernation.
                    assert_eq!(out, json!({"id": round, "notes": round}), "session {i}, round {round}");
                }
            }
            // Its state too: every note is there, under its session.
            for at in shuffled(share.len(), 3).into_iter().take(100) {
                let (i, session) = &mut share[at];
                let note = session.call(&notes, &json!({"op": "get", "id": 1})).await.unwrap();
                assert_eq!(note["title"], format!("s{i} r1"));
                let found = session.call(&notes, &json!({"op": "search", "query": "r2"})).await.unwrap();
                assert_eq!(found["matches"][0]["title"], format!("s{i} r2"));
            }
            share
        })
    });
    let mut sessions = Vec::new();
    for caller in callers.collect::<Vec<_>>() {
        sessions.extend(caller.await.unwrap());
    }
    let stats = host.instance_stats();
    let rss = vm_rss_bytes();
    println!(
        "sessions: {}, opened in {opened:?}, all calls in {:?}; {stats:?}; RSS {} MiB (started at {} MiB)",
        sessions.len(),
        started.elapsed(),
        rss >> 20,
        rss_start >> 20
    );
    assert_eq!(sessions.len(), MANY_SESSIONS);
    assert!(stats.live <= MANY_BUDGET as usize, "{stats:?}");
    assert!(stats.hibernated >= (MANY_SESSIONS - MANY_BUDGET as usize) as u64, "{stats:?}");
    assert!(stats.snapshot_cache_hits > 0, "reactivations read the cache: {stats:?}");
    assert!(rss < 1 << 30, "RSS {} MiB", rss >> 20);
}

/// A call that finds every live instance busy waits for one to become idle, then fails typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_a_busy_budget_then_gets_busy() {
    let instances =
        InstanceBudget { live: Some(1), busy_wait: Duration::from_millis(200), ..InstanceBudget::default() };
    let host = host_with(engine_config(), instances);
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let mut sleeper = host.new_session().await.unwrap();
    let mut waiter = host.new_session().await.unwrap();
    let tool = hostile.clone();
    let sleeping = tokio::spawn(async move {
        let out = sleeper.call(&tool, &json!({"attack": "sleep", "ms": 1_500})).await;
        (sleeper, out)
    });
    // Until the sleeper's call holds the only place (its first call instantiates first).
    while host.instance_stats().live == 0 || host.instance_stats().idle > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let refused = waiter.call(&hostile, &json!({"attack": "echo", "n": 1})).await;
    assert!(matches!(refused, Err(CallError::Busy { limit: 1, .. })), "{refused:?}");
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited first");
    let (mut sleeper, slept) = sleeping.await.unwrap();
    slept.unwrap();
    // Once the sleeper's instance is idle, the waiter takes its place; the sleeper's session
    // then takes it back, rebuilt.
    assert_eq!(waiter.call(&hostile, &json!({"attack": "echo", "n": 2})).await.unwrap()["echo"], 2);
    assert_eq!(sleeper.call(&hostile, &json!({"attack": "echo", "n": 3})).await.unwrap()["echo"], 3);
    assert_eq!(host.instance_stats().hibernated, 2);

    // A waiter that gets a place while it waits is served, not refused.
    let tool = hostile.clone();
    let sleeping = tokio::spawn(async move { sleeper.call(&tool, &json!({"attack": "sleep", "ms": 100})).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(waiter.call(&hostile, &json!({"attack": "echo", "n": 4})).await.unwrap()["echo"], 4);
    sleeping.await.unwrap().unwrap();
}

/// A session hibernated on one host, closed, continues on another host of the same store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernated_session_continues_on_another_host() {
    let Some(db) = TestStore::postgres().await else { return };
    let config = |holder: &str| HostConfig {
        engine: engine_config(),
        policy: Policy::grant_requested(),
        leases: Some(LeaseConfig { holder: holder.into(), ..LeaseConfig::default() }),
        instances: budget(1),
        ..HostConfig::default()
    };
    let a = Host::with_store(config("host-a"), db.open().await).unwrap();
    let notes = a.load_tool(&guests().notes).await.unwrap();
    let mut first = a.new_session().await.unwrap();
    assert_eq!(first.call(&notes, &add("one")).await.unwrap(), json!({"id": 1, "notes": 1}));
    let mut second = a.new_session().await.unwrap();
    assert_eq!(second.call(&notes, &add("other")).await.unwrap(), json!({"id": 1, "notes": 1}));
    assert_eq!(first.live_instances().count(), 0, "the first session's instance was hibernated");
    let id = first.id().to_owned();
    first.close().await.unwrap();

    let b = Host::with_store(config("host-b"), db.open().await).unwrap();
    let notes_b = b.load_tool(&guests().notes).await.unwrap();
    let mut resumed = b.open_session(&id).await.unwrap();
    assert_eq!(resumed.call(&notes_b, &add("two")).await.unwrap(), json!({"id": 2, "notes": 2}));
    let found = resumed.call(&notes_b, &json!({"op": "search", "query": "one"})).await.unwrap();
    assert_eq!(found["matches"][0]["title"], "one");
    // Host A's other session carries on, rebuilt after host A hibernated nothing more.
    assert_eq!(second.call(&notes, &add("other two")).await.unwrap(), json!({"id": 2, "notes": 2}));
    resumed.close().await.unwrap();
    second.close().await.unwrap();
}

/// A stateless-declared tool resumes in one instantiation, whatever its history.
#[tokio::test]
async fn a_stateless_tool_with_10000_steps_resumes_without_replaying() {
    const STEPS: u64 = 10_000;
    let host = host_with(engine_config(), InstanceBudget::default());
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    assert_eq!(calculator.kind(), ToolKind::Stateless);
    let mut session = host.new_session().await.unwrap();
    for i in 0..STEPS {
        let out = session.call(&calculator, &json!({"expression": format!("{i} * 2")})).await.unwrap();
        assert_eq!(out["value"], (i * 2) as f64);
    }
    let id = session.id().to_owned();
    drop(session);
    let mut reopened = host.open_session(&id).await.unwrap();
    let rebuild = reopened.prewarm(&calculator).await.unwrap().expect("a new handle rebuilds");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (None, 0), "{rebuild:?}");
    assert_eq!(reopened.call(&calculator, &json!({"expression": "6 * 7"})).await.unwrap()["value"], 42.0);
    assert_eq!(reopened.last_step(), STEPS + 1);
}

/// A plain tool (it may keep state, so it is replayed) is not rebuilt past `max_replay_steps`:
/// the error says how to avoid it; within the cap it replays as before.
#[tokio::test]
async fn a_plain_tool_s_replay_is_capped() {
    let limits = Limits { max_replay_steps: 4, ..Limits::default() };
    let policy = Policy::deny_all().with_tool("hostile", grants(&[], limits));
    let host = Host::new(HostConfig { engine: engine_config(), policy, ..HostConfig::default() }).unwrap();
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    assert_eq!(hostile.kind(), ToolKind::Plain);
    let mut session = host.new_session().await.unwrap();
    for n in 0..4 {
        session.call(&hostile, &json!({"attack": "echo", "n": n})).await.unwrap();
    }
    let id = session.id().to_owned();
    drop(session);
    let mut within = host.open_session(&id).await.unwrap();
    let rebuild = within.prewarm(&hostile).await.unwrap().expect("rebuilt");
    assert_eq!(rebuild.replayed, 4);
    within.call(&hostile, &json!({"attack": "echo", "n": 4})).await.unwrap();
    drop(within);

    let mut over = host.open_session(&id).await.unwrap();
    let refused = over.call(&hostile, &json!({"attack": "echo", "n": 5})).await;
    let Err(error @ CallError::ReplayTooLong { steps: 5, limit: 4, .. }) = &refused else {
        panic!("expected ReplayTooLong, got {refused:?}")
    };
    let message = error.to_string();
    assert!(message.contains("export_stateful_tool!") && message.contains("export_stateless_tool!"), "{message}");
    assert_eq!(over.last_step(), 5, "nothing was committed");

    let details = host.session_details(&id).await.unwrap();
    let replay = details.replay_lengths();
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!((replay[0].tool.as_str(), replay[0].snapshot, replay[0].steps), ("hostile", None, 5));
}

/// The cache serves a hibernated stateful session's snapshot: reactivation reads no store.
#[tokio::test]
async fn reactivation_restores_from_the_snapshot_cache() {
    let host = host_with(EngineConfig { max_instances: 4, ..engine_config() }, budget(1));
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let mut a = host.new_session().await.unwrap();
    let mut b = host.new_session().await.unwrap();
    a.call(&notes, &add("a1")).await.unwrap();
    b.call(&notes, &add("b1")).await.unwrap();
    let rebuild = a.prewarm(&notes).await.unwrap().expect("hibernated, so rebuilt");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(1), 0), "{rebuild:?}");
    let stats = host.instance_stats();
    assert_eq!((stats.live, stats.hibernated, stats.snapshot_cache_hits), (1, 2, 1), "{stats:?}");
    assert_eq!(a.call(&notes, &add("a2")).await.unwrap(), json!({"id": 2, "notes": 2}));
}
