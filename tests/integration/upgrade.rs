//! Tools upgraded inside a running session: a new component of a tool the session has used
//! takes it over as the tool's `on_upgrade` says (restore the old snapshot, replay the old
//! steps, or refuse), the switch is an `upgraded` step, and a refusal leaves the session as
//! it was, usable with the old component.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use toolhost::store::StepOutcome;
use toolhost::{
    CallError, Host, HostConfig, Limits, OnUpgrade, Policy, Session, Tool, ToolGrants, Upgrade, UpgradeVia,
};

use crate::backends::{TestStore, on_both_backends};
use crate::support::{engine_config, grants, guests};

on_both_backends!(
    a_compatible_notes_upgrade_mid_session_keeps_the_notes,
    an_incompatible_component_is_refused_and_the_old_one_goes_on,
    the_replay_policy_replays_the_old_steps_under_the_new_component,
    the_refuse_policy_refuses_any_new_component,
    a_fork_keeps_its_own_version_and_upgrades_on_its_own,
    an_upgrade_after_a_restart_takes_the_rebuild_path,
    stateless_and_plain_tools_upgrade_without_a_snapshot,
);

struct Versions {
    /// `notes` 0.2.0: its snapshot adds a field with a default.
    v2: PathBuf,
    /// `notes` 0.3.0: its snapshot needs that field, and it numbers notes otherwise.
    v3: PathBuf,
}

fn versions() -> &'static Versions {
    static VERSIONS: OnceLock<Versions> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
        let paths = toolhost::guest_build::build(workspace, &["notes-v2", "notes-v3"])
            .unwrap_or_else(|e| panic!("building the notes versions: {e}"));
        let [v2, v3] = <[PathBuf; 2]>::try_from(paths).unwrap();
        Versions { v2, v3 }
    })
}

async fn host_with(db: &TestStore, on_upgrade: OnUpgrade) -> Host {
    let notes = ToolGrants { on_upgrade, ..grants(&["notes"], Limits::default()) };
    let policy = Policy::grant_requested().with_tool("notes", notes);
    Host::with_store(HostConfig { engine: engine_config(), policy, ..HostConfig::default() }, db.open().await).unwrap()
}

async fn add(session: &mut Session, notes: &Tool, title: &str) -> Value {
    session.call(notes, &json!({"op": "add", "title": title, "body": "about the harbour"})).await.unwrap()
}

async fn search(session: &mut Session, notes: &Tool, query: &str) -> Vec<String> {
    let found = session.call(notes, &json!({"op": "search", "query": query})).await.unwrap();
    found["matches"].as_array().unwrap().iter().map(|m| m["title"].as_str().unwrap().to_owned()).collect()
}

/// A session with three v1 steps: two notes and a search.
async fn v1_session(host: &Host, v1: &Tool) -> Session {
    let mut session = host.new_session().await.unwrap();
    add(&mut session, v1, "ferry times").await;
    add(&mut session, v1, "harbour fees").await;
    assert_eq!(search(&mut session, v1, "harbour").await.len(), 2);
    session
}

/// The session's `upgraded` steps, with their sequence numbers and digests.
async fn upgrades(host: &Host, id: &str) -> Vec<(u64, String, Upgrade)> {
    let steps = host.store().steps(id, None, 0).await.unwrap();
    steps
        .into_iter()
        .filter_map(|s| match s.outcome {
            StepOutcome::Upgraded(upgrade) => Some((s.seq, s.digest, upgrade)),
            _ => None,
        })
        .collect()
}

/// The same component with a custom section appended: another digest, the same code.
fn rebuilt(bytes: &[u8]) -> Vec<u8> {
    let (name, payload) = (b"toolhost-test".as_slice(), b"another build".as_slice());
    let mut out = bytes.to_vec();
    out.extend([0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
    out.extend(name);
    out.extend(payload);
    out
}

fn expect_refused(result: Result<Value, CallError>, from: &Tool, to: &Tool, policy: OnUpgrade) -> String {
    match result {
        Err(e @ CallError::UpgradeRefused { .. }) => {
            let CallError::UpgradeRefused { tool, from: f, to: t, policy: p, .. } = &e else { unreachable!() };
            assert_eq!((tool.as_str(), f.as_str(), t.as_str(), *p), ("notes", from.digest(), to.digest(), policy));
            assert_eq!(e.kind().code(), "upgrade-refused");
            assert_eq!(e.kind().fault(), toolhost::Fault::Host);
            let message = e.to_string();
            assert!(message.contains(from.digest()) && message.contains(to.digest()), "{message}");
            assert!(message.contains("on_upgrade") && message.contains("fork"), "{message}");
            message
        }
        other => panic!("expected UpgradeRefused, got {other:?}"),
    }
}

async fn a_compatible_notes_upgrade_mid_session_keeps_the_notes(db: &TestStore) {
    let host = host_with(db, OnUpgrade::Snapshot).await;
    let v1 = host.load_tool(&guests().notes).await.unwrap();
    let v2 = host.load_tool(&versions().v2).await.unwrap();
    assert_ne!(v1.digest(), v2.digest());
    assert_eq!(v2.descriptor().version, "0.2.0");
    let mut session = v1_session(&host, &v1).await;

    // v2 takes over from v1's snapshot: the index survives, and the field v1 did not have
    // starts at its default.
    assert_eq!(search(&mut session, &v2, "ferry").await, ["ferry times"]);
    let stats = session.call(&v2, &json!({"op": "stats"})).await.unwrap();
    assert_eq!(stats, json!({"notes": 2, "searches": 1, "version": "0.2.0"}));
    let upgraded = upgrades(&host, session.id()).await;
    assert_eq!(upgraded.len(), 1);
    let (seq, digest, upgrade) = &upgraded[0];
    assert_eq!((*seq, digest.as_str()), (4, v2.digest()));
    assert_eq!(
        upgrade,
        &Upgrade {
            from: v1.digest().into(),
            to: v2.digest().into(),
            via: UpgradeVia::Snapshot,
            restored_from: Some(3),
            replayed: 0
        }
    );
    assert_eq!(session.last_step(), 6);
    // The upgraded step took v2's own snapshot, which later rebuilds start from.
    assert!(host.store().snapshots(session.id()).await.unwrap().iter().any(|s| s.seq == 4));

    // The switch is audited, and `show` lists it.
    let audit = host.store().audit_events(Some(session.id())).await.unwrap();
    let event = audit.iter().find(|e| e.capability == "upgrade").expect("the upgrade is audited");
    assert!(event.allowed && event.request.contains(v1.digest()) && event.request.contains(v2.digest()), "{event:?}");
    let details = host.session_details(session.id()).await.unwrap();
    assert!(matches!(details.steps[3].outcome, StepOutcome::Upgraded(_)));

    // A further v2 call is a plain call: no second upgrade.
    add(&mut session, &v2, "tide tables").await;
    assert_eq!(upgrades(&host, session.id()).await.len(), 1);
}

async fn an_incompatible_component_is_refused_and_the_old_one_goes_on(db: &TestStore) {
    let host = host_with(db, OnUpgrade::Snapshot).await;
    let v1 = host.load_tool(&guests().notes).await.unwrap();
    let v3 = host.load_tool(&versions().v3).await.unwrap();
    let mut session = v1_session(&host, &v1).await;
    let before = host.store().steps(session.id(), None, 0).await.unwrap();

    let refused = session.call(&v3, &json!({"op": "list"})).await;
    let message = expect_refused(refused, &v1, &v3, OnUpgrade::Snapshot);
    assert!(message.contains("refused the snapshot of step 3"), "{message}");
    assert!(message.contains("searches"), "names what did not decode: {message}");

    // Nothing was committed; the refusal is audited.
    assert_eq!(session.last_step(), 3);
    assert_eq!(host.store().steps(session.id(), None, 0).await.unwrap(), before);
    let audit = host.store().audit_events(Some(session.id())).await.unwrap();
    assert!(audit.iter().any(|e| e.capability == "upgrade" && !e.allowed), "{audit:?}");

    // The old component goes on where it was, in this handle and in a reopened one.
    assert_eq!(search(&mut session, &v1, "fees").await, ["harbour fees"]);
    let id = session.id().to_owned();
    session.close().await.unwrap();
    let mut reopened = host.open_session(&id).await.unwrap();
    assert_eq!(add(&mut reopened, &v1, "pier").await["id"], 3);
    assert!(upgrades(&host, &id).await.is_empty());
}

async fn the_replay_policy_replays_the_old_steps_under_the_new_component(db: &TestStore) {
    let host = host_with(db, OnUpgrade::Replay).await;
    let v1 = host.load_tool(&guests().notes).await.unwrap();
    let v2 = host.load_tool(&versions().v2).await.unwrap();
    let v3 = host.load_tool(&versions().v3).await.unwrap();

    // v3 numbers notes otherwise: replaying v1's adds under it diverges.
    let mut session = v1_session(&host, &v1).await;
    let message = expect_refused(session.call(&v3, &json!({"op": "list"})).await, &v1, &v3, OnUpgrade::Replay);
    assert!(message.contains("diverged"), "{message}");
    assert_eq!(session.last_step(), 3);

    // v2 gives every old step its recorded output: it takes over by replay, and its state is
    // what its own code builds from the old inputs (the search is counted).
    let stats = session.call(&v2, &json!({"op": "stats"})).await.unwrap();
    assert_eq!(stats, json!({"notes": 2, "searches": 1, "version": "0.2.0"}));
    let upgraded = upgrades(&host, session.id()).await;
    assert_eq!(upgraded.len(), 1);
    let upgrade = &upgraded[0].2;
    assert_eq!((upgrade.via, upgrade.restored_from, upgrade.replayed), (UpgradeVia::Replay, None, 3));
    assert_eq!(search(&mut session, &v2, "ferry").await, ["ferry times"]);
}

async fn the_refuse_policy_refuses_any_new_component(db: &TestStore) {
    let host = host_with(db, OnUpgrade::Refuse).await;
    let v1 = host.load_tool(&guests().notes).await.unwrap();
    let v2 = host.load_tool(&versions().v2).await.unwrap();
    let mut session = v1_session(&host, &v1).await;
    let message = expect_refused(session.call(&v2, &json!({"op": "list"})).await, &v1, &v2, OnUpgrade::Refuse);
    assert!(message.contains("policy refuses"), "{message}");
    assert_eq!(session.last_step(), 3);
    assert_eq!(search(&mut session, &v1, "ferry").await, ["ferry times"]);

    // A session that never ran `notes` takes any component: there is nothing to upgrade.
    let mut fresh = host.new_session().await.unwrap();
    assert_eq!(add(&mut fresh, &v2, "first").await["id"], 1);
}

async fn a_fork_keeps_its_own_version_and_upgrades_on_its_own(db: &TestStore) {
    let host = host_with(db, OnUpgrade::Snapshot).await;
    let v1 = host.load_tool(&guests().notes).await.unwrap();
    let v2 = host.load_tool(&versions().v2).await.unwrap();
    let mut parent = v1_session(&host, &v1).await;
    let mut fork = host.fork_session(parent.id(), 3).await.unwrap();

    // The parent moves to v2 (upgraded at step 4).
    add(&mut parent, &v2, "parent only").await;
    assert_eq!(upgrades(&host, parent.id()).await[0].0, 4);

    // The fork still runs v1, with its own history: no upgraded step, v1's digest.
    assert_eq!(add(&mut fork, &v1, "fork only").await["id"], 3);
    let steps = host.store().steps(fork.id(), None, 0).await.unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|s| s.digest == v1.digest() && !matches!(s.outcome, StepOutcome::Upgraded(_))));

    // Meeting v2 itself, the fork upgrades on its own, from its own snapshot.
    assert_eq!(search(&mut fork, &v2, "only").await, ["fork only"]);
    let upgraded = upgrades(&host, fork.id()).await;
    assert_eq!(upgraded.len(), 1);
    assert_eq!((upgraded[0].0, upgraded[0].2.restored_from), (5, Some(4)));
    assert_eq!(search(&mut parent, &v2, "only").await, ["parent only"]);
}

async fn an_upgrade_after_a_restart_takes_the_rebuild_path(db: &TestStore) {
    let id = {
        let host = host_with(db, OnUpgrade::Snapshot).await;
        let v1 = host.load_tool(&guests().notes).await.unwrap();
        let session = v1_session(&host, &v1).await;
        let id = session.id().to_owned();
        session.close().await.unwrap();
        id
    };
    // A restarted host that has only v2: the session's instance is rebuilt from the store,
    // and the last step's digest says it is an upgrade.
    let host = host_with(db, OnUpgrade::Snapshot).await;
    let v2 = host.load_tool(&versions().v2).await.unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let rebuild = session.prewarm(&v2).await.unwrap().expect("rebuilt");
    assert_eq!((rebuild.restored_from, rebuild.replayed), (Some(3), 0));
    assert_eq!(session.last_step(), 4, "prewarming committed the upgrade");
    assert_eq!(upgrades(&host, &id).await[0].2.via, UpgradeVia::Snapshot);
    assert_eq!(search(&mut session, &v2, "ferry").await, ["ferry times"]);
    session.close().await.unwrap();

    // Another restart: v2 resumes from the upgraded step's snapshot, with no upgrade.
    let host = host_with(db, OnUpgrade::Snapshot).await;
    let v2 = host.load_tool(&versions().v2).await.unwrap();
    let mut session = host.open_session(&id).await.unwrap();
    let stats = session.call(&v2, &json!({"op": "stats"})).await.unwrap();
    assert_eq!(stats["searches"], 1);
    assert_eq!(upgrades(&host, &id).await.len(), 1);
}

async fn stateless_and_plain_tools_upgrade_without_a_snapshot(db: &TestStore) {
    let host = host_with(db, OnUpgrade::Snapshot).await;
    let calculator = host.load_tool(&guests().calculator).await.unwrap();
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let rebuild = |path: &Path| rebuilt(&std::fs::read(path).unwrap());
    let calculator2: Arc<Tool> =
        host.load_tool_bytes(&guests().calculator, rebuild(&guests().calculator)).await.unwrap();
    let hostile2: Arc<Tool> = host.load_tool_bytes(&guests().hostile, rebuild(&guests().hostile)).await.unwrap();
    assert_ne!(calculator.digest(), calculator2.digest());

    let mut session = host.new_session().await.unwrap();
    session.call(&calculator, &json!({"expression": "1 + 2"})).await.unwrap();
    session.call(&hostile, &json!({"attack": "echo", "n": 7})).await.unwrap();
    assert_eq!(session.call(&calculator2, &json!({"expression": "2 * 3"})).await.unwrap()["value"], 6.0);
    // A plain tool keeps no snapshot: under `snapshot` it is replayed, and the step says so.
    assert_eq!(session.call(&hostile2, &json!({"attack": "echo", "n": 8})).await.unwrap()["echo"], 8);
    let upgraded = upgrades(&host, session.id()).await;
    let vias: Vec<(u64, UpgradeVia, u32)> = upgraded.iter().map(|(seq, _, u)| (*seq, u.via, u.replayed)).collect();
    assert_eq!(vias, [(3, UpgradeVia::Stateless, 0), (5, UpgradeVia::ReplayWithoutSnapshot, 1)]);
}

/// The `toolhost` binary on `db`, with its own compile cache.
fn toolhost(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .arg("--db")
        .arg(dir.join("sessions.db"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running toolhost");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "toolhost {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[test]
fn the_command_line_shows_the_policy_and_marks_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (guests().notes.to_str().unwrap(), versions().v2.to_str().unwrap());
    let digest = |path: &str| -> String {
        let report: Value = serde_json::from_str(&toolhost(dir.path(), &["inspect", "--json", path])).unwrap();
        report["sha256"].as_str().unwrap().to_owned()
    };
    let (d1, d2) = (digest(v1), digest(v2));
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[tools.notes]\non_upgrade = \"replay\"\nstate = { namespaces = { notes = \"read-write\" } }\n",
    )
    .unwrap();
    let inspected = toolhost(dir.path(), &["inspect", v2, "--policy", policy.to_str().unwrap()]);
    assert!(inspected.contains("on_upgrade: replay"), "{inspected}");

    let call =
        |tool: &str, input: &str| toolhost(dir.path(), &["call", "--grant-requested", "--session", "s", tool, input]);
    call(v1, r#"{"op": "add", "title": "alpha", "body": "first"}"#);
    let stats: Value = serde_json::from_str(&call(v2, r#"{"op": "stats"}"#)).unwrap();
    assert_eq!(stats["notes"], 1);

    let shown = toolhost(dir.path(), &["sessions", "show", "s"]);
    assert!(shown.contains(&format!("UPGRADED {d1} -> {d2} via snapshot of step 1")), "{shown}");
    let shown: Value = serde_json::from_str(&toolhost(dir.path(), &["sessions", "show", "s", "--json"])).unwrap();
    let step = &shown["steps"][1];
    assert_eq!((step["upgraded"]["from"].as_str(), step["upgraded"]["to"].as_str()), (Some(&*d1), Some(&*d2)));
    assert_eq!(step["digest"].as_str(), Some(&*d2));
}
