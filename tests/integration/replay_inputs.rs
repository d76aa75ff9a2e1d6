//! The audit of what a guest can observe that replay might not reproduce. Clocks, randomness,
//! state, model answers and HTTP exchanges are journaled: a rebuilt instance sees exactly what
//! the original saw, with nothing sent again. Host preopens are the documented exception
//! (README, "What replay reproduces"): they are the host's own directories, outside the
//! session's transaction, so a replayed step reads them as they are now. A step whose result
//! depended on a file that changed since then fails its replay with `ReplayDiverged` (never a
//! silently different instance); one whose file did not change replays as before.

use std::path::Path;

use serde_json::json;
use toolhost::{Access, CallError, Policy, Preopen};

use crate::backends::TestStore;
use crate::http_journal::host_on;
use crate::http_server::CountingServer;
use crate::support::{grants, tight_limits};

fn policy(server: &CountingServer, shared: &Path) -> Policy {
    let mut hostile = grants(&["scratch"], tight_limits());
    hostile.network.allow = vec![format!("127.0.0.1:{}", server.port).parse().unwrap()];
    hostile.filesystem = vec![Preopen { host: shared.to_owned(), guest: "/ro".into(), access: Access::Read }];
    Policy::grant_requested().with_tool("hostile", hostile)
}

#[tokio::test]
async fn journaled_inputs_replay_exactly_and_send_nothing() {
    let (db, server, dir) = (TestStore::sqlite(), CountingServer::start(), tempfile::tempdir().unwrap());
    let policy = || policy(&server, dir.path());
    let (id, entropy) = {
        let (host, hostile) = host_on(&db, policy()).await;
        let mut session = host.new_session().await.unwrap();
        // Random bytes and the wall clock, a state write and read, an HTTP exchange.
        let entropy = session.call(&hostile, &json!({"attack": "entropy", "bytes": 16})).await.unwrap();
        let set = json!({"attack": "state-set", "namespace": "scratch", "key": "k", "bytes": 10});
        session.call(&hostile, &set).await.unwrap();
        session.call(&hostile, &json!({"attack": "state-get", "namespace": "scratch", "key": "k"})).await.unwrap();
        session.call(&hostile, &json!({"attack": "http-get", "url": server.url("/now")})).await.unwrap();
        (session.id().to_owned(), entropy)
    };
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (host, hostile) = host_on(&db, policy()).await;
    let mut session = host.open_session(&id).await.unwrap();
    // Rebuilding replays all four steps: any input that differed would be ReplayDiverged.
    let echo = session.call(&hostile, &json!({"attack": "echo", "n": 1})).await.unwrap();
    assert_eq!(echo["echo"], 1);
    assert_eq!(server.log().received, 1, "the replay sent nothing");
    // The live session goes on with fresh inputs: the clock has moved on.
    let later = session.call(&hostile, &json!({"attack": "entropy", "bytes": 16})).await.unwrap();
    assert_ne!(later, entropy);
}

#[tokio::test]
async fn host_preopen_reads_are_outside_the_transaction() {
    let (db, server, dir) = (TestStore::sqlite(), CountingServer::start(), tempfile::tempdir().unwrap());
    std::fs::write(dir.path().join("note.txt"), "first version").unwrap();
    let policy = || policy(&server, dir.path());
    let id = {
        let (host, hostile) = host_on(&db, policy()).await;
        let mut session = host.new_session().await.unwrap();
        let read = session.call(&hostile, &json!({"attack": "fs-read", "path": "/ro/note.txt"})).await.unwrap();
        assert_eq!(read["padding"], "first version");
        session.id().to_owned()
    };

    // The file is as it was: the replayed read returns what the original did.
    {
        let (host, hostile) = host_on(&db, policy()).await;
        let mut session = host.open_session(&id).await.unwrap();
        session.call(&hostile, &json!({"attack": "echo", "n": 1})).await.unwrap();
    }

    // The host changed the file: the replayed read sees the new text (it is not journaled),
    // so the step's output no longer matches and the rebuild says so, naming the step.
    std::fs::write(dir.path().join("note.txt"), "second version").unwrap();
    let (host, hostile) = host_on(&db, policy()).await;
    let mut session = host.open_session(&id).await.unwrap();
    match session.call(&hostile, &json!({"attack": "echo", "n": 1})).await {
        Err(CallError::ReplayDiverged { step, reason, .. }) => {
            assert_eq!(step, 1, "{reason}");
            assert!(reason.contains("second version") && reason.contains("first version"), "{reason}");
        }
        other => panic!("expected ReplayDiverged for the changed host file, got {other:?}"),
    }
}
