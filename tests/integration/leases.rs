//! Session leases on both backends: exclusivity, expiry and takeover, renewal, release, and
//! fencing of commits and pending-journal writes made under a superseded token.

use std::time::Duration;

use serde_json::json;
use toolhost::store::{PendingStep, SessionRecord, StateWrite, StepCommit, StepOutcome, StepRecord, StoreError};
use toolhost::{CallError, Host, HostConfig, LeaseConfig, RandomState, SessionError};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{engine_config, guests};

on_both_backends!(
    the_store_fences_writes_made_under_a_lost_lease,
    a_leased_session_is_refused_to_other_hosts_until_released,
    an_unrenewed_lease_is_taken_over_and_the_old_holder_is_refused,
    renewal_keeps_an_active_session_leased,
    deletes_and_journal_clears_are_fenced,
);

fn step(seq: u64, value: &str) -> StepCommit {
    StepCommit {
        session: "s".into(),
        step: StepRecord {
            seq,
            tool: "t".into(),
            digest: "d".into(),
            input: format!("{{\"n\":{seq}}}"),
            outcome: StepOutcome::Output("{}".into()),
            journal: Vec::new(),
            writes: vec![StateWrite {
                namespace: "ns".into(),
                key: "k".into(),
                value: Some(value.as_bytes().to_vec()),
            }],
            random: RandomState { seed: [0; 32], secure: 0, insecure: 0 },
            committed_at_ms: 0,
            files: Vec::new(),
        },
        snapshot: Some(vec![seq as u8; 4096].into()),
        file_chunks: Vec::new(),
        keep_snapshots: 2,
        lease: None,
    }
}

fn fenced(mut commit: StepCommit, token: u64) -> StepCommit {
    commit.lease = Some(token);
    commit
}

async fn the_store_fences_writes_made_under_a_lost_lease(db: &TestStore) {
    let store = db.open().await;
    let record = SessionRecord { id: "s".into(), seed: [1; 32], forked_from: None, created_at_ms: 0, last_step: 0 };
    store.create_session(&record).await.unwrap();
    assert_eq!(store.lease("s").await.unwrap(), None);
    let ttl = Duration::from_millis(400);

    let a = store.acquire_lease("s", "host-a", ttl).await.unwrap();
    assert_eq!(store.lease("s").await.unwrap().unwrap().holder, "host-a");
    match store.acquire_lease("s", "host-b", ttl).await {
        Err(StoreError::LeaseHeld { holder, expires_in_ms, .. }) => {
            assert_eq!(holder, "host-a");
            assert!(expires_in_ms <= 400, "{expires_in_ms}");
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    // A writer without a token cannot touch a leased session either.
    assert!(matches!(store.commit_step(step(1, "x")).await, Err(StoreError::LeaseHeld { .. })));
    store.commit_step(fenced(step(1, "one"), a.token)).await.unwrap();

    // Expired, not taken over: the commit is refused, a renewal brings the lease back.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(matches!(store.commit_step(fenced(step(2, "x"), a.token)).await, Err(StoreError::LeaseLost { .. })));
    store.renew_lease("s", a.token, ttl).await.unwrap();
    store.commit_step(fenced(step(2, "two"), a.token)).await.unwrap();

    // Expired and taken over: the old token is refused everywhere, and writes nothing.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let b = store.acquire_lease("s", "host-b", ttl).await.unwrap();
    assert!(b.token > a.token, "tokens grow: {} then {}", a.token, b.token);
    assert!(matches!(store.renew_lease("s", a.token, ttl).await, Err(StoreError::LeaseLost { .. })));
    match store.commit_step(fenced(step(3, "stale"), a.token)).await {
        Err(StoreError::LeaseLost { token, reason, .. }) => {
            assert_eq!(token, a.token);
            assert!(reason.contains("host-b"), "{reason}");
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    let pending =
        PendingStep { seq: 3, tool: "t".into(), input: "{}".into(), journal: Vec::new(), lease: Some(a.token) };
    assert!(matches!(store.put_pending("s", &pending).await, Err(StoreError::LeaseLost { .. })));
    assert_eq!(store.pending("s").await.unwrap(), None);
    assert_eq!(store.steps("s", None, 0).await.unwrap().len(), 2);
    let scope = toolhost::store::StateScope { session: "s".into(), tool: "t".into() };
    assert_eq!(store.get(&scope, "ns", "k").await.unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(store.latest_snapshot("s", "t", 10).await.unwrap().unwrap().0, 2);

    // The new holder writes; releasing under the old token changes nothing.
    store.put_pending("s", &PendingStep { lease: Some(b.token), ..pending }).await.unwrap();
    store.commit_step(fenced(step(3, "three"), b.token)).await.unwrap();
    assert_eq!(store.pending("s").await.unwrap(), None);
    store.release_lease("s", a.token).await.unwrap();
    assert_eq!(store.lease("s").await.unwrap().unwrap().holder, "host-b");
    store.release_lease("s", b.token).await.unwrap();
    assert_eq!(store.lease("s").await.unwrap(), None);
    assert!(matches!(store.commit_step(fenced(step(4, "x"), b.token)).await, Err(StoreError::LeaseLost { .. })));
    // Released: anyone may take it at once, with a greater token.
    let c = store.acquire_lease("s", "host-a", ttl).await.unwrap();
    assert!(c.token > b.token);
    assert_eq!(store.get(&scope, "ns", "k").await.unwrap().as_deref(), Some(&b"three"[..]));
}

/// A session in use is never deleted under its host, nor its step's journal dropped by a
/// host that lost it.
async fn deletes_and_journal_clears_are_fenced(db: &TestStore) {
    let store = db.open().await;
    let record = SessionRecord { id: "s".into(), seed: [1; 32], forked_from: None, created_at_ms: 0, last_step: 0 };
    store.create_session(&record).await.unwrap();
    let ttl = Duration::from_millis(400);
    let a = store.acquire_lease("s", "host-a", ttl).await.unwrap();
    store.commit_step(fenced(step(1, "one"), a.token)).await.unwrap();
    let pending =
        PendingStep { seq: 2, tool: "t".into(), input: "{}".into(), journal: Vec::new(), lease: Some(a.token) };
    store.put_pending("s", &pending).await.unwrap();

    // While host-a runs the session, nobody else deletes it or drops its journal.
    assert!(matches!(store.delete_session("s", None).await, Err(StoreError::LeaseHeld { .. })));
    assert!(matches!(store.clear_pending("s", None).await, Err(StoreError::LeaseHeld { .. })));
    assert!(store.pending("s").await.unwrap().is_some());
    assert_eq!(store.steps("s", None, 0).await.unwrap().len(), 1);

    // Taken over: the old holder's clear and delete are refused; the new holder's journal stays.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let b = store.acquire_lease("s", "host-b", ttl).await.unwrap();
    store.put_pending("s", &PendingStep { lease: Some(b.token), ..pending.clone() }).await.unwrap();
    assert!(matches!(store.clear_pending("s", Some(a.token)).await, Err(StoreError::LeaseLost { .. })));
    assert!(matches!(store.delete_session("s", Some(a.token)).await, Err(StoreError::LeaseLost { .. })));
    assert!(store.pending("s").await.unwrap().is_some());
    store.clear_pending("s", Some(b.token)).await.unwrap();
    assert_eq!(store.pending("s").await.unwrap(), None);

    // The holder may delete; after a release, anyone may; a missing session is `false`.
    assert!(store.delete_session("s", Some(b.token)).await.unwrap());
    assert!(!store.delete_session("s", None).await.unwrap());
    store.create_session(&record).await.unwrap();
    let c = store.acquire_lease("s", "host-c", ttl).await.unwrap();
    store.release_lease("s", c.token).await.unwrap();
    assert!(store.delete_session("s", None).await.unwrap());

    // Through a host: an open session is not deleted from under it; a closed one is.
    let host = leased_host(db, "host-d", Duration::from_secs(5), Duration::from_secs(1)).await;
    let session = host.new_session().await.unwrap();
    let id = session.id().to_owned();
    match host.delete_session(&id).await {
        Err(SessionError::Leased { holder, .. }) => assert_eq!(holder, "host-d"),
        other => panic!("expected Leased, got {other:?}"),
    }
    session.close().await.unwrap();
    assert!(host.delete_session(&id).await.unwrap());
}

async fn leased_host(db: &TestStore, holder: &str, ttl: Duration, renew_every: Duration) -> Host {
    let config = HostConfig {
        engine: engine_config(),
        policy: toolhost::Policy::grant_requested(),
        leases: Some(LeaseConfig { holder: holder.into(), ttl, renew_every }),
        ..HostConfig::default()
    };
    Host::with_store(config, db.open().await).unwrap()
}

async fn a_leased_session_is_refused_to_other_hosts_until_released(db: &TestStore) {
    let ttl = Duration::from_secs(30);
    let a = leased_host(db, "host-a", ttl, ttl / 3).await;
    let b = leased_host(db, "host-b", ttl, ttl / 3).await;
    let calculator = a.load_tool(&guests().calculator).await.unwrap();
    let mut session = a.create_session("shared").await.unwrap();
    session.call(&calculator, &json!({"expression": "1 + 1"})).await.unwrap();
    match b.open_session("shared").await {
        Err(SessionError::Leased { holder, expires_in, .. }) => {
            assert_eq!(holder, "host-a");
            assert!(expires_in > Duration::from_secs(20), "{expires_in:?}");
        }
        other => panic!("expected Leased, got {other:?}"),
    }
    assert!(matches!(b.open_session("missing").await, Err(SessionError::NotFound(_))));
    let token = session.lease_token().unwrap();
    session.close().await.unwrap();

    let calculator = b.load_tool(&guests().calculator).await.unwrap();
    let mut session = b.open_session("shared").await.unwrap();
    assert!(session.lease_token().unwrap() > token);
    assert_eq!(session.call(&calculator, &json!({"expression": "2 + 2"})).await.unwrap()["value"], 4.0);
    assert_eq!(session.last_step(), 2);
    // Dropping a session releases its lease in the background.
    drop(session);
    let mut reopened = a.open_session_waiting("shared", Duration::from_secs(5)).await.unwrap();
    assert_eq!(reopened.last_step(), 2);
    let calculator = a.load_tool(&guests().calculator).await.unwrap();
    reopened.call(&calculator, &json!({"expression": "3 + 3"})).await.unwrap();
}

async fn an_unrenewed_lease_is_taken_over_and_the_old_holder_is_refused(db: &TestStore) {
    // Host A never renews in time: it behaves like a host that stalls past its lease.
    let ttl = Duration::from_millis(500);
    let a = leased_host(db, "host-a", ttl, Duration::from_secs(3600)).await;
    let b = leased_host(db, "host-b", ttl, ttl / 4).await;
    let notes = a.load_tool(&guests().notes).await.unwrap();
    let mut stale = a.create_session("taken").await.unwrap();
    stale.call(&notes, &json!({"op": "add", "title": "by a", "body": "first"})).await.unwrap();

    let started = std::time::Instant::now();
    let mut taken = b.open_session_waiting("taken", Duration::from_secs(10)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "took over after {:?}", started.elapsed());
    let notes_b = b.load_tool(&guests().notes).await.unwrap();
    let listed = taken.call(&notes_b, &json!({"op": "add", "title": "by b", "body": "second"})).await.unwrap();
    assert_eq!(listed, json!({"id": 2, "notes": 2}));

    match stale.call(&notes, &json!({"op": "add", "title": "stale", "body": "lost"})).await {
        Err(CallError::LeaseLost { session, source: StoreError::LeaseLost { reason, .. }, .. }) => {
            assert_eq!(session, "taken");
            assert!(reason.contains("host-b"), "{reason}");
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    // Still refused on the next try, without asking the store to run the tool again.
    assert!(matches!(stale.call(&notes, &json!({"op": "list"})).await, Err(CallError::LeaseLost { .. })));
    let details = b.session_details("taken").await.unwrap();
    assert_eq!(details.steps.len(), 2);
    assert!(details.steps.iter().all(|s| !s.input.contains("stale")));
    let listed = taken.call(&notes_b, &json!({"op": "list"})).await.unwrap();
    assert_eq!(listed, json!({"matches": [{"id": 2, "title": "by b"}, {"id": 1, "title": "by a"}]}));
}

async fn renewal_keeps_an_active_session_leased(db: &TestStore) {
    // A TTL with room for a busy 2-core machine: renewals every 250 ms may each be late by
    // over a second and still hold the lease. The run lasts 2.5 TTLs: only renewal keeps it.
    let ttl = Duration::from_secs(2);
    let a = leased_host(db, "host-a", ttl, Duration::from_millis(250)).await;
    let b = leased_host(db, "host-b", ttl, Duration::from_millis(250)).await;
    let calculator = a.load_tool(&guests().calculator).await.unwrap();
    let mut session = a.create_session("kept").await.unwrap();
    let started = std::time::Instant::now();
    let mut rounds = 0;
    while started.elapsed() < ttl * 5 / 2 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(matches!(b.open_session("kept").await, Err(SessionError::Leased { .. })), "round {rounds}");
        session.call(&calculator, &json!({"expression": format!("{rounds} * 2")})).await.unwrap();
        rounds += 1;
    }
    assert_eq!(session.last_step(), rounds);
}
