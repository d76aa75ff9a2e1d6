//! Durability benchmark: what a durable step costs, how steps scale across concurrent
//! sessions, how fast a session resumes, and what a snapshot costs per step. Each figure
//! comes with a baseline measured in the same run. Prints tables.
//!
//!     cargo bench --bench durable
//!
//! Every store here commits with fsync (`Durability::Full`) on the machine's disk. Each
//! figure is measured on SQLite and on PostgreSQL (a database created for the run on
//! `TOOLHOST_BENCH_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/postgres`, and
//! dropped after it; the Postgres column says why it is empty when no server answers).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::store::Durability;
use toolhost::{EngineConfig, Host, HostConfig, Policy, SnapshotPolicy, SqliteStore, Store, Tool};

const COMMITS: usize = 1_000;
const WARMUP: usize = 50;
const CONCURRENT_SESSIONS: usize = 100;
const STEPS_PER_SESSION: usize = 40;
const RESUMES: usize = 30;
const SNAPSHOT_BYTES: usize = 1 << 20;
const REPLAYED_STEPS: usize = 10;
const POKES: usize = 20;

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

struct Tools {
    calculator: Arc<Tool>,
    ballast: Arc<Tool>,
}

fn host(store: Arc<dyn Store>, cache: &Path, snapshots: SnapshotPolicy) -> Host {
    let engine = EngineConfig { cache_dir: Some(cache.into()), max_instances: 256, ..EngineConfig::default() };
    let config = HostConfig { engine, policy: Policy::deny_all(), snapshots, ..HostConfig::default() };
    Host::with_store(config, store).expect("host")
}

async fn load(host: &Host, paths: &[std::path::PathBuf]) -> Tools {
    Tools { calculator: host.load_tool(&paths[0]).await.unwrap(), ballast: host.load_tool(&paths[1]).await.unwrap() }
}

/// The floor a durable commit stands on: one small row per transaction, committed durably by
/// the same database with nothing of toolhost around it.
enum Floor {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client, tokio_postgres::Statement),
}

impl Floor {
    fn sqlite(dir: &Path) -> Self {
        let conn = rusqlite::Connection::open(dir.join("raw.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE raw_steps (session TEXT, seq INTEGER, body BLOB, PRIMARY KEY (session, seq))",
        )
        .unwrap();
        Self::Sqlite(conn)
    }

    async fn postgres(url: &str) -> Self {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("CREATE TABLE raw_steps (session TEXT, seq BIGINT, body BYTEA, PRIMARY KEY (session, seq))")
            .await
            .unwrap();
        let insert = client.prepare("INSERT INTO raw_steps VALUES ('s', $1, $2)").await.unwrap();
        Self::Postgres(client, insert)
    }

    async fn commit(&mut self, seq: i64) -> Duration {
        let body = [7u8; 200];
        let started = Instant::now();
        match self {
            Self::Sqlite(conn) => {
                let tx = conn.unchecked_transaction().unwrap();
                tx.execute("INSERT INTO raw_steps VALUES ('s', ?1, ?2)", rusqlite::params![seq, body]).unwrap();
                tx.commit().unwrap();
            }
            Self::Postgres(client, insert) => {
                client.batch_execute("BEGIN").await.unwrap();
                client.execute(&*insert, &[&seq, &&body[..]]).await.unwrap();
                client.batch_execute("COMMIT").await.unwrap();
            }
        }
        started.elapsed()
    }
}

/// One session calling the stateless calculator: each call is a durable step. A raw commit
/// follows each step, so both see the same disk (fsync latency drifts with whatever else the
/// machine writes). Returns (steps, raw commits).
async fn sequential_steps(host: &Host, tool: &Tool, floor: &mut Floor) -> (Stats, Stats) {
    let mut session = host.new_session().await.unwrap();
    let (mut steps, mut raws) = (Vec::with_capacity(COMMITS), Vec::with_capacity(COMMITS));
    for i in 0..COMMITS + WARMUP {
        let input = json!({ "expression": format!("{i} * 2 + 1") });
        let started = Instant::now();
        black_box(session.call(tool, &input).await.unwrap());
        let step = started.elapsed();
        let raw = floor.commit(i as i64).await;
        if i >= WARMUP {
            steps.push(step);
            raws.push(raw);
        }
    }
    (stats(steps), stats(raws))
}

/// Steps per second of `sessions` sessions stepping at once (group commit shares fsyncs).
async fn concurrent_steps(host: &Host, tool: &Arc<Tool>, sessions: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sessions {
        let (host, tool) = (host.clone(), tool.clone());
        tasks.spawn(async move {
            let mut session = host.new_session().await.unwrap();
            for i in 0..STEPS_PER_SESSION {
                session.call(&tool, &json!({ "expression": format!("{i} + 1") })).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    (sessions * STEPS_PER_SESSION) as f64 / started.elapsed().as_secs_f64()
}

/// A ballast session with a 1 MiB state: filled (snapshot taken), then `REPLAYED_STEPS`
/// pokes committed without snapshots, so a resume restores 1 MiB and replays 10 steps.
async fn prepare_resume(store: &Arc<dyn Store>, cache: &Path, paths: &[std::path::PathBuf]) -> String {
    let filling = host(store.clone(), cache, SnapshotPolicy::default());
    let tools = load(&filling, paths).await;
    let mut session = filling.new_session().await.unwrap();
    session.call(&tools.ballast, &json!({"op": "fill", "bytes": SNAPSHOT_BYTES, "seed": 42})).await.unwrap();
    let id = session.id().to_owned();
    drop(session);
    let poking = host(store.clone(), cache, SnapshotPolicy { every: u32::MAX, keep: 3 });
    let tools = load(&poking, paths).await;
    let mut session = poking.open_session(&id).await.unwrap();
    for i in 0..REPLAYED_STEPS {
        session.call(&tools.ballast, &json!({"op": "poke", "offset": i * 1000, "letter": "z"})).await.unwrap();
    }
    id
}

/// Time to bring a session's ballast instance back: open + restore + replay.
async fn resume(host: &Host, tool: &Tool, id: &str) -> Stats {
    let mut samples = Vec::with_capacity(RESUMES);
    for _ in 0..RESUMES + 3 {
        let started = Instant::now();
        let mut session = host.open_session(id).await.unwrap();
        session.prewarm(tool).await.unwrap();
        samples.push(started.elapsed());
    }
    stats(samples.split_off(3))
}

/// Stored bytes added per step by a 1 MiB state that changes by one byte per step, with a
/// snapshot after every step, all kept (pruning would hide the growth): (step record bytes,
/// new snapshot chunk bytes) per step, and the snapshot's size.
async fn bytes_per_step(store: &Arc<dyn Store>, cache: &Path, paths: &[std::path::PathBuf]) -> (f64, f64, u64) {
    let host = host(store.clone(), cache, SnapshotPolicy { every: 1, keep: u32::MAX });
    let tool = load(&host, paths).await.ballast;
    let tool = &*tool;
    let mut session = host.new_session().await.unwrap();
    session.call(tool, &json!({"op": "fill", "bytes": SNAPSHOT_BYTES, "seed": 7})).await.unwrap();
    let before = store.storage_stats(session.id()).await.unwrap();
    for i in 0..POKES {
        session.call(tool, &json!({"op": "poke", "offset": 4096 + i * 50_000, "letter": "q"})).await.unwrap();
    }
    let after = store.storage_stats(session.id()).await.unwrap();
    let snapshot_bytes = store.snapshots(session.id()).await.unwrap().last().map_or(0, |s| s.bytes);
    let per = |a: u64, b: u64| (a - b) as f64 / POKES as f64;
    (per(after.step_bytes, before.step_bytes), per(after.chunk_bytes, before.chunk_bytes), snapshot_bytes)
}

fn row(name: &str, s: &Stats, baseline: Duration) {
    let ratio = s.median.as_secs_f64() / baseline.as_secs_f64();
    println!("| {name:<52} | {:>10.2?} | {:>10.2?} | {ratio:>8.1}x |", s.median, s.p99);
}

fn header(title: &str, baseline: &str) {
    println!("\n{title}\n");
    println!("| {:<52} | {:>10} | {:>10} | {:>9} |", "measurement", "median", "p99", baseline);
    println!("|{:-<54}|{:-<12}|{:-<12}|{:-<11}|", "", "", "", "");
}

/// Everything measured on one store.
struct Figures {
    raw: Stats,
    step: Stats,
    one: f64,
    many: f64,
    resumed: Stats,
    fresh: Stats,
    step_bytes: f64,
    chunk_bytes: f64,
    snapshot_bytes: u64,
}

async fn measure(store: Arc<dyn Store>, mut floor: Floor, cache: &Path, paths: &[std::path::PathBuf]) -> Figures {
    let host = host(store.clone(), cache, SnapshotPolicy::default());
    let tools = load(&host, paths).await;

    let (step, raw) = sequential_steps(&host, &tools.calculator, &mut floor).await;
    let one = concurrent_steps(&host, &tools.calculator, 1).await;
    let many = concurrent_steps(&host, &tools.calculator, CONCURRENT_SESSIONS).await;

    let id = prepare_resume(&store, cache, paths).await;
    let resumed = resume(&host, &tools.ballast, &id).await;
    let mut fresh = Vec::with_capacity(RESUMES);
    for _ in 0..RESUMES {
        let mut session = host.new_session().await.unwrap();
        let started = Instant::now();
        session.prewarm(&tools.ballast).await.unwrap();
        fresh.push(started.elapsed());
    }
    let fresh = stats(fresh);
    let (step_bytes, chunk_bytes, snapshot_bytes) = bytes_per_step(&store, cache, paths).await;
    Figures { raw, step, one, many, resumed, fresh, step_bytes, chunk_bytes, snapshot_bytes }
}

/// A database for this run on the benchmark's Postgres server, dropped when done.
struct BenchDatabase {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl BenchDatabase {
    async fn create() -> Result<Self, String> {
        let admin_url = std::env::var("TOOLHOST_BENCH_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("no PostgreSQL at {admin_url} ({e}); set TOOLHOST_BENCH_POSTGRES"))?;
        tokio::spawn(connection);
        let name = format!("toolhost_bench_{}", std::process::id());
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(|e| e.to_string())?;
        let (scheme, rest) = admin_url.split_once("://").unwrap();
        let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
        Ok(Self { admin, url: format!("{scheme}://{authority}/{name}"), name })
    }

    async fn drop_database(self) {
        let _ = self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
    }
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["calculator", "ballast"]).expect("building the tools");
    let cache = tempfile::tempdir().unwrap();
    // On the working tree's disk, not tmpfs: fsync must mean what it means in production.
    let data = tempfile::tempdir_in(workspace.join("target")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    runtime.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(data.path().join("bench.db"), Durability::Full).unwrap());
        let sqlite = measure(store, Floor::sqlite(data.path()), cache.path(), &paths).await;
        let postgres = match BenchDatabase::create().await {
            Ok(db) => {
                let store = toolhost::store::open(&db.url).await.unwrap();
                let figures = measure(store, Floor::postgres(&db.url).await, cache.path(), &paths).await;
                db.drop_database().await;
                Ok(figures)
            }
            Err(why) => Err(why),
        };
        if let Err(why) = &postgres {
            println!("\nPostgres figures skipped: {why}");
        }
        let pg = postgres.as_ref().ok();

        header("durable steps (SQLite: WAL, synchronous=FULL; Postgres: default fsync)", "x raw");
        row("raw SQLite insert + fsync commit (baseline)", &sqlite.raw, sqlite.raw.median);
        row("SQLite: durable step, calculator call + commit", &sqlite.step, sqlite.raw.median);
        if let Some(figures) = pg {
            row("raw Postgres insert + commit (baseline)", &figures.raw, figures.raw.median);
            row("Postgres: durable step, calculator call + commit", &figures.step, figures.raw.median);
        }

        println!("\nthroughput ({STEPS_PER_SESSION} steps per session)\n");
        println!(
            "| {:<32} | {:>12} | {:>9} | {:>12} | {:>9} |",
            "sessions stepping at once", "SQLite /s", "x 1", "Postgres /s", "x SQLite"
        );
        println!("|{:-<34}|{:-<14}|{:-<11}|{:-<14}|{:-<11}|", "", "", "", "", "");
        for (label, sqlite_rate, pg_rate) in [
            ("1 (baseline)".to_owned(), sqlite.one, pg.map(|f| f.one)),
            (CONCURRENT_SESSIONS.to_string(), sqlite.many, pg.map(|f| f.many)),
        ] {
            let (pg_text, pg_ratio) = match pg_rate {
                Some(rate) => (format!("{rate:.0}"), format!("{:.2}x", rate / sqlite_rate)),
                None => ("-".to_owned(), "-".to_owned()),
            };
            println!(
                "| {label:<32} | {sqlite_rate:>12.0} | {:>8.1}x | {pg_text:>12} | {pg_ratio:>9} |",
                sqlite_rate / sqlite.one
            );
        }

        header(&format!("resume: 1 MiB snapshot + {REPLAYED_STEPS} steps to replay ({RESUMES} resumes)"), "x fresh");
        row("fresh instance, nothing to restore (baseline)", &sqlite.fresh, sqlite.fresh.median);
        row("SQLite: open + restore snapshot + replay 10 steps", &sqlite.resumed, sqlite.fresh.median);
        if let Some(figures) = pg {
            row("Postgres: open + restore snapshot + replay 10 steps", &figures.resumed, sqlite.fresh.median);
        }

        println!("\nstored bytes per step: 1 MiB state, one byte changed per step, snapshot every step\n");
        println!("| {:<52} | {:>12} | {:>9} |", "what", "bytes/step", "x state");
        println!("|{:-<54}|{:-<14}|{:-<11}|", "", "", "");
        let ratio = |b: f64| b / sqlite.snapshot_bytes as f64;
        println!("| {:<52} | {:>12} | {:>8.3}x |", "full snapshot copy (baseline)", sqlite.snapshot_bytes, 1.0);
        let mut stores = vec![("SQLite", &sqlite)];
        if let Some(figures) = pg {
            stores.push(("Postgres", figures));
        }
        for (name, figures) in stores {
            let chunks = format!("{name}: new snapshot chunks");
            let steps = format!("{name}: step record (input, output, journal)");
            println!("| {chunks:<52} | {:>12.0} | {:>8.3}x |", figures.chunk_bytes, ratio(figures.chunk_bytes));
            println!("| {steps:<52} | {:>12.0} | {:>8.3}x |", figures.step_bytes, ratio(figures.step_bytes));
        }
    });
}
