//! The in-memory store keeps the same contract as SQLite: random sequences of store
//! operations (commits in and out of sequence, snapshots sharing chunks and pruned,
//! pending journals, forks, deletes, leases with live, stale and expired tokens, audit
//! events) are applied to a `MemoryStore` and a `SqliteStore` side by side, and after every
//! operation both must have answered alike and must read back alike through every method.
//!
//! Plus what only a host shows: a session on the memory store is rebuilt after a trap.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use toolhost::store::{
    AuditEvent, AuditScope, PendingStep, SessionRecord, StateScope, StateWrite, StepCommit, StepOutcome, StepRecord,
    StoreError,
};
use toolhost::{JournalEntry, MemoryStore, RandomState, SqliteStore, Store, ToolFailure};

const SESSIONS: u8 = 3;
const TOOLS: [&str; 2] = ["notes", "calc"];
const SNAPSHOT_LEN: usize = 24 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Create {
        session: u8,
    },
    /// `skew` 0 commits the next step; 1 and 2 commit out of sequence (a conflict).
    Commit {
        session: u8,
        tool: u8,
        skew: u8,
        writes: Vec<(u8, u8, Option<u8>)>,
        snapshot: Option<(u8, u16)>,
        keep: u32,
        token: Option<u8>,
        failed: bool,
    },
    PutPending {
        session: u8,
        token: Option<u8>,
    },
    ClearPending {
        session: u8,
        token: Option<u8>,
    },
    Fork {
        parent: u8,
        back: u8,
        child: u8,
    },
    Delete {
        session: u8,
        token: Option<u8>,
    },
    Acquire {
        session: u8,
        holder: u8,
        expired: bool,
    },
    Renew {
        session: u8,
        token: u8,
        expired: bool,
    },
    Release {
        session: u8,
        token: u8,
    },
    Audit {
        session: u8,
        allowed: bool,
    },
    /// Deletes audit events before 4,000 (none) or 5,000 (all), of one session or of the
    /// deleted ones.
    DeleteAudit {
        session: u8,
        deleted_only: bool,
        all: bool,
    },
}

fn session_id(n: u8) -> String {
    format!("s{n}")
}

fn op() -> impl Strategy<Value = Op> {
    let session = 0..SESSIONS;
    let token = prop::option::of(0u8..4);
    let writes = prop::collection::vec((0u8..2, 0u8..4, prop::option::of(0u8..3)), 0..4);
    let snapshot = prop::option::weighted(0.4, (0u8..2, 0u16..SNAPSHOT_LEN as u16));
    prop_oneof![
        2 => session.clone().prop_map(|session| Op::Create { session }),
        8 => (session.clone(), 0u8..2, prop_oneof![6 => Just(0u8), 1 => 1u8..3], writes, snapshot, 1u32..3, token.clone(), prop::bool::weighted(0.1))
            .prop_map(|(session, tool, skew, writes, snapshot, keep, token, failed)| {
                Op::Commit { session, tool, skew, writes, snapshot, keep, token, failed }
            }),
        1 => (session.clone(), token.clone()).prop_map(|(session, token)| Op::PutPending { session, token }),
        1 => (session.clone(), token.clone()).prop_map(|(session, token)| Op::ClearPending { session, token }),
        1 => (session.clone(), 0u8..4, session.clone()).prop_map(|(parent, back, child)| Op::Fork { parent, back, child }),
        1 => (session.clone(), token.clone()).prop_map(|(session, token)| Op::Delete { session, token }),
        2 => (session.clone(), 0u8..2, prop::bool::weighted(0.3))
            .prop_map(|(session, holder, expired)| Op::Acquire { session, holder, expired }),
        1 => (session.clone(), 0u8..4, prop::bool::weighted(0.3))
            .prop_map(|(session, token, expired)| Op::Renew { session, token, expired }),
        1 => (session.clone(), 0u8..4).prop_map(|(session, token)| Op::Release { session, token }),
        1 => (session.clone(), prop::bool::ANY).prop_map(|(session, allowed)| Op::Audit { session, allowed }),
        1 => (session, prop::bool::ANY, prop::bool::ANY)
            .prop_map(|(session, deleted_only, all)| Op::DeleteAudit { session, deleted_only, all }),
    ]
}

/// Snapshots of one family share most chunks: a fixed pseudo-random body with one poke.
fn snapshot_bytes(family: u8, poke: u16) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(family);
    let mut bytes: Vec<u8> = (0..SNAPSHOT_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    bytes[poke as usize] ^= 0xff;
    bytes
}

fn ttl(expired: bool) -> Duration {
    if expired { Duration::ZERO } else { Duration::from_secs(600) }
}

/// An answer as compared: values in full, errors by kind (some messages carry timings).
fn answer<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(StoreError::Conflict { expected, found, .. }) => format!("conflict {expected} {found}"),
        Err(StoreError::LeaseHeld { holder, .. }) => format!("lease held by {holder}"),
        Err(StoreError::LeaseLost { token, .. }) => format!("lease lost {token}"),
        Err(e @ (StoreError::SessionNotFound(_) | StoreError::SessionExists(_) | StoreError::StepNotFound { .. })) => {
            format!("error {e}")
        }
        Err(e @ StoreError::Backend { .. }) => format!("backend {}", toolhost::error::chain(&e)),
        Err(e) => format!("other {e}"),
    }
}

/// Leases are compared without their expiry instant (each store read its own clock).
fn lease_answer(result: Result<toolhost::store::Lease, StoreError>) -> String {
    answer(result.map(|l| (l.session, l.holder, l.token)))
}

async fn apply(store: &dyn Store, op: &Op) -> String {
    match op {
        Op::Create { session } => {
            let record = SessionRecord {
                id: session_id(*session),
                seed: [*session; 32],
                forked_from: None,
                created_at_ms: 1_000 + i64::from(*session),
                last_step: 0,
            };
            answer(store.create_session(&record).await)
        }
        Op::Commit { session, tool, skew, writes, snapshot, keep, token, failed } => {
            let id = session_id(*session);
            let last = match store.session(&id).await {
                Ok(Some(record)) => record.last_step,
                _ => 0,
            };
            let seq = last + 1 + u64::from(*skew);
            let tool = TOOLS[*tool as usize];
            let writes = writes
                .iter()
                .map(|(ns, key, value)| StateWrite {
                    namespace: format!("ns{ns}"),
                    key: format!("k{key}"),
                    value: value.map(|v| vec![v; usize::from(v) + 1]),
                })
                .collect();
            let outcome = if *failed {
                StepOutcome::Failed(ToolFailure::Failed(format!("step {seq}")))
            } else {
                StepOutcome::Output(json!({ "step": seq }).to_string())
            };
            let step = StepRecord {
                seq,
                tool: tool.to_owned(),
                digest: "d".repeat(64),
                input: json!({ "n": seq }).to_string(),
                outcome,
                journal: vec![JournalEntry::WallClock { secs: seq, nanos: 0 }],
                writes,
                random: RandomState { seed: [1; 32], secure: u128::from(seq), insecure: 0 },
                committed_at_ms: 2_000 + seq as i64,
                files: Vec::new(),
            };
            let commit = StepCommit {
                session: id,
                step,
                snapshot: snapshot.map(|(family, poke)| snapshot_bytes(family, poke).into()),
                file_chunks: Vec::new(),
                keep_snapshots: *keep,
                lease: token.map(u64::from),
            };
            answer(store.commit_step(commit).await)
        }
        Op::PutPending { session, token } => {
            let pending = PendingStep {
                seq: 1,
                tool: "notes".into(),
                input: "{}".into(),
                journal: vec![JournalEntry::MonotonicClock { nanos: 5 }],
                lease: token.map(u64::from),
            };
            answer(store.put_pending(&session_id(*session), &pending).await)
        }
        Op::ClearPending { session, token } => {
            answer(store.clear_pending(&session_id(*session), token.map(u64::from)).await)
        }
        Op::Fork { parent, back, child } => {
            let parent = session_id(*parent);
            let last = match store.session(&parent).await {
                Ok(Some(record)) => record.last_step,
                _ => 0,
            };
            // `back` 0 forks one past the end (refused), 1 at the last step, more further back.
            let at = (last + 1).saturating_sub(u64::from(*back));
            let child = SessionRecord {
                id: format!("{}f", session_id(*child)),
                seed: [9; 32],
                forked_from: None,
                created_at_ms: 3_000,
                last_step: 0,
            };
            answer(store.fork_session(&parent, at, &child).await)
        }
        Op::Delete { session, token } => {
            answer(store.delete_session(&session_id(*session), token.map(u64::from)).await)
        }
        Op::Acquire { session, holder, expired } => {
            lease_answer(store.acquire_lease(&session_id(*session), &format!("host{holder}"), ttl(*expired)).await)
        }
        Op::Renew { session, token, expired } => {
            lease_answer(store.renew_lease(&session_id(*session), u64::from(*token), ttl(*expired)).await)
        }
        Op::Release { session, token } => answer(store.release_lease(&session_id(*session), u64::from(*token)).await),
        Op::Audit { session, allowed } => {
            let event = AuditEvent {
                at_ms: 4_000,
                session: session_id(*session),
                tool: "notes".into(),
                capability: "state".into(),
                request: "set notes/a".into(),
                allowed: *allowed,
                reason: "test".into(),
            };
            answer(store.record_audit(&event).await)
        }
        Op::DeleteAudit { session, deleted_only, all } => {
            let id = session_id(*session);
            let scope = if *deleted_only { AuditScope::DeletedSessions } else { AuditScope::Session(&id) };
            answer(store.delete_audit(scope, if *all { 5_000 } else { 4_000 }).await)
        }
    }
}

/// Everything the store can be asked, for every session name the ops can produce.
async fn observe(store: &dyn Store) -> String {
    let mut seen = Vec::new();
    seen.push(answer(store.list_sessions().await));
    seen.push(answer(store.audit_events(None).await));
    for before in [1_002, 2_003, 3_001, i64::MAX] {
        seen.push(answer(store.ended_sessions(before, 3).await));
    }
    let ids = (0..SESSIONS).flat_map(|n| [session_id(n), format!("{}f", session_id(n))]);
    for id in ids {
        seen.push(format!("{id}: {}", answer(store.session(&id).await)));
        seen.push(answer(store.state_keys(&id).await));
        seen.push(answer(store.steps(&id, None, 0).await));
        seen.push(answer(store.snapshots(&id).await));
        seen.push(answer(store.storage_stats(&id).await));
        seen.push(answer(store.pending(&id).await));
        seen.push(lease_answer(store.lease(&id).await.and_then(|l| l.ok_or(StoreError::backend_refused("none")))));
        seen.push(answer(store.audit_events(Some(&id)).await));
        let last = store.session(&id).await.ok().flatten().map_or(0, |r| r.last_step);
        for tool in TOOLS {
            let scope = StateScope { session: id.clone(), tool: tool.to_owned() };
            seen.push(answer(store.usage(&scope).await));
            seen.push(answer(store.steps(&id, Some(tool), last / 2).await));
            for ns in ["ns0", "ns1"] {
                seen.push(answer(store.list_keys(&scope, ns, "").await));
                seen.push(answer(store.list_keys(&scope, ns, "k1").await));
                for key in 0..4 {
                    seen.push(answer(store.get(&scope, ns, &format!("k{key}")).await));
                }
            }
            for at in 0..=last {
                let snapshot = store.latest_snapshot(&id, tool, at).await;
                seen.push(answer(
                    snapshot.map(|s| s.map(|(seq, bytes)| (seq, bytes.len(), bytes[0], bytes[bytes.len() - 1]))),
                ));
            }
        }
    }
    seen.join("\n")
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn memory_store_answers_as_sqlite_does(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let memory = MemoryStore::new();
            let sqlite = SqliteStore::temporary().unwrap();
            for (i, op) in ops.iter().enumerate() {
                let (m, s) = (apply(&memory, op).await, apply(&sqlite, op).await);
                prop_assert_eq!(&m, &s, "op {} {:?} answered differently", i, op);
                let (m, s) = (observe(&memory).await, observe(&sqlite).await);
                prop_assert!(m == s, "after op {i} {op:?} the stores differ:\n{}", first_difference(&m, &s));
            }
            Ok(())
        })?;
    }
}

fn first_difference(memory: &str, sqlite: &str) -> String {
    for (m, s) in memory.lines().zip(sqlite.lines()) {
        if m != s {
            return format!("memory: {m}\nsqlite: {s}");
        }
    }
    "one reads back more lines than the other".into()
}

/// A session on the memory store (what `Host::new` gives) is rebuilt like a stored one: a
/// second handle restores the newest snapshot, replays the steps after it, and reads the
/// same state.
#[tokio::test]
async fn a_memory_session_is_rebuilt_from_snapshot_and_journal() {
    use crate::support::{engine_config, guests};
    let config = toolhost::HostConfig {
        engine: engine_config(),
        policy: toolhost::Policy::grant_requested(),
        snapshots: toolhost::SnapshotPolicy { every: 3, keep: 2 },
        ..toolhost::HostConfig::default()
    };
    let host = toolhost::Host::new(config).unwrap();
    let ballast = host.load_tool(&guests().ballast).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    session.call(&ballast, &json!({"op": "fill", "bytes": 100_000, "seed": 7})).await.unwrap();
    for offset in 0..4 {
        session.call(&ballast, &json!({"op": "poke", "offset": offset * 1000, "letter": "q"})).await.unwrap();
    }
    let id = session.id().to_owned();
    let before = session.call(&ballast, &json!({"op": "checksum"})).await.unwrap();
    drop(session);

    let mut again = host.open_session(&id).await.unwrap();
    let rebuild = again.prewarm(&ballast).await.unwrap().expect("a new handle has no live instance");
    assert_eq!(rebuild.restored_from, Some(6), "snapshots every third step: {rebuild:?}");
    assert_eq!(rebuild.replayed, 0);
    let after = again.call(&ballast, &json!({"op": "checksum"})).await.unwrap();
    assert_eq!(before["checksum"], after["checksum"]);
    assert_eq!(after["pokes"], 4);
    drop(again);

    // Forked before the last snapshot: restored from step 3, then steps 4 and 5 replayed.
    let mut fork = host.fork_session(&id, 5).await.unwrap();
    let rebuild = fork.prewarm(&ballast).await.unwrap().expect("a fork has no live instance");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(3), 2), "{rebuild:?}");
    let forked = fork.call(&ballast, &json!({"op": "checksum"})).await.unwrap();
    assert_eq!(forked["pokes"], 4);
    assert_eq!(forked["checksum"], before["checksum"]);
}
