//! Journaled HTTP benchmark: 100 live steps that each GET from a local server, against
//! rebuilding the session by replaying those 100 steps from their journals (which must send
//! nothing: the server's count is checked), with the replay of 100 steps that make no request
//! as the baseline for what replay costs anyway; the two rebuilds alternate, and HTTP's share
//! is the median of their per-round differences. Prints a table.
//!
//!     cargo bench --bench http_replay

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::store::Durability;
use toolhost::{EngineConfig, Host, HostConfig, Policy, SnapshotPolicy, SqliteStore, Store, ToolGrants};

const STEPS: usize = 100;
const REBUILDS: usize = 15;

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

/// A loopback HTTP/1.1 server answering every request with its number; returns its port
/// and the count of requests it received.
fn start_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            let body = format!("response {n}");
            let mut stream = &stream;
            let _ =
                write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        }
    });
    (port, count)
}

fn host(store: Arc<dyn Store>, cache: &Path, port: u16) -> Host {
    let mut hostile = ToolGrants::default();
    hostile.network.allow = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let engine = EngineConfig { cache_dir: Some(cache.into()), ..EngineConfig::default() };
    let snapshots = SnapshotPolicy { every: u32::MAX, keep: 1 };
    let config = HostConfig {
        engine,
        policy: Policy::deny_all().with_tool("hostile", hostile),
        snapshots,
        ..HostConfig::default()
    };
    Host::with_store(config, store).expect("host")
}

/// One rebuild of session `id`'s instance (instantiate and replay): its own timing.
async fn rebuild(host: &Host, tool: &toolhost::Tool, id: &str) -> Duration {
    let mut session = host.open_session(id).await.unwrap();
    let rebuild = session.prewarm(tool).await.unwrap().expect("a fresh session rebuilds");
    assert_eq!(rebuild.replayed as usize, STEPS);
    rebuild.elapsed
}

/// Rebuilds of the HTTP session and of the baseline session, alternating (so both see the
/// same machine), after two warm-up rounds: both sets of timings, and the per-round
/// difference (what the 100 journaled exchanges add to a rebuild).
async fn rebuilds(host: &Host, tool: &toolhost::Tool, http: &str, baseline: &str) -> (Stats, Stats, Stats) {
    let (mut with, mut without, mut share) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..REBUILDS + 2 {
        let (a, b) = (rebuild(host, tool, http).await, rebuild(host, tool, baseline).await);
        if round >= 2 {
            with.push(a);
            without.push(b);
            share.push(a.saturating_sub(b));
        }
    }
    (stats(with), stats(without), stats(share))
}

fn row(name: &str, total: Duration, baseline: Duration) {
    let per = total / STEPS as u32;
    let ratio = total.as_secs_f64() / baseline.as_secs_f64();
    println!("| {name:<58} | {total:>10.2?} | {per:>10.2?} | {ratio:>8.3}x |");
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["hostile"]).expect("building the tool");
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(workspace.join("target")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (port, count) = start_server();
    let url = format!("http://127.0.0.1:{port}/item");

    runtime.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(data.path().join("bench.db"), Durability::Full).unwrap());
        let live_host = host(store.clone(), cache.path(), port);
        let tool = live_host.load_tool(&paths[0]).await.unwrap();

        let get = json!({"attack": "http-get", "url": url});
        // Warm up: instantiation, the first connection.
        let mut warm = live_host.new_session().await.unwrap();
        for _ in 0..5 {
            warm.call(&tool, &get).await.unwrap();
        }
        let mut http_session = live_host.new_session().await.unwrap();
        http_session.prewarm(&tool).await.unwrap();
        let started = Instant::now();
        for _ in 0..STEPS {
            http_session.call(&tool, &get).await.unwrap();
        }
        let live = started.elapsed();
        let mut echo_session = live_host.new_session().await.unwrap();
        for n in 0..STEPS {
            echo_session.call(&tool, &json!({"attack": "echo", "n": n})).await.unwrap();
        }
        let sent = count.load(Ordering::SeqCst);
        assert_eq!(sent, STEPS + 5);

        let replay_host = host(store.clone(), cache.path(), port);
        let tool = replay_host.load_tool(&paths[0]).await.unwrap();
        let (replayed, baseline, share) = rebuilds(&replay_host, &tool, http_session.id(), echo_session.id()).await;
        assert_eq!(count.load(Ordering::SeqCst), sent, "a replay reached the server");

        println!("\njournaled HTTP: {STEPS} steps, each a GET to a loopback server, SQLite synchronous=FULL\n");
        println!("| {:<58} | {:>10} | {:>10} | {:>9} |", "measurement", "total", "per step", "x live");
        println!("|{:-<60}|{:-<12}|{:-<12}|{:-<11}|", "", "", "", "");
        row("live: 100 steps with a GET each, committed (baseline)", live, live);
        row("rebuild replaying those 100 steps (median)", replayed.median, live);
        row("rebuild replaying 100 steps without HTTP (median)", baseline.median, live);
        row("replayed HTTP: 100 exchanges in all (median of differences)", share.median, live);
        let target = Duration::from_millis(1);
        let verdict = if share.median < target { "met" } else { "not met" };
        println!(
            "\nreplayed HTTP, {STEPS} exchanges: {:.2?} in all, {:.2?} per exchange, {:.4}x the live exchanges' \
             {:.2?}; target < {target:?} in all: {verdict}",
            share.median,
            share.median / STEPS as u32,
            share.median.as_secs_f64() / live.as_secs_f64(),
            live,
        );
        println!(
            "requests the server received during {} rebuilds: {} (p99: rebuild {:.2?} with HTTP, {:.2?} without, \
             difference {:.2?})",
            2 * (REBUILDS + 2),
            count.load(Ordering::SeqCst) - sent,
            replayed.p99,
            baseline.p99,
            share.p99,
        );
    });
}
