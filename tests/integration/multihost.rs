//! Several host processes on one store, on both backends: a host killed with SIGKILL
//! mid-session is taken over once its lease expires; a host paused (SIGSTOP) past its lease
//! is refused at commit when it resumes; a thousand sessions spread over two hosts that are
//! killed at random lose and repeat no step.
//!
//! The hosts are this test binary re-executed (`multihost::host_child`), like the crash
//! harness, so no separately built binary is involved.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost::{
    CallError, EngineConfig, Host, HostConfig, LeaseConfig, ModelProvider, SessionError, SnapshotPolicy, Store,
};

use crate::backends::{TestStore, on_both_backends};
use crate::crash::{ReferenceModel, TcpModel, next_random, reply_for, script, summarize};
use crate::durable::policy;
use crate::support::guests;

on_both_backends!(
    a_killed_host_s_session_is_taken_over_after_its_lease_expires,
    a_host_paused_past_its_lease_cannot_commit_when_it_resumes,
    a_thousand_sessions_over_two_hosts_killed_at_random_lose_and_repeat_nothing,
);

const SEED: [u8; 32] = [7; 32];
/// Exit code of a host child refused for a lost lease.
const LEASE_LOST_EXIT: i32 = 3;
const BULK_SESSIONS: usize = 1000;

fn tool_paths() -> Vec<PathBuf> {
    vec![guests().notes.clone(), guests().calculator.clone(), guests().hostile.clone()]
}

fn host(
    store: Arc<dyn Store>,
    cache: &Path,
    leases: Option<LeaseConfig>,
    models: Option<Arc<dyn ModelProvider>>,
) -> Host {
    let engine = EngineConfig { cache_dir: Some(cache.into()), max_instances: 64, ..EngineConfig::default() };
    let snapshots = SnapshotPolicy { every: 2, keep: 2 };
    let config = HostConfig { engine, policy: policy(), snapshots, models, leases, ..HostConfig::default() };
    Host::with_store(config, store).unwrap()
}

async fn load_tools(host: &Host) -> HashMap<String, Arc<toolhost::Tool>> {
    let mut loaded = HashMap::new();
    for path in tool_paths() {
        let tool = host.load_tool(&path).await.unwrap();
        loaded.insert(tool.name().to_owned(), tool);
    }
    loaded
}

// ---- the host process ----

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[test]
#[ignore = "a host process of the multihost tests"]
fn host_child() {
    let Ok(mode) = std::env::var("TOOLHOST_MH_MODE") else { return };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Sessions' futures stay on this thread (wasmtime stores are not `Sync`).
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let store = toolhost::store::open(&env("TOOLHOST_MH_STORE")).await.unwrap();
        let ttl = Duration::from_millis(env("TOOLHOST_MH_TTL_MS").parse().unwrap());
        let leases = LeaseConfig { holder: env("TOOLHOST_MH_NAME"), ttl, renew_every: ttl / 4 };
        let models =
            std::env::var("TOOLHOST_MH_MODEL").ok().map(|addr| Arc::new(TcpModel { addr }) as Arc<dyn ModelProvider>);
        let host = host(store, Path::new(&env("TOOLHOST_MH_CACHE")), Some(leases), models);
        match mode.as_str() {
            "script" => run_script_leased(&host, &env("TOOLHOST_MH_SESSION")).await,
            "worker" => run_worker(&host).await,
            other => panic!("unknown mode {other}"),
        }
    });
}

/// Takes session `id` (waiting for another host's lease) and runs the script to its end.
async fn run_script_leased(host: &Host, id: &str) {
    let tools = load_tools(host).await;
    let started = Instant::now();
    let mut session = host.open_session_waiting(id, Duration::from_secs(120)).await.unwrap();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    eprintln!(
        "MH acquired token={} waited_ms={} at_step={} at_ms={now_ms}",
        session.lease_token().unwrap(),
        started.elapsed().as_millis(),
        session.last_step()
    );
    for (tool, input) in &script()[session.last_step() as usize..] {
        match session.call(&tools[*tool], input).await {
            Ok(_) => {}
            Err(e @ CallError::LeaseLost { .. }) => {
                eprintln!("MH refused: {e}");
                std::process::exit(LEASE_LOST_EXIT);
            }
            Err(e) => panic!("{e}"),
        }
    }
    session.close().await.unwrap();
}

/// The steps of bulk session `k`.
fn bulk_script(k: usize) -> Vec<(&'static str, Value)> {
    vec![
        ("calculator", json!({"expression": format!("{k} + 1")})),
        ("notes", json!({"op": "add", "title": format!("session {k}"), "body": "bulk"})),
        ("calculator", json!({"expression": format!("{k} * 2")})),
    ]
}

/// Runs bulk sessions that no other host holds, 8 at a time, until all are complete.
async fn run_worker(host: &Host) {
    let tools = Arc::new(load_tools(host).await);
    let mut random = 0x2545_F491_4F6C_DD1D ^ std::process::id() as u64;
    loop {
        let mut todo: Vec<String> = host
            .list_sessions()
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.id.starts_with("bulk-") && s.steps < 3)
            .map(|s| s.id)
            .collect();
        if todo.is_empty() {
            return;
        }
        for i in (1..todo.len()).rev() {
            todo.swap(i, next_random(&mut random) as usize % (i + 1));
        }
        let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slots = Arc::new(tokio::sync::Semaphore::new(8));
        let mut running = tokio::task::JoinSet::new();
        for id in todo {
            let permit = slots.clone().acquire_owned().await.unwrap();
            let (host, tools, progress) = (host.clone(), tools.clone(), progress.clone());
            running.spawn_local(async move {
                let _permit = permit;
                let mut session = match host.open_session(&id).await {
                    Ok(session) => session,
                    Err(SessionError::Leased { .. }) => return,
                    Err(e) => panic!("{e}"),
                };
                let k: usize = id["bulk-".len()..].parse().unwrap();
                for (tool, input) in &bulk_script(k)[session.last_step() as usize..] {
                    match session.call(&tools[*tool], input).await {
                        Ok(_) => {}
                        Err(CallError::LeaseLost { .. }) => return,
                        Err(e) => panic!("{id}: {e}"),
                    }
                }
                progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                session.close().await.unwrap();
            });
        }
        while let Some(done) = running.join_next().await {
            done.unwrap();
        }
        if progress.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            // Everything left is leased by the other host (or a dead one): wait for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---- the test side ----

struct HostProcess {
    child: Child,
    name: String,
}

fn spawn_host(db: &TestStore, cache: &Path, ttl: Duration, name: &str, vars: &[(&str, &str)]) -> HostProcess {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "multihost::host_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TOOLHOST_MH_STORE", &db.url)
        .env("TOOLHOST_MH_CACHE", cache)
        .env("TOOLHOST_MH_TTL_MS", ttl.as_millis().to_string())
        .env("TOOLHOST_MH_NAME", name)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        command.env(k, v);
    }
    HostProcess { child: command.spawn().unwrap(), name: name.to_owned() }
}

impl HostProcess {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    fn try_finish(&mut self) -> Option<(ExitStatus, String)> {
        let status = self.child.try_wait().unwrap()?;
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        Some((status, stderr))
    }

    fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(done) = self.try_finish() {
                return done;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                let (_, stderr) = self.try_finish_blocking();
                panic!("{} did not finish within {timeout:?}:\n{stderr}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_finish_blocking(&mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        (status, stderr)
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

/// The value after `key=` in the child's `MH acquired` line.
fn reported(stderr: &str, key: &str) -> u64 {
    let line = stderr.lines().find(|l| l.starts_with("MH acquired")).unwrap_or_else(|| panic!("no MH line:\n{stderr}"));
    let field = line.split(' ').find_map(|f| f.strip_prefix(&format!("{key}="))).unwrap();
    field.parse().unwrap()
}

/// The counting model server, with one request it can hold back: the test decides when the
/// host that sent it gets its answer. Requests with a known call id are answered from the
/// server's cache (an idempotent provider), so only executions count.
#[derive(Default)]
struct ModelState {
    executions: HashMap<String, usize>,
    answers: HashMap<String, String>,
    hold: Option<String>,
    held: bool,
    released: bool,
}

struct ModelServer {
    addr: String,
    state: Arc<(Mutex<ModelState>, Condvar)>,
}

impl ModelServer {
    fn start(hold: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state =
            Arc::new((Mutex::new(ModelState { hold: Some(hold.to_owned()), ..Default::default() }), Condvar::new()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    if BufReader::new(&stream).read_line(&mut line).is_err() {
                        return;
                    }
                    let Some((call_id, prompt)) = line.trim_end().split_once('\t') else { return };
                    let (lock, changed) = &*shared;
                    let mut state = lock.lock().unwrap();
                    if state.hold.as_deref() == Some(prompt) && !state.held {
                        state.held = true;
                        changed.notify_all();
                        state = changed.wait_while(state, |s| !s.released).unwrap();
                    }
                    let reply = match state.answers.get(call_id) {
                        Some(reply) => reply.clone(),
                        None => {
                            let count = state.executions.entry(prompt.to_owned()).or_insert(0);
                            *count += 1;
                            let reply = reply_for(prompt, *count);
                            state.answers.insert(call_id.to_owned(), reply.clone());
                            reply
                        }
                    };
                    drop(state);
                    let _ = writeln!(stream, "{reply}");
                });
            }
        });
        Self { addr, state }
    }

    fn wait_held(&self, timeout: Duration) -> bool {
        let (lock, changed) = &*self.state;
        let state = lock.lock().unwrap();
        let (state, _) = changed.wait_timeout_while(state, timeout, |s| !s.held).unwrap();
        state.held
    }

    fn release(&self) {
        let (lock, changed) = &*self.state;
        lock.lock().unwrap().released = true;
        changed.notify_all();
    }

    fn executions(&self) -> HashMap<String, usize> {
        self.state.0.lock().unwrap().executions.clone()
    }
}

/// A store with the uninterrupted reference run and the session `shared` created (unleased)
/// for the hosts to share; the compile cache is warm.
async fn prepare(db: &TestStore, cache: &Path) -> Arc<dyn Store> {
    let store = db.open().await;
    let reference = host(store.clone(), cache, None, Some(Arc::new(ReferenceModel)));
    let tools = load_tools(&reference).await;
    let mut session = reference.create_session_with_seed("reference", SEED).await.unwrap();
    for (tool, input) in &script() {
        session.call(&tools[*tool], input).await.unwrap();
    }
    reference.create_session_with_seed("shared", SEED).await.unwrap();
    store
}

/// `shared` ended exactly like the uninterrupted run, and the model executed each prompt once.
async fn assert_like_reference(store: &dyn Store, server: &ModelServer) {
    let reference = summarize(store, "reference").await;
    let shared = summarize(store, "shared").await;
    assert_eq!(shared.0.len(), script().len(), "every step exactly once");
    for (seq, (got, want)) in shared.0.iter().zip(&reference.0).enumerate() {
        assert_eq!(got, want, "step {} differs from the uninterrupted run", seq + 1);
    }
    assert_eq!(shared.1, reference.1, "final state differs from the uninterrupted run");
    let executions = server.executions();
    assert_eq!(executions.len(), 8, "{executions:?}");
    for (prompt, count) in &executions {
        assert_eq!(*count, 1, "the model executed `{prompt}` {count} times");
    }
    assert_eq!(store.pending("shared").await.unwrap(), None);
}

async fn steps_of(store: &dyn Store, id: &str) -> u64 {
    store.session(id).await.unwrap().unwrap().last_step
}

async fn a_killed_host_s_session_is_taken_over_after_its_lease_expires(db: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = prepare(db, &cache).await;
    let ttl = Duration::from_secs(3);
    // Host A is held inside step 27 (the model call for "question 5").
    let server = ModelServer::start("question 5");
    let vars = [("TOOLHOST_MH_MODE", "script"), ("TOOLHOST_MH_SESSION", "shared"), ("TOOLHOST_MH_MODEL", &server.addr)];
    let mut a = spawn_host(db, &cache, ttl, "host-a", &vars);
    if !server.wait_held(Duration::from_secs(120)) {
        let (status, stderr) = a.try_finish_blocking();
        panic!("host A never reached the held model call ({status}):\n{stderr}");
    }
    assert_eq!(steps_of(&*store, "shared").await, 26);
    let a_token = store.lease("shared").await.unwrap().expect("A holds the lease").token;

    // Host B starts while A is alive: it waits on A's lease.
    let b = spawn_host(db, &cache, ttl, "host-b", &vars);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(steps_of(&*store, "shared").await, 26, "B must not advance a session A holds");
    assert_eq!(store.lease("shared").await.unwrap().unwrap().holder, "host-a");

    // A gets its answer and dies a moment later, before or after persisting it.
    server.release();
    let mut random = 0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64;
    std::thread::sleep(Duration::from_millis(next_random(&mut random) % 10));
    a.kill9();
    // What A's lease says now is final: nobody renews it any more.
    let a_lease = store.lease("shared").await.unwrap().expect("A's lease outlives A");
    assert_eq!((a_lease.holder.as_str(), a_lease.token), ("host-a", a_token));

    let (status, stderr) = b.finish(Duration::from_secs(180));
    assert!(status.success(), "host B failed ({status}):\n{stderr}");
    assert!(reported(&stderr, "token") > a_token, "B took the session with a newer token:\n{stderr}");
    // B got the session only after A died and its lease ran out, and resumed from whatever
    // A committed last.
    assert!(
        reported(&stderr, "at_ms") as i64 >= a_lease.expires_at_ms - 50,
        "B took over before A's lease expired ({a_lease:?}):\n{stderr}"
    );
    assert!(reported(&stderr, "at_step") >= 26, "{stderr}");
    assert_like_reference(&*store, &server).await;
}

async fn a_host_paused_past_its_lease_cannot_commit_when_it_resumes(db: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = prepare(db, &cache).await;
    let ttl = Duration::from_secs(3);
    // Host A is held inside step 17 (the model call for "question 3").
    let server = ModelServer::start("question 3");
    let vars = [("TOOLHOST_MH_MODE", "script"), ("TOOLHOST_MH_SESSION", "shared"), ("TOOLHOST_MH_MODEL", &server.addr)];
    let mut a = spawn_host(db, &cache, ttl, "host-a", &vars);
    if !server.wait_held(Duration::from_secs(120)) {
        let (status, stderr) = a.try_finish_blocking();
        panic!("host A never reached the held model call ({status}):\n{stderr}");
    }
    assert_eq!(steps_of(&*store, "shared").await, 16);
    a.signal("-STOP");
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;

    // B takes the expired lease at once and finishes the session, step 17 included.
    let b = spawn_host(db, &cache, ttl, "host-b", &vars);
    let (status, stderr) = b.finish(Duration::from_secs(180));
    assert!(status.success(), "host B failed ({status}):\n{stderr}");
    assert_eq!(reported(&stderr, "at_step"), 16, "{stderr}");
    assert_eq!(steps_of(&*store, "shared").await, script().len() as u64);
    let after_b = summarize(&*store, "shared").await;

    // A wakes up, gets its model answer, finishes step 17 and tries to commit it.
    server.release();
    a.signal("-CONT");
    let (status, stderr) = a.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(LEASE_LOST_EXIT), "A must be refused with LeaseLost ({status}):\n{stderr}");
    assert!(stderr.contains("MH refused: lost the lease of session `shared`"), "{stderr}");

    // Nothing A did after losing the lease is visible.
    assert_eq!(summarize(&*store, "shared").await, after_b);
    assert_like_reference(&*store, &server).await;
}

async fn a_thousand_sessions_over_two_hosts_killed_at_random_lose_and_repeat_nothing(db: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = db.open().await;
    // Warm the compile cache the hosts share.
    load_tools(&host(store.clone(), &cache, None, None)).await;
    let mut creating = tokio::task::JoinSet::new();
    for k in 0..BULK_SESSIONS {
        let store = store.clone();
        creating.spawn(async move {
            let record = toolhost::store::SessionRecord {
                id: format!("bulk-{k}"),
                seed: [k as u8; 32],
                forked_from: None,
                created_at_ms: 0,
                last_step: 0,
            };
            store.create_session(&record).await.unwrap();
        });
    }
    while let Some(created) = creating.join_next().await {
        created.unwrap();
    }

    let ttl = Duration::from_secs(1);
    let vars = [("TOOLHOST_MH_MODE", "worker")];
    let mut generation = 0;
    let mut spawn = |slot: usize| {
        generation += 1;
        spawn_host(db, &cache, ttl, &format!("worker-{slot}-{generation}"), &vars)
    };
    let mut hosts = [Some(spawn(0)), Some(spawn(1))];
    let mut random = 0x853C_49E6_748F_EA9B ^ std::process::id() as u64;
    let mut kills = 0;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(400);
    loop {
        assert!(Instant::now() < deadline, "the hosts did not finish in time ({kills} kills)");
        std::thread::sleep(Duration::from_millis(200 + next_random(&mut random) % 600));
        for host in &mut hosts {
            if let Some((status, stderr)) = host.as_mut().and_then(HostProcess::try_finish) {
                assert!(status.success(), "a host failed ({status}):\n{stderr}");
                *host = None;
            }
        }
        if hosts.iter().all(Option::is_none) {
            break;
        }
        if kills < 12 {
            let slot = next_random(&mut random) as usize % 2;
            if let Some(victim) = hosts[slot].take() {
                victim.kill9();
                kills += 1;
                hosts[slot] = Some(spawn(slot));
            }
        }
    }
    assert!(kills >= 6, "only {kills} kills: the hosts finished before the test could kill them");

    let mut total = 0;
    for k in 0..BULK_SESSIONS {
        let id = format!("bulk-{k}");
        let steps = store.steps(&id, None, 0).await.unwrap();
        let expected = bulk_script(k);
        assert_eq!(steps.len(), expected.len(), "{id}: {steps:?}");
        for (step, (seq, (tool, input))) in steps.iter().zip(expected.iter().enumerate()) {
            assert_eq!(
                (step.seq, step.tool.as_str(), step.input.as_str()),
                (seq as u64 + 1, *tool, &*input.to_string())
            );
        }
        let outputs: Vec<Value> = steps
            .iter()
            .map(|s| match &s.outcome {
                toolhost::store::StepOutcome::Output(text) => serde_json::from_str(text).unwrap(),
                other => panic!("{id}: {other:?}"),
            })
            .collect();
        assert_eq!(outputs[0]["value"], (k + 1) as f64, "{id}");
        assert_eq!(outputs[1], json!({"id": 1, "notes": 1}), "{id}: the note was added once");
        assert_eq!(outputs[2]["value"], (2 * k) as f64, "{id}");
        total += steps.len();
    }
    assert_eq!(total, 3 * BULK_SESSIONS);
    eprintln!("multihost: {BULK_SESSIONS} sessions over two hosts, {kills} SIGKILLs, {:?}", started.elapsed());
}
