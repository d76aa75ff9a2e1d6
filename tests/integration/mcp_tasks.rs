//! MCP Tasks (the 2026-07-28 `io.modelcontextprotocol/tasks` extension) driven by the official
//! MCP Python SDK (tests/mcp/tasks_client.py): a long call's task handle polled to completion
//! across a SIGKILL of its server, clients without the extension served as before, and an
//! agent run started through a tool whose approval the client answers in the task.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use toolhost::mcp::{HttpOptions, McpAgent, McpLimits, McpServer};
use toolhost::run::{Worker, WorkerConfig};
use toolhost::{Agent, AgentConfig, Host, HostConfig, LeaseConfig, ModelRouter, ModelsConfig, Policy, Store};

use crate::mcp::read_url;
use crate::support::guests;

const TOOLHOST: &str = env!("CARGO_BIN_EXE_toolhost");

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/tasks_client.py")
}

fn client(args: &[&str]) -> Command {
    let mut command = Command::new(crate::support::venv_python());
    command.arg(client_script()).args(args).env("PYTHONUNBUFFERED", "1");
    command
}

/// The last stdout line of a finished client, as JSON; panics with its output if it failed.
fn report(output: std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tasks_client.py failed ({}):\n{stdout}\n{stderr}", output.status);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}\n{stderr}"))
}

/// `toolhost serve --http ADDR` with the hostile tool (its `sleep` attack is the long call):
/// calls become tasks after 300 ms, and a dead server's tasks are taken over after 1.5 s.
struct Server {
    child: Child,
    url: String,
    _stderr: std::thread::JoinHandle<()>,
}

impl Server {
    fn start(db: &Path, addr: &str) -> Self {
        let tools = ["--tools", &guests().hostile.display().to_string(), "--grant-requested"].map(String::from);
        Self::serving(db, addr, &tools)
    }

    /// `toolhost serve --http ADDR` serving what `what` names (tools, agents).
    fn serving(db: &Path, addr: &str, what: &[String]) -> Self {
        let cache = crate::support::engine_config().cache_dir.expect("a cache dir");
        let mut child = Command::new(TOOLHOST)
            .args(["--cache-dir", &cache.display().to_string(), "--db", &db.display().to_string(), "serve"])
            .args(what)
            .args(["--http", addr, "--task-after-ms", "300", "--task-lease-ms", "1500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting toolhost serve --http");
        let (url, stderr) = read_url(child.stderr.take().unwrap());
        Self { child, url, _stderr: stderr }
    }

    fn addr(&self) -> String {
        self.url.trim_start_matches("http://").split('/').next().unwrap().to_owned()
    }

    /// SIGKILL: nothing finishes, nothing is flushed on the way out.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_long_calls_task_is_polled_to_completion_across_a_server_kill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let first = Server::start(&db, "127.0.0.1:0");
    let addr = first.addr();

    let mut polling = client(&["long-call", "--url", &first.url, "--ms", "4000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the client");
    let mut stdout = BufReader::new(polling.stdout.take().unwrap());
    let mut line = String::new();
    let task = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the client ended without a task handle");
        if let Some(id) = line.trim().strip_prefix("TASK ") {
            break id.to_owned();
        }
    };
    // The call sleeps 4 s in the first server: kill it mid-call, start another on the store.
    first.kill();
    let second = Server::start(&db, &addr);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut polling.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = polling.wait().unwrap();
    assert!(status.success(), "the client failed ({status}):\n{line}{rest}\n{stderr}");
    let report: Value = serde_json::from_str(rest.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no report ({e}):\n{rest}\n{stderr}"));

    assert_eq!(report["task"], task.as_str(), "{report}");
    assert_eq!(report["created_status"], "working", "{report}");
    assert_eq!(report["result"]["is_error"], false, "{report}");
    assert_eq!(report["result"]["structured"]["echo"], 4000, "{report}");
    assert_eq!(report["statuses"].as_array().unwrap().last().unwrap(), "completed", "{report}");

    // The second server took the task over and ran its call once: the first never committed.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> =
            toolhost::store::StoreUrl::Sqlite(db.clone()).open().await.expect("opening the store");
        let row = store.task(&task).await.unwrap().expect("the task's row");
        let body: Value = serde_json::from_str(&row.body).unwrap();
        assert_eq!(body["takeovers"], 1, "{body}");
        assert_eq!(body["progress"]["status"], "completed", "{body}");
        let session = body["work"]["session"].as_str().unwrap();
        let steps = store.steps(session, None, 0).await.unwrap();
        assert_eq!(steps.len(), 1, "the call committed once: {steps:?}");
    });
    drop(second);
}

#[test]
fn clients_without_the_tasks_extension_wait_for_the_result_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("sessions.db"), "127.0.0.1:0");
    for mode in ["legacy", "2026-07-28"] {
        let report = report(client(&["plain", "--url", &server.url, "--ms", "1200", "--mode", mode]).output().unwrap());
        let expected = if mode == "legacy" { "2025-11-25" } else { mode };
        assert_eq!(report["protocol_version"], expected, "{report}");
        assert_eq!(report["result"]["is_error"], false, "{report}");
        assert_eq!(report["result"]["structured"]["echo"], 1200, "{report}");
        assert!(report["waited_s"].as_f64().unwrap() >= 1.2, "{report}");
    }
}

/// An OpenAI-compatible model that asks for `calculator` with `6*7`, then answers with
/// what the call returned (the approval's outcome, when denied).
fn start_model() -> String {
    async fn complete(axum::Json(request): axum::Json<Value>) -> axum::Json<Value> {
        let messages = request["messages"].as_array().cloned().unwrap_or_default();
        let results: Vec<&str> =
            messages.iter().filter(|m| m["role"] == "tool").filter_map(|m| m["content"].as_str()).collect();
        let message = match results.last() {
            None => json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c0", "type": "function",
                "function": {"name": "calculator", "arguments": json!({"expression": "6*7"}).to_string()}}]}),
            Some(last) => json!({"role": "assistant", "content": format!("result: {last}")}),
        };
        let finish = if message["tool_calls"].is_array() { "tool_calls" } else { "stop" };
        axum::Json(json!({"model": "scripted", "choices": [{"index": 0, "finish_reason": finish, "message": message}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5}}))
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(complete));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}/v1", rx.recv().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_asked_over_mcp_lets_the_run_finish_and_a_denial_reaches_the_model() {
    let url = start_model();
    let models = format!(
        "[providers.fake]\nkind = \"openai\"\nbase_url = \"{url}\"\n\n[aliases.fake]\nprovider = \"fake\"\nmodel = \"scripted\"\n"
    );
    let models = ModelsConfig::from_toml(&models, "test").unwrap();
    let store: Arc<dyn Store> = Arc::new(toolhost::SqliteStore::temporary().unwrap());
    let config = HostConfig {
        engine: crate::support::engine_config(),
        policy: Policy::from_toml("[tools.calculator]\napproval = \"always\"\n", None).unwrap(),
        models: Some(Arc::new(ModelRouter::from_config(&models).unwrap())),
        leases: Some(LeaseConfig::new(Duration::from_secs(2))),
        ..HostConfig::default()
    };
    let host = Host::with_store(config, store.clone()).unwrap();
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    let agent = Agent::new(&host, AgentConfig { waits: true, ..AgentConfig::new("fake") }, vec![calculator]).unwrap();
    let worker = Worker::new(WorkerConfig { poll: Duration::from_millis(100), ..WorkerConfig::default() }).with_agent(
        "calc",
        host.clone(),
        Arc::new(agent),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(Arc::new(worker).run_until(async move {
        let _ = stopped.await;
    }));
    let agent = McpAgent { name: "calc".into(), description: "Does arithmetic.".into(), host: host.clone() };
    let server =
        McpServer::new(host.clone(), Vec::new(), McpLimits::default()).unwrap().with_agents(vec![agent]).unwrap();
    let http = server
        .serve_http(HttpOptions { addr: "127.0.0.1:0".parse().unwrap(), ..HttpOptions::default() })
        .await
        .unwrap();
    let mcp_url = http.url();
    let ask = move |decision: &'static str| {
        let url = mcp_url.clone();
        tokio::task::spawn_blocking(move || {
            let args = ["approve", "--url", &url, "--tool", "calc", "--goal", "what is 6*7", "--decision", decision];
            report(client(&args).output().unwrap())
        })
    };

    let approved = ask("accept").await.unwrap();
    assert_eq!(approved["result"]["is_error"], false, "{approved}");
    assert!(approved["result"]["text"].as_str().unwrap().contains("42"), "the approved call ran: {approved}");
    let statuses = approved["statuses"].as_array().unwrap();
    assert!(statuses.contains(&json!("input_required")), "{approved}");
    assert_eq!(statuses.last().unwrap(), "completed", "{approved}");
    let question = &approved["asked"][0];
    assert_eq!(question["mode"], "form", "{approved}");
    assert!(question["message"].as_str().unwrap().contains("`calculator`"), "{approved}");

    let denied = ask("decline").await.unwrap();
    assert_eq!(denied["result"]["is_error"], false, "{denied}");
    let text = denied["result"]["text"].as_str().unwrap();
    assert!(text.contains("denied") && text.contains("not today") && !text.contains("42"), "{denied}");

    // Both decisions are audited once, by the MCP client.
    let decisions: Vec<_> =
        store.audit_events(None).await.unwrap().into_iter().filter(|e| e.capability == "approval").collect();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(decisions.iter().all(|e| e.reason.contains("mcp:")), "{decisions:?}");
    assert_eq!(decisions.iter().filter(|e| e.allowed).count(), 1, "{decisions:?}");
    let runs = toolhost::run::Runs::new(store.clone()).list(None).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.status == toolhost::store::RunStatus::Done), "{runs:?}");

    http.shutdown().await.unwrap();
    drop(stop);
    worker.await.unwrap().unwrap();
}

/// `toolhost serve --agent calc.toml`, end to end: the real binary serves the agent (its
/// scripted model asks for a calculator call that needs approval), a client that takes tasks
/// calls it, accepts the approval in the task, and the run completes.
#[test]
fn serve_with_an_agent_file_runs_the_agent_as_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let model = start_model();
    std::fs::write(dir.path().join("policy.toml"), "[tools.calculator]\napproval = \"always\"\n").unwrap();
    let agent = format!(
        "goal = \"arithmetic\"\ntools = [{:?}]\npolicy = \"policy.toml\"\n\n[agent]\nmodel = \"fake\"\nwaits = true\n\
         max_turns = 8\n\n[models.providers.fake]\nkind = \"openai\"\nbase_url = \"{model}\"\n\n\
         [models.aliases.fake]\nprovider = \"fake\"\nmodel = \"scripted\"\n",
        guests().calculator.display().to_string()
    );
    let agent_path = dir.path().join("calc.toml");
    std::fs::write(&agent_path, agent).unwrap();
    let db = dir.path().join("sessions.db");
    let agent_args = ["--agent".into(), agent_path.display().to_string(), "--task-ttl-secs".into(), "1".into()];
    let server = Server::serving(&db, "127.0.0.1:0", &agent_args);

    let args = ["approve", "--url", &server.url, "--tool", "calc", "--goal", "what is 6*7", "--decision", "accept"];
    let report = report(client(&args).output().unwrap());
    assert_eq!(report["result"]["is_error"], false, "{report}");
    assert!(report["result"]["text"].as_str().unwrap().contains("42"), "the approved call ran: {report}");
    let statuses = report["statuses"].as_array().unwrap();
    assert!(statuses.contains(&json!("input_required")), "{report}");
    assert_eq!(statuses.last().unwrap(), "completed", "{report}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> = toolhost::store::StoreUrl::Sqlite(db.clone()).open().await.unwrap();
        let runs = toolhost::run::Runs::new(store).list(None).await.unwrap();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].status, toolhost::store::RunStatus::Done, "{runs:?}");
    });

    // Its task is kept --task-ttl-secs (1) past its claim; once that ran out, `toolhost
    // sessions prune` removes it and tasks/get answers the unknown-task error. (The SDK's
    // DetailedTask model drops `ttlMs`; the unit test in src/mcp/tasks.rs checks it.)
    let task = report["task"].as_str().unwrap();
    let got = self::report(client(&["get", "--url", &server.url, "--task", task]).output().unwrap());
    assert_eq!(got["status"], "completed", "{got}");
    std::thread::sleep(Duration::from_millis(2600));
    let cache = crate::support::engine_config().cache_dir.expect("a cache dir");
    let prune = Command::new(TOOLHOST)
        .args(["--cache-dir", &cache.display().to_string(), "--db", &db.display().to_string()])
        .args(["sessions", "prune", "--older-than", "1h"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&prune.stdout);
    assert!(
        prune.status.success() && printed.contains("1 tasks"),
        "{printed}{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    let gone = self::report(client(&["get", "--url", &server.url, "--task", task]).output().unwrap());
    assert_eq!(gone["error"]["code"], -32602, "{gone}");
    drop(server);
}

/// The `tasks` table: created once, read back, changed only from the version it replaces.
async fn task_rows_are_compare_and_set(db: &crate::backends::TestStore) {
    use toolhost::store::{StoreError, TaskRecord};
    let store = toolhost::store::open(&db.url).await.unwrap();
    let task = TaskRecord {
        id: "t1".into(),
        version: 1,
        created_at_ms: 5,
        updated_at_ms: 5,
        session: Some("s1".into()),
        expires_at_ms: 100,
        body: "{}".into(),
    };
    store.create_task(&task).await.unwrap();
    assert!(matches!(store.create_task(&task).await, Err(StoreError::TaskExists(_))));
    assert_eq!(store.task("t1").await.unwrap().as_ref(), Some(&task));
    assert_eq!(store.task("t2").await.unwrap(), None);
    let next = TaskRecord { version: 2, updated_at_ms: 9, body: "{\"a\":1}".into(), ..task.clone() };
    store.update_task(&next).await.unwrap();
    // A writer that read version 1 too loses.
    assert!(matches!(store.update_task(&next).await, Err(StoreError::TaskConflict { found: 2, .. })));
    let missing = TaskRecord { id: "t2".into(), ..next.clone() };
    assert!(matches!(store.update_task(&missing).await, Err(StoreError::TaskNotFound(_))));
    assert_eq!(store.task("t1").await.unwrap(), Some(next));
}

/// Task retention: deleting a session removes its tasks; a prune removes the tasks whose TTL
/// ran out (a run's, which has no session, too) and keeps the others.
async fn tasks_go_with_their_session_and_when_their_ttl_runs_out(db: &crate::backends::TestStore) {
    use toolhost::store::TaskRecord;
    let host = Host::with_store(
        HostConfig { engine: crate::support::engine_config(), ..HostConfig::default() },
        db.open().await,
    )
    .unwrap();
    let store = host.store();
    let session = host.new_session().await.unwrap();
    let id = session.id().to_owned();
    session.close().await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let task = |name: &str, session: Option<&str>, expires_at_ms: i64| TaskRecord {
        id: name.into(),
        version: 1,
        created_at_ms: now,
        updated_at_ms: now,
        session: session.map(Into::into),
        expires_at_ms,
        body: "{}".into(),
    };
    let later = now + 3_600_000;
    for t in [task("of-session", Some(&id), later), task("expired-run", None, now - 1), task("live-run", None, later)] {
        store.create_task(&t).await.unwrap();
    }
    assert!(host.delete_session(&id).await.unwrap());
    assert_eq!(store.task("of-session").await.unwrap(), None, "the deleted session's task stayed");
    let report = host.prune_sessions(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(report.tasks, 1, "{report:?}");
    assert_eq!(store.task("expired-run").await.unwrap(), None);
    assert!(store.task("live-run").await.unwrap().is_some(), "a task within its TTL was removed");
}

crate::backends::on_both_backends!(
    task_rows_are_compare_and_set,
    tasks_go_with_their_session_and_when_their_ttl_runs_out
);
