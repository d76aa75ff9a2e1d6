//! Errors keep their causes: a failed commit is a `CallError::Store` whose source is the
//! store's error, whose source is the backend's own (rusqlite, tokio-postgres); `Display`
//! says what failed and `toolhost::error::chain` adds why, once.

use std::error::Error as _;

use serde_json::json;
use toolhost::error::chain;
use toolhost::store::StoreError;
use toolhost::{CallErrorKind, Fault, Host, HostConfig, Policy};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{engine_config, guests};

on_both_backends!(a_failed_commit_keeps_the_backends_error_as_its_source);

const REFUSAL: &str = "the disk is on fire";

/// Makes every later step insert fail inside the database, with [`REFUSAL`].
async fn refuse_step_inserts(db: &TestStore) {
    if db.url.starts_with("sqlite") {
        let sql = format!("CREATE TRIGGER refuse BEFORE INSERT ON steps BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END");
        db.execute(&sql, &[]).await;
    } else {
        let function = format!(
            "CREATE FUNCTION refuse() RETURNS trigger AS $body$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $body$ \
             LANGUAGE plpgsql"
        );
        db.execute(&function, &[]).await;
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON steps FOR EACH ROW EXECUTE FUNCTION refuse()", &[]).await;
    }
}

async fn a_failed_commit_keeps_the_backends_error_as_its_source(db: &TestStore) {
    let config = HostConfig { engine: engine_config(), policy: Policy::grant_requested(), ..HostConfig::default() };
    let host = Host::with_store(config, db.open().await).unwrap();
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    session.call(&notes, &json!({"op": "add", "title": "a", "body": "first"})).await.unwrap();

    refuse_step_inserts(db).await;
    let err = session.call(&notes, &json!({"op": "add", "title": "b", "body": "second"})).await.unwrap_err();
    assert_eq!((err.kind(), err.kind().fault()), (CallErrorKind::Store, Fault::Host), "{err:?}");

    // CallError -> StoreError -> the backend's error, each reachable through `source()`.
    let store_error = err.source().and_then(|s| s.downcast_ref::<StoreError>()).expect("a StoreError as source");
    assert!(matches!(store_error, StoreError::Backend { source: Some(_), .. }), "{store_error:?}");
    let backend = store_error.source().expect("the backend's error as source");
    let typed = if db.url.starts_with("sqlite") {
        backend.downcast_ref::<rusqlite::Error>().is_some()
    } else {
        backend.downcast_ref::<tokio_postgres::Error>().is_some()
    };
    assert!(typed, "the source is not the backend's own error type: {backend:?}");

    // Each message says its part; the chain says all of it, the cause once.
    assert_eq!(err.to_string(), "the store failed during a call to `notes`");
    assert!(!store_error.to_string().contains(REFUSAL), "{store_error}");
    let shown = chain(&err).to_string();
    assert!(shown.starts_with("the store failed during a call to `notes`: store backend: "), "{shown}");
    assert_eq!(shown.matches(REFUSAL).count(), 1, "{shown}");

    // Nothing was committed: the session is still at step 1.
    let id = session.id().to_owned();
    drop(session);
    assert_eq!(host.session_details(&id).await.unwrap().steps.len(), 1);
}
