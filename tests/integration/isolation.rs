//! Sessions never see each other's instances or state.

use serde_json::json;
use toolhost::{CallError, Policy, ToolFailure};

use crate::support::{guests, host};

#[tokio::test]
async fn two_sessions_of_the_stateful_tool_share_nothing() {
    let host = host(Policy::grant_requested());
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let mut alice = host.new_session().await.unwrap();
    let mut bob = host.new_session().await.unwrap();
    assert_ne!(alice.id(), bob.id());

    alice.call(&notes, &json!({"op": "add", "title": "alice secret", "body": "swordfish"})).await.unwrap();
    let added = bob.call(&notes, &json!({"op": "add", "title": "bob note", "body": "hello"})).await.unwrap();
    // Bob's instance has its own memory: its id counter starts at 1 too.
    assert_eq!(added, json!({"id": 1, "notes": 1}));

    let found = bob.call(&notes, &json!({"op": "search", "query": "swordfish"})).await.unwrap();
    assert_eq!(found, json!({"matches": []}));
    let got = bob.call(&notes, &json!({"op": "get", "id": 1})).await.unwrap();
    assert_eq!(got["title"], "bob note");
    let got = alice.call(&notes, &json!({"op": "get", "id": 1})).await.unwrap();
    assert_eq!(got["title"], "alice secret");

    // Alice's state outlives her instance: a new handle on her session id reads it back, and
    // still cannot see Bob's.
    let alice_id = alice.id().to_owned();
    drop(alice);
    let mut alice_again = host.open_session(&alice_id).await.unwrap();
    assert_eq!(alice_again.live_instances().count(), 0);
    let got = alice_again.call(&notes, &json!({"op": "get", "id": 1})).await.unwrap();
    assert_eq!(got["body"], "swordfish");
    let err = alice_again.call(&notes, &json!({"op": "get", "id": 2})).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Tool { failure: ToolFailure::InvalidInput(m), .. } if m.contains("no note with id 2")),
        "{err:?}"
    );
}
