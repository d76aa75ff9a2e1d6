//! Python tools (the `toolhost_tool` SDK, built with componentize-py) get the same guarantees
//! as Rust ones: typed schema errors, isolation, CPU and memory limits, rollback on a trap,
//! snapshot resume, typed and audited denials, HTTP through the SDK journaled and replayed
//! like a Rust tool's. The components are built and compiled once and cached across runs
//! (see `support::python_tools`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use toolhost::store::Durability;
use toolhost::{CallError, Host, HostConfig, Limits, Policy, SnapshotPolicy, SqliteStore, ToolFailure, ToolKind};

use crate::guest_checks::{self, ok};
use crate::support::{grants, python_engine_config, python_tools};

const PEOPLE: &str = "name,city,age\nann,oslo,31\nbob,rome,45\ncy,oslo,22\n";

fn limits() -> Limits {
    Limits { memory_bytes: 96 << 20, cpu_time: Duration::from_millis(500), ..Limits::default() }
}

fn policy() -> Policy {
    Policy::deny_all()
        .with_tool("table", grants(&["tables"], limits()))
        // `hostile-py` also requests `forbidden`: not granted.
        .with_tool("hostile-py", grants(&["scratch"], limits()))
}

fn host() -> Host {
    Host::new(HostConfig { engine: python_engine_config(), policy: policy(), ..HostConfig::default() }).unwrap()
}

fn host_on(db: &std::path::Path) -> Host {
    let store = Arc::new(SqliteStore::open(db, Durability::Full).unwrap());
    let snapshots = SnapshotPolicy { every: 1, keep: 10 };
    let config = HostConfig { engine: python_engine_config(), policy: policy(), snapshots, ..HostConfig::default() };
    Host::with_store(config, store).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_tool_describes_itself_and_does_its_work() {
    let host = host();
    let table = host.load_tool(&python_tools().table).await.unwrap();
    let descriptor = table.descriptor();
    assert_eq!((descriptor.name.as_str(), descriptor.version.as_str()), ("table", "0.1.0"));
    assert!(descriptor.description.starts_with("Loads CSV tables"), "{}", descriptor.description);
    assert_eq!(table.kind(), ToolKind::Stateful);
    let schema = &descriptor.input_schema;
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let load = &schema["anyOf"][0];
    assert_eq!(load["properties"]["table"]["description"], "Name to store the table under.");
    assert_eq!(load["required"], json!(["op", "table", "csv"]));
    assert_eq!(descriptor.capabilities.state.len(), 1);

    let mut session = host.new_session().await.unwrap();
    let loaded = ok(&mut session, &table, json!({"op": "load", "table": "people", "csv": PEOPLE})).await;
    assert_eq!(loaded["rows"], 3);
    let query = json!({"op": "query", "table": "people", "where": [{"column": "age", "op": ">", "value": 25}],
        "sort_by": "age", "descending": true, "select": ["name"]});
    let rows = ok(&mut session, &table, query).await;
    assert_eq!(rows["rows"], json!([["bob"], ["ann"]]));
    let avg = ok(
        &mut session,
        &table,
        json!({"op": "aggregate", "table": "people", "function": "avg", "column": "age", "group_by": "city"}),
    )
    .await;
    assert_eq!(avg["groups"], json!({"oslo": 26.5, "rome": 45.0}));
    // A granted namespace: `save` writes through the state interface.
    assert_eq!(ok(&mut session, &table, json!({"op": "save", "table": "people"})).await["saved"], "people");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_and_bad_values_are_typed_errors_naming_the_field() {
    let host = host();
    let table = host.load_tool(&python_tools().table).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    // The host checks the schema the SDK generated before the tool runs.
    for bad in [json!({"op": "load", "table": "t"}), json!({"op": "query", "table": "t", "limit": "ten"}), json!(7)] {
        let err = session.call(&table, &bad).await.unwrap_err();
        assert!(matches!(err, CallError::InvalidInput { .. }), "{bad}: {err:?}");
    }
    // Valid by the schema, unusable by the tool: its `InvalidInput` names the field.
    ok(&mut session, &table, json!({"op": "load", "table": "t", "csv": PEOPLE})).await;
    let err = session
        .call(&table, &json!({"op": "query", "table": "t", "where": [{"column": "height", "op": "=", "value": 1}]}))
        .await
        .unwrap_err();
    match err {
        CallError::Tool { failure: ToolFailure::InvalidInput(m), .. } => {
            assert!(m.contains("`where[0].column`") && m.contains("height"), "{m}")
        }
        other => panic!("expected the tool's invalid-input, got {other:?}"),
    }
    // The session carries on.
    assert_eq!(ok(&mut session, &table, json!({"op": "list"})).await["tables"][0]["rows"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_python_tool_are_isolated() {
    let host = host();
    let tools = python_tools();
    let (table, hostile) = (host.load_tool(&tools.table).await.unwrap(), host.load_tool(&tools.hostile).await.unwrap());
    let mut a = host.new_session().await.unwrap();
    let mut b = host.new_session().await.unwrap();
    ok(&mut a, &table, json!({"op": "load", "table": "secret", "csv": PEOPLE})).await;
    ok(&mut a, &hostile, json!({"attack": "write", "key": "k", "n": 41})).await;
    ok(&mut a, &hostile, json!({"attack": "count", "n": 1})).await;

    // B sees none of A's memory or state.
    assert_eq!(ok(&mut b, &table, json!({"op": "list"})).await["tables"], json!([]));
    let err = b.call(&table, &json!({"op": "query", "table": "secret"})).await.unwrap_err();
    assert!(matches!(err, CallError::Tool { failure: ToolFailure::InvalidInput(_), .. }), "{err:?}");
    assert_eq!(ok(&mut b, &hostile, json!({"attack": "read", "key": "k"})).await["value"], Value::Null);
    assert_eq!(ok(&mut b, &hostile, json!({"attack": "count", "n": 2})).await["calls"], 1);
    // A's own reads still work.
    assert_eq!(ok(&mut a, &hostile, json!({"attack": "read", "key": "k"})).await["value"], "41");
    assert_eq!(ok(&mut a, &hostile, json!({"attack": "count", "n": 3})).await["seen"], json!([1, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_deadline_and_memory_limit_stop_a_python_tool() {
    let host = host();
    let hostile = host.load_tool(&python_tools().hostile).await.unwrap();
    guest_checks::cpu_deadline_and_memory_limit_stop_it(&host, &hostile, &limits()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_mid_step_rolls_back_its_writes_and_its_memory() {
    let host = host();
    let hostile = host.load_tool(&python_tools().hostile).await.unwrap();
    guest_checks::a_trap_mid_step_rolls_back_its_writes_and_its_memory(&host, &hostile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_namespace_is_a_typed_denial_with_an_audit_event() {
    let host = host();
    let hostile = host.load_tool(&python_tools().hostile).await.unwrap();
    guest_checks::an_ungranted_namespace_is_a_typed_denial_with_an_audit_event(&host, &hostile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_the_sdk_is_granted_denied_audited_and_replayed() {
    let hostile = &python_tools().hostile;
    guest_checks::http_is_granted_denied_and_replayed(python_engine_config, hostile, "hostile-py", &limits()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_session_resumes_from_its_snapshot_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let host = host_on(&db);
    let table = host.load_tool(&python_tools().table).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    ok(&mut session, &table, json!({"op": "load", "table": "people", "csv": PEOPLE})).await;
    ok(&mut session, &table, json!({"op": "load", "table": "more", "csv": "a,b\n1,2\n"})).await;
    let expected = ok(&mut session, &table, json!({"op": "list"})).await;
    let id = session.id().to_owned();
    drop((session, table, host));

    let host = host_on(&db);
    let table = host.load_tool(&python_tools().table).await.unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let rebuild = session.prewarm(&table).await.unwrap().expect("rebuilt");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(3), 0), "{rebuild:?}");
    assert_eq!(ok(&mut session, &table, json!({"op": "list"})).await, expected);
    let rows = ok(&mut session, &table, json!({"op": "query", "table": "people", "sort_by": "age"})).await;
    assert_eq!(rows["rows"][0][0], "cy");
}

#[test]
#[ignore = "the child process of python::a_python_session_resumes_from_its_snapshot_after_sigkill"]
fn python_kill_child() {
    let Ok(db) = std::env::var("TOOLHOST_PY_KILL_DB") else { return };
    let id = std::env::var("TOOLHOST_PY_KILL_SESSION").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let host = host_on(std::path::Path::new(&db));
        let hostile = host.load_tool(&python_tools().hostile).await.unwrap();
        let mut session = match host.open_session(&id).await {
            Ok(session) => session,
            Err(_) => host.create_session(id.clone()).await.unwrap(),
        };
        // Counts until killed; each committed step is announced on stdout.
        for n in 1.. {
            let out = ok(&mut session, &hostile, json!({"attack": "count", "n": n})).await;
            println!("committed {}", out["calls"]);
        }
    });
}

/// A child process counts through a stateful Python tool and is SIGKILLed mid-run; the
/// session resumes from the tool's snapshot with exactly the committed steps, none repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_session_resumes_from_its_snapshot_after_sigkill() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    python_tools(); // built and compiled before the child starts
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "python::python_kill_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TOOLHOST_PY_KILL_DB", &db)
        .env("TOOLHOST_PY_KILL_SESSION", "py-kill")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut announced = 0;
    while announced < 5 {
        let line = lines.next().expect("the child exited early").unwrap();
        if line.starts_with("committed ") {
            announced += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL, likely mid-step
    child.wait().unwrap();

    let host = host_on(&db);
    let hostile = host.load_tool(&python_tools().hostile).await.unwrap();
    let mut session = host.open_session("py-kill").await.unwrap();
    let committed = session.last_step();
    assert!(committed >= 5, "{committed} steps committed");
    let rebuild = session.prewarm(&hostile).await.unwrap().expect("rebuilt");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(committed), 0), "{rebuild:?}");
    let out = ok(&mut session, &hostile, json!({"attack": "count", "n": committed + 1})).await;
    let expected: Vec<u64> = (1..=committed + 1).collect();
    assert_eq!(out["calls"], committed + 1);
    assert_eq!(out["seen"], json!(expected), "every committed step exactly once");
}

/// A Rust and a Python tool serve one session side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_and_a_python_tool_share_a_session() {
    let host = host();
    let calculator = host.load_tool(&crate::support::guests().calculator).await.unwrap();
    let table = host.load_tool(&python_tools().table).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    ok(&mut session, &table, json!({"op": "load", "table": "people", "csv": PEOPLE})).await;
    let sum =
        ok(&mut session, &table, json!({"op": "aggregate", "table": "people", "function": "sum", "column": "age"}))
            .await;
    assert_eq!(sum["groups"]["*"], 98.0);
    let out = ok(&mut session, &calculator, json!({"expression": "98 / 3"})).await;
    assert!(out.to_string().contains("32.6"), "{out}");
    assert_eq!(session.last_step(), 3);
}
