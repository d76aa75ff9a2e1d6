//! Durable sessions: resume after a restart, replay, divergence, fork, journaled model calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use toolhost::model::{ChatRequest, ChatResponse, FinishReason, ModelError, Usage};
use toolhost::{CallError, Host, HostConfig, ModelProvider, Policy, SessionError, SnapshotPolicy, Tool};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{engine_config, grants, guests, tight_limits};

on_both_backends!(
    a_restarted_host_resumes_a_session_from_its_snapshot,
    without_snapshots_a_session_is_rebuilt_by_replaying_its_journal,
    a_replay_that_diverges_names_the_step,
    forks_evolve_independently_with_fresh_randomness,
    secure_random_bytes_are_os_entropy_journaled_for_replay,
);

/// Answers every prompt with its echo and counts the calls.
#[derive(Default)]
pub struct CountingModel {
    pub calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ModelProvider for CountingModel {
    async fn chat(&self, _alias: &str, request: &ChatRequest, _call_id: &str) -> Result<ChatResponse, ModelError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(ChatResponse {
            text: format!("echo: {} (call {n})", request.messages.last().map(|m| m.content.as_str()).unwrap_or("")),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage { input_tokens: 1, output_tokens: 1 },
            model: "counting".into(),
        })
    }
}

pub fn policy() -> Policy {
    let mut hostile = grants(&["scratch"], tight_limits());
    hostile.models = toolhost::ModelGrant::aliases(["counting"]);
    Policy::grant_requested().with_tool("hostile", hostile)
}

/// A host (re)started on `db`: a new connection to the same store.
async fn host_on(db: &TestStore, snapshots: SnapshotPolicy, models: Option<Arc<CountingModel>>) -> Host {
    let store = db.open().await;
    let config = HostConfig {
        engine: engine_config(),
        policy: policy(),
        snapshots,
        models: models.map(|m| m as Arc<dyn ModelProvider>),
        leases: None,
        ..HostConfig::default()
    };
    Host::with_store(config, store).unwrap()
}

async fn tools(host: &Host) -> (Arc<Tool>, Arc<Tool>) {
    (host.load_tool(&guests().notes).await.unwrap(), host.load_tool(&guests().hostile).await.unwrap())
}

async fn add_notes(host: &Host, notes: &Tool, titles: &[&str]) -> String {
    let mut session = host.new_session().await.unwrap();
    for title in titles {
        session.call(notes, &json!({"op": "add", "title": title, "body": format!("about {title}")})).await.unwrap();
    }
    session.id().to_owned()
}

async fn a_restarted_host_resumes_a_session_from_its_snapshot(db: &TestStore) {
    let id = {
        let host = host_on(db, SnapshotPolicy::default(), None).await;
        let (notes, _) = tools(&host).await;
        add_notes(&host, &notes, &["alpha", "beta", "gamma", "delta"]).await
    };

    let host = host_on(db, SnapshotPolicy::default(), None).await;
    let (notes, _) = tools(&host).await;
    let mut session = host.open_session(&id).await.unwrap();
    assert_eq!(session.last_step(), 4);
    // The in-memory index comes back: searching needs no note from state.
    let found = session.call(&notes, &json!({"op": "search", "query": "gamma"})).await.unwrap();
    assert_eq!(found, json!({"matches": [{"id": 3, "title": "gamma"}]}));
    let added = session.call(&notes, &json!({"op": "add", "title": "epsilon", "body": "fifth"})).await.unwrap();
    assert_eq!(added, json!({"id": 5, "notes": 5}));

    let details = host.session_details(&id).await.unwrap();
    assert_eq!(details.steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    // Default policy: a snapshot after each step, the newest 3 kept.
    assert_eq!(details.snapshots.iter().map(|s| s.seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(details.state_keys.len(), 5);
    assert!(matches!(host.open_session("nope").await, Err(SessionError::NotFound(_))));
}

async fn without_snapshots_a_session_is_rebuilt_by_replaying_its_journal(db: &TestStore) {
    let never = SnapshotPolicy { every: u32::MAX, keep: 1 };
    let models = Arc::new(CountingModel::default());
    let (id, entropy) = {
        let host = host_on(db, never, Some(models.clone())).await;
        let (notes, hostile) = tools(&host).await;
        let mut session = host.new_session().await.unwrap();
        session.call(&notes, &json!({"op": "add", "title": "one", "body": "first"})).await.unwrap();
        let entropy = session.call(&hostile, &json!({"attack": "entropy", "bytes": 16})).await.unwrap();
        session.call(&hostile, &json!({"attack": "ask-model", "model": "counting", "prompt": "hi"})).await.unwrap();
        session.call(&notes, &json!({"op": "get", "id": 1})).await.unwrap();
        (session.id().to_owned(), entropy)
    };
    assert_eq!(models.calls.load(Ordering::SeqCst), 1);

    let host = host_on(db, never, Some(models.clone())).await;
    let (notes, hostile) = tools(&host).await;
    assert!(host.session_details(&id).await.unwrap().snapshots.is_empty());
    let mut session = host.open_session(&id).await.unwrap();
    // Rebuilding `hostile` replays its random bytes, clock reading and model answer from the
    // journal (a mismatch would fail as a divergence), and the next draw continues the stream.
    let next = session.call(&hostile, &json!({"attack": "entropy", "bytes": 16})).await.unwrap();
    assert_ne!(next["padding"], entropy["padding"]);
    assert_eq!(models.calls.load(Ordering::SeqCst), 1, "replay must not call the model");
    let listed = session.call(&notes, &json!({"op": "list"})).await.unwrap();
    assert_eq!(listed, json!({"matches": [{"id": 1, "title": "one"}]}));
}

async fn a_replay_that_diverges_names_the_step(db: &TestStore) {
    let never = SnapshotPolicy { every: u32::MAX, keep: 1 };
    let id = {
        let host = host_on(db, never, None).await;
        let (notes, _) = tools(&host).await;
        add_notes(&host, &notes, &["one", "two", "three"]).await
    };
    // Make step 2's record claim the output step 1 produced.
    let changed = db
        .execute(
            "UPDATE steps SET outcome = (SELECT outcome FROM steps WHERE session = $1 AND seq = 1) WHERE session = $1 AND seq = 2",
            &[&id],
        )
        .await;
    assert_eq!(changed, 1);

    let host = host_on(db, never, None).await;
    let (notes, _) = tools(&host).await;
    let mut session = host.open_session(&id).await.unwrap();
    let err = session.call(&notes, &json!({"op": "list"})).await.unwrap_err();
    match err {
        CallError::ReplayDiverged { step, tool, reason, .. } => {
            assert_eq!((step, tool.as_str()), (2, "notes"));
            assert!(reason.contains("\"id\":2") && reason.contains("\"id\":1"), "{reason}");
        }
        other => panic!("expected ReplayDiverged, got {other:?}"),
    }
}

async fn forks_evolve_independently_with_fresh_randomness(db: &TestStore) {
    let host = host_on(db, SnapshotPolicy::default(), None).await;
    let (notes, hostile) = tools(&host).await;
    let mut parent = host.new_session().await.unwrap();
    parent.call(&notes, &json!({"op": "add", "title": "shared", "body": "before the fork"})).await.unwrap();
    parent.call(&hostile, &json!({"attack": "echo", "n": 1})).await.unwrap();

    let mut child = host.fork_session(parent.id(), 2).await.unwrap();
    assert_eq!(child.forked_from(), Some((parent.id(), 2)));
    assert_eq!(child.last_step(), 2);
    let parent_draw = parent.call(&hostile, &json!({"attack": "entropy", "bytes": 16})).await.unwrap();
    let child_draw = child.call(&hostile, &json!({"attack": "entropy", "bytes": 16})).await.unwrap();
    assert_ne!(parent_draw["padding"], child_draw["padding"], "a fork must not replay the parent's random stream");

    parent.call(&notes, &json!({"op": "add", "title": "parent only", "body": "x"})).await.unwrap();
    child.call(&notes, &json!({"op": "add", "title": "child only", "body": "y"})).await.unwrap();
    let parent_list = parent.call(&notes, &json!({"op": "list"})).await.unwrap();
    let child_list = child.call(&notes, &json!({"op": "list"})).await.unwrap();
    assert_eq!(parent_list, json!({"matches": [{"id": 2, "title": "parent only"}, {"id": 1, "title": "shared"}]}));
    assert_eq!(child_list, json!({"matches": [{"id": 2, "title": "child only"}, {"id": 1, "title": "shared"}]}));
    let got = child.call(&notes, &json!({"op": "get", "id": 2})).await.unwrap();
    assert_eq!(got["body"], "y");

    // Both branches resume in a new host: the child's rebuild replays the parent's history
    // with the parent's seed, then its own with its own.
    let child_id = child.id().to_owned();
    let parent_id = parent.id().to_owned();
    drop((parent, child, host));
    let host = host_on(db, SnapshotPolicy::default(), None).await;
    let (notes, hostile) = tools(&host).await;
    for id in [&parent_id, &child_id] {
        let mut session = host.open_session(id).await.unwrap();
        session.call(&hostile, &json!({"attack": "echo", "n": 2})).await.unwrap();
        session.call(&notes, &json!({"op": "list"})).await.unwrap();
    }
    let forks: Vec<_> = host.list_sessions().await.unwrap().into_iter().filter(|s| s.forked_from.is_some()).collect();
    assert_eq!(forks.len(), 1);
    assert!(host.delete_session(&child_id).await.unwrap());
    assert!(!host.delete_session(&child_id).await.unwrap());
    assert!(matches!(host.open_session(&child_id).await, Err(SessionError::NotFound(_))));
    // The parent is untouched by the child's deletion (their snapshot chunks were shared).
    let mut parent = host.open_session(&parent_id).await.unwrap();
    let listed = parent.call(&notes, &json!({"op": "list"})).await.unwrap();
    assert_eq!(listed["matches"].as_array().unwrap().len(), 2);
}

/// Secure random bytes do not derive from the session's seed (which sits in the database
/// beside the session): two sessions with one seed draw different bytes. They are journaled,
/// so a rebuilt instance replays them exactly (a different byte would diverge).
async fn secure_random_bytes_are_os_entropy_journaled_for_replay(db: &TestStore) {
    let never = SnapshotPolicy { every: u32::MAX, keep: 1 };
    let seed = [42; 32];
    let draw = json!({"attack": "random-loop", "draws": 3, "bytes": 16});
    let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (id, drawn) = {
        let host = host_on(db, never, None).await;
        let (_, hostile) = tools(&host).await;
        let mut a = host.create_session_with_seed(format!("entropy-a-{unique}"), seed).await.unwrap();
        let mut b = host.create_session_with_seed(format!("entropy-b-{unique}"), seed).await.unwrap();
        let from_a = a.call(&hostile, &draw).await.unwrap();
        let from_b = b.call(&hostile, &draw).await.unwrap();
        assert_eq!(from_a["padding"].as_str().unwrap().len(), 32);
        assert_ne!(from_a["padding"], from_b["padding"], "two sessions with one seed drew the same secure bytes");
        (a.id().to_owned(), from_a["padding"].as_str().unwrap().to_owned())
    };
    let steps = db.open().await.steps(&id, None, 0).await.unwrap();
    let entries: Vec<&[u8]> = steps[0]
        .journal
        .iter()
        .filter_map(|e| match e {
            toolhost::JournalEntry::SecureRandom { bytes } => Some(bytes.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(entries.len(), 1, "consecutive draws share one journal entry");
    let last: String = entries[0][32..].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!((entries[0].len(), last.as_str()), (48, drawn.as_str()));

    let host = host_on(db, never, None).await;
    let (_, hostile) = tools(&host).await;
    let mut session = host.open_session(&id).await.unwrap();
    let rebuild = session.prewarm(&hostile).await.unwrap().expect("rebuilt after the restart");
    assert_eq!(rebuild.replayed, 1);
    let next = session.call(&hostile, &draw).await.unwrap();
    assert_ne!(next["padding"], drawn.as_str(), "a live step after the replay draws fresh entropy");
}
