//! TypeScript tools (the `@toolhost/tool` SDK, bundled by esbuild and built with
//! componentize-js) get the same guarantees as Rust and Python ones: typed schema errors,
//! isolation, CPU and memory limits, rollback on a trap, snapshot resume (also after SIGKILL),
//! typed and audited denials, HTTP through the SDK journaled and replayed like a Rust tool's.
//! The components are built and compiled once and cached across runs (see `support::js_tools`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use toolhost::store::Durability;
use toolhost::{CallError, Host, HostConfig, Limits, Policy, SnapshotPolicy, SqliteStore, ToolFailure, ToolKind};

use crate::guest_checks::{self, ok};
use crate::support::{grants, js_engine_config, js_tools};

fn limits() -> Limits {
    Limits { memory_bytes: 96 << 20, cpu_time: Duration::from_millis(500), ..Limits::default() }
}

fn policy() -> Policy {
    Policy::deny_all()
        .with_tool("calendar", grants(&[], limits()))
        // `hostile-js` also requests `forbidden`: not granted.
        .with_tool("hostile-js", grants(&["scratch"], limits()))
}

fn host() -> Host {
    Host::new(HostConfig { engine: js_engine_config(), policy: policy(), ..HostConfig::default() }).unwrap()
}

fn host_on(db: &std::path::Path) -> Host {
    let store = Arc::new(SqliteStore::open(db, Durability::Full).unwrap());
    let snapshots = SnapshotPolicy { every: 1, keep: 10 };
    let config = HostConfig { engine: js_engine_config(), policy: policy(), snapshots, ..HostConfig::default() };
    Host::with_store(config, store).unwrap()
}

fn event(title: &str, date: &str) -> Value {
    json!({"op": "add_event", "title": title, "date": date})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_tool_describes_itself_and_does_its_work() {
    let host = host();
    let calendar = host.load_tool(&js_tools().calendar).await.unwrap();
    let descriptor = calendar.descriptor();
    assert_eq!((descriptor.name.as_str(), descriptor.version.as_str()), ("calendar", "0.1.0"));
    assert!(descriptor.description.starts_with("Calendar arithmetic"), "{}", descriptor.description);
    assert_eq!(calendar.kind(), ToolKind::Stateful);
    let schema = &descriptor.input_schema;
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let add = &schema["anyOf"][2];
    assert_eq!(add["properties"]["amount"]["description"], "How many units to add (negative: subtract).");
    assert_eq!(add["required"], json!(["op", "date", "amount"]));
    assert!(descriptor.capabilities.state.is_empty());

    let mut session = host.new_session().await.unwrap();
    let info = ok(&mut session, &calendar, json!({"op": "info", "date": "2024-02-29"})).await;
    assert_eq!((info["weekday"].clone(), info["day_of_year"].clone()), (json!("thursday"), json!(60)));
    let diff = ok(&mut session, &calendar, json!({"op": "diff", "from": "2024-01-01", "to": "2025-01-01"})).await;
    assert_eq!((diff["days"].clone(), diff["business_days"].clone()), (json!(366), json!(262)));
    let added =
        ok(&mut session, &calendar, json!({"op": "add", "date": "2024-01-31", "amount": 1, "unit": "months"})).await;
    assert_eq!(added["date"], "2024-02-29");
    ok(&mut session, &calendar, event("launch", "2024-05-02")).await;
    let upcoming = ok(&mut session, &calendar, json!({"op": "upcoming", "from": "2024-05-01"})).await;
    assert_eq!(upcoming["events"], json!([{"title": "launch", "date": "2024-05-02", "in_days": 1}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_and_bad_values_are_typed_errors_naming_the_field() {
    let host = host();
    let calendar = host.load_tool(&js_tools().calendar).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    // The host checks the schema the SDK generated before the tool runs.
    for bad in [
        json!({"op": "diff", "from": "2024-01-01"}),
        json!({"op": "add", "date": "2024-01-01", "amount": "ten"}),
        json!({"op": "info", "date": "yesterday"}),
        json!(7),
    ] {
        let err = session.call(&calendar, &bad).await.unwrap_err();
        assert!(matches!(err, CallError::InvalidInput { .. }), "{bad}: {err:?}");
    }
    // Valid by the schema, unusable by the tool: its `InvalidInput` names the field.
    let err = session.call(&calendar, &json!({"op": "diff", "from": "2023-02-29", "to": "2023-03-01"})).await;
    match err.unwrap_err() {
        CallError::Tool { failure: ToolFailure::InvalidInput(m), .. } => {
            assert!(m.contains("`from`") && m.contains("2023-02-29"), "{m}")
        }
        other => panic!("expected the tool's invalid-input, got {other:?}"),
    }
    // The session carries on.
    assert_eq!(ok(&mut session, &calendar, json!({"op": "info", "date": "2023-03-01"})).await["quarter"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_typescript_tool_are_isolated() {
    let host = host();
    let tools = js_tools();
    let (calendar, hostile) =
        (host.load_tool(&tools.calendar).await.unwrap(), host.load_tool(&tools.hostile).await.unwrap());
    let mut a = host.new_session().await.unwrap();
    let mut b = host.new_session().await.unwrap();
    ok(&mut a, &calendar, event("secret", "2024-05-02")).await;
    ok(&mut a, &hostile, json!({"attack": "write", "key": "k", "n": 41})).await;
    ok(&mut a, &hostile, json!({"attack": "count", "n": 1})).await;

    // B sees none of A's memory or state.
    let upcoming = json!({"op": "upcoming", "from": "2024-05-01"});
    assert_eq!(ok(&mut b, &calendar, upcoming.clone()).await["events"], json!([]));
    assert_eq!(ok(&mut b, &hostile, json!({"attack": "read", "key": "k"})).await["value"], Value::Null);
    assert_eq!(ok(&mut b, &hostile, json!({"attack": "count", "n": 2})).await["calls"], 1);
    // A's own reads still work.
    assert_eq!(ok(&mut a, &calendar, upcoming).await["events"][0]["title"], "secret");
    assert_eq!(ok(&mut a, &hostile, json!({"attack": "read", "key": "k"})).await["value"], "41");
    assert_eq!(ok(&mut a, &hostile, json!({"attack": "count", "n": 3})).await["seen"], json!([1, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_deadline_and_memory_limit_stop_a_typescript_tool() {
    let host = host();
    let hostile = host.load_tool(&js_tools().hostile).await.unwrap();
    guest_checks::cpu_deadline_and_memory_limit_stop_it(&host, &hostile, &limits()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_mid_step_rolls_back_its_writes_and_its_memory() {
    let host = host();
    let hostile = host.load_tool(&js_tools().hostile).await.unwrap();
    guest_checks::a_trap_mid_step_rolls_back_its_writes_and_its_memory(&host, &hostile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_namespace_is_a_typed_denial_with_an_audit_event() {
    let host = host();
    let hostile = host.load_tool(&js_tools().hostile).await.unwrap();
    guest_checks::an_ungranted_namespace_is_a_typed_denial_with_an_audit_event(&host, &hostile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_the_sdk_is_granted_denied_audited_and_replayed() {
    let hostile = &js_tools().hostile;
    guest_checks::http_is_granted_denied_and_replayed(js_engine_config, hostile, "hostile-js", &limits()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_session_resumes_from_its_snapshot_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let host = host_on(&db);
    let calendar = host.load_tool(&js_tools().calendar).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    ok(&mut session, &calendar, event("review", "2024-05-10")).await;
    ok(&mut session, &calendar, event("launch", "2024-05-02")).await;
    let upcoming = json!({"op": "upcoming", "from": "2024-05-01", "days": 30});
    let expected = ok(&mut session, &calendar, upcoming.clone()).await;
    let id = session.id().to_owned();
    drop((session, calendar, host));

    let host = host_on(&db);
    let calendar = host.load_tool(&js_tools().calendar).await.unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let rebuild = session.prewarm(&calendar).await.unwrap().expect("rebuilt");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(3), 0), "{rebuild:?}");
    let after = ok(&mut session, &calendar, upcoming).await;
    assert_eq!(after, expected);
    assert_eq!(after["events"][0]["title"], "launch");
}

#[test]
#[ignore = "the child process of javascript::a_typescript_session_resumes_from_its_snapshot_after_sigkill"]
fn js_kill_child() {
    let Ok(db) = std::env::var("TOOLHOST_JS_KILL_DB") else { return };
    let id = std::env::var("TOOLHOST_JS_KILL_SESSION").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let host = host_on(std::path::Path::new(&db));
        let hostile = host.load_tool(&js_tools().hostile).await.unwrap();
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

/// A child process counts through a stateful TypeScript tool and is SIGKILLed mid-run; the
/// session resumes from the tool's snapshot with exactly the committed steps, none repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typescript_session_resumes_from_its_snapshot_after_sigkill() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    js_tools(); // built and compiled before the child starts
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "javascript::js_kill_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TOOLHOST_JS_KILL_DB", &db)
        .env("TOOLHOST_JS_KILL_SESSION", "js-kill")
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
    let hostile = host.load_tool(&js_tools().hostile).await.unwrap();
    let mut session = host.open_session("js-kill").await.unwrap();
    let committed = session.last_step();
    assert!(committed >= 5, "{committed} steps committed");
    let rebuild = session.prewarm(&hostile).await.unwrap().expect("rebuilt");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(committed), 0), "{rebuild:?}");
    let out = ok(&mut session, &hostile, json!({"attack": "count", "n": committed + 1})).await;
    let expected: Vec<u64> = (1..=committed + 1).collect();
    assert_eq!(out["calls"], committed + 1);
    assert_eq!(out["seen"], json!(expected), "every committed step exactly once");
}

/// A Rust and a TypeScript tool serve one session side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_and_a_typescript_tool_share_a_session() {
    let host = host();
    let calculator = host.load_tool(&crate::support::guests().calculator).await.unwrap();
    let calendar = host.load_tool(&js_tools().calendar).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let diff = ok(&mut session, &calendar, json!({"op": "diff", "from": "2024-03-01", "to": "2024-04-01"})).await;
    assert_eq!(diff["business_days"], 21);
    let out = ok(&mut session, &calculator, json!({"expression": "21 * 8"})).await;
    assert!(out.to_string().contains("168"), "{out}");
    assert_eq!(session.last_step(), 2);
}

/// A TypeScript tool that does not type-check, or is no complete tool, fails the build with
/// the compiler's or the SDK's message, before componentize-js runs.
#[test]
fn a_tool_with_a_type_error_or_a_bad_definition_fails_the_build() {
    js_tools(); // the toolchain is installed
    let toolchain = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".node-sdk");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("package.json"), r#"{"toolhost": {"main": "tool.ts"}}"#).unwrap();
    let tool = |call: &str, name: &str| {
        format!(
            "import {{ defineTool, t }} from \"@toolhost/tool\";\nexport default defineTool({{ name: \"{name}\", \
             description: \"d\", input: t.object({{ n: t.integer() }}), call: {call} }});\n"
        )
    };
    let build =
        || toolhost::js_build::build(dir.path(), &toolchain, &dir.path().join("out")).map_err(|e| e.to_string());
    std::fs::write(dir.path().join("tool.ts"), tool("({ n }) => ({ twice: n.toUpperCase() })", "ok")).unwrap();
    let err = build().unwrap_err();
    assert!(err.contains("type errors") && err.contains("toUpperCase"), "{err}");
    std::fs::write(dir.path().join("tool.ts"), tool("({ n }) => ({ twice: n * 2 })", "Not A Name")).unwrap();
    let err = build().unwrap_err();
    assert!(err.contains("name must be 1-64 chars"), "{err}");
}

/// `toolhost new` writes working templates: the TypeScript one's tests pass under
/// `toolhost build --test`, which then builds it; the Python one's tests pass under plain
/// Python. An existing directory or a malformed name is refused.
#[test]
fn toolhost_new_writes_templates_whose_tests_pass_and_that_build() {
    use std::process::Command;
    js_tools(); // the toolchain is installed
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let toolhost = env!("CARGO_BIN_EXE_toolhost");
    let dir = tempfile::tempdir().unwrap();
    let new = |name: &str, lang: &str| {
        Command::new(toolhost).current_dir(dir.path()).args(["new", name, "--lang", lang]).output().unwrap()
    };
    assert!(new("word-count", "ts").status.success());
    let refused = new("word-count", "ts");
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("already exists"));
    assert!(!new("Word_Count", "ts").status.success());

    let built = Command::new(toolhost)
        .current_dir(dir.path())
        .args(["build", "--test", "word-count", "--js-toolchain"])
        .arg(workspace.join(".node-sdk"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&built.stdout), String::from_utf8_lossy(&built.stderr));
    assert!(built.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("# pass 2") && stdout.contains("# fail 0"), "{stdout}");
    let component = dir.path().join(stdout.lines().last().unwrap().trim());
    assert!(component.extension().is_some_and(|e| e == "wasm") && component.is_file(), "{stdout}");

    assert!(new("py-count", "python").status.success());
    let tested = Command::new("python3")
        .current_dir(dir.path().join("py-count"))
        .args(["-m", "unittest"])
        .env("PYTHONPATH", workspace.join("sdk/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(tested.status.success(), "{}", String::from_utf8_lossy(&tested.stderr));
    assert!(String::from_utf8_lossy(&tested.stderr).contains("Ran 2 tests"));
}
