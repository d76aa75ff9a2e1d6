//! Runs benchmark (issue #18): agent runs completed per second by 1, 2 and 3 workers on
//! Postgres, and how late durable timers fire. Prints tables.
//!
//!     cargo bench --bench runs
//!
//! The model is a scripted OpenAI-compatible server on a thread of its own, so the figures
//! are toolhost's: claiming, leasing, five model turns (four calculator calls and the
//! answer, ten committed steps) per run, and the row's writes. The baseline drives the same
//! runs with the agent loop alone (no run rows, no claims, no workers), as many at once as
//! one worker drives. Workers are in-process tasks, each with a host, a connection pool, a
//! `LISTEN` connection and a lease holder of its own, which is what a worker process has;
//! processes would add only their start-up, and share the machine's cores all the same.
//! Each measurement gets a database of its own on `TOOLHOST_BENCH_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped after it; without a server the
//! bench says why and prints no Postgres rows.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use serde_json::{Value, json};
use toolhost::run::{Runs, Worker, WorkerConfig};
use toolhost::store::RunStatus;
use toolhost::{Agent, AgentConfig, EngineConfig, Goal, Host, HostConfig, LeaseConfig, ModelRouter, ModelsConfig};
use toolhost::{Policy, Store, Tool};

/// Runs per throughput measurement.
const RUNS: usize = 200;
/// Runs driven at once per worker (the worker's default), and by the baseline.
const MAX_RUNS: usize = 8;
/// Timer lateness: this many runs, each sleeping this long (the measurement), and
/// again sleeping less than the runs take to fall asleep, so timers come due while runs that
/// have not started wait for a worker (what claiming due timers first is for).
const SLEEPERS: usize = 500;
const SLEEP_SECONDS: u64 = 5;
const SHORT_SLEEP_SECONDS: u64 = 1;

#[path = "support/stats.rs"]
mod support;

fn tool_call(name: &str, arguments: Value) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": "c0", "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]})
}

/// The scripted model: `steps` makes four calculator calls, then answers; `sleep N` sleeps
/// N seconds, then answers.
async fn complete(Json(request): Json<Value>) -> Json<Value> {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let goal = messages.iter().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or("");
    let results = messages.iter().filter(|m| m["role"] == "tool").count();
    let sleep = goal.split_once("sleep ").and_then(|(_, n)| n.split_whitespace().next()?.parse::<u64>().ok());
    let message = match (sleep, results) {
        (Some(seconds), 0) => tool_call("sleep", json!({"seconds": seconds})),
        (None, n) if n < 4 => tool_call("calculator", json!({"expression": format!("{n}+1")})),
        _ => json!({"role": "assistant", "content": "done"}),
    };
    let finish = if message["tool_calls"].is_array() { "tool_calls" } else { "stop" };
    Json(json!({
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5},
    }))
}

fn start_model() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(complete));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}/v1", rx.recv().unwrap())
}

/// What every host of the bench shares.
struct Setup {
    model_url: String,
    cache: tempfile::TempDir,
    calculator: std::path::PathBuf,
}

impl Setup {
    /// A host on `store` with the scripted model (leasing sessions when `leases`) and the agent.
    async fn agent(&self, store: Arc<dyn Store>, leases: bool) -> (Host, Arc<Agent>) {
        let models = format!(
            "[providers.fake]\nkind = \"openai\"\nbase_url = \"{}\"\n\n[aliases.fake]\nprovider = \"fake\"\nmodel = \"scripted\"\n",
            self.model_url
        );
        let router = ModelRouter::from_config(&ModelsConfig::from_toml(&models, "bench").unwrap()).unwrap();
        let engine =
            EngineConfig { cache_dir: Some(self.cache.path().into()), max_instances: 64, ..EngineConfig::default() };
        let config = HostConfig {
            engine,
            policy: Policy::from_toml("[tools.calculator]\n", None).unwrap(),
            models: Some(Arc::new(router)),
            leases: leases.then(|| LeaseConfig::new(Duration::from_secs(10))),
            ..HostConfig::default()
        };
        let host = Host::with_store(config, store).unwrap();
        let calculator: Arc<Tool> = host.load_tool(&self.calculator).await.unwrap();
        let config = AgentConfig { waits: true, max_turns: 8, ..AgentConfig::new("fake") };
        let agent = Agent::new(&host, config, vec![calculator]).unwrap();
        (host, Arc::new(agent))
    }
}

/// A database for one measurement on the benchmark's Postgres server, dropped when done.
struct BenchDatabase {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl BenchDatabase {
    async fn create(tag: &str) -> Result<Self, String> {
        let admin_url = std::env::var("TOOLHOST_BENCH_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("no PostgreSQL at {admin_url} ({e}); set TOOLHOST_BENCH_POSTGRES"))?;
        tokio::spawn(connection);
        let name = format!("toolhost_bench_runs_{}_{tag}", std::process::id());
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(|e| e.to_string())?;
        let (scheme, rest) = admin_url.split_once("://").unwrap();
        let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
        Ok(Self { admin, url: format!("{scheme}://{authority}/{name}"), name })
    }

    async fn open(&self) -> Arc<dyn Store> {
        toolhost::store::open(&self.url).await.unwrap()
    }

    async fn drop_database(self) {
        let _ = self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
    }
}

/// Runs per second of the agent loop alone: `RUNS` runs, `MAX_RUNS` at once.
async fn baseline(setup: &Setup, db: &BenchDatabase) -> f64 {
    let (host, agent) = setup.agent(db.open().await, false).await;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let drivers: Vec<_> = (0..MAX_RUNS)
        .map(|_| {
            let (host, agent, next) = (host.clone(), agent.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < RUNS {
                    let mut session = host.new_session().await.unwrap();
                    let outcome = agent.start(&mut session, Goal::new("steps"), &mut |_| {}).await.unwrap();
                    assert_eq!(outcome.answer(), Some("done"));
                    session.close().await.unwrap();
                }
            })
        })
        .collect();
    for driver in drivers {
        driver.await.unwrap();
    }
    RUNS as f64 / started.elapsed().as_secs_f64()
}

/// Starts `count` workers on the database, each with a store of its own.
async fn start_workers(
    setup: &Setup,
    db: &BenchDatabase,
    count: usize,
) -> Vec<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let mut workers = Vec::new();
    for _ in 0..count {
        let (host, agent) = setup.agent(db.open().await, true).await;
        let config = WorkerConfig { max_runs: MAX_RUNS, ..WorkerConfig::default() };
        let worker = Arc::new(Worker::new(config).with_agent("bench", host, agent));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            worker
                .run_until(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        workers.push((stop, task));
    }
    workers
}

async fn stop_workers(workers: Vec<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>) {
    for (stop, task) in workers {
        drop(stop);
        task.await.unwrap();
    }
}

/// Creates `count` runs towards `goal`; their ids.
async fn create_runs(setup: &Setup, store: &Arc<dyn Store>, count: usize, goal: &str) -> Runs {
    let (host, _) = setup.agent(store.clone(), false).await;
    let runs = Runs::new(store.clone());
    for i in 0..count {
        runs.create(&host, Some(format!("run-{i}")), "bench", Goal::new(goal)).await.unwrap();
    }
    runs
}

/// Waits until every run is done (none may fail).
async fn all_done(runs: &Runs, count: usize) {
    loop {
        let listed = runs.list(None).await.unwrap();
        let ended: Vec<_> = listed.iter().filter(|r| r.status.is_final()).collect();
        if let Some(bad) = ended.iter().find(|r| r.status != RunStatus::Done) {
            panic!("run {} ended {}: {:?}", bad.id, bad.status, bad.body.outcome);
        }
        if ended.len() == count {
            return;
        }
        // Seldom enough not to load the store the workers commit to.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs per second `workers` workers complete: `RUNS` runs created first, timed from the
/// workers' start to the last run done.
async fn throughput(setup: &Setup, db: &BenchDatabase, workers: usize) -> f64 {
    let store = db.open().await;
    let runs = create_runs(setup, &store, RUNS, "steps").await;
    let started = Instant::now();
    let fleet = start_workers(setup, db, workers).await;
    all_done(&runs, RUNS).await;
    let rate = RUNS as f64 / started.elapsed().as_secs_f64();
    stop_workers(fleet).await;
    rate
}

struct Lateness {
    /// From the first run's `agent.wait` step to the last one's: how long the first drives
    /// (goal, model turn, wait) of all the runs took.
    fell_asleep_over: Duration,
    /// From each timer's due time to its `agent.resolved` step's time.
    woke: Vec<Duration>,
    /// From each timer's due time to the commit of the run's final answer.
    done: Vec<Duration>,
}

/// `SLEEPERS` runs sleeping `seconds` each, driven by 3 workers.
async fn lateness(setup: &Setup, db: &BenchDatabase, seconds: u64) -> Lateness {
    let store = db.open().await;
    let runs = create_runs(setup, &store, SLEEPERS, &format!("sleep {seconds}")).await;
    let fleet = start_workers(setup, db, 3).await;
    all_done(&runs, SLEEPERS).await;
    stop_workers(fleet).await;
    let (mut woke, mut done, mut asleep) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..SLEEPERS {
        let steps = store.steps(&format!("run-{i}"), None, 0).await.unwrap();
        let field = |tool: &str, path: [&str; 2]| {
            let step = steps.iter().find(|s| s.tool == tool).unwrap();
            serde_json::from_str::<Value>(&step.input).unwrap()[path[0]][path[1]].as_i64().unwrap()
        };
        let due = field("agent.wait", ["wait", "until_ms"]);
        asleep.push(steps.iter().find(|s| s.tool == "agent.wait").unwrap().committed_at_ms);
        let fired = field("agent.resolved", ["resolution", "at_ms"]);
        let answered = steps.last().unwrap().committed_at_ms;
        let late = |at: i64| Duration::from_millis(at.saturating_sub(due).max(0) as u64);
        woke.push(late(fired));
        done.push(late(answered));
    }
    let spread = asleep.iter().max().unwrap() - asleep.iter().min().unwrap();
    Lateness { fell_asleep_over: Duration::from_millis(spread.max(0) as u64), woke, done }
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / samples.len().max(1) as u32
}

async fn on_postgres<T>(tag: &str, measure: impl AsyncFnOnce(&BenchDatabase) -> T) -> Result<T, String> {
    let db = BenchDatabase::create(tag).await?;
    let value = measure(&db).await;
    db.drop_database().await;
    Ok(value)
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["calculator"]).expect("building the calculator");
    let setup = Setup { model_url: start_model(), cache: tempfile::tempdir().unwrap(), calculator: paths[0].clone() };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!("\nagent runs completed per second on Postgres ({RUNS} runs of 5 model turns, 10 steps each)\n");
        println!("| {:<58} | {:>10} | {:>11} |", "driven by", "runs/s", "x baseline");
        println!("|{:-<60}|{:-<12}|{:-<13}|", "", "", "");
        let base = match on_postgres("base", async |db| baseline(&setup, db).await).await {
            Ok(rate) => rate,
            Err(why) => {
                println!("\nPostgres rows skipped: {why}");
                return;
            }
        };
        let label = format!("the agent loop alone, {MAX_RUNS} at once (baseline)");
        println!("| {label:<58} | {base:>10.1} | {:>10.2}x |", 1.0);
        for workers in 1..=3 {
            let tag = format!("w{workers}");
            let rate = match on_postgres(&tag, async |db| throughput(&setup, db, workers).await).await {
                Ok(rate) => rate,
                Err(why) => {
                    println!("| {:<58} | skipped: {why}", format!("{workers} workers"));
                    continue;
                }
            };
            let label =
                format!("{workers} worker{} ({MAX_RUNS} runs at once each)", if workers > 1 { "s" } else { "" });
            println!("| {label:<58} | {rate:>10.1} | {:>10.2}x |", rate / base);
        }

        println!(
            "\ntimer lateness: {SLEEPERS} runs sleeping, 3 workers; each run's lateness from its own due time \
             (anchor: Golem, 500 parallel 10 s sleeps ~0.14 s late on average)\n"
        );
        println!("| {:<56} | {:>9} | {:>9} | {:>9} |", "late by", "mean", "p50", "p99");
        println!("|{:-<58}|{:-<11}|{:-<11}|{:-<11}|", "", "", "", "");
        let mut spreads = Vec::new();
        for seconds in [SLEEP_SECONDS, SHORT_SLEEP_SECONDS] {
            let late =
                match on_postgres(&format!("timers{seconds}"), async |db| lateness(&setup, db, seconds).await).await {
                    Ok(late) => late,
                    Err(why) => {
                        println!("Postgres rows skipped: {why}");
                        return;
                    }
                };
            for (what, samples) in [("wake (agent.resolved step)", late.woke), ("final answer committed", late.done)] {
                let m = mean(&samples);
                let s = support::stats(samples);
                let label = format!("{seconds} s sleeps: the {what}");
                println!("| {label:<56} | {m:>9.2?} | {:>9.2?} | {:>9.2?} |", s.median, s.p99);
            }
            spreads.push(format!("{seconds} s sleeps: {:.2?}", late.fell_asleep_over));
        }
        println!(
            "\nthe runs fell asleep (their first drives: goal, model turn, wait) over {}; a timer that comes due \
             while runs that have not started wait for a worker is claimed before them",
            spreads.join(", ")
        );
    });
}
