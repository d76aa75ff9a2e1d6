//! Outgoing HTTP is journaled like a model call: rebuilding an instance answers its HTTP
//! requests from the journal (the server's count does not move), a request that changed is
//! `ReplayDiverged` naming both fingerprints, an error outcome replays as it happened, and
//! every request carries the host's idempotency key.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use toolhost::{CallError, Host, HostConfig, Policy, SnapshotPolicy, Tool, ToolFailure};

use crate::backends::TestStore;
use crate::http_server::{CountingServer, reply_for};
use crate::support::{engine_config, grants, guests, tight_limits};

/// The hostile fixture may reach `server` (and nothing else), with `max_response_bytes`.
pub fn http_policy(server: &CountingServer, max_response_bytes: Option<usize>) -> Policy {
    let mut hostile = grants(&["scratch"], tight_limits());
    hostile.network.allow = vec![format!("127.0.0.1:{}", server.port).parse().unwrap()];
    if let Some(max) = max_response_bytes {
        hostile.network.max_response_bytes = max;
    }
    Policy::grant_requested().with_tool("hostile", hostile)
}

/// A (re)started host on `db`: never snapshots, so a rebuild replays every step.
pub(crate) async fn host_on(db: &TestStore, policy: Policy) -> (Host, Arc<Tool>) {
    let config = HostConfig {
        engine: engine_config(),
        policy,
        snapshots: SnapshotPolicy { every: u32::MAX, keep: 1 },
        ..HostConfig::default()
    };
    let host = Host::with_store(config, db.open().await).unwrap();
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    (host, hostile)
}

fn post(server: &CountingServer, bodies: &[&str]) -> Value {
    json!({"attack": "http-post", "url": server.url("/orders"), "bodies": bodies})
}

const ECHO: &str = r#"{"attack": "echo", "n": 1}"#;

#[tokio::test]
async fn replaying_http_steps_sends_nothing_and_succeeds() {
    let (db, server) = (TestStore::sqlite(), CountingServer::start());
    let id = {
        let (host, hostile) = host_on(&db, http_policy(&server, None)).await;
        let mut session = host.new_session().await.unwrap();
        let out = session.call(&hostile, &post(&server, &["a", "b"])).await.unwrap();
        let want = format!("{}|{}", reply_for("POST /orders a", 1), reply_for("POST /orders b", 1));
        assert_eq!(out["padding"], want.as_str());
        let got = session.call(&hostile, &json!({"attack": "http-get", "url": server.url("/items")})).await.unwrap();
        assert_eq!(got["padding"], reply_for("GET /items ", 1).as_str());
        session.id().to_owned()
    };
    let keys = server.log().keys.clone();
    assert_eq!(server.log().received, 3);
    assert_eq!(server.log().unkeyed, 0, "every request carries an Idempotency-Key");
    let suffixes: Vec<&str> = keys.iter().map(|k| k.split_once('-').unwrap().1).collect();
    assert_eq!(suffixes, ["1-0", "1-1", "2-0"], "keys name step and request: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with(keys[0].split_once('-').unwrap().0)), "{keys:?}");

    // A new host rebuilds the instance by replaying both steps: from the journal alone.
    let (host, hostile) = host_on(&db, http_policy(&server, None)).await;
    let mut session = host.open_session(&id).await.unwrap();
    session.call(&hostile, &serde_json::from_str(ECHO).unwrap()).await.unwrap();
    assert_eq!(server.log().received, 3, "the replay sent nothing");
    // And the session goes on live.
    session.call(&hostile, &post(&server, &["c"])).await.unwrap();
    assert_eq!(server.log().received, 4);
    assert!(server.log().keys[3].ends_with("-4-0"), "{:?}", server.log().keys);
}

async fn diverged_reason(db: &TestStore, server: &CountingServer, id: &str) -> String {
    let (host, hostile) = host_on(db, http_policy(server, None)).await;
    let mut session = host.open_session(id).await.unwrap();
    match session.call(&hostile, &serde_json::from_str(ECHO).unwrap()).await {
        Err(CallError::ReplayDiverged { step, reason, .. }) => {
            assert_eq!(step, 1, "{reason}");
            reason
        }
        other => panic!("expected ReplayDiverged, got {other:?}"),
    }
}

#[tokio::test]
async fn a_changed_request_on_replay_is_replay_diverged_with_both_fingerprints() {
    let (db, server) = (TestStore::sqlite(), CountingServer::start());
    let (host, hostile) = host_on(&db, http_policy(&server, None)).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut session = host.new_session().await.unwrap();
        session.call(&hostile, &post(&server, &["original"])).await.unwrap();
        ids.push(session.id().to_owned());
    }
    assert_eq!(server.log().received, 2);

    // The body changes: the same head, another body hash.
    let sql = "UPDATE steps SET input = replace(input, 'original', 'altered') WHERE session = $1 AND seq = 1";
    assert_eq!(db.execute(sql, &[&ids[0]]).await, 1);
    let reason = diverged_reason(&db, &server, &ids[0]).await;
    let original = toolhost_digest(b"original");
    let altered = toolhost_digest(b"altered");
    assert!(reason.contains(&altered[..12]) && reason.contains(&original[..12]), "{reason}");
    assert_eq!(reason.matches(&server.url("/orders")).count(), 2, "{reason}");

    // The URL changes.
    let sql = "UPDATE steps SET input = replace(input, '/orders', '/refunds') WHERE session = $1 AND seq = 1";
    assert_eq!(db.execute(sql, &[&ids[1]]).await, 1);
    let reason = diverged_reason(&db, &server, &ids[1]).await;
    assert!(reason.contains(&server.url("/refunds")) && reason.contains(&server.url("/orders")), "{reason}");
    assert_eq!(server.log().received, 2, "a diverged replay sends nothing");
}

fn toolhost_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn a_response_over_the_grant_is_a_typed_error_that_replays_as_it_happened() {
    let (db, server) = (TestStore::sqlite(), CountingServer::start());
    let small = Some(8);
    let id = {
        let (host, hostile) = host_on(&db, http_policy(&server, small)).await;
        let mut session = host.new_session().await.unwrap();
        match session.call(&hostile, &post(&server, &["x"])).await {
            Err(CallError::Tool { failure: ToolFailure::Failed(m), .. }) => {
                assert!(m.contains("HttpResponseBodySize(Some(8))"), "{m}")
            }
            other => panic!("expected the guest's body-size error, got {other:?}"),
        }
        // The granted use within the bound still works.
        let out = session.call(&hostile, &json!({"attack": "echo", "n": 2})).await.unwrap();
        assert_eq!(out["echo"], 2);
        session.id().to_owned()
    };
    assert_eq!(server.log().received, 1);
    let (host, hostile) = host_on(&db, http_policy(&server, small)).await;
    let mut session = host.open_session(&id).await.unwrap();
    session.call(&hostile, &serde_json::from_str(ECHO).unwrap()).await.unwrap();
    assert_eq!(server.log().received, 1, "the failed exchange replayed from the journal");
}

#[tokio::test]
async fn a_request_body_over_the_grant_is_refused_before_sending() {
    let (db, server) = (TestStore::sqlite(), CountingServer::start());
    let (host, hostile) = host_on(&db, http_policy(&server, Some(64))).await;
    let mut session = host.new_session().await.unwrap();
    let big = "b".repeat(65);
    match session.call(&hostile, &post(&server, &[&big])).await {
        Err(CallError::Tool { failure: ToolFailure::Failed(m), .. }) => {
            assert!(m.contains("HttpRequestBodySize(Some(64))"), "{m}")
        }
        other => panic!("expected the guest's request-body-size error, got {other:?}"),
    }
    assert_eq!(server.log().received, 0);
    // Within the bound the same request goes through.
    session.call(&hostile, &post(&server, &["small"])).await.unwrap();
    assert_eq!(server.log().received, 1);
}

#[tokio::test]
async fn large_bodies_stream_both_ways_and_replay_whole() {
    let (db, server) = (TestStore::sqlite(), CountingServer::start());
    let mut policy = http_policy(&server, None);
    policy.tools.get_mut("hostile").unwrap().limits.max_output_bytes = 1 << 20;
    let big_request = "r".repeat(100_000); // 25 writes of the guest's 4 KiB chunks
    let id = {
        let (host, hostile) = host_on(&db, policy.clone()).await;
        let mut session = host.new_session().await.unwrap();
        // 300 KB back: the guest reads it in several 64 KiB reads.
        let got = session.call(&hostile, &json!({"attack": "http-get", "url": server.url("/bytes/300000")})).await;
        assert_eq!(got.unwrap()["padding"].as_str().unwrap().len(), 300_000);
        let posted = session.call(&hostile, &post(&server, &[&big_request])).await.unwrap();
        assert_eq!(posted["padding"], reply_for(&format!("POST /orders {big_request}"), 1).as_str());
        session.id().to_owned()
    };
    assert_eq!(server.log().received, 2);
    let (host, hostile) = host_on(&db, policy).await;
    let mut session = host.open_session(&id).await.unwrap();
    session.call(&hostile, &serde_json::from_str(ECHO).unwrap()).await.unwrap();
    assert_eq!(server.log().received, 2, "both large exchanges replayed from the journal");
}

#[tokio::test]
async fn a_response_at_the_grant_bound_replays_whole_and_one_byte_over_is_refused_live() {
    const MAX: usize = 1 << 20;
    let (db, server) = (TestStore::sqlite(), CountingServer::start());
    let mut policy = http_policy(&server, Some(MAX));
    let limits = &mut policy.tools.get_mut("hostile").unwrap().limits;
    (limits.max_output_bytes, limits.memory_bytes, limits.cpu_time) = (2 << 20, 64 << 20, Duration::from_secs(5));
    let get = |n: usize| json!({"attack": "http-get", "url": server.url(&format!("/bytes/{n}"))});
    let id = {
        let (host, hostile) = host_on(&db, policy.clone()).await;
        let mut session = host.new_session().await.unwrap();
        let out = session.call(&hostile, &get(MAX)).await.unwrap();
        assert_eq!(out["padding"].as_str().unwrap(), reply_for(&format!("GET /bytes/{MAX}"), 1));
        match session.call(&hostile, &get(MAX + 1)).await {
            Err(CallError::Tool { failure: ToolFailure::Failed(m), .. }) => {
                assert!(m.contains(&format!("HttpResponseBodySize(Some({MAX}))")), "{m}")
            }
            other => panic!("expected the guest's body-size error, got {other:?}"),
        }
        session.id().to_owned()
    };
    assert_eq!(server.log().received, 2);
    // The rebuild replays both steps from the journal: a GET is whole at `handle`, so its
    // recorded 1 MiB comes back as a ready response, and the host checks the step returns
    // the very body it returned live; the refused one fails the same way again.
    let (host, hostile) = host_on(&db, policy).await;
    let mut session = host.open_session(&id).await.unwrap();
    let rebuild = session.prewarm(&hostile).await.unwrap().expect("a fresh host rebuilds the instance");
    assert_eq!(rebuild.replayed, 2);
    assert_eq!(server.log().received, 2, "the replay sent nothing");
    let out = session.call(&hostile, &serde_json::from_str(ECHO).unwrap()).await.unwrap();
    assert_eq!(out["echo"], 1);
}

#[tokio::test]
async fn the_host_replaces_a_guest_set_idempotency_key() {
    let (db, server) = (TestStore::sqlite(), CountingServer::start());
    let (host, hostile) = host_on(&db, http_policy(&server, None)).await;
    let mut session = host.new_session().await.unwrap();
    let mut input = post(&server, &["once"]);
    input["headers"] = json!([["Idempotency-Key", "chosen-by-the-guest"], ["x-trace", "t1"]]);
    session.call(&hostile, &input).await.unwrap();
    let keys = server.log().keys.clone();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0] != "chosen-by-the-guest" && keys[0].ends_with("-1-0"), "{keys:?}");
}
