//! The core checks every guest language's hostile fixture (`hostile-py`, `hostile-js`) must
//! pass, written once: each language's module runs them on its own host and tool.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use toolhost::store::Durability;
use toolhost::{
    CallError, EngineConfig, Host, HostConfig, Limits, Policy, Session, SnapshotPolicy, SqliteStore, Tool, ToolFailure,
};

use crate::http_server::{CountingServer, reply_for};
use crate::support::grants;

pub async fn ok(session: &mut Session, tool: &Tool, input: Value) -> Value {
    session.call(tool, &input).await.unwrap_or_else(|e| panic!("{input}: {e}"))
}

pub async fn echo(session: &mut Session, tool: &Tool, n: u64) {
    assert_eq!(ok(session, tool, json!({"attack": "echo", "n": n})).await["echo"], n);
}

pub async fn cpu_deadline_and_memory_limit_stop_it(host: &Host, hostile: &Tool, limits: &Limits) {
    let mut session = host.new_session().await.unwrap();
    echo(&mut session, hostile, 1).await;

    let err = session.call(hostile, &json!({"attack": "spin"})).await.unwrap_err();
    assert!(matches!(&err, CallError::Deadline { limit, .. } if *limit == limits.cpu_time), "{err:?}");
    echo(&mut session, hostile, 2).await;

    let err = session.call(hostile, &json!({"attack": "bomb"})).await.unwrap_err();
    match &err {
        CallError::MemoryLimit { limit_bytes, .. } => assert_eq!(*limit_bytes, limits.memory_bytes),
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    echo(&mut session, hostile, 3).await;
}

pub async fn a_trap_mid_step_rolls_back_its_writes_and_its_memory(host: &Host, hostile: &Tool) {
    let mut session = host.new_session().await.unwrap();
    assert_eq!(ok(&mut session, hostile, json!({"attack": "count", "n": 1})).await["calls"], 1);

    let err = session.call(hostile, &json!({"attack": "write_then_trap", "key": "k", "n": 9})).await.unwrap_err();
    assert!(matches!(err, CallError::Trap { .. }), "{err:?}");
    // Neither the state write nor the in-memory change (+1000) survived the trap.
    assert_eq!(ok(&mut session, hostile, json!({"attack": "read", "key": "k"})).await["value"], Value::Null);
    let counted = ok(&mut session, hostile, json!({"attack": "count", "n": 2})).await;
    assert_eq!((counted["calls"].clone(), counted["seen"].clone()), (json!(2), json!([1, 2])));
    // A tool error is an outcome, not a trap: the session goes on.
    let err = session.call(hostile, &json!({"attack": "fail"})).await.unwrap_err();
    assert!(matches!(err, CallError::Tool { failure: ToolFailure::Failed(_), .. }), "{err:?}");
    assert_eq!(ok(&mut session, hostile, json!({"attack": "count", "n": 3})).await["calls"], 3);
}

pub async fn an_ungranted_namespace_is_a_typed_denial_with_an_audit_event(host: &Host, hostile: &Tool) {
    let mut session = host.new_session().await.unwrap();
    match session.call(hostile, &json!({"attack": "forbidden"})).await.unwrap_err() {
        CallError::Tool { failure: ToolFailure::Denied(m), .. } => {
            assert!(m.contains("state access denied") && m.contains("forbidden"), "{m}")
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let events = host.store().audit_events(Some(session.id())).await.unwrap();
    assert!(
        events.iter().any(|e| !e.allowed && e.capability == "state" && e.request.contains("forbidden")),
        "no audited denial in {events:?}"
    );
    // The granted namespace works.
    ok(&mut session, hostile, json!({"attack": "write", "key": "k", "n": 5})).await;
    assert_eq!(ok(&mut session, hostile, json!({"attack": "read", "key": "k"})).await["value"], "5");
}

/// A host on `db` whose `tool` may reach `server` (and nothing else), and never snapshots: a
/// rebuild replays every step, HTTP exchanges included.
fn http_host(engine: EngineConfig, db: &Path, tool: &str, server: &CountingServer, limits: &Limits) -> Host {
    let mut granted = grants(&["scratch"], *limits);
    granted.network.allow = vec![format!("127.0.0.1:{}", server.port).parse().unwrap()];
    let store = Arc::new(SqliteStore::open(db, Durability::Full).unwrap());
    let snapshots = SnapshotPolicy { every: u32::MAX, keep: 1 };
    let config =
        HostConfig { engine, policy: Policy::deny_all().with_tool(tool, granted), snapshots, ..HostConfig::default() };
    Host::with_store(config, store).unwrap()
}

/// The SDK's `http` GETs and POSTs to a granted server and reads the answers; a host off the
/// allowlist is a typed `denied` with an audit event, sending nothing; a durable session's
/// rebuild replays the exchanges from the journal, so the server's count does not move.
pub async fn http_is_granted_denied_and_replayed(
    engine: impl Fn() -> EngineConfig,
    component: &Path,
    tool: &str,
    limits: &Limits,
) {
    let server = CountingServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let id = {
        let host = http_host(engine(), &db, tool, &server, limits);
        let hostile = host.load_tool(component).await.unwrap();
        let mut session = host.new_session().await.unwrap();
        let got = ok(&mut session, &hostile, json!({"attack": "http_get", "url": server.url("/items?page=2")})).await;
        assert_eq!(got, json!({"status": 200, "body": reply_for("GET /items?page=2 ", 1), "type": "text/plain"}));
        let posted =
            ok(&mut session, &hostile, json!({"attack": "http_post", "url": server.url("/orders"), "body": "one"}))
                .await;
        assert_eq!(posted, json!({"status": 200, "body": reply_for("POST /orders one", 1)}));

        let elsewhere = format!("http://localhost:{}/secret", server.port);
        match session.call(&hostile, &json!({"attack": "http_get", "url": elsewhere})).await.unwrap_err() {
            CallError::Tool { failure: ToolFailure::Denied(m), .. } => {
                assert!(m.contains("HTTP request denied"), "{m}")
            }
            other => panic!("expected a typed denial, got {other:?}"),
        }
        let events = host.store().audit_events(Some(session.id())).await.unwrap();
        assert!(
            events.iter().any(|e| !e.allowed && e.capability == "network" && e.request.contains("localhost")),
            "no audited denial in {events:?}"
        );
        assert!(events.iter().any(|e| e.allowed && e.capability == "network" && e.request.contains("/orders")));
        echo(&mut session, &hostile, 4).await;
        session.id().to_owned()
    };
    let sent = server.log().clone();
    assert_eq!((sent.received, sent.unkeyed), (2, 0), "the denied request was never sent");

    // A restarted host rebuilds the instance by replaying all four steps: from the journal alone.
    let host = http_host(engine(), &db, tool, &server, limits);
    let hostile = host.load_tool(component).await.unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let rebuild = session.prewarm(&hostile).await.unwrap().expect("rebuilt");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (None, 4), "{rebuild:?}");
    assert_eq!(server.log().received, 2, "the replay sent nothing");
    // And the session goes on live.
    let again =
        ok(&mut session, &hostile, json!({"attack": "http_post", "url": server.url("/orders"), "body": "one"})).await;
    assert_eq!(again["body"], reply_for("POST /orders one", 2));
    assert_eq!(server.log().received, 3);
}
