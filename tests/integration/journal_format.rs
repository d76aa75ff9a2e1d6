//! The stored step journal is versioned and self-describing: a journal a later 0.1.x wrote
//! with fields this version does not know still replays, and one in a format newer than
//! this version reads is refused with a clear error instead of being misread.

use std::sync::Arc;

use serde_json::json;
use toolhost::error::chain;
use toolhost::store::Durability;
use toolhost::{Host, HostConfig, Policy, SnapshotPolicy, SqliteStore, Store};

use crate::support::{engine_config, guests};

/// A host on `db` that never snapshots, so a rebuilt notes instance replays every step.
fn host_on(db: &std::path::Path) -> Host {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db, Durability::Full).unwrap());
    let config = HostConfig {
        engine: engine_config(),
        policy: Policy::grant_requested(),
        snapshots: SnapshotPolicy { every: u32::MAX, keep: 1 },
        ..HostConfig::default()
    };
    Host::with_store(config, store).unwrap()
}

async fn session_with_notes(db: &std::path::Path) -> String {
    let host = host_on(db);
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    for title in ["alpha", "beta", "gamma"] {
        session.call(&notes, &json!({"op": "add", "title": title, "body": "text"})).await.unwrap();
    }
    session.id().to_owned()
}

/// Rewrites every stored journal with `edit` applied to its JSON.
fn rewrite_journals(db: &std::path::Path, edit: impl Fn(&mut serde_json::Value) -> Vec<u8>) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<(String, i64, Vec<u8>)> = conn
        .prepare("SELECT session, seq, journal FROM steps WHERE journal IS NOT NULL")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (session, seq, blob) in &rows {
        assert_eq!(blob[..2], [0, toolhost::contract::JOURNAL_FORMAT], "a journal starts with its format");
        let mut journal: serde_json::Value = serde_json::from_slice(&blob[2..]).unwrap();
        let sql = "UPDATE steps SET journal = ?1 WHERE session = ?2 AND seq = ?3";
        conn.execute(sql, rusqlite::params![edit(&mut journal), session, seq]).unwrap();
    }
    rows.len()
}

#[tokio::test]
async fn a_journal_with_fields_from_a_later_version_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let id = session_with_notes(&db).await;
    let rewritten = rewrite_journals(&db, |journal| {
        for entry in journal.as_array_mut().unwrap() {
            for fields in entry.as_object_mut().unwrap().values_mut() {
                fields.as_object_mut().unwrap().insert("added_later".into(), json!({"with": ["a", "value"]}));
            }
        }
        let mut blob = vec![0, toolhost::contract::JOURNAL_FORMAT];
        blob.extend(serde_json::to_vec(journal).unwrap());
        blob
    });
    assert_eq!(rewritten, 3);

    let host = host_on(&db);
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    // The rebuild replays the three steps' state reads from the rewritten journals.
    let rebuild = session.prewarm(&notes).await.unwrap().unwrap();
    assert_eq!((rebuild.restored_from, rebuild.replayed), (None, 3));
    let found = session.call(&notes, &json!({"op": "search", "query": "beta"})).await.unwrap();
    assert_eq!(found, json!({"matches": [{"id": 2, "title": "beta"}]}));
    let added = session.call(&notes, &json!({"op": "add", "title": "delta", "body": "text"})).await.unwrap();
    assert_eq!(added, json!({"id": 4, "notes": 4}));
}

#[tokio::test]
async fn a_journal_in_a_newer_format_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let id = session_with_notes(&db).await;
    rewrite_journals(&db, |journal| {
        let mut blob = vec![0, toolhost::contract::JOURNAL_FORMAT + 1];
        blob.extend(serde_json::to_vec(journal).unwrap());
        blob
    });

    let host = host_on(&db);
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let error = match host.open_session(&id).await {
        Err(e) => chain(&e).to_string(),
        Ok(mut session) => chain(&session.call(&notes, &json!({"op": "list"})).await.unwrap_err()).to_string(),
    };
    // The format error is the cause, at the end of the chain: what was being read, then why.
    assert!(error.contains("stored data is unreadable: step journal: "), "{error}");
    assert!(error.contains("format 2, newer than this toolhost reads"), "{error}");
}
