//! The core checks every guest language's hostile fixture (`hostile-py`, `hostile-js`) must
//! pass, written once: each language's module runs them on its own host and tool.

use serde_json::{Value, json};
use toolhost::{CallError, Host, Limits, Session, Tool, ToolFailure};

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
