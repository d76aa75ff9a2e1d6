//! Stored sessions outlive upgrades. `tests/fixtures/compat/` holds databases (SQLite, and a
//! PostgreSQL dump) written by an earlier toolhost, with the components that ran in them and
//! what continuing each session gave then. Today's code opens them, decodes every stored
//! step, rebuilds each session (from snapshots, and by replaying journals that recorded
//! state reads, model answers, clock readings and seeded secure randomness) and continues it
//! to the same outputs. A format change that breaks this must ship a migration.
//!
//! `write_compat_fixture` (ignored) writes the fixture with the code of the commit it runs
//! at: `TOOLHOST_WRITE_COMPAT=1 cargo test --test integration compat::write -- --ignored`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolhost::model::{ChatRequest, ChatResponse, FinishReason, ModelError, Usage};
use toolhost::{Host, HostConfig, ModelProvider, Session, SnapshotPolicy, Tool};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{engine_config, guests};

on_both_backends!(a_database_written_by_an_earlier_version_resumes_to_the_same_outputs);

/// Answers a prompt with its echo: the same in every process, so outputs can be compared.
struct EchoModel;

#[async_trait::async_trait]
impl ModelProvider for EchoModel {
    async fn chat(&self, _alias: &str, request: &ChatRequest, _call_id: &str) -> Result<ChatResponse, ModelError> {
        let prompt = request.messages.last().map(|m| m.content.as_str()).unwrap_or_default();
        Ok(ChatResponse {
            text: format!("echo: {prompt}"),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage { input_tokens: 1, output_tokens: 1 },
            model: "echo".into(),
        })
    }
}

/// What continuing a stored session gave when the fixture was written.
#[derive(Debug, Serialize, Deserialize)]
struct Expected {
    written_by: String,
    sessions: Vec<ExpectedSession>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ExpectedSession {
    id: String,
    /// Committed steps in the fixture.
    steps: u64,
    /// (tool, input, output) of the calls that continue it.
    then: Vec<(String, Value, Value)>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat")
}

const TOOLS: [&str; 3] = ["notes", "calculator", "hostile"];

fn host_on(store: Arc<dyn toolhost::Store>, snapshots: SnapshotPolicy) -> Host {
    let config = HostConfig {
        engine: engine_config(),
        policy: crate::durable::policy(),
        snapshots,
        models: Some(Arc::new(EchoModel)),
        leases: None,
        ..HostConfig::default()
    };
    Host::with_store(config, store).unwrap()
}

async fn load(host: &Host, dir: &Path) -> Vec<Arc<Tool>> {
    let mut tools = Vec::new();
    for name in TOOLS {
        tools.push(host.load_tool(dir.join(format!("{name}.wasm"))).await.unwrap());
    }
    tools
}

async fn call(session: &mut Session, tools: &[Arc<Tool>], name: &str, input: &Value) -> Value {
    let tool = tools.iter().find(|t| t.name() == name).unwrap();
    match session.call(tool, input).await {
        Ok(output) => output,
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// (tool, input) of one call.
type Call = (&'static str, Value);

/// The steps each session of the fixture commits.
fn history() -> Vec<(&'static str, SnapshotPolicy, Vec<Call>)> {
    let never = SnapshotPolicy { every: u32::MAX, keep: 1 };
    let add = |title: &str| json!({"op": "add", "title": title, "body": format!("about {title}")});
    vec![
        (
            "compat-snapshots",
            SnapshotPolicy::default(),
            vec![
                ("notes", add("alpha")),
                ("notes", add("beta")),
                ("calculator", json!({"expression": "2 + 3"})),
                ("notes", add("gamma")),
            ],
        ),
        (
            "compat-replay",
            never,
            vec![
                ("notes", add("one")),
                ("hostile", json!({"attack": "ask-model", "model": "counting", "prompt": "hello"})),
                ("hostile", json!({"attack": "entropy", "bytes": 16})),
                ("hostile", json!({"attack": "state-set", "namespace": "scratch", "key": "k", "bytes": 10})),
                ("hostile", json!({"attack": "state-get", "namespace": "scratch", "key": "k"})),
                ("notes", add("two")),
            ],
        ),
    ]
}

/// The calls that continue each session.
fn continuation(id: &str) -> Vec<Call> {
    match id {
        "compat-snapshots" => vec![
            ("notes", json!({"op": "search", "query": "gamma"})),
            ("notes", json!({"op": "add", "title": "delta", "body": "fourth"})),
            ("notes", json!({"op": "list"})),
            ("calculator", json!({"expression": "7 * 6"})),
        ],
        _ => vec![
            ("hostile", json!({"attack": "state-get", "namespace": "scratch", "key": "k"})),
            ("hostile", json!({"attack": "ask-model", "model": "counting", "prompt": "again"})),
            ("notes", json!({"op": "list"})),
        ],
    }
}

#[tokio::test]
#[ignore = "writes tests/fixtures/compat: run by hand at the commit whose format it captures"]
async fn write_compat_fixture() {
    assert_eq!(std::env::var("TOOLHOST_WRITE_COMPAT").as_deref(), Ok("1"), "set TOOLHOST_WRITE_COMPAT=1");
    let out = fixture_dir();
    std::fs::create_dir_all(&out).unwrap();
    let built = guests();
    for (name, path) in TOOLS.iter().zip([&built.notes, &built.calculator, &built.hostile]) {
        std::fs::copy(path, out.join(format!("{name}.wasm"))).unwrap();
    }
    let sqlite = TestStore::sqlite();
    let postgres = TestStore::postgres().await.expect("the fixture needs PostgreSQL too");
    let expected = write_sessions(&sqlite, &out).await;
    assert_eq!(write_sessions(&postgres, &out).await, expected, "the backends disagree");
    let db_file = sqlite.url.strip_prefix("sqlite://").unwrap();
    let target = out.join("sessions.db");
    let _ = std::fs::remove_file(&target);
    let conn = rusqlite::Connection::open(db_file).unwrap();
    conn.execute("VACUUM INTO ?1", [target.to_str().unwrap()]).unwrap();
    std::fs::write(out.join("postgres.sql"), pg_dump(&postgres.url)).unwrap();
    let expected = Expected { written_by: env!("CARGO_PKG_VERSION").into(), sessions: expected };
    std::fs::write(out.join("expected.json"), serde_json::to_string_pretty(&expected).unwrap()).unwrap();
}

/// Commits [`history`] into `db`, saves the database as it stands, then records what
/// continuing each session gives (in a copy, so the saved database stays as it was).
async fn write_sessions(db: &TestStore, tools_dir: &Path) -> Vec<ExpectedSession> {
    let mut written = Vec::new();
    for (id, snapshots, steps) in history() {
        let host = host_on(db.open().await, snapshots);
        let tools = load(&host, tools_dir).await;
        let mut session = host.create_session(id).await.unwrap();
        for (tool, input) in &steps {
            let output = call(&mut session, &tools, tool, input).await;
            assert!(output.get("error").is_none(), "{tool} {input}: {output}");
        }
        written.push(ExpectedSession { id: id.to_owned(), steps: steps.len() as u64, then: Vec::new() });
    }
    // The continuation runs in forks, which leave the sessions themselves as written.
    for session in &mut written {
        let host = host_on(db.open().await, SnapshotPolicy::default());
        let tools = load(&host, tools_dir).await;
        let mut fork = host.fork_session(&session.id, session.steps).await.unwrap();
        for (tool, input) in continuation(&session.id) {
            let output = call(&mut fork, &tools, tool, &input).await;
            session.then.push((tool.to_owned(), input, output));
        }
        host.delete_session(fork.id()).await.unwrap();
    }
    written
}

fn pg_dump(url: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--no-owner", "--no-privileges", "--inserts", "--dbname", url])
        .output()
        .expect("running pg_dump");
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    // psql meta-commands (`\restrict`) are not SQL.
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.starts_with('\\')).collect::<Vec<_>>().join("\n")
}

/// Puts the fixture's database into `db`.
async fn restore_fixture(db: &TestStore) {
    let dir = fixture_dir();
    match db.url.strip_prefix("sqlite://") {
        Some(file) => {
            std::fs::copy(dir.join("sessions.db"), file).unwrap();
        }
        None => {
            let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let sql = std::fs::read_to_string(dir.join("postgres.sql")).unwrap();
            client.batch_execute(&sql).await.unwrap();
        }
    }
}

async fn a_database_written_by_an_earlier_version_resumes_to_the_same_outputs(db: &TestStore) {
    let dir = fixture_dir();
    let expected: Expected = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    restore_fixture(db).await;
    let store = db.open().await;
    for session in &expected.sessions {
        // Every stored step decodes.
        let steps = store.steps(&session.id, None, 0).await.unwrap();
        assert_eq!(steps.len() as u64, session.steps, "{}", session.id);
    }
    let host = host_on(store, SnapshotPolicy::default());
    let tools = load(&host, &dir).await;
    for session in &expected.sessions {
        let mut resumed = host.open_session(&session.id).await.unwrap();
        for (tool, input, output) in &session.then {
            let got = call(&mut resumed, &tools, tool, input).await;
            assert_eq!(&got, output, "session {} written by {}: {tool} {input}", session.id, expected.written_by);
        }
    }
}
