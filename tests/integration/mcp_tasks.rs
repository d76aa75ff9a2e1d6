//! MCP Tasks (the 2026-07-28 `io.modelcontextprotocol/tasks` extension) driven by the official
//! MCP Python SDK (tests/mcp/tasks_client.py): a long call's task handle polled to completion
//! across a SIGKILL of its server, clients without the extension served as before, an agent
//! run started through a tool whose approval the client answers in the task, and the same
//! approval asked on a plain call as a multi round-trip input request (SEP-2322).

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

/// The task id a client prints (`TASK <id>`) once its call became a task.
fn task_handle(stdout: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the client ended without a task handle");
        if let Some(id) = line.trim().strip_prefix("TASK ") {
            return id.to_owned();
        }
    }
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
    let task = task_handle(&mut stdout);
    // The call sleeps 4 s in the first server: kill it mid-call, start another on the store.
    first.kill();
    let second = Server::start(&db, &addr);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut polling.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = polling.wait().unwrap();
    assert!(status.success(), "the client failed ({status}):\nTASK {task}\n{rest}\n{stderr}");
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

/// A task whose server died is finished by the next server on the store on its own: the
/// client that started it is gone too and never polls again.
#[test]
fn an_orphaned_task_is_taken_over_on_server_start_without_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let first = Server::start(&db, "127.0.0.1:0");
    let mut polling = client(&["long-call", "--url", &first.url, "--ms", "2500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the client");
    let mut stdout = BufReader::new(polling.stdout.take().unwrap());
    let task = task_handle(&mut stdout);
    polling.kill().unwrap();
    polling.wait().unwrap();
    first.kill();
    let second = Server::start(&db, "127.0.0.1:0");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> =
            toolhost::store::StoreUrl::Sqlite(db.clone()).open().await.expect("opening the store");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let body = loop {
            let row = store.task(&task).await.unwrap().expect("the task's row");
            let body: Value = serde_json::from_str(&row.body).unwrap();
            if body["progress"]["status"] != "working" {
                assert_eq!(row.claimed_until_ms, None, "an ended task holds no claim");
                break body;
            }
            assert!(std::time::Instant::now() < deadline, "nobody took the orphan over: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(body["progress"]["status"], "completed", "{body}");
        assert_eq!(body["progress"]["result"]["structuredContent"]["echo"], 2500, "{body}");
        assert!(body["takeovers"].as_u64().unwrap() >= 1, "{body}");
        let session = body["work"]["session"].as_str().unwrap();
        assert_eq!(store.steps(session, None, 0).await.unwrap().len(), 1, "the call committed once");
    });
    drop(second);
}

/// A flood of long tool calls from one client that takes tasks, against `toolhost serve
/// --max-working-tasks 2`: two become tasks (and finish in the background); the others are
/// not made tasks and answer when they end, so the store gets no more task rows than the limit.
#[test]
fn a_flood_of_long_calls_makes_no_more_tasks_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let tools = ["--tools", &guests().hostile.display().to_string(), "--grant-requested"].map(String::from);
    let limit = ["--max-working-tasks".to_owned(), "2".to_owned()];
    let server = Server::serving(&db, "127.0.0.1:0", &[tools.as_slice(), limit.as_slice()].concat());
    let args = ["flood", "--url", &server.url, "--tool", "hostile", "--ms", "1500", "--n", "6"];
    let report = report(client(&args).output().unwrap());
    let tasks: Vec<&str> = report["tasks"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tasks.len(), 2, "{report}");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{report}");
    assert!(results.iter().all(|r| r["is_error"] == false && r["structured"]["echo"] == 1500), "{report}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> =
            toolhost::store::StoreUrl::Sqlite(db.clone()).open().await.expect("opening the store");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for task in tasks {
            loop {
                let row = store.task(task).await.unwrap().expect("the task's row");
                let body: Value = serde_json::from_str(&row.body).unwrap();
                if body["progress"]["status"] == "completed" {
                    assert_eq!(body["progress"]["result"]["structuredContent"]["echo"], 1500, "{body}");
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "a task did not finish: {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    drop(server);
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

/// An MCP server on SQLite serving agent `calc` (its calculator calls need approval) with
/// an in-process worker driving its runs.
struct AgentServer {
    url: String,
    store: Arc<dyn Store>,
    http: toolhost::mcp::HttpServer,
    stop: tokio::sync::oneshot::Sender<()>,
    worker: tokio::task::JoinHandle<Result<toolhost::run::WorkerStats, toolhost::run::RunError>>,
}

impl AgentServer {
    async fn start() -> Self {
        Self::with_limits(McpLimits::default()).await
    }

    async fn with_limits(limits: McpLimits) -> Self {
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
        let agent =
            Agent::new(&host, AgentConfig { waits: true, ..AgentConfig::new("fake") }, vec![calculator]).unwrap();
        let worker = Worker::new(WorkerConfig { poll: Duration::from_millis(100), ..WorkerConfig::default() })
            .with_agent("calc", host.clone(), Arc::new(agent));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(Arc::new(worker).run_until(async move {
            let _ = stopped.await;
        }));
        let agent = McpAgent { name: "calc".into(), description: "Does arithmetic.".into(), host: host.clone() };
        let server = McpServer::new(host.clone(), Vec::new(), limits).unwrap().with_agents(vec![agent]).unwrap();
        let http = server
            .serve_http(HttpOptions { addr: "127.0.0.1:0".parse().unwrap(), ..HttpOptions::default() })
            .await
            .unwrap();
        Self { url: http.url(), store, http, stop, worker }
    }

    /// Runs tasks_client.py `args` (after the scenario, `--url` is added) on a blocking thread.
    fn client(&self, args: &[&str]) -> impl std::future::Future<Output = Value> + use<> {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.splice(1..1, ["--url".to_owned(), self.url.clone()]);
        let running = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            report(client(&args).output().unwrap())
        });
        async move { running.await.unwrap() }
    }

    async fn approvals(&self) -> Vec<toolhost::store::AuditEvent> {
        self.store.audit_events(None).await.unwrap().into_iter().filter(|e| e.capability == "approval").collect()
    }

    async fn stop(self) {
        self.http.shutdown().await.unwrap();
        drop(self.stop);
        self.worker.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_asked_over_mcp_lets_the_run_finish_and_a_denial_reaches_the_model() {
    let server = AgentServer::start().await;
    let ask = |decision: &'static str| {
        server.client(&["approve", "--tool", "calc", "--goal", "what is 6*7", "--decision", decision])
    };

    let approved = ask("accept").await;
    assert_eq!(approved["result"]["is_error"], false, "{approved}");
    assert!(approved["result"]["text"].as_str().unwrap().contains("42"), "the approved call ran: {approved}");
    let statuses = approved["statuses"].as_array().unwrap();
    assert!(statuses.contains(&json!("input_required")), "{approved}");
    assert_eq!(statuses.last().unwrap(), "completed", "{approved}");
    let question = &approved["asked"][0];
    assert_eq!(question["mode"], "form", "{approved}");
    assert!(question["message"].as_str().unwrap().contains("`calculator`"), "{approved}");

    let denied = ask("decline").await;
    assert_eq!(denied["result"]["is_error"], false, "{denied}");
    let text = denied["result"]["text"].as_str().unwrap();
    assert!(text.contains("denied") && text.contains("not today") && !text.contains("42"), "{denied}");

    // Both decisions are audited once, by the MCP client.
    let decisions = server.approvals().await;
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(decisions.iter().all(|e| e.reason.contains("mcp:")), "{decisions:?}");
    assert_eq!(decisions.iter().filter(|e| e.allowed).count(), 1, "{decisions:?}");
    let runs = toolhost::run::Runs::new(server.store.clone()).list(None).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.status == toolhost::store::RunStatus::Done), "{runs:?}");
    server.stop().await;
}

/// SEP-2322 on a plain `tools/call` (no tasks): a 2026-07-28 client gets the approval as the
/// call's `InputRequiredResult`, a tampered `requestState` is refused, a retry without the
/// answer is asked again, and the SDK's driver answers it and gets the run's result; a
/// denial reaches the model. A 2025-11-25 client gets where the run is, as before, and the
/// run finishes once a person approves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_call_asks_for_its_approval_as_an_input_request_and_legacy_clients_still_work() {
    let server = AgentServer::start().await;
    let ask = |decision: &'static str, mode: &'static str| {
        let args = ["ask", "--tool", "calc", "--goal", "what is 6*7", "--decision", decision, "--mode", mode];
        server.client(&args)
    };

    let approved = ask("accept", "2026-07-28").await;
    assert_eq!(approved["protocol_version"], "2026-07-28", "{approved}");
    let first = &approved["first"];
    assert_eq!(first["resultType"], "input_required", "{approved}");
    let requests = first["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1, "{approved}");
    let (key, request) = requests.iter().next().unwrap();
    assert!(key.starts_with("approval-"), "{approved}");
    assert_eq!(request["method"], "elicitation/create", "{approved}");
    assert!(request["params"]["message"].as_str().unwrap().contains("`calculator`"), "{approved}");
    assert!(first["requestState"].as_str().unwrap().starts_with("toolhost-run/1:"), "{approved}");
    assert_eq!(approved["tampered"]["code"], -32602, "{approved}");
    assert_eq!(approved["asked_again"], json!([key]), "a retry without the answer is asked the same: {approved}");
    assert_eq!(approved["asked"].as_array().unwrap().len(), 1, "{approved}");
    assert_eq!(approved["result"]["is_error"], false, "{approved}");
    assert!(approved["result"]["text"].as_str().unwrap().contains("42"), "the approved call ran: {approved}");

    let denied = ask("decline", "2026-07-28").await;
    let text = denied["result"]["text"].as_str().unwrap();
    assert!(text.contains("denied") && text.contains("not today") && !text.contains("42"), "{denied}");

    let legacy = ask("accept", "legacy").await;
    assert_eq!(legacy["protocol_version"], "2025-11-25", "{legacy}");
    assert_eq!(legacy["asked"], json!([]), "{legacy}");
    let structured = &legacy["result"]["structured"];
    assert_eq!(structured["status"], "waiting", "{legacy}");
    assert!(legacy["result"]["text"].as_str().unwrap().contains("toolhost runs approve"), "{legacy}");
    let runs = toolhost::run::Runs::new(server.store.clone());
    let id = structured["run"].as_str().unwrap();
    runs.approve(id, None, "alice").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !runs.get(id).await.unwrap().status.is_final() {
        assert!(std::time::Instant::now() < deadline, "the approved run did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(runs.get(id).await.unwrap().body.outcome.unwrap().contains("42"));

    // Each decision is audited once: two by the MCP client, one by the person.
    let decisions = server.approvals().await;
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(decisions.iter().filter(|e| e.reason.contains("mcp:")).count(), 2, "{decisions:?}");
    assert!(runs.list(None).await.unwrap().iter().all(|r| r.status == toolhost::store::RunStatus::Done));
    server.stop().await;
}

/// A hostile client floods the server with calls that would each start a run and get a task:
/// past `max_working_tasks` they are refused with a typed error, before any run (or row)
/// exists; a task that ends frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_task_calls_stays_within_the_task_limit() {
    let limits = McpLimits { max_working_tasks: 3, task_lease: Duration::from_millis(600), ..McpLimits::default() };
    let server = AgentServer::with_limits(limits).await;
    let flood = |n: &'static str| server.client(&["flood", "--tool", "calc", "--goal", "what is 6*7", "--n", n]);

    let first = flood("12").await;
    assert_eq!(first["tasks"].as_array().unwrap().len(), 3, "{first}");
    let refused = first["results"].as_array().unwrap();
    assert_eq!(refused.len(), 9, "{first}");
    assert!(refused.iter().all(|r| r["is_error"] == true && r["kind"] == "too-many-tasks"), "{first}");
    let runs = toolhost::run::Runs::new(server.store.clone());
    let started = runs.list(None).await.unwrap();
    assert_eq!(started.len(), 3, "a refused call started a run: {started:?}");

    // Still full (the runs wait for approvals): refused again.
    let full = flood("1").await;
    assert_eq!(full["results"][0]["kind"], "too-many-tasks", "{full}");
    // One run ends; its task ends with it and frees a place.
    runs.cancel(&started[0].id, "enough").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let freed = loop {
        let again = flood("1").await;
        if again["tasks"].as_array().unwrap().len() == 1 {
            break again;
        }
        assert!(std::time::Instant::now() < deadline, "the ended run's task kept its place: {again}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(freed["results"], json!([]), "{freed}");
    assert_eq!(runs.list(None).await.unwrap().len(), 4);
    server.stop().await;
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
        claimed_until_ms: Some(50),
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
    assert_eq!(store.task("t1").await.unwrap(), Some(next.clone()));

    // Orphans: working tasks whose claim ran out, the longest orphaned first; an ended task
    // (no claim) is none, nor is one whose claim holds.
    for (id, claim) in [("t3", Some(20)), ("t4", None), ("t5", Some(70))] {
        store.create_task(&TaskRecord { id: id.into(), claimed_until_ms: claim, ..task.clone() }).await.unwrap();
    }
    assert_eq!(store.orphaned_tasks(60, 10).await.unwrap(), ["t3", "t1"]);
    assert_eq!(store.orphaned_tasks(60, 1).await.unwrap(), ["t3"]);
    assert_eq!(store.orphaned_tasks(10, 10).await.unwrap(), Vec::<String>::new());
    let ended = TaskRecord { version: 3, claimed_until_ms: None, ..next };
    store.update_task(&ended).await.unwrap();
    assert_eq!(store.orphaned_tasks(100, 10).await.unwrap(), ["t3", "t5"]);
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
        claimed_until_ms: None,
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
