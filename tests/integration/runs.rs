//! Long-running agent runs (issue #18): approvals, timers and events that suspend a run to its
//! row, workers that claim and drive runs, and restarts and kills of everything in between.
//!
//! The model is an OpenAI-compatible HTTP server that answers from the request alone (the
//! goal picks a script, the number of tool results so far picks the turn), so any worker
//! process can ask it anything; it counts executions per idempotency key, the run's
//! `SESSION:STEP:agent`, so a model request executed twice shows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use toolhost::run::{Run, RunError, Runs, Worker, WorkerConfig};
use toolhost::store::RunStatus;
use toolhost::{Agent, AgentConfig, Goal, Host, HostConfig, LeaseConfig, ModelRouter, ModelsConfig, Policy, Store};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{capture_stderr, engine_config, guests};

/// Executions per idempotency key, and every request's goal.
#[derive(Default)]
struct ModelLog {
    executions: HashMap<String, usize>,
    requests: Vec<(String, Value)>,
}

type Log = Arc<Mutex<ModelLog>>;

fn tool_call(name: &str, arguments: Value) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": "c0", "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]})
}

/// The reply to `messages`: the goal's first word picks the script.
fn script(messages: &[Value]) -> Value {
    let goal = messages.iter().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or_default();
    let goal = goal.strip_prefix("Goal: ").unwrap_or(goal);
    let results: Vec<&str> =
        messages.iter().filter(|m| m["role"] == "tool").filter_map(|m| m["content"].as_str()).collect();
    let last = results.last().copied().unwrap_or_default();
    let answer = |text: String| json!({"role": "assistant", "content": text});
    let mut words = goal.split_whitespace();
    match (words.next().unwrap_or_default(), results.len()) {
        ("approve", 0) => tool_call("calculator", json!({"expression": "6*7"})),
        ("sleep", 0) => tool_call("sleep", json!({"seconds": words.next().unwrap_or("1").parse::<f64>().unwrap()})),
        ("event", 0) => {
            let timeout: f64 = words.next().unwrap_or("600").parse().unwrap();
            tool_call("wait_for_event", json!({"name": "go", "timeout_seconds": timeout}))
        }
        ("steps" | "slow", n) if n < 4 => tool_call("calculator", json!({"expression": format!("{n}+1")})),
        ("retry", 0) => {
            let at: u64 = words.next().unwrap_or("0").parse().unwrap();
            tool_call("hostile", json!({"attack": "retry-until", "at_ms": at}))
        }
        _ => answer(format!("result: {last}")),
    }
}

async fn complete(State(log): State<Log>, headers: HeaderMap, Json(request): Json<Value>) -> Json<Value> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    {
        let mut log = log.lock().unwrap();
        *log.executions.entry(key.clone()).or_default() += 1;
        log.requests.push((key, request.clone()));
    }
    let slow =
        messages.iter().any(|m| m["role"] == "user" && m["content"].as_str().is_some_and(|c| c.contains("slow")));
    if slow {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let message = script(&messages);
    let finish = if message["tool_calls"].is_array() { "tool_calls" } else { "stop" };
    Json(json!({
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5},
    }))
}

/// Starts the model on a thread of its own (it outlives the test's runtime pauses); its URL.
fn start_model() -> (String, Log) {
    let log = Log::default();
    let state = log.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let app =
                axum::Router::new().route("/v1/chat/completions", axum::routing::post(complete)).with_state(state);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{}/v1", rx.recv().unwrap()), log)
}

/// The models section both the agent file and in-process hosts use.
fn models_toml(url: &str, table: &str) -> String {
    format!(
        "[{table}providers.fake]\nkind = \"openai\"\nbase_url = \"{url}\"\n\n\
         [{table}aliases.fake]\nprovider = \"fake\"\nmodel = \"scripted\"\n"
    )
}

/// The calculator needs approval for `6*7` only.
const POLICY: &str = "[tools.calculator]\napproval = { when = { expression = [\"6*7\"] } }\n";

/// Writes `DIR/calc.toml` (the agent `calc`) and its policy.
fn agent_file(dir: &Path, url: &str) -> PathBuf {
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    let calculator = guests().calculator.display().to_string();
    let text = format!(
        "goal = \"steps\"\ntools = [{calculator:?}]\npolicy = \"policy.toml\"\n\n\
         [agent]\nmodel = \"fake\"\nwaits = true\nmax_turns = 8\n\n{}",
        models_toml(url, "models.")
    );
    let path = dir.join("calc.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn toolhost(store: &str, cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_toolhost"));
    command.arg("--store").arg(store).arg("--cache-dir").arg(cache).env_remove("RUST_LOG");
    command
}

fn cli(store: &str, cache: &Path, args: &[&str]) -> Output {
    toolhost(store, cache).args(args).output().expect("running toolhost")
}

fn cli_ok(store: &str, cache: &Path, args: &[&str]) -> String {
    let out = cli(store, cache, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "toolhost {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn spawn_worker(store: &str, cache: &Path, agent: &Path) -> Child {
    let mut child = toolhost(store, cache)
        .args(["worker", "--agent", agent.to_str().unwrap(), "--lease-ttl-ms", "1500", "--poll-ms", "200"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a worker");
    capture_stderr(&mut child);
    child
}

fn kill(mut child: Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

/// Polls run `id` until `done` holds for it, for up to `timeout`.
async fn wait_for(runs: &Runs, id: &str, timeout: Duration, done: impl Fn(&Run) -> bool) -> Run {
    let deadline = Instant::now() + timeout;
    loop {
        let run = runs.get(id).await.unwrap();
        if done(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not get there in {timeout:?}: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn awaits(kind: &'static str) -> impl Fn(&Run) -> bool {
    move |run| {
        run.status == RunStatus::Waiting
            && run.body.waiting.as_ref().is_some_and(|w| serde_json::to_value(&w.wait).unwrap()["kind"] == kind)
    }
}

fn ended(run: &Run) -> bool {
    run.status.is_final()
}

fn assert_each_request_executed_once(log: &Log) {
    let log = log.lock().unwrap();
    let repeated: Vec<_> = log.executions.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "model requests executed more than once: {repeated:?}");
}

async fn actors(store: &dyn Store, id: &str) -> Vec<String> {
    store.steps(id, None, 0).await.unwrap().into_iter().map(|s| s.tool).collect()
}

/// A request, kill every worker, approve from the command line, start one worker: the run
/// finishes with the approved (edited) call.
async fn an_approval_survives_a_restart_of_everything(db: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (url, log) = start_model();
    let agent = agent_file(dir.path(), &url);
    let agent_arg = agent.to_str().unwrap();
    cli_ok(&db.url, &cache, &["runs", "start", agent_arg, "--id", "appr", "--goal", "approve the product"]);
    let workers = [spawn_worker(&db.url, &cache, &agent), spawn_worker(&db.url, &cache, &agent)];

    let store = db.open().await;
    let runs = Runs::new(store.clone());
    let waiting = wait_for(&runs, "appr", Duration::from_secs(60), awaits("approval")).await;
    for worker in workers {
        kill(worker);
    }
    let listed = cli_ok(&db.url, &cache, &["runs", "list", "--status", "waiting"]);
    assert!(listed.contains("appr") && listed.contains("approval of a call to `calculator`"), "{listed}");
    // Refused: an edit that is no object; a denial without a reason.
    let bad = cli(&db.url, &cache, &["runs", "approve", "appr", "--edit", "[1]"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("JSON object"));
    assert!(!cli(&db.url, &cache, &["runs", "deny", "appr", "--reason", " "]).status.success());

    cli_ok(&db.url, &cache, &["runs", "approve", "appr", "--edit", r#"{"expression": "6*8"}"#, "--by", "alice"]);
    let again = cli(&db.url, &cache, &["runs", "approve", "appr"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("not waiting for an approval"), "decided twice");
    let worker = spawn_worker(&db.url, &cache, &agent);
    let run = wait_for(&runs, "appr", Duration::from_secs(60), ended).await;
    kill(worker);

    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    assert_eq!(run.body.outcome.as_deref(), Some(r#"result: {"value":48.0}"#), "the edited call ran");
    let steps = store.steps("appr", None, 0).await.unwrap();
    let tools: Vec<&str> = steps.iter().map(|s| s.tool.as_str()).collect();
    assert_eq!(tools, ["agent.goal", "agent.model", "agent.wait", "agent.resolved", "calculator", "agent.model"]);
    assert_eq!(steps[2].seq, waiting.body.waiting.unwrap().step);
    let decision: Value = serde_json::from_str(&steps[3].input).unwrap();
    assert_eq!(decision["resolution"]["decision"]["decision"], "approve");
    assert_eq!(decision["resolution"]["decision"]["by"], "alice");
    assert_eq!(steps[4].input, r#"{"expression":"6*8"}"#);
    let audit: Vec<_> =
        store.audit_events(Some("appr")).await.unwrap().into_iter().filter(|e| e.capability == "approval").collect();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].allowed && audit[0].reason.contains("alice"), "{audit:?}");
    assert_eq!(log.lock().unwrap().requests.len(), 2);
    assert_each_request_executed_once(&log);
}

/// A run sleeping 3 s whose worker is killed is woken by a worker started later, on time.
async fn a_timer_fires_after_a_restart_within_tolerance(db: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (url, log) = start_model();
    let agent = agent_file(dir.path(), &url);
    cli_ok(&db.url, &cache, &["runs", "start", agent.to_str().unwrap(), "--id", "nap", "--goal", "sleep 3"]);
    let worker = spawn_worker(&db.url, &cache, &agent);
    let store = db.open().await;
    let runs = Runs::new(store.clone());
    let waiting = wait_for(&runs, "nap", Duration::from_secs(60), awaits("timer")).await;
    kill(worker);
    let until = waiting.ready_at_ms.unwrap();
    let worker = spawn_worker(&db.url, &cache, &agent);
    let run = wait_for(&runs, "nap", Duration::from_secs(60), ended).await;
    kill(worker);

    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let steps = store.steps("nap", None, 0).await.unwrap();
    let resolved: Value = serde_json::from_str(&steps[3].input).unwrap();
    let fired = resolved["resolution"]["at_ms"].as_i64().unwrap();
    let late = fired - until;
    assert!((0..1000).contains(&late), "the timer fired {late} ms after its time");
    assert!(run.body.outcome.unwrap().contains("woke_at"));
    assert_each_request_executed_once(&log);
}

/// SIGTERM drains a worker: it exits cleanly, the run it was driving stops before its next
/// step and is handed back, and another worker finishes it with no model request repeated.
async fn sigterm_drains_a_worker_and_hands_its_runs_back(db: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (url, log) = start_model();
    let agent = agent_file(dir.path(), &url);
    cli_ok(&db.url, &cache, &["runs", "start", agent.to_str().unwrap(), "--id", "slow", "--goal", "slow steps"]);
    let mut worker = spawn_worker(&db.url, &cache, &agent);
    let store = db.open().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.steps("slow", None, 0).await.unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the run did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || worker.wait().unwrap()).await.unwrap();
    assert!(status.success(), "the drained worker exited with {status}");
    let runs = Runs::new(store.clone());
    let handed_back = runs.get("slow").await.unwrap();
    assert_eq!(handed_back.status, RunStatus::Running, "{handed_back:?}");
    assert!(handed_back.ready_at_ms.is_some());
    let steps = store.steps("slow", None, 0).await.unwrap().len();
    assert!(steps < 10, "the worker finished the run instead of draining ({steps} steps)");

    let worker = spawn_worker(&db.url, &cache, &agent);
    let run = wait_for(&runs, "slow", Duration::from_secs(60), ended).await;
    kill(worker);
    assert_eq!(run.status, RunStatus::Done);
    assert_eq!(store.steps("slow", None, 0).await.unwrap().len(), 10);
    assert_each_request_executed_once(&log);
}

/// `toolhost run` keeps a run record like a worker's: `runs list|show` show it; a run that
/// asks for approval is left waiting (exit 3), approved from the command line and finished
/// by `run --resume`; a sleeping run is woken in the same process; a cancelled one is refused.
async fn toolhost_run_keeps_a_run_record(db: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (url, log) = start_model();
    let agent = agent_file(dir.path(), &url);
    let agent_arg = agent.to_str().unwrap();
    let done = cli_ok(&db.url, &cache, &["run", agent_arg, "--session", "plain"]);
    assert!(done.contains("final answer: result: {\"value\":4.0}"), "{done}");
    let listed: Value = serde_json::from_str(&cli_ok(&db.url, &cache, &["runs", "list", "--json"])).unwrap();
    let plain = &listed.as_array().unwrap()[0];
    assert_eq!((&plain["id"], &plain["agent"], &plain["status"]), (&json!("plain"), &json!("calc"), &json!("done")));
    assert_eq!(plain["steps"], 10, "{plain}");
    assert!(cli_ok(&db.url, &cache, &["runs", "show", "plain"]).contains("status   done"));

    let asked = cli(&db.url, &cache, &["run", agent_arg, "--session", "ask", "--goal", "approve"]);
    let stdout = String::from_utf8_lossy(&asked.stdout);
    assert_eq!(asked.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("run ask is waiting"), "{stdout}");
    assert!(cli_ok(&db.url, &cache, &["runs", "list", "--status", "waiting"]).contains("ask"));
    cli_ok(&db.url, &cache, &["runs", "approve", "ask", "--by", "carol"]);
    let resumed = cli_ok(&db.url, &cache, &["run", agent_arg, "--resume", "ask"]);
    assert!(resumed.contains("final answer: result: {\"value\":42.0}"), "{resumed}");
    let store = db.open().await;
    let runs = Runs::new(store.clone());
    assert_eq!(runs.get("ask").await.unwrap().status, RunStatus::Done);
    assert_eq!(actors(store.as_ref(), "ask").await, fleet_script("approve").0);

    let started = Instant::now();
    let woke = cli_ok(&db.url, &cache, &["run", agent_arg, "--session", "nap", "--goal", "sleep 1"]);
    assert!(started.elapsed() >= Duration::from_secs(1) && woke.contains("woke_at"), "{woke}");
    assert_eq!(runs.get("nap").await.unwrap().status, RunStatus::Done);

    let asked = cli(&db.url, &cache, &["run", agent_arg, "--session", "no", "--goal", "approve"]);
    assert_eq!(asked.status.code(), Some(3));
    cli_ok(&db.url, &cache, &["runs", "cancel", "no"]);
    let refused = cli(&db.url, &cache, &["run", agent_arg, "--resume", "no"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("cancelled"));
    assert_eq!(actors(store.as_ref(), "no").await.len(), 3, "a cancelled run took a step");
    assert_each_request_executed_once(&log);
}

on_both_backends!(
    an_approval_survives_a_restart_of_everything,
    toolhost_run_keeps_a_run_record,
    a_timer_fires_after_a_restart_within_tolerance,
    sigterm_drains_a_worker_and_hands_its_runs_back
);

/// An in-process worker over `store` with the `calc` agent, stopped by dropping the sender.
struct InProcess {
    runs: Runs,
    host: Host,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn in_process(store: Arc<dyn Store>, url: &str) -> InProcess {
    let models = ModelsConfig::from_toml(&models_toml(url, ""), "test").unwrap();
    let config = HostConfig {
        engine: engine_config(),
        policy: Policy::from_toml(POLICY, None).unwrap(),
        models: Some(Arc::new(ModelRouter::from_config(&models).unwrap())),
        leases: Some(LeaseConfig::new(Duration::from_secs(2))),
        ..HostConfig::default()
    };
    let host = Host::with_store(config, store.clone()).unwrap();
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let config = AgentConfig { waits: true, ..AgentConfig::new("fake") };
    let agent = Agent::new(&host, config, vec![calculator, hostile]).unwrap();
    let worker = Worker::new(WorkerConfig { poll: Duration::from_millis(100), ..WorkerConfig::default() }).with_agent(
        "calc",
        host.clone(),
        Arc::new(agent),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        Arc::new(worker)
            .run_until(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    InProcess { runs: Runs::new(store), host, stop: Some(stop), task }
}

impl InProcess {
    async fn start(&self, id: &str, goal: &str) -> Run {
        self.runs.create(&self.host, Some(id.into()), "calc", Goal::new(goal)).await.unwrap()
    }

    async fn stop(mut self) {
        drop(self.stop.take());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn a_denial_reaches_the_model_as_the_tool_result() {
    let (url, log) = start_model();
    let store: Arc<dyn Store> = Arc::new(toolhost::SqliteStore::temporary().unwrap());
    let worker = in_process(store.clone(), &url).await;
    worker.start("deny", "approve it").await;
    let runs = &worker.runs;
    wait_for(runs, "deny", Duration::from_secs(30), awaits("approval")).await;
    assert!(matches!(runs.deny("deny", "", "bob").await, Err(RunError::Invalid { .. })));
    assert!(matches!(runs.deny("nope", "x", "bob").await, Err(RunError::NotFound(_))));
    runs.deny("deny", "not today", "bob").await.unwrap();
    let run = wait_for(runs, "deny", Duration::from_secs(30), ended).await;
    worker.stop().await;

    assert_eq!(run.status, RunStatus::Done);
    let told = "error: the call was denied by bob: not today";
    assert_eq!(run.body.outcome.as_deref(), Some(format!("result: {told}").as_str()));
    let log_requests = log.lock().unwrap().requests.clone();
    let last = &log_requests.last().unwrap().1["messages"];
    let tool_results: Vec<&Value> = last.as_array().unwrap().iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_results.len(), 1);
    assert_eq!(tool_results[0]["content"], told, "the model hears the denial as the call's result");
    let tools = actors(store.as_ref(), "deny").await;
    assert_eq!(tools, ["agent.goal", "agent.model", "agent.wait", "agent.resolved", "agent.model"], "no call ran");
    let audit = store.audit_events(Some("deny")).await.unwrap();
    assert!(audit.iter().any(|e| e.capability == "approval" && !e.allowed && e.reason.contains("not today")));
    assert_each_request_executed_once(&log);
}

#[tokio::test]
async fn a_cancelled_run_never_runs_again() {
    let (url, log) = start_model();
    let store: Arc<dyn Store> = Arc::new(toolhost::SqliteStore::temporary().unwrap());
    let worker = in_process(store.clone(), &url).await;
    worker.start("c1", "event 1").await;
    let runs = &worker.runs;
    wait_for(runs, "c1", Duration::from_secs(30), awaits("event")).await;
    let before = actors(store.as_ref(), "c1").await;
    let cancelled = runs.cancel("c1", "changed my mind").await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    // Its timeout (1 s) passes and an event arrives: nothing moves it.
    assert!(matches!(runs.signal("c1", "go", json!({})).await, Err(RunError::WrongState { .. })));
    assert!(matches!(runs.cancel("c1", "").await, Err(RunError::WrongState { .. })));
    assert!(matches!(runs.approve("c1", None, "x").await, Err(RunError::NotAwaitingApproval { .. })));
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let run = runs.get("c1").await.unwrap();
    worker.stop().await;
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.body.outcome.as_deref(), Some("changed my mind"));
    assert_eq!(actors(store.as_ref(), "c1").await, before, "a cancelled run took a step");
    assert_eq!(log.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn an_event_ends_a_wait_with_its_payload_or_the_timeout_does() {
    let (url, log) = start_model();
    let store: Arc<dyn Store> = Arc::new(toolhost::SqliteStore::temporary().unwrap());
    let worker = in_process(store.clone(), &url).await;
    worker.start("ev", "event 600").await;
    worker.start("late", "event 1").await;
    let runs = &worker.runs;
    wait_for(runs, "ev", Duration::from_secs(30), awaits("event")).await;
    let huge = json!({"blob": "x".repeat(toolhost::run::MAX_PAYLOAD_BYTES)});
    assert!(matches!(runs.signal("ev", "go", huge).await, Err(RunError::Invalid { .. })));
    assert!(matches!(runs.signal("ev", "bad\nname", json!(1)).await, Err(RunError::Invalid { .. })));
    runs.signal("ev", "other", json!({"ignored": true})).await.unwrap();
    runs.signal("ev", "go", json!({"paid": 12})).await.unwrap();
    let run = wait_for(runs, "ev", Duration::from_secs(30), ended).await;
    let timed_out = wait_for(runs, "late", Duration::from_secs(30), ended).await;
    worker.stop().await;

    assert_eq!(run.body.outcome.as_deref(), Some(r#"result: {"event":"go","payload":{"paid":12}}"#));
    assert_eq!(run.body.signals.len(), 1, "the unawaited event stays, the consumed one goes: {:?}", run.body.signals);
    assert!(timed_out.body.outcome.unwrap().contains(r#""timed_out":true"#));
    assert_each_request_executed_once(&log);
}

/// A tool that asks to be called again later is, durably, without the model hearing of it;
/// one that keeps asking has its error told to the model after `MAX_TOOL_RETRIES` retries.
#[tokio::test]
async fn a_tool_asks_for_a_delayed_retry() {
    let (url, log) = start_model();
    let store: Arc<dyn Store> = Arc::new(toolhost::SqliteStore::temporary().unwrap());
    let worker = in_process(store.clone(), &url).await;
    let soon = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 1500;
    worker.start("soon", &format!("retry {soon}")).await;
    worker.start("never", &format!("retry {}", u64::MAX / 2)).await;
    let runs = &worker.runs;
    let waiting = wait_for(runs, "soon", Duration::from_secs(30), awaits("retry")).await;
    assert!(waiting.to_owned().body.waiting.unwrap().wait.to_string().contains("retry 1 of `hostile`"));
    let run = wait_for(runs, "soon", Duration::from_secs(30), ended).await;
    let gave_up = wait_for(runs, "never", Duration::from_secs(60), ended).await;
    worker.stop().await;

    assert!(run.body.outcome.as_deref().unwrap().contains("\"echo\""), "{run:?}");
    let steps = store.steps("soon", None, 0).await.unwrap();
    let calls: Vec<_> = steps.iter().filter(|s| s.tool == "hostile").collect();
    assert!((2..=3).contains(&calls.len()), "{calls:?}");
    for pair in calls.windows(2) {
        assert!(matches!(pair[0].outcome, toolhost::store::StepOutcome::Failed(_)));
        assert!(pair[1].committed_at_ms - pair[0].committed_at_ms >= 1000, "retried before its delay");
    }
    let tries = actors(store.as_ref(), "never").await.iter().filter(|t| *t == "hostile").count();
    assert_eq!(tries as u32, toolhost::agent::MAX_TOOL_RETRIES + 1);
    assert!(gave_up.body.outcome.unwrap().contains("retry-after=1; not yet"), "the model hears the error at last");
    // Two model turns each: the retries are not the model's business.
    assert_eq!(log.lock().unwrap().requests.len(), 4);
    assert_each_request_executed_once(&log);
}

/// What a fleet run's goal makes it do: its steps, in order, and its model requests.
fn fleet_script(goal: &str) -> (&'static [&'static str], usize) {
    const STEPS: &[&str] = &[
        "agent.goal",
        "agent.model",
        "calculator",
        "agent.model",
        "calculator",
        "agent.model",
        "calculator",
        "agent.model",
        "calculator",
        "agent.model",
    ];
    const APPROVE: &[&str] =
        &["agent.goal", "agent.model", "agent.wait", "agent.resolved", "calculator", "agent.model"];
    const SLEEP: &[&str] = &["agent.goal", "agent.model", "agent.wait", "agent.resolved", "agent.model"];
    match goal.split_whitespace().next() {
        Some("steps") => (STEPS, 5),
        Some("approve") => (APPROVE, 2),
        _ => (SLEEP, 2),
    }
}

/// Issue #18's fleet: three worker processes on Postgres, 200 runs of five model turns, or
/// an approval, or a 2-3 s timer, workers SIGKILLed at random and restarted: every run ends
/// done with exactly its steps (none committed twice), each model request was executed once
/// (a request sent again after a kill is the same request under the same key), every
/// approval decision appears once in its run's steps, and no timer fired early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_finish_every_run_once() {
    let Some(db) = TestStore::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (url, log) = start_model();
    let agent = agent_file(dir.path(), &url);
    let store = db.open().await;
    let runs = Runs::new(store.clone());
    // Creating runs needs only a host on the store.
    let host =
        Host::with_store(HostConfig { engine: engine_config(), ..HostConfig::default() }, store.clone()).unwrap();
    const RUNS: usize = 200;
    const KILLS: usize = 16;
    let goal_of = |i: usize| match i {
        i if i % 5 == 0 => format!("sleep {}", 2 + i % 2),
        i if i % 7 == 3 => "approve".to_owned(),
        _ => "steps".to_owned(),
    };
    for i in 0..RUNS {
        runs.create(&host, Some(format!("fleet-{i}")), "calc", Goal::new(goal_of(i))).await.unwrap();
    }
    let mut workers: Vec<Child> = (0..3).map(|_| spawn_worker(&db.url, &cache, &agent)).collect();
    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(150);
    let mut kills = 0;
    let mut approved = std::collections::BTreeSet::new();
    loop {
        let listed = runs.list(None).await.unwrap();
        // A person approves what waits for approval, as workers die around them.
        for run in listed.iter().filter(|r| awaits("approval")(r)) {
            runs.approve(&run.id, None, "fleet-reviewer").await.unwrap();
            assert!(approved.insert(run.id.clone()), "{} asked for approval twice", run.id);
        }
        let left = listed.iter().filter(|r| !r.status.is_final()).count();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} runs still not ended");
        tokio::time::sleep(Duration::from_millis(100 + crate::crash::next_random(&mut random) % 400)).await;
        if kills < KILLS {
            let victim = (crate::crash::next_random(&mut random) % workers.len() as u64) as usize;
            kill(workers.remove(victim));
            kills += 1;
            workers.push(spawn_worker(&db.url, &cache, &agent));
        }
    }
    let took = started.elapsed();
    for worker in workers {
        kill(worker);
    }
    // The timers alone keep the fleet busy for 2-3 s: kills land while runs are in flight.
    assert!(kills >= 5, "only {kills} workers were killed in {took:?}");
    let mut expected_requests = 0;
    let all = runs.list(None).await.unwrap();
    assert_eq!(all.len(), RUNS);
    for run in all {
        assert_eq!(run.status, RunStatus::Done, "{run:?}");
        let steps = store.steps(&run.id, None, 0).await.unwrap();
        let actors: Vec<&str> = steps.iter().map(|s| s.tool.as_str()).collect();
        let (expected, requests) = fleet_script(&run.body.goal.text);
        expected_requests += requests;
        assert_eq!(actors, expected, "{}: a step missing or committed twice", run.id);
        assert!(steps.iter().enumerate().all(|(i, s)| s.seq == i as u64 + 1), "{}: steps out of order", run.id);
        let resolved = steps.iter().find(|s| s.tool == "agent.resolved").map(|s| {
            let input: Value = serde_json::from_str(&s.input).unwrap();
            input["resolution"].clone()
        });
        match run.body.goal.text.split_whitespace().next() {
            Some("approve") => {
                let decision = &resolved.unwrap()["decision"];
                assert_eq!((&decision["decision"], &decision["by"]), (&json!("approve"), &json!("fleet-reviewer")));
                let audited = store.audit_events(Some(&run.id)).await.unwrap();
                let audited = audited.iter().filter(|e| e.capability == "approval").count();
                assert_eq!(audited, 1, "{}: the decision must be audited once", run.id);
                assert!(approved.contains(&run.id));
            }
            Some("sleep") => {
                let wait: Value = serde_json::from_str(&steps[2].input).unwrap();
                let until = wait["wait"]["until_ms"].as_i64().unwrap();
                let fired = resolved.unwrap()["at_ms"].as_i64().unwrap();
                assert!(fired >= until, "{}: the timer fired {} ms early", run.id, until - fired);
            }
            _ => assert!(resolved.is_none()),
        }
    }
    // One execution per committed model turn: no request was made again under a new step.
    // A kill between a response and its commit re-sends it under the same idempotency key,
    // which a provider answers from its cache; that it is the same request shows here.
    let log = log.lock().unwrap();
    assert_eq!(log.executions.len(), expected_requests, "a model request was made for a step never committed");
    let mut first: HashMap<&str, &Value> = HashMap::new();
    for (key, request) in &log.requests {
        let seen = first.entry(key).or_insert(request);
        assert_eq!(seen["messages"], request["messages"], "key {key} was sent with a different request");
    }
    let redelivered = log.executions.values().filter(|n| **n > 1).count();
    eprintln!(
        "{RUNS} runs in {took:.1?}; {kills} workers killed; {redelivered} model requests redelivered under their key"
    );
}

fn record(id: &str, ready_at_ms: Option<i64>) -> toolhost::store::RunRecord {
    toolhost::store::RunRecord {
        id: id.into(),
        agent: "calc".into(),
        status: RunStatus::Running,
        ready_at_ms,
        version: 1,
        created_at_ms: 1,
        updated_at_ms: 1,
        body: "{}".into(),
    }
}

async fn session(store: &dyn Store, id: &str) {
    let seed = [7; 32];
    let s = toolhost::store::SessionRecord { id: id.into(), seed, forked_from: None, created_at_ms: 1, last_step: 0 };
    store.create_session(&s).await.unwrap();
}

/// The store's side of runs: versions are compare-and-set, a worker's write is fenced by its
/// lease, and concurrent claims never hand out one run twice.
async fn the_store_keeps_the_runs_contract(store: Arc<dyn Store>) {
    use toolhost::store::StoreError;
    assert!(matches!(store.create_run(&record("ghost", None)).await, Err(StoreError::SessionNotFound(_))));
    for i in 0..20 {
        session(store.as_ref(), &format!("r{i}")).await;
        store.create_run(&record(&format!("r{i}"), Some(0))).await.unwrap();
    }
    assert!(matches!(store.create_run(&record("r0", None)).await, Err(StoreError::RunExists(_))));
    assert_eq!(store.list_runs(Some(RunStatus::Running)).await.unwrap().len(), 20);
    assert!(store.list_runs(Some(RunStatus::Done)).await.unwrap().is_empty());

    // Compare-and-set: version 2 replaces 1 once; a second writer of version 2 is refused.
    let mut next = store.run("r0").await.unwrap().unwrap();
    next.version = 2;
    next.status = RunStatus::Waiting;
    next.ready_at_ms = None;
    store.update_run(&next, None).await.unwrap();
    assert!(matches!(store.update_run(&next, None).await, Err(StoreError::RunConflict { found: 2, .. })));
    assert_eq!(store.run("r0").await.unwrap().unwrap().status, RunStatus::Waiting);

    // Claims: 19 ready runs over four concurrent claimers, each run to exactly one.
    let claims = (0..4).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let holder = format!("w{w}");
            let mut got = Vec::new();
            loop {
                let leases = store.claim_runs(&["calc".into()], &holder, Duration::from_secs(30), 3).await.unwrap();
                if leases.is_empty() {
                    return got;
                }
                got.extend(leases);
            }
        })
    });
    let mut claimed: Vec<toolhost::store::Lease> = Vec::new();
    for claim in claims {
        claimed.extend(claim.await.unwrap());
    }
    let mut ids: Vec<&str> = claimed.iter().map(|l| l.session.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((ids.len(), claimed.len()), (19, 19), "a run was claimed twice or missed");
    assert!(!ids.contains(&"r0"), "a run that is not ready was claimed");
    let other = store.claim_runs(&["other".into()], "w9", Duration::from_secs(30), 10).await.unwrap();
    assert!(other.is_empty(), "claimed a run of an agent it does not have");

    // Fencing: a write under the claim's lease passes; once the lease is taken over, refused.
    let lease = claimed.iter().find(|l| l.session == "r1").unwrap().clone();
    let mut run = store.run("r1").await.unwrap().unwrap();
    run.version += 1;
    store.update_run(&run, Some(lease.token)).await.unwrap();
    store.release_lease("r1", lease.token).await.unwrap();
    store.acquire_lease("r1", "someone-else", Duration::from_secs(30)).await.unwrap();
    run.version += 1;
    assert!(matches!(store.update_run(&run, Some(lease.token)).await, Err(StoreError::LeaseLost { .. })));
    assert_eq!(store.run("r1").await.unwrap().unwrap().version, run.version - 1, "the fenced write left no trace");
    // Every ready run is leased: none is claimable before a lease expires, so an idle worker
    // sleeps until then instead of polling.
    let next = store.next_ready_at(&["calc".into()]).await.unwrap().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(next > now + 20_000, "claimable at {next}, now is {now}");
    // A released lease makes its run claimable from its ready time.
    store.release_lease("r2", claimed.iter().find(|l| l.session == "r2").unwrap().token).await.unwrap();
    assert_eq!(store.next_ready_at(&["calc".into()]).await.unwrap(), Some(0));
    // A deleted session takes its run with it.
    assert!(store.delete_session("r2", None).await.unwrap());
    assert!(store.run("r2").await.unwrap().is_none());
}

async fn the_store_keeps_the_runs_contract_on(db: &TestStore) {
    the_store_keeps_the_runs_contract(db.open().await).await;
}

on_both_backends!(the_store_keeps_the_runs_contract_on);

#[tokio::test]
async fn the_memory_store_keeps_the_runs_contract() {
    the_store_keeps_the_runs_contract(Arc::new(toolhost::MemoryStore::new())).await;
}

/// Claims take runs whose wait came due before runs that have work to do now, however much
/// earlier those became ready: a backlog of runs that have not started never holds a due
/// timer up (the runs benchmark's timer lateness).
async fn due_waits_are_claimed_before_new_runs(store: Arc<dyn Store>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for i in 0..5 {
        session(store.as_ref(), &format!("new{i}")).await;
        store.create_run(&record(&format!("new{i}"), Some(i))).await.unwrap();
    }
    for (id, due) in [("due", now - 50), ("later", now + 60_000)] {
        session(store.as_ref(), id).await;
        let waiting = toolhost::store::RunRecord { status: RunStatus::Waiting, ..record(id, Some(due)) };
        store.create_run(&waiting).await.unwrap();
    }
    let agents = ["calc".to_owned()];
    let first = store.claim_runs(&agents, "w", Duration::from_secs(30), 1).await.unwrap();
    assert_eq!(first.iter().map(|l| l.session.as_str()).collect::<Vec<_>>(), ["due"]);
    let rest = store.claim_runs(&agents, "w", Duration::from_secs(30), 10).await.unwrap();
    let rest: Vec<&str> = rest.iter().map(|l| l.session.as_str()).collect();
    assert_eq!(rest, ["new0", "new1", "new2", "new3", "new4"], "then the others, earliest first; a wait not due stays");
}

async fn due_waits_are_claimed_before_new_runs_on(db: &TestStore) {
    due_waits_are_claimed_before_new_runs(db.open().await).await;
}

on_both_backends!(due_waits_are_claimed_before_new_runs_on);

#[tokio::test]
async fn due_waits_are_claimed_before_new_runs_in_memory() {
    due_waits_are_claimed_before_new_runs(Arc::new(toolhost::MemoryStore::new())).await;
}

/// A run its agent cannot start (its plan names a tool the agent lacks) fails at once, with
/// the reason; the model is never asked.
#[tokio::test]
async fn a_run_its_agent_cannot_start_fails_at_once() {
    let (url, log) = start_model();
    let store: Arc<dyn Store> = Arc::new(toolhost::MemoryStore::new());
    let worker = in_process(store.clone(), &url).await;
    let goal = Goal::new("steps").with_task(toolhost::Task::using("Use it.", "nope"));
    worker.runs.create(&worker.host, Some("bad".into()), "calc", goal).await.unwrap();
    assert!(matches!(worker.runs.create(&worker.host, None, "", Goal::new("x")).await, Err(RunError::Invalid { .. })));
    let run = wait_for(&worker.runs, "bad", Duration::from_secs(30), ended).await;
    worker.stop().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.body.failed_attempts, 1, "retried a run that cannot start");
    assert!(run.body.outcome.unwrap().contains("names the tool `nope`"));
    assert!(log.lock().unwrap().requests.is_empty());
}

/// On Postgres an idle worker is woken by the decision itself (`LISTEN/NOTIFY`), not by its
/// poll: with a 60 s poll the approved run still finishes within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_wakes_an_idle_worker_on_postgres() {
    let Some(db) = TestStore::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (url, log) = start_model();
    let agent = agent_file(dir.path(), &url);
    cli_ok(&db.url, &cache, &["runs", "start", agent.to_str().unwrap(), "--id", "woken", "--goal", "approve"]);
    let mut worker = toolhost(&db.url, &cache)
        .args(["worker", "--agent", agent.to_str().unwrap(), "--poll-ms", "60000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    capture_stderr(&mut worker);
    let runs = Runs::new(db.open().await);
    wait_for(&runs, "woken", Duration::from_secs(60), awaits("approval")).await;
    // Let the worker go idle on its 60 s wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let approved = Instant::now();
    cli_ok(&db.url, &cache, &["runs", "approve", "woken"]);
    let run = wait_for(&runs, "woken", Duration::from_secs(20), ended).await;
    let took = approved.elapsed();
    kill(worker);
    assert_eq!(run.status, RunStatus::Done);
    assert!(took < Duration::from_secs(10), "the worker woke only after {took:?}");
    assert_each_request_executed_once(&log);
}
