//! The agent loop with the real local models (through llama.cpp, installed on first use by
//! scripts/setup): the main job on its model (Qwen2.5-Coder-1.5B) gives the right answer, and
//! the example agent killed with SIGKILL mid-run resumes, behind a proxy that counts every
//! model request (on SmolLM2-135M: the mechanism, not the model, is under test).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use toolhost::model::{ChatRequest, ChatResponse, LocalModelChoice, ModelError};
use toolhost::store::{Durability, StepOutcome};
use toolhost::{
    Agent, AgentConfig, EngineConfig, Goal, Host, HostConfig, ModelProvider, ModelRouter, Policy, SqliteStore, Task,
    ToolCalling,
};

use crate::support::engine_config;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example tools, built once per process.
fn example_tools() -> &'static [PathBuf] {
    static TOOLS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        toolhost::guest_build::build(workspace(), &["reader", "calculator", "notes"])
            .unwrap_or_else(|e| panic!("building the example tools: {e}"))
    })
}

fn example_policy() -> Policy {
    Policy::load(workspace().join("examples/agents/policy.toml")).unwrap()
}

/// The main job (`cargo run --example research_agent`) on its own model, in-process: the plan's
/// three tools run in their sandboxes, the calculator gets the three prices, the note with the
/// total is filed, and the answer is the right total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_job_on_its_model_files_the_note_and_answers_the_right_total() {
    let model = crate::support::local_model(LocalModelChoice::default());
    let router = ModelRouter::from_config(&model.models_config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db"), Durability::Full).unwrap());
    let config = HostConfig {
        engine: engine_config(),
        policy: example_policy(),
        models: Some(Arc::new(router)),
        ..HostConfig::default()
    };
    let host = Host::with_store(config, store).unwrap();
    let mut tools = Vec::new();
    for path in example_tools() {
        tools.push(host.load_tool(path).await.unwrap());
    }
    // The example's settings and plan (examples/research_agent.rs, examples/agents/support.rs).
    let config = AgentConfig {
        tool_calling: ToolCalling::Constrained,
        max_turns: 16,
        max_tokens_per_turn: Some(256),
        ..AgentConfig::new("local")
    };
    let agent = Agent::new(&host, config, tools).unwrap();
    let goal = Goal::new("Find out what the shopping list in prices.txt costs in total, and keep a note of the total.")
        .with_task(Task::using("Read the file prices.txt.", "reader"))
        .with_task(Task::using("Add up the three prices with the calculator.", "calculator"))
        .with_task(Task::using("Save the total as a note titled Shopping total.", "notes"));
    let mut session = host.new_session().await.unwrap();
    let mut lines = Vec::new();
    let outcome = agent.start(&mut session, goal, &mut |e| lines.push(e.to_string())).await.unwrap();
    let transcript = lines.join("\n");
    let answer = outcome.answer().unwrap_or_else(|| panic!("no answer: {}\n{transcript}", outcome.stop));
    assert!(answer.contains("12.85"), "answer `{answer}`, the total is 12.85:\n{transcript}");

    let steps = session.steps(0).await.unwrap();
    let output = |tool: &str| -> serde_json::Value {
        let step = steps.iter().rfind(|s| s.tool == tool).unwrap_or_else(|| panic!("no {tool} step:\n{transcript}"));
        match &step.outcome {
            StepOutcome::Output(text) => serde_json::from_str(text).unwrap(),
            StepOutcome::Failed(failure) => panic!("{tool} failed: {failure}\n{transcript}"),
            StepOutcome::Upgraded(upgrade) => panic!("{tool}: an unexpected {upgrade}\n{transcript}"),
        }
    };
    assert!(output("reader").to_string().contains("cheese 7.10"), "{transcript}");
    assert_eq!(output("calculator")["value"], 12.85, "{transcript}");
    // The note was filed, with the total in it.
    let filed = steps.iter().rfind(|s| s.tool == "notes").unwrap();
    assert!(output("notes")["id"].as_u64().is_some(), "{transcript}");
    assert!(filed.input.contains("12.85"), "the note: {}\n{transcript}", filed.input);
    let turns = steps.iter().filter(|s| s.tool == "agent.model").count();
    assert_eq!(turns as u32, outcome.turns);
}

/// Forwards chat requests to the model once per `Idempotency-Key` (as providers that honor
/// the key do) and keeps what it saw.
#[derive(Default)]
struct ProxyState {
    upstream: String,
    /// key -> (request body, response body)
    answered: HashMap<String, (Bytes, Bytes)>,
    forwarded: usize,
    /// Requests that arrived again with a key already answered, and whether the body matched.
    repeats: Vec<(String, bool)>,
}

async fn proxy(
    State(state): State<Arc<tokio::sync::Mutex<ProxyState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    // One request at a time: a resent key waits for the first attempt's answer.
    let mut state = state.lock().await;
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return (StatusCode::BAD_REQUEST, Bytes::from_static(b"{\"error\": \"no idempotency key\"}"));
    };
    if let Some((request, response)) = state.answered.get(&key) {
        let same = *request == body;
        let response = response.clone();
        state.repeats.push((key, same));
        return (StatusCode::OK, response);
    }
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", state.upstream);
    let reply = client.post(url).header("content-type", "application/json").body(body.clone()).send().await;
    let reply = match reply {
        Ok(reply) if reply.status().is_success() => reply.bytes().await.unwrap(),
        Ok(reply) => return (reply.status(), reply.bytes().await.unwrap()),
        Err(e) => return (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())),
    };
    state.forwarded += 1;
    state.answered.insert(key, (body, reply.clone()));
    (StatusCode::OK, reply)
}

/// Runs the example until it prints `kill_after` more step lines (then SIGKILLs it) or exits.
/// Returns its step lines, as (seq, line), and whether it finished by itself.
fn run_example(binary: &Path, args: &[&str], kill_after: Option<usize>) -> (Vec<(u64, String)>, Vec<String>, bool) {
    let mut child: Child = Command::new(binary)
        .args(args)
        .current_dir(workspace())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the example");
    crate::support::capture_stderr(&mut child);
    let stdout = child.stdout.take().unwrap();
    let mut steps = Vec::new();
    let mut all = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        all.push(line.clone());
        if let Some(seq) =
            line.strip_prefix("step ").and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok())
        {
            steps.push((seq, line));
            if Some(steps.len()) == kill_after {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                return (steps, all, false);
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the example failed ({status}):\n{}", all.join("\n"));
    (steps, all, true)
}

/// Never answers: a finished run must not ask the model anything.
struct NoModel;

#[async_trait::async_trait]
impl ModelProvider for NoModel {
    async fn chat(&self, _: &str, _: &ChatRequest, call_id: &str) -> Result<ChatResponse, ModelError> {
        panic!("a finished run asked the model ({call_id})")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_example_agent_resumes_without_repeating_steps_or_model_requests() {
    let binary = tokio::task::spawn_blocking(|| crate::support::example_binary("resumable_agent")).await.unwrap();
    let model = crate::support::local_model(LocalModelChoice::Small);
    let state = Arc::new(tokio::sync::Mutex::new(ProxyState { upstream: model.base_url(), ..ProxyState::default() }));
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(proxy)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agents.db");
    let db_arg = db.to_str().unwrap().to_owned();
    let session = "killed-and-resumed";
    let common = ["--db", &db_arg, "--model-url", &proxy_url, "--model-name", model.model()];

    // Kill it twice mid-run, at different points, then let it finish.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let runs = {
        let (binary, seen) = (binary.clone(), seen.clone());
        let common: Vec<String> = common.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args = |extra: &[&str]| -> Vec<String> {
                common.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect()
            };
            let mut outputs = Vec::new();
            for (extra, kill_after) in [
                (vec!["--session", session], Some(5)),
                (vec!["--resume", session], Some(4)),
                (vec!["--resume", session], None),
            ] {
                let argv = args(&extra);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let (steps, all, finished) = run_example(&binary, &argv, kill_after);
                assert_eq!(finished, kill_after.is_none(), "{}", all.join("\n"));
                seen.lock().unwrap().extend(steps.clone());
                outputs.push((steps, all));
            }
            outputs
        })
        .await
        .unwrap()
    };

    // The final run resumed where the killed ones stopped and printed the answer.
    let (last_steps, last_output) = &runs[2];
    let text = last_output.join("\n");
    assert!(text.contains("resumed after step"), "{text}");
    assert!(text.contains("answer:"), "{text}");
    let resumed_after = runs[1].0.last().unwrap().0;
    assert!(last_steps.iter().all(|(seq, _)| *seq > resumed_after), "steps ran again:\n{text}");

    // Every step a killed run reported is in the session, once, as it was reported.
    let store = SqliteStore::open(&db, Durability::Full).unwrap();
    let steps = toolhost::Store::steps(&store, session, None, 0).await.unwrap();
    let by_seq: HashMap<u64, &toolhost::store::StepRecord> = steps.iter().map(|s| (s.seq, s)).collect();
    assert_eq!(by_seq.len(), steps.len());
    let mut reported_seqs = Vec::new();
    for (seq, line) in seen.lock().unwrap().iter() {
        let step = by_seq.get(seq).unwrap_or_else(|| panic!("step {seq} was reported but is not stored: {line}"));
        let shown = if step.tool == "agent.model" { "model turn" } else { step.tool.as_str() };
        assert!(line.contains(shown), "step {seq} is `{}` but was reported as: {line}", step.tool);
        reported_seqs.push(*seq);
    }
    let unique: std::collections::BTreeSet<u64> = reported_seqs.iter().copied().collect();
    assert_eq!(unique.len(), reported_seqs.len(), "a step was reported twice: {reported_seqs:?}");

    // No model request reached the model twice: one upstream request per committed turn.
    let model_turns = steps.iter().filter(|s| s.tool == "agent.model").count();
    let state = state.lock().await;
    assert_eq!(state.forwarded, model_turns, "repeats: {:?}", state.repeats);
    // A request resent after a kill (answered, not yet committed) was the same request.
    assert!(state.repeats.iter().all(|(_, same)| *same), "{:?}", state.repeats);

    // Read back by a new host, the run is finished: resuming asks the model nothing.
    let engine = EngineConfig { max_instances: 16, ..engine_config() };
    let config =
        HostConfig { engine, policy: example_policy(), models: Some(Arc::new(NoModel)), ..HostConfig::default() };
    let host = Host::with_store(config, Arc::new(store)).unwrap();
    let mut tools = Vec::new();
    for path in example_tools() {
        tools.push(host.load_tool(path).await.unwrap());
    }
    let config = AgentConfig { tool_calling: ToolCalling::Constrained, ..AgentConfig::new("local") };
    let agent = Agent::new(&host, config, tools).unwrap();
    let mut resumed = host.open_session(session).await.unwrap();
    let outcome = agent.resume(&mut resumed, &mut |_| {}).await.unwrap();
    assert!(outcome.answer().is_some(), "{}", outcome.stop);
    assert_eq!(outcome.tool_calls, 10, "ten tasks, one call each");
    // The notes tool holds one note per receipt plus the total, each written once.
    let notes = steps.iter().filter(|s| s.tool == "notes").count();
    assert_eq!(notes, 5);
}
