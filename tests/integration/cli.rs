//! The `toolhost` binary end to end: durable `call --session`, and `sessions` list, show,
//! resume, fork and delete on one database.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::guests;

fn toolhost(db: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .arg("--db")
        .arg(db)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running toolhost")
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "toolhost failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn json(output: Output) -> Value {
    serde_json::from_str(&ok(output)).expect("JSON on stdout")
}

#[test]
fn sessions_are_durable_across_cli_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let (db, cache) = (dir.path().join("sessions.db"), dir.path().join("cache"));
    let notes = guests().notes.to_str().unwrap();
    let call = |session: &str, input: &str| {
        json(toolhost(&db, &cache, &["call", "--grant-requested", "--session", session, notes, input]))
    };

    assert_eq!(call("s1", r#"{"op": "add", "title": "alpha", "body": "first"}"#)["id"], 1);
    // `sessions show` reports what the session stores: its steps' bytes and its snapshots'.
    let stored = |shown: &Value| {
        let bytes = &shown["stored_bytes"];
        (bytes["steps"].as_u64().expect("steps bytes"), bytes["snapshots_logical"].as_u64().expect("snapshot bytes"))
    };
    let (one_step, _) = stored(&json(toolhost(&db, &cache, &["sessions", "show", "s1", "--json"])));
    assert!(one_step > 0);
    assert_eq!(call("s1", r#"{"op": "add", "title": "beta", "body": "second"}"#)["id"], 2);
    // A third process sees both notes: state and the in-memory index came back from the store.
    let found = call("s1", r#"{"op": "search", "query": "second"}"#);
    assert_eq!(found["matches"][0]["title"], "beta", "{found}");

    let listed = ok(toolhost(&db, &cache, &["sessions", "list"]));
    assert!(listed.starts_with("s1") && listed.contains("3 steps"), "{listed}");

    let shown = json(toolhost(&db, &cache, &["sessions", "show", "s1", "--json"]));
    assert_eq!(shown["last_step"], 3);
    assert_eq!(shown["steps"].as_array().unwrap().len(), 3);
    let keys: Vec<&str> = shown["state_keys"].as_array().unwrap().iter().map(|k| k[2].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 2, "{shown}");
    assert!(!shown["snapshots"].as_array().unwrap().is_empty(), "{shown}");
    let (three_steps, snapshots) = stored(&shown);
    assert!(three_steps > one_step && snapshots > 0, "{shown}");
    let text = ok(toolhost(&db, &cache, &["sessions", "show", "s1"]));
    let line = format!("stored: {three_steps} bytes of steps, {snapshots} bytes of snapshots (logical)");
    assert!(text.contains(&line), "{text}");

    let resumed = ok(toolhost(&db, &cache, &["sessions", "resume", "--grant-requested", "s1", notes]));
    assert!(resumed.contains("snapshot of step 3, 0 steps replayed"), "{resumed}");

    let fork = ok(toolhost(&db, &cache, &["sessions", "fork", "s1", "--at", "1"])).trim().to_owned();
    // The fork starts after step 1: it knows `alpha` only, and evolves on its own.
    let in_fork = call(&fork, r#"{"op": "search", "query": "second"}"#);
    assert_eq!(in_fork["matches"].as_array().unwrap().len(), 0, "{in_fork}");
    assert_eq!(call(&fork, r#"{"op": "list"}"#)["matches"].as_array().unwrap().len(), 1);

    assert!(ok(toolhost(&db, &cache, &["sessions", "delete", "s1"])).contains("deleted s1"));
    let gone = toolhost(&db, &cache, &["sessions", "show", "s1"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no session `s1`"));
    // Deleting the parent leaves the fork whole.
    assert_eq!(call(&fork, r#"{"op": "list"}"#)["matches"].as_array().unwrap().len(), 1);

    // Retention: nothing has ended a day ago; everything has ended now.
    let kept = ok(toolhost(&db, &cache, &["sessions", "prune", "--older-than", "1d"]));
    assert!(kept.contains("pruned 0 sessions"), "{kept}");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let pruned = ok(toolhost(&db, &cache, &["sessions", "prune", "--older-than", "0s"]));
    assert!(pruned.contains("pruned 1 sessions"), "{pruned}");
    assert!(ok(toolhost(&db, &cache, &["sessions", "list"])).starts_with("no sessions"));
    let bad = toolhost(&db, &cache, &["sessions", "prune", "--older-than", "soon"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("soon"));
}

#[test]
fn a_missing_session_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (db, cache) = (dir.path().join("sessions.db"), dir.path().join("cache"));
    for args in [&["sessions", "delete", "nope"][..], &["sessions", "fork", "nope", "--at", "1"]] {
        let out = toolhost(&db, &cache, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nope"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_store_that_cannot_be_opened_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a folder").unwrap();
    let db = file.join("sub").join("sessions.db");
    let out = toolhost(&db, &dir.path().join("cache"), &["sessions", "list"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The store's context (which folder) and the OS's reason (its source), each once.
    let folder = format!("creating {}", file.join("sub").display());
    assert!(stderr.contains(&folder), "{stderr}");
    let reason = std::io::Error::from_raw_os_error(20).to_string();
    assert_eq!(stderr.matches(&reason).count(), 1, "{stderr}");
}

/// `toolhost run` on the shipped agent file, with the main job's local model: the file parses,
/// the plan's three tools run as committed steps, the note with the total is filed, the run
/// answers the right total (exit 0), and `sessions show` reads it back.
#[test]
fn toolhost_run_drives_the_shipped_agent_file_to_the_right_answer() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The agent file names the tools by their place in the workspace's target folder.
    toolhost::guest_build::build(workspace, &["reader", "calculator", "notes"]).expect("building the tools");
    let dir = tempfile::tempdir().unwrap();
    let (db, cache) = (dir.path().join("agents.db"), dir.path().join("cache"));
    let agent_file = workspace.join("examples/agents/research.toml");
    let out = toolhost(&db, &cache, &["run", agent_file.to_str().unwrap(), "--session", "research"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "toolhost run gave no answer ({:?}): {stderr}\n{stdout}", out.status);
    let answer = stdout.lines().find_map(|l| l.strip_prefix("final answer: ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(answer.contains("12.85"), "answer `{answer}`, the total is 12.85:\n{stdout}");

    let shown = json(toolhost(&db, &cache, &["sessions", "show", "research", "--json"]));
    let steps = shown["steps"].as_array().unwrap();
    let tools: Vec<&str> = steps.iter().map(|s| s["tool"].as_str().unwrap()).collect();
    for tool in ["reader", "calculator", "notes"] {
        assert!(tools.contains(&tool), "no `{tool}` step in {tools:?}\n{stdout}");
    }
    let note = steps.iter().rfind(|s| s["tool"] == "notes").unwrap();
    assert!(note.to_string().contains("12.85"), "the note: {note}\n{stdout}");
}

/// Issue #15's reproduction: a plain tool (no snapshot exports) GETs in step 1; the next
/// process rebuilds the instance by replaying step 1, which must be answered from the journal:
/// the counting server sees one request, and the session lives on.
#[test]
fn the_next_process_replays_a_plain_tools_http_get_without_sending_it() {
    let dir = tempfile::tempdir().unwrap();
    let (db, cache) = (dir.path().join("sessions.db"), dir.path().join("cache"));
    let server = crate::http_server::CountingServer::start();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, format!("[tools.hostile.network]\nallow = [\"127.0.0.1:{}\"]\n", server.port)).unwrap();
    let hostile = guests().hostile.to_str().unwrap();
    let call = |input: &str| {
        json(toolhost(&db, &cache, &["call", "--policy", policy.to_str().unwrap(), "--session", "s1", hostile, input]))
    };

    let get = format!(r#"{{"attack": "http-get", "url": "{}"}}"#, server.url("/counter"));
    assert_eq!(call(&get)["padding"], crate::http_server::reply_for("GET /counter ", 1).as_str());
    assert_eq!(call(r#"{"attack": "echo", "n": 7}"#)["echo"], 7);
    assert_eq!(call(r#"{"attack": "echo", "n": 8}"#)["echo"], 8);
    assert_eq!(server.log().received, 1, "a replayed step sent its GET again: {:?}", server.log().keys);
}
