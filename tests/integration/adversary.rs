//! The adversary: one attack per row on what a call makes the *host* hold or do (journal,
//! state buffers, sockets, handles, wall time, errors, logs, audit, snapshots), plus the
//! guest-side classics. For each: the typed error, an audit event where a capability was
//! refused, host memory growth (peak RSS over the attack) under the tool's memory limit plus
//! a fixed allowance, the open fd count back where it was, and a bystander session served
//! throughout with bounded latency. Then the granted uses of the same imports still work and
//! the session's journal (clock runs, repeated reads) replays.
//!
//! Adding an attack is adding a row to [`attacks`].
//!
//! Memory is measured per process, so the test re-runs itself alone in a child process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost::{Access, CallError, HostResource, Limits, Policy, Preopen, Session, Tool};

use crate::support::{grants, guests, host};

/// What an attack must end with.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The CPU deadline.
    Deadline,
    /// The CPU or the wall deadline, whichever comes first: a loop that spends most of its
    /// time in host calls (copying values) may reach either, depending on the machine's load.
    AnyDeadline,
    WallDeadline,
    /// The CPU deadline or the journal bound: a clock-read loop on a loaded machine reads more
    /// quanta of real time per CPU tick, so its compact journal may fill first. Both end it.
    DeadlineOrJournal,
    HostLimit(HostResource),
    MemoryLimit,
    OutputTooLarge,
    /// A trap (deep recursion, a WASI request over its bound).
    Trap,
    /// The tool's own error (a refusal it reports, e.g. a state quota).
    ToolError,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Hostile,
    Ballast,
}

struct Attack {
    name: &'static str,
    target: Target,
    input: Value,
    expect: Expect,
    /// The capability whose refusal the audit trail must show.
    audited: Option<&'static str>,
}

fn row(name: &'static str, input: Value, expect: Expect, audited: Option<&'static str>) -> Attack {
    Attack { name, target: Target::Hostile, input, expect, audited }
}

const MANY: u64 = 1_000_000_000;

fn attacks() -> Vec<Attack> {
    use Expect::*;
    use HostResource as R;
    vec![
        // Clocks: a run of readings is one journal entry; alternating clocks hit the bound.
        row("wall-clock loop", json!({"attack": "wall-clock-loop", "reads": MANY}), DeadlineOrJournal, None),
        row("monotonic-clock loop", json!({"attack": "monotonic-clock-loop", "reads": MANY}), DeadlineOrJournal, None),
        row(
            "alternating-clock loop",
            json!({"attack": "alternating-clock-loop", "reads": MANY}),
            HostLimit(R::Journal),
            None,
        ),
        // State reads and writes.
        row(
            "1 MiB read loop",
            json!({"attack": "read-loop", "key": "big", "bytes": 1 << 20, "reads": MANY}),
            AnyDeadline,
            None,
        ),
        row(
            "committed 128 KiB read loop",
            json!({"attack": "read-loop", "key": "committed", "bytes": 0, "reads": MANY}),
            AnyDeadline,
            None,
        ),
        row(
            "read-own-write loop",
            json!({"attack": "read-own-write-loop", "key": "own", "reads": MANY}),
            AnyDeadline,
            None,
        ),
        row(
            "distinct-key read loop",
            json!({"attack": "distinct-read-loop", "keys": MANY, "key_bytes": 500}),
            HostLimit(R::Journal),
            None,
        ),
        row("delete flood", json!({"attack": "delete-flood", "keys": MANY}), HostLimit(R::Journal), None),
        row(
            "list-keys loop",
            json!({"attack": "list-keys-loop", "keys": 200, "reads": MANY}),
            HostLimit(R::Journal),
            None,
        ),
        row(
            "set flood past the quota",
            json!({"attack": "set-flood", "keys": MANY, "bytes": 64 << 10}),
            ToolError,
            Some("state"),
        ),
        row(
            "denied-namespace flood",
            json!({"attack": "denied-state-flood", "count": MANY}),
            HostLimit(R::Audit),
            Some("state"),
        ),
        // Sockets: refused before any OS socket exists.
        row(
            "tcp socket flood",
            json!({"attack": "tcp-socket-flood", "count": MANY}),
            HostLimit(R::Audit),
            Some("socket"),
        ),
        row(
            "udp socket flood",
            json!({"attack": "udp-socket-flood", "count": MANY}),
            HostLimit(R::Audit),
            Some("socket"),
        ),
        row("tcp connect", json!({"attack": "tcp-connect", "addr": "127.0.0.1:9"}), ToolError, Some("socket")),
        // Wall time: waiting is not CPU time.
        row("sleep past the wall deadline", json!({"attack": "sleep", "ms": 600_000}), WallDeadline, None),
        row("block on an instant that never comes", json!({"attack": "block-forever"}), WallDeadline, None),
        row("poll on never-ready pollables", json!({"attack": "poll-forever", "count": 16}), WallDeadline, None),
        // Handles.
        row("pollable flood", json!({"attack": "pollable-flood", "count": MANY}), HostLimit(R::Handles), None),
        row(
            "file-handle flood",
            json!({"attack": "file-handle-flood", "preopen": "/ro", "path": "a.txt", "count": MANY}),
            HostLimit(R::Handles),
            None,
        ),
        row("preopen-list flood", json!({"attack": "preopen-flood", "count": MANY}), HostLimit(R::Handles), None),
        row(
            "directory-stream flood",
            json!({"attack": "dir-stream-flood", "preopen": "/ro", "count": MANY}),
            HostLimit(R::Handles),
            None,
        ),
        // What is committed or logged.
        row("1 MiB tool error", json!({"attack": "huge-error", "bytes": 1 << 20}), HostLimit(R::ToolError), None),
        row("log flood", json!({"attack": "log-flood", "lines": MANY, "bytes": 1000}), HostLimit(R::Log), None),
        row("huge log lines", json!({"attack": "log-flood", "lines": MANY, "bytes": 1 << 20}), HostLimit(R::Log), None),
        row(
            "denied-http flood",
            json!({"attack": "denied-http-flood", "url": "http://denied.invalid/", "count": MANY}),
            HostLimit(R::Audit),
            Some("network"),
        ),
        row(
            "denied-model flood",
            json!({"attack": "denied-model-flood", "count": MANY}),
            HostLimit(R::Audit),
            Some("model"),
        ),
        row("1 GiB random request", json!({"attack": "huge-random", "bytes": 1u64 << 30}), Trap, None),
        // Every secure random byte is journaled: a draw loop ends at the journal bound.
        row(
            "secure random loop",
            json!({"attack": "random-loop", "draws": MANY, "bytes": 4096}),
            HostLimit(R::Journal),
            None,
        ),
        row("stdout flood", json!({"attack": "stdout-flood", "bytes": u64::MAX}), AnyDeadline, None),
        Attack {
            name: "snapshot over its cap",
            target: Target::Ballast,
            input: json!({"op": "fill", "bytes": 2 << 20, "seed": 1}),
            expect: HostLimit(R::Snapshot),
            audited: None,
        },
        // Guest-side classics, in the same run.
        row("infinite loop", json!({"attack": "infinite-loop"}), Deadline, None),
        row("memory bomb", json!({"attack": "memory-bomb"}), MemoryLimit, None),
        row("deep recursion", json!({"attack": "deep-recursion"}), Trap, None),
        row("huge output", json!({"attack": "huge-output", "bytes": 100_000}), OutputTooLarge, None),
    ]
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        cpu_time: Duration::from_millis(500),
        wall_time: Duration::from_secs(2),
        max_output_bytes: 64 << 10,
        max_error_bytes: 4 << 10,
        max_snapshot_bytes: 1 << 20,
        max_log_bytes_per_step: 64 << 10,
        max_journal_bytes: 512 << 10,
        max_handles: 64,
        max_audit_events_per_step: 32,
        ..Limits::default()
    }
}

fn matches(expect: Expect, outcome: &Result<Value, CallError>) -> bool {
    let Err(error) = outcome else { return false };
    match (expect, error) {
        (Expect::Deadline, CallError::Deadline { .. })
        | (Expect::WallDeadline, CallError::WallDeadline { .. })
        | (Expect::AnyDeadline, CallError::Deadline { .. } | CallError::WallDeadline { .. })
        | (Expect::DeadlineOrJournal, CallError::Deadline { .. })
        | (Expect::MemoryLimit, CallError::MemoryLimit { .. })
        | (Expect::OutputTooLarge, CallError::OutputTooLarge { .. })
        | (Expect::Trap, CallError::Trap { .. })
        | (Expect::ToolError, CallError::Tool { .. }) => true,
        (Expect::HostLimit(resource), CallError::HostLimit { resource: r, limit, used, .. }) => {
            resource == *r && used > limit
        }
        (Expect::DeadlineOrJournal, CallError::HostLimit { resource: HostResource::Journal, limit, used, .. }) => {
            used > limit
        }
        _ => false,
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB")
}

/// Resets the peak-RSS mark (`VmHWM`) to the current RSS, so each attack's peak is its own.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

/// The host's open file descriptors, by what they point at.
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    fds.sort();
    fds
}

/// Memory an attack may add on top of the tool's own limit: allocator slack, the attack's
/// in-flight host buffers (one 1 MiB value, a journal of at most 1 MiB) and the runtime.
const FIXED_ALLOWANCE_BYTES: u64 = 48 << 20;
/// How long one bystander call may take while an attack runs.
const BYSTANDER_MAX_LATENCY: Duration = Duration::from_millis(400);

async fn denials(host: &toolhost::Host, session: &str, capability: &str) -> usize {
    let events = host.store().audit_events(Some(session)).await.unwrap();
    events.iter().filter(|e| !e.allowed && e.capability == capability).count()
}

/// Keeps a session busy with small calls, recording the slowest.
async fn timed_bystander(
    host: &toolhost::Host,
    tool: &Tool,
    done: &AtomicBool,
    served: &AtomicU64,
    slowest: &AtomicU64,
) {
    let mut session = host.new_session().await.unwrap();
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let out = session.call(tool, &json!({"attack": "echo", "n": n})).await.unwrap();
        assert_eq!(out["echo"], n);
        slowest.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        served.fetch_add(1, Ordering::Relaxed);
        tokio::task::yield_now().await;
    }
}

const CHILD: &str = "TOOLHOST_ADVERSARY_CHILD";

/// Runs the adversary alone in a child process: RSS and fd counts are per process.
#[test]
fn the_adversary_is_stopped_on_every_host_resource_and_the_host_keeps_serving() {
    if std::env::var_os(CHILD).is_some() {
        return tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(adversary());
    }
    let text = crate::support::run_in_child(
        "adversary::the_adversary_is_stopped_on_every_host_resource_and_the_host_keeps_serving",
        CHILD,
    );
    assert!(text.contains("attacks stopped: "), "the child ran no attacks:\n{text}");
}

async fn adversary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "granted text").unwrap();
    let limits = limits();
    let mut hostile_grants = grants(&["scratch"], limits);
    hostile_grants.state.quota.max_total_bytes = 4 << 20;
    hostile_grants.filesystem =
        vec![Preopen { host: dir.path().to_owned(), guest: "/ro".into(), access: Access::Read }];
    let policy = Policy::deny_all().with_tool("hostile", hostile_grants).with_tool("ballast", grants(&[], limits));
    let host = host(policy);
    let hostile = host.load_tool(&guests().hostile).await.unwrap();
    let ballast = host.load_tool(&guests().ballast).await.unwrap();

    let (done, served, slowest) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    let bystander = timed_bystander(&host, &hostile, &done, &served, &slowest);
    let run = async {
        let mut attacker = host.new_session().await.unwrap();
        granted_uses_work(&mut attacker, &hostile).await;
        let mut report = Vec::new();
        for attack in attacks() {
            let tool = match attack.target {
                Target::Hostile => &hostile,
                Target::Ballast => &ballast,
            };
            let audited_before = match attack.audited {
                Some(capability) => denials(&host, attacker.id(), capability).await,
                None => 0,
            };
            // Measured with the tool's instance live on both sides (it holds its preopens).
            attacker.prewarm(tool).await.unwrap();
            let fds_before = open_fds();
            reset_peak();
            let rss_before = status_kib("VmRSS:") * 1024;
            let (served_before, started) = (served.load(Ordering::Relaxed), Instant::now());
            slowest.store(0, Ordering::Relaxed);

            let outcome = attacker.call(tool, &attack.input).await;

            let elapsed = started.elapsed();
            let peak_growth = (status_kib("VmHWM:") * 1024).saturating_sub(rss_before);
            let name = attack.name;
            assert!(matches(attack.expect, &outcome), "{name}: expected {:?}, got {outcome:?}", attack.expect);
            if let Some(capability) = attack.audited {
                // Refusals in synchronous WASI calls (socket creation) are written beside them.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let after = denials(&host, attacker.id(), capability).await;
                assert!(after > audited_before, "{name}: no `{capability}` refusal in the audit trail");
            }
            let allowed = limits.memory_bytes + FIXED_ALLOWANCE_BYTES;
            assert!(
                peak_growth < allowed,
                "{name}: host RSS grew by {} MiB (allowed {} MiB)",
                peak_growth >> 20,
                allowed >> 20
            );
            // The aborted instance is gone with every handle it held.
            attacker.prewarm(tool).await.unwrap();
            let fds_after = open_fds();
            assert_eq!(fds_after, fds_before, "{name}: the open file descriptors changed");
            let during = served.load(Ordering::Relaxed) - served_before;
            let slowest_call = Duration::from_micros(slowest.load(Ordering::Relaxed));
            assert!(during > 0 || elapsed < Duration::from_millis(20), "{name}: the bystander was not served");
            assert!(slowest_call < BYSTANDER_MAX_LATENCY, "{name}: a bystander call took {slowest_call:?}");
            report.push(format!(
                "{name:<40} {:>8.1} ms  peak +{:>6.1} MiB  bystander {during:>5} calls, slowest {slowest_call:?}",
                elapsed.as_secs_f64() * 1e3,
                peak_growth as f64 / (1 << 20) as f64,
            ));
        }
        // The session still works, and its committed steps (clock runs, repeated reads) replay.
        granted_uses_work(&mut attacker, &hostile).await;
        let id = attacker.id().to_owned();
        drop(attacker);
        let mut reopened = host.open_session(&id).await.unwrap();
        let rebuild = reopened.prewarm(&hostile).await.unwrap().expect("a new handle rebuilds");
        assert!(rebuild.replayed > 0, "{rebuild:?}");
        done.store(true, Ordering::Relaxed);
        println!("attacks stopped: {}", report.len());
        for line in &report {
            println!("  {line}");
        }
        assert!(report.len() >= 25);
    };
    tokio::join!(bystander, run);
}

/// The same imports, used within bounds, answer normally.
async fn granted_uses_work(session: &mut Session, hostile: &Tool) {
    type Check = Box<dyn Fn(&Value) -> bool>;
    let uses: Vec<(Value, Check)> = vec![
        (json!({"attack": "monotonic-clock-loop", "reads": 50}), Box::new(|o: &Value| o["echo"].as_u64().is_some())),
        (json!({"attack": "wall-clock-loop", "reads": 50}), Box::new(|o: &Value| o["echo"].as_u64() > Some(0))),
        (
            json!({"attack": "read-loop", "key": "small", "bytes": 10, "reads": 100}),
            Box::new(|o: &Value| o["echo"] == 1000),
        ),
        (json!({"attack": "read-loop", "key": "small", "bytes": 0, "reads": 3}), Box::new(|o: &Value| o["echo"] == 30)),
        (
            json!({"attack": "read-loop", "key": "committed", "bytes": 128 << 10, "reads": 1}),
            Box::new(|o: &Value| o["echo"] == 128 << 10),
        ),
        (
            json!({"attack": "read-loop", "key": "committed", "bytes": 0, "reads": 20}),
            Box::new(|o: &Value| o["echo"] == 20 * (128 << 10)),
        ),
        (
            json!({"attack": "read-own-write-loop", "key": "mine", "reads": 5}),
            Box::new(|o: &Value| o["echo"] == 5 * 4096),
        ),
        (json!({"attack": "delete-flood", "keys": 20}), Box::new(|o: &Value| o["echo"] == 0)),
        (json!({"attack": "sleep", "ms": 20}), Box::new(|o: &Value| o["echo"] == 20)),
        (json!({"attack": "pollable-flood", "count": 5}), Box::new(|o: &Value| o["echo"] == 5)),
        (
            json!({"attack": "file-handle-flood", "preopen": "/ro", "path": "a.txt", "count": 3}),
            Box::new(|o: &Value| o["echo"] == 3),
        ),
        (json!({"attack": "log-flood", "lines": 3, "bytes": 100}), Box::new(|o: &Value| o["echo"] == 3)),
        (json!({"attack": "huge-random", "bytes": 64}), Box::new(|o: &Value| o["echo"] == 64)),
        (json!({"attack": "random-loop", "draws": 16, "bytes": 32}), Box::new(|o: &Value| o["echo"] == 16 * 32)),
    ];
    for (input, check) in uses {
        let out = session.call(hostile, &input).await.unwrap_or_else(|e| panic!("granted use {input} failed: {e}"));
        assert!(check(&out), "granted use {input} answered {out}");
    }
    let err = session.call(hostile, &json!({"attack": "huge-error", "bytes": 100})).await.unwrap_err();
    assert!(matches!(&err, CallError::Tool { .. }), "a small tool error stays the tool's: {err:?}");
}
