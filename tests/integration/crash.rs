//! The crash harness: a child process runs a scripted multi-tool session with model calls,
//! HTTP POSTs and session-workspace files and is killed with SIGKILL at random points; a new
//! child resumes each time. The finished session must equal an uninterrupted run: every step
//! once, the same outputs, state and workspace files (byte for byte, as exported), each model
//! request seen exactly once by the (out-of-process) model server, and each POST executed
//! exactly once by the counting HTTP server (which deduplicates by `Idempotency-Key`: at most
//! one redelivery per kill). After every kill the committed workspace equals the uninterrupted
//! run's after the same step: no step's file writes are half there.
//!
//! Effects with their own witness (a server that counts) are added by [`with_effects`]; a
//! new kind of effect adds its steps there and its check to [`Effects::check`].

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost::capability::workspace::{Manifest, export, workspaces};
use toolhost::model::{ChatRequest, ChatResponse, FinishReason, ModelError, ProviderFailure, Usage};
use toolhost::store::{Durability, StateScope, StepOutcome, StepRecord};
use toolhost::{
    EngineConfig, Host, HostConfig, ModelProvider, SnapshotPolicy, SqliteStore, Store, ToolGrants, WorkspaceGrant,
};

use crate::backends::{TestStore, on_both_backends};
use crate::durable::policy;
use crate::http_server::CountingServer;
use crate::support::guests;
use crate::workspace::files_tool;

const SEED: [u8; 32] = [7; 32];
const MIN_KILLS: usize = 50;

/// (tool, input) per step: notes, calculator and hostile (randomness, clocks, model calls).
pub(crate) fn script() -> Vec<(&'static str, Value)> {
    let mut steps = Vec::new();
    for i in 0..BLOCKS {
        steps.push(("notes", json!({"op": "add", "title": format!("note {i}"), "body": format!("body {i} alpha")})));
        steps.push(("hostile", json!({"attack": "ask-model", "model": "counting", "prompt": format!("question {i}")})));
        steps.push(("hostile", json!({"attack": "entropy", "bytes": 8})));
        steps.push(("calculator", json!({"expression": format!("{i} * 7 + 1")})));
        steps.push(("notes", json!({"op": "search", "query": format!("{i} alpha")})));
    }
    steps
}

/// The outside effects a crash run makes, each with the server that witnesses it.
pub(crate) struct Effects {
    pub http: CountingServer,
}

impl Effects {
    /// Checks what the witnesses saw in a round with `kills` SIGKILLs; returns the
    /// redeliveries (requests re-sent under a key the server knew).
    fn check(&self, round: usize, kills: usize) -> usize {
        let http = self.http.log();
        assert_eq!(http.executions.len(), 3 * BLOCKS, "round {round}: {:?}", http.executions);
        for (request, count) in &http.executions {
            assert_eq!(*count, 1, "round {round}: the server executed `{request}` {count} times");
        }
        assert_eq!(http.unkeyed, 0, "round {round}: a request came without an Idempotency-Key");
        assert!(
            http.redelivered.len() <= kills,
            "round {round}: {} redeliveries for {kills} kills: {:?}",
            http.redelivered.len(),
            http.redelivered
        );
        http.redelivered.len()
    }

    fn reset(&self) {
        self.http.reset();
    }
}

/// Blocks of steps in [`script`].
const BLOCKS: usize = 8;

/// [`script`] with steps of outside effects in each block: two POSTs in one step, so request
/// numbers within a step matter too, and two ledger steps of the `files` tool, each several
/// workspace writes that depend on what earlier steps wrote (one of them after a POST whose
/// answer it writes down).
pub(crate) fn with_effects(effects: &Effects) -> Vec<(&'static str, Value)> {
    let base = script();
    let per_block = base.len() / BLOCKS;
    let mut steps = Vec::new();
    for (i, block) in base.chunks(per_block).enumerate() {
        let (first, rest) = block.split_at(1);
        steps.extend(first.iter().cloned());
        let n = 2 * i;
        steps.push(("files", json!({"op": "ledger", "n": n, "body": format!("local {n}")})));
        steps.extend(rest.iter().cloned());
        let bodies = [format!("order {i}a"), format!("order {i}b")];
        steps.push(("hostile", json!({"attack": "http-post", "url": effects.http.url("/orders"), "bodies": bodies})));
        let url = effects.http.url("/ledger");
        steps.push(("files", json!({"op": "ledger", "n": n + 1, "url": url, "body": format!("entry {}", n + 1)})));
    }
    steps
}

/// The crash run's policy: the durable tests'; the hostile tool may reach the HTTP server,
/// and the files tool too, with a session workspace.
fn crash_policy(effects: &Effects) -> toolhost::Policy {
    let mut policy = policy();
    let server = format!("127.0.0.1:{}", effects.http.port);
    let hostile = policy.tools.get_mut("hostile").expect("the durable policy grants hostile");
    hostile.network.allow = vec![server.parse().unwrap()];
    let mut files = ToolGrants { workspace: Some(WorkspaceGrant::at("/workspace")), ..ToolGrants::default() };
    files.network.allow = vec![server.parse().unwrap()];
    policy.with_tool("files", files)
}

/// Each tool's workspace after each step of `steps`: entry `k` is the workspace after `k`
/// steps.
fn workspaces_by_step(steps: &[StepRecord]) -> Vec<BTreeMap<String, Manifest>> {
    (0..=steps.len()).map(|k| workspaces(&steps[..k])).collect()
}

/// Every file of session `id`'s workspaces, as `export` writes them: path to bytes.
async fn exported_files(store: &dyn Store, id: &str, dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let steps = store.steps(id, None, 0).await.unwrap();
    let out = dir.join(id);
    export(store, &workspaces(&steps), &out, false).await.unwrap();
    let mut files = BTreeMap::new();
    let mut pending = vec![out.clone()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(&out).unwrap().to_owned();
            if path.is_dir() {
                files.insert(relative, Vec::new());
                pending.push(path);
            } else {
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The model, as the child process reaches it: one TCP line per request.
pub(crate) struct TcpModel {
    pub addr: String,
}

#[async_trait::async_trait]
impl ModelProvider for TcpModel {
    async fn chat(&self, _alias: &str, request: &ChatRequest, call_id: &str) -> Result<ChatResponse, ModelError> {
        let prompt = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        let addr = self.addr.clone();
        let call_id = call_id.to_owned();
        let reply = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect(addr)?;
            writeln!(stream, "{call_id}\t{prompt}")?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line)?;
            Ok(line.trim_end().to_owned())
        })
        .await
        .unwrap()
        .map_err(|e| ModelError::ProviderError(ProviderFailure { status: None, message: e.to_string() }))?;
        Ok(answer(reply))
    }
}

fn answer(text: String) -> ChatResponse {
    ChatResponse {
        text,
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
        usage: Usage { input_tokens: 1, output_tokens: 1 },
        model: "counting".into(),
    }
}

/// What the server answers the `count`-th request for `prompt`.
pub(crate) fn reply_for(prompt: &str, count: usize) -> String {
    format!("answer to {prompt} #{count}")
}

/// The uninterrupted run's model: the server's answer to a first request.
pub(crate) struct ReferenceModel;

#[async_trait::async_trait]
impl ModelProvider for ReferenceModel {
    async fn chat(&self, _alias: &str, request: &ChatRequest, call_id: &str) -> Result<ChatResponse, ModelError> {
        let _ = call_id;
        let prompt = request.messages.last().map(|m| m.content.as_str()).unwrap_or_default();
        Ok(answer(reply_for(prompt, 1)))
    }
}

on_both_backends!(sigkill_at_random_points_loses_and_repeats_nothing);

fn host(store: Arc<dyn Store>, cache: &Path, models: Arc<dyn ModelProvider>, effects: &Effects) -> Host {
    let engine = EngineConfig { cache_dir: Some(cache.into()), max_instances: 16, ..EngineConfig::default() };
    let config = HostConfig {
        engine,
        policy: crash_policy(effects),
        snapshots: SnapshotPolicy { every: 2, keep: 2 },
        models: Some(models),
        leases: None,
        ..HostConfig::default()
    };
    Host::with_store(config, store).unwrap()
}

/// Runs the script in session `id` from wherever it stands.
async fn run_script(host: &Host, id: &str, tools: &[PathBuf], effects: &Effects) {
    let mut loaded = HashMap::new();
    for path in tools {
        let tool = host.load_tool(path).await.unwrap();
        loaded.insert(tool.name().to_owned(), tool);
    }
    let mut session = match host.open_session(id).await {
        Ok(session) => session,
        Err(toolhost::SessionError::NotFound(_)) => host.create_session_with_seed(id, SEED).await.unwrap(),
        Err(e) => panic!("{e}"),
    };
    let script = with_effects(effects);
    for (tool, input) in &script[session.last_step() as usize..] {
        session.call(&loaded[*tool], input).await.unwrap();
    }
}

#[test]
#[ignore = "the child process of crash::sigkill_at_random_points_loses_and_repeats_nothing"]
fn crash_child() {
    let Ok(url) = std::env::var("TOOLHOST_CRASH_STORE") else { return };
    let var = |name: &str| std::env::var(name).unwrap();
    let tools: Vec<PathBuf> = var("TOOLHOST_CRASH_TOOLS").split(';').map(PathBuf::from).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let model = Arc::new(TcpModel { addr: var("TOOLHOST_CRASH_MODEL") });
        let effects = Effects { http: CountingServer::at(var("TOOLHOST_CRASH_HTTP").parse().unwrap()) };
        let store = toolhost::store::open(&url).await.unwrap();
        let host = host(store, Path::new(&var("TOOLHOST_CRASH_CACHE")), model, &effects);
        run_script(&host, &var("TOOLHOST_CRASH_SESSION"), &tools, &effects).await;
    });
}

/// What the model server saw.
#[derive(Default)]
struct ServerLog {
    /// Executions per prompt: a call id seen before is answered from the server's cache,
    /// as a provider honoring idempotency keys does.
    executions: HashMap<String, usize>,
    answers: HashMap<String, String>,
    /// Requests that arrived again with a known call id: sent by a host that crashed after
    /// the answer left the server and before the host persisted it.
    redeliveries: usize,
}

fn start_model_server() -> (String, Arc<Mutex<ServerLog>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let Some((call_id, prompt)) = line.trim_end().split_once('\t') else { continue };
            let reply = {
                let mut log = seen.lock().unwrap();
                match log.answers.get(call_id).cloned() {
                    Some(reply) => {
                        log.redeliveries += 1;
                        reply
                    }
                    None => {
                        let count = log.executions.entry(prompt.to_owned()).or_insert(0);
                        *count += 1;
                        let reply = reply_for(prompt, *count);
                        log.answers.insert(call_id.to_owned(), reply.clone());
                        reply
                    }
                }
            };
            let _ = writeln!(stream, "{reply}");
        }
    });
    (addr, log)
}

/// xorshift: enough to spread kill times, no dependency.
pub(crate) fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// What a finished session holds: per step (tool, input, comparable outcome) and its state.
pub(crate) async fn summarize(
    store: &dyn Store,
    id: &str,
) -> (Vec<(String, String, String)>, Vec<(String, String, String, Vec<u8>)>) {
    let steps = store
        .steps(id, None, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            let outcome = match s.outcome {
                StepOutcome::Output(text) => {
                    let mut value: Value = serde_json::from_str(&text).unwrap();
                    if s.tool == "hostile" && s.input.contains("entropy") {
                        // The wall clock and the OS entropy legitimately differ between runs
                        // (replay within a run is checked by the rebuilds themselves).
                        value["echo"] = json!(0);
                        let hex = value["padding"].as_str().unwrap_or_default();
                        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
                        value["padding"] = json!(hex.len());
                    }
                    value.to_string()
                }
                StepOutcome::Failed(failure) => format!("failed: {failure}"),
                StepOutcome::Upgraded(upgrade) => upgrade.to_string(),
            };
            (s.tool, s.input, outcome)
        })
        .collect();
    let mut state = Vec::new();
    for (tool, namespace, key) in store.state_keys(id).await.unwrap() {
        let scope = StateScope { session: id.to_owned(), tool: tool.clone() };
        let value = store.get(&scope, &namespace, &key).await.unwrap().unwrap();
        state.push((tool, namespace, key, value));
    }
    (steps, state)
}

/// Every round runs its own session (`crash-N`) in `db`.
async fn sigkill_at_random_points_loses_and_repeats_nothing(db: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let tools =
        vec![guests().notes.clone(), guests().calculator.clone(), guests().hostile.clone(), files_tool().to_owned()];
    let joined_tools = tools.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>().join(";");

    // The uninterrupted run (also fills the compile cache the children share).
    let effects = Effects { http: CountingServer::start() };
    let reference_db = dir.path().join("reference.db");
    let reference_store = Arc::new(SqliteStore::open(&reference_db, Durability::Full).unwrap());
    let reference_host = host(reference_store, &cache, Arc::new(ReferenceModel), &effects);
    run_script(&reference_host, "reference", &tools, &effects).await;
    let reference = summarize(&*reference_host.store(), "reference").await;
    let steps = with_effects(&effects).len();
    assert_eq!(reference.0.len(), steps);
    effects.check(0, 0);
    let reference_steps = reference_host.store().steps("reference", None, 0).await.unwrap();
    let reference_workspaces = workspaces_by_step(&reference_steps);
    let reference_files = exported_files(&*reference_host.store(), "reference", dir.path()).await;
    assert!(reference_files.keys().any(|p| p.ends_with("entries")), "{:?}", reference_files.keys());
    assert_eq!(reference_files[Path::new("files/latest.txt")], format!("{}", 2 * BLOCKS - 1).as_bytes());

    let (model_addr, server) = start_model_server();
    let exe = std::env::current_exe().unwrap();
    let mut random = 0x9E37_79B9_7F4A_7C15 ^ (std::process::id() as u64);
    let mut kills = 0;
    let mut redeliveries = 0;
    let mut http_redeliveries = 0;
    let mut round = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while kills < MIN_KILLS {
        assert!(Instant::now() < deadline, "the crash harness ran out of time after {kills} kills");
        round += 1;
        let session = format!("crash-{round}");
        *server.lock().unwrap() = ServerLog::default();
        effects.reset();
        let kills_before = kills;
        let store = db.open().await;
        loop {
            let mut child = Command::new(&exe)
                .args(["--exact", "crash::crash_child", "--ignored", "--nocapture", "--test-threads=1"])
                .env("TOOLHOST_CRASH_STORE", &db.url)
                .env("TOOLHOST_CRASH_CACHE", &cache)
                .env("TOOLHOST_CRASH_TOOLS", &joined_tools)
                .env("TOOLHOST_CRASH_MODEL", &model_addr)
                .env("TOOLHOST_CRASH_HTTP", effects.http.port.to_string())
                .env("TOOLHOST_CRASH_SESSION", &session)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // The window widens with each kill of the round, so a loaded machine (where a
            // child needs longer to get anywhere) still finishes the round.
            let window = 300 + 20 * (kills - kills_before) as u64;
            let kill_after = Duration::from_millis(20 + next_random(&mut random) % window);
            let started = Instant::now();
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if started.elapsed() >= kill_after {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            match finished {
                Some(status) => {
                    let mut stderr = String::new();
                    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                    assert!(status.success(), "the child failed ({status}):\n{stderr}");
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    let committed = store.steps(&session, None, 0).await.unwrap();
                    assert_eq!(
                        workspaces(&committed),
                        reference_workspaces[committed.len()],
                        "round {round}: after the kill at step {}, the workspace is not the uninterrupted run's",
                        committed.len()
                    );
                }
            }
        }

        let crashed = summarize(&*store, &session).await;
        assert_eq!(crashed.0.len(), steps, "round {round}: every step exactly once");
        for (seq, (got, want)) in crashed.0.iter().zip(&reference.0).enumerate() {
            assert_eq!(got, want, "round {round}: step {} differs from the uninterrupted run", seq + 1);
        }
        assert_eq!(crashed.1, reference.1, "round {round}: final state differs from the uninterrupted run");
        let files = exported_files(&*store, &session, dir.path()).await;
        let differing: Vec<_> =
            files.keys().chain(reference_files.keys()).filter(|p| files.get(*p) != reference_files.get(*p)).collect();
        assert!(
            differing.is_empty(),
            "round {round}: exported files differ from the uninterrupted run's: {differing:?}"
        );
        let log = server.lock().unwrap();
        assert_eq!(log.executions.len(), BLOCKS, "round {round}: {:?}", log.executions);
        for (prompt, count) in &log.executions {
            assert_eq!(*count, 1, "round {round}: the model executed `{prompt}` {count} times");
        }
        redeliveries += log.redeliveries;
        http_redeliveries += effects.check(round, kills - kills_before);
    }
    eprintln!(
        "crash harness: {kills} SIGKILLs over {round} sessions; {redeliveries} model requests and \
         {http_redeliveries} HTTP POSTs redelivered (crash between answer and persist), each answered from its \
         idempotency key"
    );
}
