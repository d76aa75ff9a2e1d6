//! The state capability: grants, key rules, quotas and step atomicity.

use serde_json::{Value, json};
use toolhost::{Access, CallError, Policy, Session, StateQuota, Tool, ToolFailure, TrapKind};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{grants, guests, host_on, tight_limits};

on_both_backends!(
    a_trap_mid_step_commits_nothing_and_a_tool_error_commits_its_writes,
    namespaces_must_be_granted_and_read_only_means_read_only,
    malformed_keys_and_namespaces_are_refused,
    quotas_bound_value_size_key_count_and_total_bytes,
);

async fn hostile_host(db: &TestStore, policy_grants: toolhost::ToolGrants) -> (toolhost::Host, std::sync::Arc<Tool>) {
    let host = host_on(db.open().await, Policy::deny_all().with_tool("hostile", policy_grants));
    let tool = host.load_tool(&guests().hostile).await.unwrap();
    (host, tool)
}

async fn get(session: &mut Session, tool: &Tool, namespace: &str, key: &str) -> Result<String, CallError> {
    let out = session.call(tool, &json!({"attack": "state-get", "namespace": namespace, "key": key})).await?;
    Ok(out["padding"].as_str().unwrap().to_owned())
}

async fn set(session: &mut Session, tool: &Tool, namespace: &str, key: &str, bytes: usize) -> Result<Value, CallError> {
    session.call(tool, &json!({"attack": "state-set", "namespace": namespace, "key": key, "bytes": bytes})).await
}

fn failure(err: CallError) -> ToolFailure {
    match err {
        CallError::Tool { failure, .. } => failure,
        other => panic!("expected a tool error, got {other:?}"),
    }
}

async fn a_trap_mid_step_commits_nothing_and_a_tool_error_commits_its_writes(db: &TestStore) {
    let (host, tool) = hostile_host(db, grants(&["scratch"], tight_limits())).await;
    let mut session = host.new_session().await.unwrap();

    let err = session.call(&tool, &json!({"attack": "set-then-panic", "key": "k"})).await.unwrap_err();
    assert!(matches!(err, CallError::Trap { trap: TrapKind::Unreachable, .. }), "{err:?}");
    assert_eq!(get(&mut session, &tool, "scratch", "k").await.unwrap(), "", "the trapped step's write leaked");

    let err = session.call(&tool, &json!({"attack": "set-then-fail", "key": "f"})).await.unwrap_err();
    assert!(matches!(failure(err), ToolFailure::Failed(m) if m.contains("failed after writing")));
    assert_eq!(get(&mut session, &tool, "scratch", "f").await.unwrap(), "written before the tool error");
}

async fn namespaces_must_be_granted_and_read_only_means_read_only(db: &TestStore) {
    let mut policy_grants = grants(&["scratch"], tight_limits());
    policy_grants.state.namespaces.insert("shared".into(), Access::Read);
    let (host, tool) = hostile_host(db, policy_grants).await;
    let mut session = host.new_session().await.unwrap();

    let denied = failure(set(&mut session, &tool, "secrets", "k", 1).await.unwrap_err());
    assert!(matches!(&denied, ToolFailure::Denied(m) if m.contains("`secrets` is not granted")), "{denied:?}");
    let denied = failure(get(&mut session, &tool, "secrets", "k").await.unwrap_err());
    assert!(matches!(&denied, ToolFailure::Denied(_)), "{denied:?}");

    assert_eq!(get(&mut session, &tool, "shared", "k").await.unwrap(), "");
    let denied = failure(set(&mut session, &tool, "shared", "k", 1).await.unwrap_err());
    assert!(matches!(&denied, ToolFailure::Denied(m) if m.contains("read-only")), "{denied:?}");

    // With no grants at all, even the namespace the tool requested is denied.
    let (host, tool) = hostile_host(db, toolhost::ToolGrants::default()).await;
    let denied = failure(set(&mut host.new_session().await.unwrap(), &tool, "scratch", "k", 1).await.unwrap_err());
    assert!(matches!(denied, ToolFailure::Denied(_)));
}

async fn malformed_keys_and_namespaces_are_refused(db: &TestStore) {
    let (host, tool) = hostile_host(db, grants(&["scratch"], tight_limits())).await;
    let mut session = host.new_session().await.unwrap();
    for (namespace, key, expected) in [
        ("scratch", "", "key is empty"),
        ("scratch", "a\0b", "NUL"),
        ("scratch", &"k".repeat(513), "limit is 512"),
        ("Scratch", "k", "must be 1-64 chars"),
        ("../scratch", "k", "must be 1-64 chars"),
    ] {
        let refused = failure(set(&mut session, &tool, namespace, key, 1).await.unwrap_err());
        assert!(matches!(&refused, ToolFailure::Failed(m) if m.contains(expected)), "{namespace:?}: {refused:?}");
    }
    // Path-like keys are just bytes within the session's own scope.
    set(&mut session, &tool, "scratch", "../../other/session", 3).await.unwrap();
    assert_eq!(get(&mut session, &tool, "scratch", "../../other/session").await.unwrap(), "vvv");
    assert_eq!(get(&mut host.new_session().await.unwrap(), &tool, "scratch", "../../other/session").await.unwrap(), "");
}

async fn quotas_bound_value_size_key_count_and_total_bytes(db: &TestStore) {
    let mut policy_grants = grants(&["scratch"], tight_limits());
    policy_grants.state.quota = StateQuota { max_keys: 3, max_value_bytes: 1_000, max_total_bytes: 2_100 };
    let (host, tool) = hostile_host(db, policy_grants).await;
    let mut session = host.new_session().await.unwrap();

    let refused = failure(set(&mut session, &tool, "scratch", "big", 1_001).await.unwrap_err());
    assert!(matches!(&refused, ToolFailure::Failed(m) if m.contains("quota exceeded")), "{refused:?}");

    set(&mut session, &tool, "scratch", "a", 1_000).await.unwrap();
    set(&mut session, &tool, "scratch", "b", 1_000).await.unwrap();
    // 2,002 bytes used; another 100 would pass 2,100.
    let refused = failure(set(&mut session, &tool, "scratch", "c", 100).await.unwrap_err());
    assert!(matches!(&refused, ToolFailure::Failed(m) if m.contains("2100")), "{refused:?}");
    // Overwriting replaces bytes rather than adding them.
    set(&mut session, &tool, "scratch", "a", 10).await.unwrap();
    set(&mut session, &tool, "scratch", "c", 10).await.unwrap();
    let refused = failure(set(&mut session, &tool, "scratch", "d", 1).await.unwrap_err());
    assert!(matches!(&refused, ToolFailure::Failed(m) if m.contains("3 keys")), "{refused:?}");
}
