//! `toolhost serve` driven by the official MCP Python SDK (tests/mcp/client.py) over stdio
//! and streamable HTTP, in both protocol eras; and bad traffic on both transports.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::guests;

const TOOLHOST: &str = env!("CARGO_BIN_EXE_toolhost");
const MAX_BODY: usize = 256 << 10;

/// The project's venv Python (made by scripts/setup on first use), with the MCP SDK.
fn python() -> PathBuf {
    crate::support::venv_python()
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py")
}

/// `serve` arguments shared by every test: the notes and calculator tools, a database,
/// a compile cache shared with the other tests.
fn serve_args(db: &Path) -> Vec<String> {
    let g = guests();
    let cache = crate::support::engine_config().cache_dir.expect("a cache dir");
    vec![
        "--cache-dir".into(),
        cache.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "serve".into(),
        "--tools".into(),
        format!("{},{}", g.notes.display(), g.calculator.display()),
        "--grant-requested".into(),
        "--max-message-bytes".into(),
        MAX_BODY.to_string(),
    ]
}

/// Runs a client.py scenario and returns its JSON report; panics with its output if it failed.
fn run_client(args: &[String]) -> Value {
    let output = Command::new(python())
        .arg(client_script())
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("running the MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "client.py {args:?} failed ({}):\n{stdout}\n{stderr}", output.status);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("client.py printed no report ({e}):\n{stdout}\n{stderr}"))
}

fn session_over_stdio(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let mut server = vec![TOOLHOST.to_owned()];
    server.extend(serve_args(&db));
    let stdio = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["session".into(), "--mode".into(), mode.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("--stdio".into());
        args.extend(server.iter().cloned());
        args
    };

    let first = run_client(&stdio(&[]));
    assert_eq!(first["tools"], serde_json::json!(["calculator", "notes"]));
    assert_eq!(first["found_before_restart"], 3);
    assert_eq!(first["notes_has_output_schema"], true);
    let handle = first["handle"].as_str().expect("a handle").to_owned();

    // The first server process is gone (the client closed its stdin); a new one resumes.
    let second = run_client(&stdio(&["--handle", &handle]));
    assert_eq!(second["found_after_restart"], 3, "{second}");
    assert_eq!(second["id_after_restart"], 4, "the tool's in-memory state was restored: {second}");
    assert_eq!(second["found_in_fresh_session"], 0, "{second}");
}

#[test]
fn stdio_session_survives_restart_2025_11_25() {
    session_over_stdio("legacy");
}

#[test]
fn stdio_session_survives_restart_2026_07_28() {
    session_over_stdio("2026-07-28");
}

/// A `toolhost serve --http` child; killed when dropped.
struct HttpServer {
    child: Child,
    url: String,
    _stderr: std::thread::JoinHandle<()>,
}

impl HttpServer {
    fn start(db: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(TOOLHOST)
            .args(serve_args(db))
            .args(["--http", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting toolhost serve --http");
        let (url, stderr) = read_url(child.stderr.take().unwrap());
        Self { child, url, _stderr: stderr }
    }

    /// SIGKILL: no graceful shutdown, nothing flushed on the way out.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the line announcing the URL, then keeps draining stderr (to the test's output).
pub(crate) fn read_url(stderr: ChildStderr) -> (String, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            if let Some(rest) = line.strip_prefix("toolhost: serving MCP at ") {
                let url = rest.split_whitespace().next().unwrap_or_default().to_owned();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url);
                }
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(120)).expect("the server did not announce its URL");
    (url, drain)
}

fn session_over_http(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let args = |url: &str, extra: &[&str]| {
        let mut args: Vec<String> = ["session", "--mode", mode, "--url", url].iter().map(|s| s.to_string()).collect();
        // 2026-07-28 has no MCP sessions: each request without a handle gets its own.
        if mode == "2026-07-28" {
            args.push("--per-request".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let server = HttpServer::start(&db, &[]);
    let first = run_client(&args(&server.url, &[]));
    assert_eq!(first["found_before_restart"], 3, "{first}");
    let handle = first["handle"].as_str().expect("a handle").to_owned();
    server.kill();

    let server = HttpServer::start(&db, &[]);
    let second = run_client(&args(&server.url, &["--handle", &handle]));
    assert_eq!(second["found_after_restart"], 3, "{second}");
    assert_eq!(second["id_after_restart"], 4, "{second}");
    assert_eq!(second["found_in_fresh_session"], 0, "{second}");
}

#[test]
fn http_session_survives_kill_2025_11_25() {
    session_over_http("legacy");
}

#[test]
fn http_session_survives_kill_2026_07_28() {
    session_over_http("2026-07-28");
}

#[test]
fn http_bad_traffic_gets_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = HttpServer::start(&dir.path().join("sessions.db"), &["--bearer-token", "s3cret"]);
    let report = run_client(&[
        "bad-http".into(),
        "--url".into(),
        server.url.clone(),
        "--token".into(),
        "s3cret".into(),
        "--max-body".into(),
        MAX_BODY.to_string(),
    ]);
    assert_eq!(report["malformed"]["status"], 400, "{report}");
    assert_eq!(report["unknown_method"]["body"]["error"]["code"], -32601, "{report}");
    assert_eq!(report["oversized"]["status"], 413, "{report}");
    assert_eq!(report["wrong_origin"]["status"], 403, "{report}");
    assert_eq!(report["wrong_host"]["status"], 403, "{report}");
    assert_eq!(report["wrong_token"]["status"], 401, "{report}");
    assert_eq!(report["still_serving"], true, "{report}");
}

/// Raw lines on stdio: malformed JSON, a non-JSON-RPC object, an unknown method and an
/// oversized line each get their JSON-RPC error, and the connection keeps serving.
#[test]
fn stdio_bad_traffic_gets_errors_and_the_connection_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(TOOLHOST)
        .args(serve_args(&dir.path().join("sessions.db")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting toolhost serve");
    crate::support::capture_stderr(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match serde_json::from_str(&line) {
                Ok(value) => {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
                Err(e) => panic!("the server wrote a line that is not JSON ({e}): {line}"),
            }
        }
    });
    let mut send = |line: &str| {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    let wait_for = |what: &str, matches: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no {what}"));
            if matches(&message) {
                return message;
            }
        }
    };
    let response_to = |id: i64| wait_for(&format!("response to request {id}"), &|m| m["id"] == id);
    let error_without_id =
        |code: i64| wait_for(&format!("error {code}"), &|m| m["id"].is_null() && m["error"]["code"] == code);

    send(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
    );
    assert_eq!(response_to(1)["result"]["protocolVersion"], "2025-11-25");
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    send(r#"{"jsonrpc":"2.0","id":2,"method":"#);
    let parse = error_without_id(-32700);
    assert!(parse["error"]["message"].as_str().unwrap().contains("parse error"), "{parse}");
    send(r#"{"hello":"world"}"#);
    error_without_id(-32600);
    send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/frobnicate","params":{}}"#);
    let unknown = response_to(3);
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    let oversized = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"notes","arguments":{{"op":"add","title":"x","body":"{}"}}}}}}"#,
        "y".repeat(MAX_BODY + 1)
    );
    send(&oversized);
    let too_large = error_without_id(-32600);
    assert!(too_large["error"]["message"].as_str().unwrap().contains("limit"), "{too_large}");

    send(
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"calculator","arguments":{"expression":"6 * 7"}}}"#,
    );
    let answer = response_to(5);
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert_eq!(answer["result"]["structuredContent"]["value"].as_f64(), Some(42.0), "{answer}");

    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "the server exited with {status} after its client closed stdin");
}

/// A `toolhost serve` child spoken to in raw JSON-RPC lines.
struct RawStdio {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    replies: std::sync::mpsc::Receiver<Value>,
}

impl RawStdio {
    fn start(args: &[String]) -> Self {
        let mut child = Command::new(TOOLHOST)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting toolhost serve");
        crate::support::capture_stderr(&mut child);
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("the server wrote a line that is not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut raw = Self { child, stdin, replies };
        raw.request(
            1,
            "initialize",
            serde_json::json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}),
        );
        raw.send(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
        raw
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(&serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.replies.recv_timeout(left).unwrap_or_else(|_| panic!("no response to {method} ({id})"));
            if message["id"] == id {
                return message;
            }
        }
    }

    fn call(&mut self, id: i64, tool: &str, arguments: Value) -> Value {
        let response = self.request(id, "tools/call", serde_json::json!({"name": tool, "arguments": arguments}));
        response["result"].clone()
    }

    fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }
}

/// Denials, traps, deadlines and memory limits are tool errors (`isError`) with their kind in
/// `_meta`; the connection and the session keep working after each.
#[test]
fn denials_and_traps_are_tool_errors_and_the_session_continues() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    // notes is granted nothing (its state use is denied at use); hostile gets tight limits.
    std::fs::write(
        &policy,
        "on_ungranted = \"deny-at-use\"\n[tools.hostile.limits]\nmemory_mib = 32\ncpu_time_ms = 300\n",
    )
    .unwrap();
    let g = guests();
    let cache = crate::support::engine_config().cache_dir.unwrap();
    let args: Vec<String> = vec![
        "--cache-dir".into(),
        cache.display().to_string(),
        "--db".into(),
        dir.path().join("sessions.db").display().to_string(),
        "serve".into(),
        "--tools".into(),
        g.notes.display().to_string(),
        "--tools".into(),
        g.hostile.display().to_string(),
        "--policy".into(),
        policy.display().to_string(),
    ];
    let mut raw = RawStdio::start(&args);
    let kind = |result: &Value| result["_meta"]["dev.toolhost/error"].as_str().unwrap_or_default().to_owned();

    let denied = raw.call(10, "notes", serde_json::json!({"op": "add", "title": "t", "body": "b"}));
    assert_eq!(denied["isError"], true, "{denied}");
    assert_eq!(kind(&denied), "denied", "{denied}");

    let looped = raw.call(11, "hostile", serde_json::json!({"attack": "infinite-loop"}));
    assert_eq!((looped["isError"].clone(), kind(&looped)), (Value::Bool(true), "deadline".to_owned()), "{looped}");

    let bomb = raw.call(12, "hostile", serde_json::json!({"attack": "memory-bomb"}));
    assert_eq!(bomb["isError"], true, "{bomb}");
    assert!(["memory-limit", "trap"].contains(&kind(&bomb).as_str()), "{bomb}");

    let deep = raw.call(13, "hostile", serde_json::json!({"attack": "deep-recursion"}));
    assert_eq!((deep["isError"].clone(), kind(&deep)), (Value::Bool(true), "trap".to_owned()), "{deep}");

    // The same session goes on: its hostile instance is rebuilt and answers.
    let echo = raw.call(14, "hostile", serde_json::json!({"attack": "echo", "n": 7}));
    assert_eq!(echo["isError"], false, "{echo}");
    assert_eq!(
        echo["_meta"]["dev.toolhost/session"], denied["_meta"]["dev.toolhost/session"],
        "all calls without a handle ran in the connection's session"
    );
    assert!(raw.close().success());
}
