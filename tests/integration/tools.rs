//! Loading, describing and calling the example tools.

use serde_json::json;
use toolhost::{CallError, Policy, ToolFailure, ToolKind};

use crate::support::{guests, host};

#[tokio::test]
async fn calculator_describes_itself_and_evaluates() {
    let host = host(Policy::deny_all());
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    let d = calculator.descriptor();
    assert_eq!(d.name, "calculator");
    assert_eq!(d.version, "0.1.0");
    assert_eq!(calculator.kind(), ToolKind::Stateless);
    assert_eq!(d.input_schema["required"], json!(["expression"]));
    assert!(d.capabilities.state.is_empty() && d.capabilities.models.is_empty());
    assert_eq!(calculator.digest().len(), 64);

    let mut session = host.new_session().await.unwrap();
    let out = session.call(&calculator, &json!({"expression": "2 * (3 + 4) ^ 2"})).await.unwrap();
    assert_eq!(out, json!({"value": 98.0}));
    let out = session.call(&calculator, &json!({"expression": "-1.5e1 % 4"})).await.unwrap();
    assert_eq!(out, json!({"value": -3.0}));
}

#[tokio::test]
async fn notes_keeps_an_index_in_memory_and_notes_in_state() {
    let host = host(Policy::grant_requested());
    let notes = host.load_tool(&guests().notes).await.unwrap();
    assert_eq!(notes.kind(), ToolKind::Stateful);
    let caps = &notes.descriptor().capabilities;
    assert_eq!(caps.state.len(), 1);
    assert_eq!(caps.state[0].namespace, "notes");
    assert_eq!(caps.state[0].access, toolhost::Access::ReadWrite);

    let mut session = host.new_session().await.unwrap();
    let a = session
        .call(&notes, &json!({"op": "add", "title": "Rust wasm", "body": "components and WIT", "tags": ["wasm"]}))
        .await
        .unwrap();
    assert_eq!(a, json!({"id": 1, "notes": 1}));
    let b =
        session.call(&notes, &json!({"op": "add", "title": "Groceries", "body": "rust-colored apples"})).await.unwrap();
    assert_eq!(b, json!({"id": 2, "notes": 2}));

    // "rust" is in both; the note with it in the title ranks first.
    let found = session.call(&notes, &json!({"op": "search", "query": "RUST"})).await.unwrap();
    assert_eq!(found, json!({"matches": [{"id": 1, "title": "Rust wasm"}, {"id": 2, "title": "Groceries"}]}));
    let found = session.call(&notes, &json!({"op": "search", "query": "wasm apples"})).await.unwrap();
    assert_eq!(found, json!({"matches": []}));

    let got = session.call(&notes, &json!({"op": "get", "id": 2})).await.unwrap();
    assert_eq!(got["body"], "rust-colored apples");
    let deleted = session.call(&notes, &json!({"op": "delete", "id": 2})).await.unwrap();
    assert_eq!(deleted, json!({"deleted": true}));
    let listed = session.call(&notes, &json!({"op": "list"})).await.unwrap();
    assert_eq!(listed, json!({"matches": [{"id": 1, "title": "Rust wasm"}]}));
}

#[tokio::test]
async fn input_that_violates_the_schema_is_refused_before_the_tool_runs() {
    let host = host(Policy::grant_requested());
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    let notes = host.load_tool(&guests().notes).await.unwrap();
    let mut session = host.new_session().await.unwrap();

    let err = session.call(&calculator, &json!({"expr": "1 + 1"})).await.unwrap_err();
    let CallError::InvalidInput { tool, errors } = &err else { panic!("expected InvalidInput, got {err:?}") };
    assert_eq!(tool, "calculator");
    assert!(errors.iter().any(|e| e.contains("\"expression\" is a required property")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("'expr' was unexpected")), "{errors:?}");

    let err = session.call(&calculator, &json!({"expression": 42})).await.unwrap_err();
    let CallError::InvalidInput { errors, .. } = &err else { panic!("expected InvalidInput, got {err:?}") };
    assert!(errors.iter().any(|e| e.starts_with("at `/expression`")), "{errors:?}");

    let err = session.call(&notes, &json!({"op": "fly"})).await.unwrap_err();
    assert!(matches!(err, CallError::InvalidInput { .. }), "{err:?}");
    // A refused input never reached the tool, so no instance was started for it.
    assert_eq!(session.live_instances().count(), 0);
}

#[tokio::test]
async fn a_tool_error_is_typed_and_the_instance_stays_usable() {
    let host = host(Policy::deny_all());
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let err = session.call(&calculator, &json!({"expression": "1 / (2 - 2)"})).await.unwrap_err();
    match err {
        CallError::Tool { tool, failure: ToolFailure::InvalidInput(message) } => {
            assert_eq!(tool, "calculator");
            assert!(message.contains("division by zero"), "{message}");
        }
        other => panic!("expected a tool error, got {other:?}"),
    }
    assert_eq!(session.live_instances().collect::<Vec<_>>(), ["calculator"]);
    let out = session.call(&calculator, &json!({"expression": "6 * 7"})).await.unwrap();
    assert_eq!(out["value"], 42.0);
}
