//! Hostile tools are stopped with typed errors while other sessions keep being served.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::json;
use toolhost::{CallError, Policy, Session, Tool, TrapKind};

use crate::support::{bystander, grants, guests, host, tight_limits};

async fn echo(session: &mut Session, tool: &Tool, n: u64) {
    let out = session.call(tool, &json!({"attack": "echo", "n": n})).await.unwrap();
    assert_eq!(out["echo"], n);
}

/// On a single-threaded runtime, so a guest that never yielded would starve the bystander.
#[tokio::test(flavor = "current_thread")]
async fn each_attack_is_stopped_and_a_second_session_keeps_serving() {
    let limits = tight_limits();
    let host = host(Policy::deny_all().with_tool("hostile", grants(&["scratch"], limits)));
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let done = AtomicBool::new(false);
    let served = AtomicU64::new(0);

    let bystander = bystander(&host, &hostile, &done, &served);

    let attacks = async {
        let mut attacker = host.new_session().await.unwrap();
        echo(&mut attacker, &hostile, 1).await;

        let before = served.load(Ordering::Relaxed);
        let err = attacker.call(&hostile, &json!({"attack": "infinite-loop"})).await.unwrap_err();
        let during_loop = served.load(Ordering::Relaxed) - before;
        assert!(matches!(&err, CallError::Deadline { limit, .. } if *limit == limits.cpu_time), "{err:?}");
        assert!(during_loop > 0, "the bystander was starved while the loop ran");
        after_abort(&mut attacker, &hostile).await;

        let err = attacker.call(&hostile, &json!({"attack": "memory-bomb"})).await.unwrap_err();
        match &err {
            CallError::MemoryLimit { limit_bytes, requested_bytes, .. } => {
                assert_eq!(*limit_bytes, limits.memory_bytes);
                assert!(requested_bytes > limit_bytes);
            }
            other => panic!("expected MemoryLimit, got {other:?}"),
        }
        after_abort(&mut attacker, &hostile).await;

        let err = attacker.call(&hostile, &json!({"attack": "deep-recursion"})).await.unwrap_err();
        assert!(
            matches!(&err, CallError::Trap { trap: TrapKind::StackOverflow | TrapKind::MemoryOutOfBounds, .. }),
            "{err:?}"
        );
        after_abort(&mut attacker, &hostile).await;

        let err = attacker.call(&hostile, &json!({"attack": "huge-output", "bytes": 100_000})).await.unwrap_err();
        match &err {
            CallError::OutputTooLarge { bytes, limit, .. } => {
                assert_eq!(*limit, limits.max_output_bytes);
                assert!(*bytes > 100_000);
            }
            other => panic!("expected OutputTooLarge, got {other:?}"),
        }
        after_abort(&mut attacker, &hostile).await;

        done.store(true, Ordering::Relaxed);
    };

    tokio::join!(bystander, attacks);
    assert!(served.load(Ordering::Relaxed) > 0);
}

/// The aborted instance is gone and the same session starts a fresh one that works.
async fn after_abort(attacker: &mut Session, hostile: &Tool) {
    assert_eq!(attacker.live_instances().count(), 0, "the aborted instance must be dropped");
    echo(attacker, hostile, 7).await;
}
