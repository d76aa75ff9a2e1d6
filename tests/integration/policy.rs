//! The capability policy end to end: a hostile tool tries every escape in one run, each is
//! denied with its typed error and recorded in the audit trail, other sessions keep being
//! served, and a granted use of each capability works in the same run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolhost::model::{ChatRequest, ChatResponse, FinishReason, ModelError, Usage};
use toolhost::{AuditEvent, CallError, Host, HostConfig, LoadError, ModelProvider, Policy, Session, Tool, ToolFailure};

use crate::support::{engine_config, guests};

/// Answers every prompt with its echo.
struct EchoModel;

#[async_trait::async_trait]
impl ModelProvider for EchoModel {
    async fn chat(&self, alias: &str, request: &ChatRequest, _call_id: &str) -> Result<ChatResponse, ModelError> {
        Ok(ChatResponse {
            text: format!("{alias} says: {}", request.messages.last().map(|m| m.content.as_str()).unwrap_or("")),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage { input_tokens: 1, output_tokens: 1 },
            model: alias.into(),
        })
    }
}

const PAGE: &str = "hello from the test server";

/// A minimal HTTP/1.1 server on 127.0.0.1 that answers every request with [`PAGE`] and
/// counts the requests it receives.
async fn serve_http() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let response =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PAGE}", PAGE.len());
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, requests)
}

/// The sandbox on the host side: a read-only and a read-write directory, a secret outside
/// both, and symlinks planted inside the read-only one that point at the secret.
fn sandbox(root: &Path) {
    std::fs::create_dir_all(root.join("ro")).unwrap();
    std::fs::create_dir_all(root.join("rw")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::write(root.join("ro/readme.txt"), "read me").unwrap();
    std::fs::write(root.join("outside/secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(root.join("outside/secret.txt"), root.join("ro/secret-link")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("ro/escape")).unwrap();
}

fn policy_toml(port: u16) -> String {
    format!(
        r#"
on_ungranted = "deny-at-use"

[tools.hostile.state]
namespaces = {{ scratch = "read-write", shared = "read" }}
quota = {{ max_keys = 20, max_value_bytes = 1024, max_total_bytes = 8192 }}

[tools.hostile.model]
aliases = ["granted-model"]

[[tools.hostile.filesystem]]
host = "ro"
guest = "/ro"
access = "read"

[[tools.hostile.filesystem]]
host = "rw"
guest = "/rw"
access = "read-write"

[tools.hostile.network]
allow = ["127.0.0.1:{port}"]

[tools.hostile.env]
GIVEN = "given-value"
PASSED = {{ from_host = "PATH" }}

[tools.hostile.limits]
memory_mib = 32
cpu_time_ms = 5000
"#
    )
}

async fn call(session: &mut Session, tool: &Tool, input: Value) -> Result<Value, CallError> {
    session.call(tool, &input).await
}

/// Expects the tool to report `denied`; returns the message.
async fn denied(session: &mut Session, tool: &Tool, input: Value) -> String {
    match call(session, tool, input.clone()).await {
        Err(CallError::Tool { failure: ToolFailure::Denied(m), .. }) => m,
        other => panic!("{input}: expected a denial, got {other:?}"),
    }
}

/// Expects the tool to report `failed`; returns the message.
async fn failed(session: &mut Session, tool: &Tool, input: Value) -> String {
    match call(session, tool, input.clone()).await {
        Err(CallError::Tool { failure: ToolFailure::Failed(m), .. }) => m,
        other => panic!("{input}: expected a failure, got {other:?}"),
    }
}

async fn ok(session: &mut Session, tool: &Tool, input: Value) -> Value {
    call(session, tool, input.clone()).await.unwrap_or_else(|e| panic!("{input}: {e}"))
}

/// Asserts the trail has a denial of `capability` whose request contains `request`.
fn assert_denial(events: &[AuditEvent], capability: &str, request: &str) {
    assert!(
        events.iter().any(|e| !e.allowed && e.capability == capability && e.request.contains(request)),
        "no audited denial of {capability} `{request}` in:\n{}",
        events.iter().map(|e| format!("  {e:?}")).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_escape_is_denied_and_audited_while_granted_uses_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sandbox(root);
    let (port, requests) = serve_http().await;
    std::fs::write(root.join("policy.toml"), policy_toml(port)).unwrap();
    let policy = Policy::load(root.join("policy.toml")).unwrap();
    let config = HostConfig {
        engine: engine_config(),
        policy,
        models: Some(Arc::new(EchoModel) as Arc<dyn ModelProvider>),
        ..HostConfig::default()
    };
    let host = Host::new(config).unwrap();
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    host.policy().check_loaded(&[hostile.name()]).unwrap();

    // A victim session holds a secret in the namespace the attacker's session also uses.
    let mut victim = host.new_session().await.unwrap();
    ok(&mut victim, &hostile, json!({"attack": "state-set", "namespace": "scratch", "key": "secret", "bytes": 5}))
        .await;

    let done = AtomicBool::new(false);
    let served = AtomicU64::new(0);
    let bystander = crate::support::bystander(&host, &hostile, &done, &served);

    let attacks = async {
        let mut attacker = host.new_session().await.unwrap();
        let s = &mut attacker;
        let h = &*hostile;

        // State: another tool's namespace, a read-only namespace, crafted keys, the quota.
        let m = denied(s, h, json!({"attack": "state-get", "namespace": "notes", "key": "x"})).await;
        assert!(m.contains("not granted"), "{m}");
        let m = denied(s, h, json!({"attack": "state-set", "namespace": "shared", "key": "k", "bytes": 1})).await;
        assert!(m.contains("read-only"), "{m}");
        let victim_id = victim.id().to_owned();
        for key in [
            "secret".to_owned(),
            format!("../{victim_id}/secret"),
            format!("{victim_id}/hostile/scratch/secret"),
            "/secret".to_owned(),
            "../../secret".to_owned(),
        ] {
            // Keys are opaque within the caller's own (session, tool) scope: whatever the
            // bytes, they name the attacker's keys, never the victim's.
            let out = ok(s, h, json!({"attack": "state-get", "namespace": "scratch", "key": key})).await;
            assert_eq!(out["echo"], 0, "key {key:?} reached another session's value");
        }
        let m = failed(s, h, json!({"attack": "state-get", "namespace": "scratch", "key": "a\u{0}b"})).await;
        assert!(m.contains("invalid state key") && m.contains("NUL"), "{m}");
        let long = "k".repeat(600);
        let m = failed(s, h, json!({"attack": "state-get", "namespace": "scratch", "key": long})).await;
        assert!(m.contains("invalid state key"), "{m}");
        let m = failed(s, h, json!({"attack": "state-set", "namespace": "scratch", "key": "big", "bytes": 2000})).await;
        assert!(m.contains("quota"), "{m}");

        // Model: an alias that is not granted.
        let m = denied(s, h, json!({"attack": "ask-model", "model": "other-model", "prompt": "hi"})).await;
        assert!(m.contains("not granted"), "{m}");

        // Filesystem: `..`, symlinks planted inside the preopen, an absolute path handed
        // straight to the host, writing into and truncating in a read-only preopen.
        denied(s, h, json!({"attack": "fs-read", "path": "/ro/../outside/secret.txt"})).await;
        denied(s, h, json!({"attack": "fs-read", "path": "/ro/secret-link"})).await;
        denied(s, h, json!({"attack": "fs-read", "path": "/ro/escape/secret.txt"})).await;
        denied(s, h, json!({"attack": "fs-open-raw", "preopen": "/ro", "path": "/etc/passwd"})).await;
        denied(s, h, json!({"attack": "fs-open-raw", "preopen": "/ro", "path": "../outside/secret.txt"})).await;
        denied(s, h, json!({"attack": "fs-write", "path": "/ro/planted.txt", "text": "x"})).await;
        assert!(!root.join("ro/planted.txt").exists(), "a write went into the read-only preopen");
        denied(s, h, json!({"attack": "fs-truncate", "path": "/ro/readme.txt"})).await;
        assert_eq!(std::fs::read_to_string(root.join("ro/readme.txt")).unwrap(), "read me");
        // A path outside every preopen never reaches the host: the guest's libc finds no
        // preopen for it. It fails all the same and reads nothing.
        let err = call(s, h, json!({"attack": "fs-read", "path": "/etc/passwd"})).await.unwrap_err();
        assert!(matches!(err, CallError::Tool { .. }), "{err:?}");

        // Network: a host that is not on the allowlist (the same server, by another name),
        // and a raw socket to the allowed address.
        let before = requests.load(Ordering::SeqCst);
        let m = denied(s, h, json!({"attack": "http-get", "url": format!("http://localhost:{port}/")})).await;
        assert!(m.contains("HTTP request denied") && m.contains("allowlist"), "{m}");
        assert_eq!(requests.load(Ordering::SeqCst), before, "a denied request reached the server");
        denied(s, h, json!({"attack": "tcp-connect", "addr": format!("127.0.0.1:{port}")})).await;
        assert_eq!(requests.load(Ordering::SeqCst), before);

        // Env: host variables that were not handed over are not there.
        for name in ["HOST_SECRET", "PATH", "HOME"] {
            let out = ok(s, h, json!({"attack": "env-read", "name": name})).await;
            assert_eq!(out["echo"], 0, "host variable {name} leaked: {}", out["padding"]);
        }

        // Granted uses of each capability, in the same session.
        ok(s, h, json!({"attack": "state-set", "namespace": "scratch", "key": "mine", "bytes": 3})).await;
        let out = ok(s, h, json!({"attack": "state-get", "namespace": "scratch", "key": "mine"})).await;
        assert_eq!(out["padding"], "vvv");
        let out = ok(s, h, json!({"attack": "ask-model", "model": "granted-model", "prompt": "hi"})).await;
        assert_eq!(out["padding"], "granted-model says: hi");
        let out = ok(s, h, json!({"attack": "fs-read", "path": "/ro/readme.txt"})).await;
        assert_eq!(out["padding"], "read me");
        ok(s, h, json!({"attack": "fs-write", "path": "/rw/out.txt", "text": "written"})).await;
        assert_eq!(std::fs::read_to_string(root.join("rw/out.txt")).unwrap(), "written");
        let out = ok(s, h, json!({"attack": "http-get", "url": format!("http://127.0.0.1:{port}/page")})).await;
        assert_eq!((out["echo"].as_u64(), out["padding"].as_str()), (Some(200), Some(PAGE)));
        assert_eq!(requests.load(Ordering::SeqCst), before + 1);
        let out = ok(s, h, json!({"attack": "env-read", "name": "GIVEN"})).await;
        assert_eq!(out["padding"], "given-value");
        let out = ok(s, h, json!({"attack": "env-read", "name": "PASSED"})).await;
        assert_eq!(out["padding"].as_str(), std::env::var("PATH").ok().as_deref());

        done.store(true, Ordering::Relaxed);
        attacker
    };

    let ((), attacker) = tokio::join!(bystander, attacks);
    assert!(served.load(Ordering::Relaxed) > 0, "the bystander session was not served");

    // The victim's secret is intact and its session still serves.
    let out = ok(&mut victim, &hostile, json!({"attack": "state-get", "namespace": "scratch", "key": "secret"})).await;
    assert_eq!(out["padding"], "vvvvv");

    let events = host.store().audit_events(Some(attacker.id())).await.unwrap();
    assert!(events.iter().all(|e| e.session == attacker.id() && e.tool == "hostile"));
    assert_denial(&events, "state", "get notes/x");
    assert_denial(&events, "state", "set shared/k");
    assert_denial(&events, "state", "get scratch/a\\0b");
    assert_denial(&events, "state", "get scratch/kkkk");
    assert_denial(&events, "state", "set scratch/big (2000 bytes)");
    assert_denial(&events, "model", "chat other-model");
    assert_denial(&events, "filesystem", "open ../outside/secret.txt");
    assert_denial(&events, "filesystem", "open secret-link");
    assert_denial(&events, "filesystem", "open escape/secret.txt");
    assert_denial(&events, "filesystem", "open /etc/passwd");
    assert_denial(&events, "filesystem", "open planted.txt (write, create");
    assert_denial(&events, "filesystem", "open readme.txt (write, truncate)");
    assert_denial(&events, "network", &format!("http://localhost:{port}/"));
    // Refused at creation, before any OS socket (or destination) exists.
    assert_denial(&events, "socket", "create-tcp-socket ipv4");
    assert_denial(&events, "env", "HOST_SECRET");
    // Granted HTTP requests are on the trail too (granted model calls are recorded by the
    // model capability with their token usage); routine state use is not.
    assert!(events.iter().any(|e| e.allowed && e.capability == "network" && e.request.contains("/page")));
    assert!(!events.iter().any(|e| e.allowed && e.capability == "state"));
    // The bystander and the victim tried nothing and were denied nothing at use.
    let victim_events = host.store().audit_events(Some(victim.id())).await.unwrap();
    assert!(victim_events.iter().all(|e| e.capability == "env"), "{victim_events:?}");
}

#[tokio::test]
async fn a_pinned_tool_with_another_digest_is_refused() {
    let wrong = "0".repeat(64);
    let policy = Policy::from_toml(&format!("[tools.hostile]\nsha256 = \"{wrong}\"\n"), None).unwrap();
    let host = crate::support::host(policy);
    let err = host.load_tool(&guests().hostile).await.unwrap_err();
    let LoadError::PinMismatch { expected, actual, .. } = &err else { panic!("expected PinMismatch, got {err:?}") };
    assert_eq!(expected, &wrong);
    let message = err.to_string();
    assert!(message.contains(&wrong) && message.contains(actual.as_str()), "{message}");

    // Pinned to its real digest, it loads.
    let policy = Policy::from_toml(&format!("[tools.hostile]\nsha256 = \"{actual}\"\n"), None).unwrap();
    let tool = crate::support::host(policy).load_tool(&guests().hostile).await.unwrap();
    assert_eq!(tool.digest(), actual);
}

#[tokio::test]
async fn require_pins_refuses_unpinned_grants_and_lets_pinned_ones_load() {
    // At policy check: an unpinned section is located and named.
    let text = "require_pins = true\n[tools.hostile.network]\nallow = [\"example.com\"]\n";
    let err = Policy::from_toml(text, None).unwrap_err();
    let issue = &err.issues()[0];
    assert_eq!((issue.key.as_str(), issue.line), ("tools.hostile", Some(2)), "{err}");
    assert!(issue.message.contains("require_pins") && issue.message.contains("sha256"), "{err}");

    // At load: a tool granted what it requests, but not pinned, is refused with its digest.
    let unpinned = Policy::grant_requested().requiring_pins();
    let err = crate::support::host(unpinned.clone()).load_tool(&guests().notes).await.unwrap_err();
    let LoadError::Unpinned { tool, actual, .. } = &err else { panic!("expected Unpinned, got {err:?}") };
    assert_eq!(tool, "notes");
    assert!(err.to_string().contains(&format!("sha256 = \"{actual}\"")), "{err}");
    // A tool granted nothing needs no pin.
    let host = crate::support::host(Policy::deny_all().requiring_pins());
    assert_eq!(host.load_tool(&guests().notes).await.unwrap().name(), "notes");

    // Pinned, the same grants load and work.
    let digest = actual.clone();
    let text = format!(
        "require_pins = true\n[tools.notes]\nsha256 = \"{digest}\"\n[tools.notes.state]\nnamespaces = {{ notes = \"read-write\" }}\n"
    );
    let host = crate::support::host(Policy::from_toml(&text, None).unwrap());
    let notes = host.load_tool(&guests().notes).await.unwrap();
    assert_eq!(notes.digest(), digest);
    assert!(notes.grants().identity_sensitive().is_empty());
    let granted = toolhost::ToolGrants {
        network: toolhost::NetworkGrant { allow: vec!["example.com".parse().unwrap()], ..Default::default() },
        ..Default::default()
    };
    assert_eq!(granted.identity_sensitive(), ["network"]);
}

#[tokio::test]
async fn the_refuse_switch_names_every_ungranted_request() {
    let policy = Policy::from_toml(
        "on_ungranted = \"refuse\"\n[tools.hostile.state]\nnamespaces = { scratch = \"read\" }\n",
        None,
    )
    .unwrap();
    let err = crate::support::host(policy.clone()).load_tool(&guests().hostile).await.unwrap_err();
    let LoadError::Ungranted { ungranted, .. } = &err else { panic!("expected Ungranted, got {err:?}") };
    let message = err.to_string();
    for expected in [
        "state scratch (read-write) (granted only scratch (read))",
        "model granted-model",
        "filesystem /ro (read)",
        "filesystem /rw (read-write)",
        "network 127.0.0.1",
        "env GIVEN",
        "env HOST_SECRET",
    ] {
        assert!(ungranted.iter().any(|u| u == expected), "missing `{expected}` in {message}");
    }

    // The same policy in deny-at-use mode loads the tool and denies at use.
    let host = crate::support::host(policy.on_ungranted(toolhost::OnUngranted::DenyAtUse));
    let tool = host.load_tool(&guests().hostile).await.unwrap();
    assert_eq!(tool.ungranted().len(), ungranted.len());
    let mut session = host.new_session().await.unwrap();
    let m = denied(&mut session, &tool, json!({"attack": "state-set", "namespace": "scratch", "key": "k", "bytes": 1}))
        .await;
    assert!(m.contains("read-only"), "{m}");
}

#[tokio::test]
async fn a_fuel_limit_stops_a_loop_with_a_typed_error() {
    let policy = Policy::from_toml("[tools.hostile.limits]\nfuel = 5000000\ncpu_time_ms = 60000\n", None).unwrap();
    let host = crate::support::host(policy);
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let err = session.call(&hostile, &json!({"attack": "infinite-loop"})).await.unwrap_err();
    assert!(matches!(err, CallError::FuelExhausted { limit: 5_000_000, .. }), "{err:?}");
    // The next call gets a fresh instance with a fresh budget.
    let out = session.call(&hostile, &json!({"attack": "echo", "n": 3})).await.unwrap();
    assert_eq!(out["echo"], 3);
}

fn toolhost_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(args)
        .arg("--no-cache")
        .env_remove("RUST_LOG")
        .output()
        .expect("running the toolhost binary")
}

#[test]
fn inspect_prints_requested_vs_granted_and_policy_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ro")).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[tools.hostile.state]\nnamespaces = { scratch = \"read\" }\n\n[[tools.hostile.filesystem]]\nhost = \"ro\"\n\
         guest = \"/ro\"\naccess = \"read\"\n\n[tools.hostile.env]\nGIVEN = \"x\"\nEXTRA = \"y\"\n",
    )
    .unwrap();
    let hostile = guests().hostile.to_str().unwrap();
    let out = toolhost_cli(&["inspect", hostile, "--policy", policy.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = stdout.split("requested vs granted:").nth(1).expect("no requested-vs-granted table");
    let row = |cells: &[&str]| {
        table.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            cells.iter().all(|c| words.contains(c)) && words.first() == cells.first()
        })
    };
    assert!(row(&["state", "scratch", "PARTIAL"]), "{table}");
    assert!(row(&["filesystem", "/ro", "granted"]), "{table}");
    assert!(row(&["filesystem", "/rw", "DENIED"]), "{table}");
    assert!(row(&["model", "granted-model", "DENIED"]), "{table}");
    assert!(row(&["network", "127.0.0.1", "DENIED"]), "{table}");
    assert!(row(&["env", "GIVEN", "granted"]), "{table}");
    assert!(row(&["env", "HOST_SECRET", "DENIED"]), "{table}");
    assert!(row(&["env", "EXTRA", "not", "requested"]), "{table}");
    // A host preopen is outside the session's transaction, and inspect says so.
    assert!(stdout.contains("OUTSIDE THE SESSION'S TRANSACTION: /ro (read, host "), "{stdout}");

    // A bad host pattern: the CLI fails, naming the file, the line and the key.
    std::fs::write(&policy, "[tools.hostile.network]\nallow = [\n  \"api.example.com\",\n  \"*.com\",\n]\n").unwrap();
    let out = toolhost_cli(&["inspect", hostile, "--policy", policy.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(policy.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("line 4") && stderr.contains("tools.hostile.network.allow[1]"), "{stderr}");
}

/// A policy granting the hostile tool HTTP to `allow`, optionally into the host's network.
fn network_policy(allow: &str, allow_private: bool) -> Policy {
    let text = format!("[tools.hostile.network]\nallow = [\"{allow}\"]\nallow_private = {allow_private}\n");
    Policy::from_toml(&text, None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_that_resolves_to_the_hosts_network_is_refused_unless_opted_in() {
    let (port, requests) = serve_http().await;
    let url = format!("http://localhost:{port}/page");

    // Granted by name, `localhost` resolves to loopback: refused before any connection, and
    // the trail names the resolved address.
    let host = crate::support::host(network_policy(&format!("localhost:{port}"), false));
    let tool = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    // The guest sees wasi-http's own error code for it.
    let m = failed(&mut session, &tool, json!({"attack": "http-get", "url": url})).await;
    assert!(m.contains("DestinationIpProhibited"), "{m}");
    assert_eq!(requests.load(Ordering::SeqCst), 0, "a refused request reached the server");
    let events = host.store().audit_events(Some(session.id())).await.unwrap();
    let refusal = events.iter().find(|e| e.capability == "network" && !e.allowed).expect("an audited refusal");
    assert!(refusal.request.contains("localhost"), "{refusal:?}");
    assert!(
        refusal.reason.contains("loopback") && (refusal.reason.contains("127.0.0.1") || refusal.reason.contains("::1")),
        "{refusal:?}"
    );
    assert!(refusal.reason.contains("allow_private"), "{refusal:?}");

    // The same grant with `allow_private = true` reaches the server, by name (Host header).
    let host = crate::support::host(network_policy(&format!("localhost:{port}"), true));
    let tool = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let out = ok(&mut session, &tool, json!({"attack": "http-get", "url": url})).await;
    assert_eq!((out["echo"].as_u64(), out["padding"].as_str()), (Some(200), Some(PAGE)));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    let events = host.store().audit_events(Some(session.id())).await.unwrap();
    assert!(events.iter().any(|e| e.capability == "network" && e.allowed && e.reason.contains("connecting to")));

    // An IP literal the policy names is reachable without the opt-in; another literal in
    // the same range is not on the allowlist at all.
    let host = crate::support::host(network_policy(&format!("127.0.0.1:{port}"), false));
    let tool = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let literal = format!("http://127.0.0.1:{port}/page");
    let out = ok(&mut session, &tool, json!({"attack": "http-get", "url": literal})).await;
    assert_eq!(out["padding"].as_str(), Some(PAGE));
    let m =
        denied(&mut session, &tool, json!({"attack": "http-get", "url": format!("http://127.0.0.2:{port}/")})).await;
    assert!(m.contains("allowlist"), "{m}");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

/// HTTPS goes through the same checked connection: the TLS handshake reaches the address the
/// host resolved and checked, naming the granted host (SNI), and a failed handshake is the
/// tool's error, not the host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connects_to_the_checked_address_with_the_granted_name() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hello = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut first = vec![0; 2048];
        let n = tokio::io::AsyncReadExt::read(&mut socket, &mut first).await.unwrap();
        first.truncate(n);
        first // dropping the socket ends the handshake
    });
    let host = crate::support::host(network_policy(&format!("localhost:{port}"), true));
    let tool = host.load_tool(&guests().hostile).await.unwrap();
    let mut session = host.new_session().await.unwrap();
    let m =
        failed(&mut session, &tool, json!({"attack": "http-get", "url": format!("https://localhost:{port}/")})).await;
    let hello = tokio::time::timeout(std::time::Duration::from_secs(10), hello).await.unwrap().unwrap();
    assert_eq!(hello.get(..2), Some(&[0x16, 0x03][..]), "not a TLS handshake: {hello:02x?}");
    assert!(hello.windows(9).any(|w| w == b"localhost"), "the ClientHello does not name the granted host");
    assert!(!m.is_empty());
    let events = host.store().audit_events(Some(session.id())).await.unwrap();
    assert!(events.iter().any(|e| e.capability == "network" && e.allowed && e.reason.contains("connecting to")));
}
