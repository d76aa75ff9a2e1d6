//! The `agent_service` example as a client sees it: tool calls as durable steps, typed errors
//! as HTTP statuses, an agent run on axum's tasks against a scripted OpenAI-compatible model,
//! a graceful Ctrl-C, and sessions that continue after a restart.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::State;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::example_binary;

/// A running service and the reader of its output.
struct Service {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`
    url: String,
}

impl Service {
    fn start(binary: &Path, db: &Path, model_url: Option<&str>) -> Self {
        let mut command = Command::new(binary);
        command.args(["--listen", "127.0.0.1:0", "--db"]).arg(db);
        if let Some(url) = model_url {
            command.args(["--model-url", url, "--model-name", "scripted"]);
        }
        let mut child = command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting agent_service");
        crate::support::capture_stderr(&mut child);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let address = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("agent_service did not start: {line:?}"));
        Self { url: address.to_owned(), child, stdout }
    }

    /// Ctrl-C, as an operator stops it: it must finish and exit cleanly.
    fn stop(mut self) -> String {
        let status = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "agent_service exited with {exit}:\n{rest}");
        rest
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let request = client.post(url).header("content-type", "application/json").body(body.to_string());
    answer(request.send().await.unwrap()).await
}

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    answer(client.get(url).send().await.unwrap()).await
}

async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// An OpenAI-compatible model that asks for the calculator once, then answers with its result.
async fn scripted_model(requests: Arc<AtomicUsize>) -> String {
    async fn complete(State(requests): State<Arc<AtomicUsize>>, Json(request): Json<Value>) -> Json<Value> {
        let n = requests.fetch_add(1, Ordering::SeqCst);
        assert!(request["messages"].as_array().is_some_and(|m| !m.is_empty()), "{request}");
        let content = match n {
            0 => json!({"tool": "calculator", "input": {"expression": "17 * 23"}}),
            _ => json!({"tool": "final_answer", "input": {"answer": "391"}}),
        };
        Json(json!({
            "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content.to_string()}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10},
        }))
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(complete)).with_state(requests);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_maps_errors_runs_agents_and_survives_a_restart() {
    let binary: PathBuf = tokio::task::spawn_blocking(|| example_binary("agent_service")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("service.db");
    let requests = Arc::new(AtomicUsize::new(0));
    let model_url = scripted_model(requests.clone()).await;
    let client = reqwest::Client::new();

    let service = Service::start(&binary, &db, Some(&model_url));
    let base = service.url.clone();
    let (status, created) = post(&client, format!("{base}/sessions"), Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, out) =
        post(&client, format!("{base}/sessions/{id}/calls/calculator"), json!({"expression": "6 * 7"})).await;
    assert_eq!((status, &out["step"], &out["output"]["value"]), (StatusCode::OK, &json!(1), &json!(42.0)), "{out}");
    let note = json!({"op": "add", "title": "answer", "body": "forty-two"});
    let (status, out) = post(&client, format!("{base}/sessions/{id}/calls/notes"), note).await;
    assert_eq!((status, &out["step"]), (StatusCode::OK, &json!(2)), "{out}");

    // Typed errors as statuses: bad input, unknown tool, unknown session.
    let (status, out) = post(&client, format!("{base}/sessions/{id}/calls/calculator"), json!({"expression": 5})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert!(out["error"].as_str().unwrap().contains("expression"), "{out}");
    let (status, _) = post(&client, format!("{base}/sessions/{id}/calls/nope"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, out) =
        post(&client, format!("{base}/sessions/missing/calls/calculator"), json!({"expression": "1"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{out}");

    // An agent run in a session of its own: one tool call, then the answer.
    let (_, created) = post(&client, format!("{base}/sessions"), Value::Null).await;
    let run = created["id"].as_str().unwrap().to_owned();
    let (status, out) =
        post(&client, format!("{base}/sessions/{run}/agent"), json!({"goal": "What is 17 * 23?"})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!((&out["answer"], &out["tool_calls"], &out["turns"]), (&json!("391"), &json!(1), &json!(2)), "{out}");
    assert_eq!(out["status"], "done", "the run has its record: {out}");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    // A finished run answers again from its steps, without asking the model.
    let (status, again) = post(&client, format!("{base}/sessions/{run}/agent"), json!({"goal": "ignored"})).await;
    assert_eq!((status, &again["answer"]), (StatusCode::OK, &json!("391")), "{again}");
    assert_eq!(requests.load(Ordering::SeqCst), 2);

    let farewell = service.stop();
    assert!(farewell.contains("stopped; every committed step is in"), "{farewell}");

    // Restarted without a model: the sessions continue where they were.
    let service = Service::start(&binary, &db, None);
    let base = service.url.clone();
    let (status, shown) = get(&client, format!("{base}/sessions/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let tools: Vec<&str> = shown["steps"].as_array().unwrap().iter().map(|s| s["tool"].as_str().unwrap()).collect();
    assert_eq!(tools, ["calculator", "notes"], "{shown}");
    let (status, listed) = post(&client, format!("{base}/sessions/{id}/calls/notes"), json!({"op": "list"})).await;
    assert_eq!((status, &listed["step"]), (StatusCode::OK, &json!(3)), "{listed}");
    assert!(listed["output"].to_string().contains("answer"), "the note survived the restart: {listed}");
    let (status, out) = post(&client, format!("{base}/sessions/{run}/agent"), json!({"goal": "again"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{out}");
    service.stop();
}
