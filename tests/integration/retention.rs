//! Retention: deleting a session takes its audit trail (unless kept), and pruning removes
//! sessions that ended before a cutoff with their audit events and the chunks only they used.

use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::{CallError, Host, HostConfig, LeaseConfig, Policy, Session, Tool};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{engine_config, guests};

on_both_backends!(
    deleting_a_session_removes_its_audit_trail_unless_asked_to_keep_it,
    pruning_removes_ended_sessions_with_their_audit_and_unshared_chunks,
);

async fn host_on(db: &TestStore, holder: &str) -> Host {
    let ttl = Duration::from_secs(30);
    let config = HostConfig {
        engine: engine_config(),
        policy: Policy::grant_requested(),
        leases: Some(LeaseConfig { holder: holder.into(), ttl, renew_every: ttl / 3 }),
        ..HostConfig::default()
    };
    Host::with_store(config, db.open().await).unwrap()
}

/// A step that writes a note (unique bytes: chunks of its own) and a denied state read (an
/// audit event), then closes the session.
async fn used_session(host: &Host, notes: &Tool, hostile: &Tool, body: &str) -> String {
    let mut session = host.new_session().await.unwrap();
    add_note(&mut session, notes, body).await;
    let denied = session.call(hostile, &json!({"attack": "state-get", "namespace": "notes", "key": "x"})).await;
    assert!(matches!(denied, Err(CallError::Tool { .. })), "expected the tool's denial, got {denied:?}");
    let id = session.id().to_owned();
    session.close().await.unwrap();
    id
}

async fn add_note(session: &mut Session, notes: &Tool, body: &str) {
    session.call(notes, &json!({"op": "add", "title": "t", "body": body})).await.unwrap();
}

async fn audit_count(host: &Host, session: Option<&str>) -> usize {
    host.store().audit_events(session).await.unwrap().len()
}

async fn tools(host: &Host) -> (std::sync::Arc<Tool>, std::sync::Arc<Tool>) {
    (host.load_tool(&guests().notes).await.unwrap(), host.load_tool(&guests().hostile).await.unwrap())
}

async fn deleting_a_session_removes_its_audit_trail_unless_asked_to_keep_it(db: &TestStore) {
    let host = host_on(db, "host-a").await;
    let (notes, hostile) = tools(&host).await;
    let removed = used_session(&host, &notes, &hostile, "a").await;
    let kept = used_session(&host, &notes, &hostile, "b").await;
    assert!(audit_count(&host, Some(&removed)).await > 0 && audit_count(&host, Some(&kept)).await > 0);

    assert!(host.delete_session(&removed).await.unwrap());
    assert_eq!(audit_count(&host, Some(&removed)).await, 0);
    assert!(host.delete_session_keeping_audit(&kept).await.unwrap());
    let kept_events = audit_count(&host, Some(&kept)).await;
    assert!(kept_events > 0, "the kept audit trail went with the session");

    // A prune past the cutoff sweeps the audit trail that outlived its session.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = host.prune_sessions(Duration::ZERO).await.unwrap();
    assert!(report.sessions.is_empty(), "{report:?}");
    assert_eq!(report.audit_events, kept_events as u64);
    assert_eq!(audit_count(&host, None).await, 0);
}

async fn pruning_removes_ended_sessions_with_their_audit_and_unshared_chunks(db: &TestStore) {
    let host = host_on(db, "host-a").await;
    let (notes, hostile) = tools(&host).await;
    let ended = used_session(&host, &notes, &hostile, &"old and unshared ".repeat(2000)).await;
    let parent = used_session(&host, &notes, &hostile, "shared with a fork").await;
    // Old, but still open on a host: its lease keeps it.
    let mut open = host.new_session().await.unwrap();
    add_note(&mut open, &notes, "open").await;

    tokio::time::sleep(Duration::from_millis(40)).await;
    let cutoff = Instant::now();
    tokio::time::sleep(Duration::from_millis(40)).await;
    // Recent: a fork of the old parent that committed after the cutoff.
    let mut fork = host.fork_session(&parent, 2).await.unwrap();
    add_note(&mut fork, &notes, "fork only").await;
    let fork_id = fork.id().to_owned();
    fork.close().await.unwrap();

    let chunk_bytes = || async { host.store().storage_stats(&fork_id).await.unwrap().chunk_bytes };
    let before = chunk_bytes().await;
    let report = host.prune_sessions(cutoff.elapsed()).await.unwrap();
    let mut pruned = report.sessions.clone();
    pruned.sort();
    let mut expected = vec![ended.clone(), parent.clone()];
    expected.sort();
    assert_eq!(pruned, expected, "{report:?}");
    assert!(report.audit_events >= 2, "{report:?}");
    assert_eq!(audit_count(&host, Some(&ended)).await + audit_count(&host, Some(&parent)).await, 0);
    assert!(chunk_bytes().await < before, "the pruned session's own chunks stayed");

    // The fork keeps the notes it shares with its pruned parent; the open session serves on.
    let mut fork = host.open_session(&fork_id).await.unwrap();
    let listed = fork.call(&notes, &json!({"op": "list"})).await.unwrap();
    assert_eq!(listed["matches"].as_array().map(Vec::len), Some(2), "{listed}");
    fork.close().await.unwrap();
    add_note(&mut open, &notes, "still open").await;
    open.close().await.unwrap();

    // Once everything has ended, nothing is left: no session, no audit event, no chunk.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = host.prune_sessions(Duration::ZERO).await.unwrap();
    assert_eq!(report.sessions.len(), 2, "{report:?}");
    assert!(host.list_sessions().await.unwrap().is_empty());
    assert_eq!(audit_count(&host, None).await, 0);
    assert_eq!(chunk_bytes().await, 0, "chunks outlived every reference");
}
