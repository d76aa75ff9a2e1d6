//! Large snapshots: a 1 MiB in-memory state survives a restart exactly, and a step that
//! changes a few bytes of it stores a few chunks, not another MiB.

use std::sync::Arc;

use serde_json::{Value, json};
use toolhost::store::Durability;
use toolhost::{Host, HostConfig, Policy, SnapshotPolicy, SqliteStore};

use crate::support::{engine_config, guests};

const STATE_BYTES: usize = 1 << 20;

fn host(db: &std::path::Path) -> Host {
    let store = Arc::new(SqliteStore::open(db, Durability::Full).unwrap());
    let snapshots = SnapshotPolicy { every: 1, keep: 100 };
    Host::with_store(
        HostConfig { engine: engine_config(), policy: Policy::deny_all(), snapshots, ..Default::default() },
        store,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_state_costs_its_change_per_step_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let host = host(&db);
    let ballast = host.load_tool(&guests().ballast).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    session.call(&ballast, &json!({"op": "fill", "bytes": STATE_BYTES, "seed": 9})).await.unwrap();
    let store = host.store();
    let before = store.storage_stats(session.id()).await.unwrap();
    assert!(before.chunk_bytes >= STATE_BYTES as u64, "{before:?}");

    for i in 0..5u64 {
        let out =
            session.call(&ballast, &json!({"op": "poke", "offset": 1000 + i * 100_000, "letter": "q"})).await.unwrap();
        assert_eq!(out["pokes"], i + 1);
    }
    let after = store.storage_stats(session.id()).await.unwrap();
    let per_step = (after.chunk_bytes - before.chunk_bytes) / 5;
    // A one-byte change rewrites the chunk holding it (16 KiB at most) and the one holding
    // the poke counter, not the MiB.
    assert!(per_step <= 2 * 16 * 1024, "{per_step} new chunk bytes per one-byte step");
    let snapshots = store.snapshots(session.id()).await.unwrap();
    assert_eq!(snapshots.len(), 6);
    assert!(snapshots.iter().all(|s| s.bytes > STATE_BYTES as u64));

    let expected: Value = session.call(&ballast, &json!({"op": "checksum"})).await.unwrap();
    let id = session.id().to_owned();
    drop((session, host));

    // Another host on the same database: the instance comes back from the last snapshot.
    let host = self::host(&db);
    let ballast = host.load_tool(&guests().ballast).await.unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let rebuild = session.prewarm(&ballast).await.unwrap().expect("rebuilt");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(7), 0));
    let resumed = session.call(&ballast, &json!({"op": "checksum"})).await.unwrap();
    assert_eq!(resumed, expected);
}
