//! Policy benchmark: what grants and denials cost. Instantiation with a full set of grants
//! (preopens, environment, HTTP allowlist) and with ungranted requests (each recorded in
//! the audit trail) against a tool granted nothing; a denied state call (one audit write)
//! against a granted one; and loading the example policy file. Prints a table.
//!
//!     cargo bench --bench policy

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::{EngineConfig, Host, HostConfig, Policy, Tool};

const ITERATIONS: usize = 1_000;
const WARMUP: usize = 100;

#[path = "support/stats.rs"]
mod support;

use support::{Stats, stats};

async fn measure<F, Fut>(mut op: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..ITERATIONS + WARMUP {
        let elapsed = op().await;
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    stats(samples)
}

fn host(policy: Policy, cache_dir: &Path) -> Host {
    let engine = EngineConfig { cache_dir: Some(cache_dir.into()), max_instances: 64, ..EngineConfig::default() };
    Host::new(HostConfig { engine, policy, ..HostConfig::default() }).unwrap()
}

async fn instantiation(host: &Host, tool: &Tool) -> Stats {
    measure(|| async {
        let mut session = host.new_session().await.unwrap();
        let started = Instant::now();
        session.prewarm(tool).await.unwrap();
        let elapsed = started.elapsed();
        drop(black_box(session));
        elapsed
    })
    .await
}

fn full_policy(sandbox: &Path) -> Policy {
    std::fs::create_dir_all(sandbox.join("ro")).unwrap();
    std::fs::create_dir_all(sandbox.join("rw")).unwrap();
    let text = r#"
[tools.hostile.state]
namespaces = { scratch = "read-write" }
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
allow = ["127.0.0.1"]
[tools.hostile.env]
GIVEN = "value"
HOST_SECRET = "not really"
PASSED = { from_host = "PATH" }
"#;
    std::fs::write(sandbox.join("policy.toml"), text).unwrap();
    Policy::load(sandbox.join("policy.toml")).unwrap()
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["calculator", "hostile"]).expect("building the tools");
    let cache = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let (instantiations, calls, parse) = runtime.block_on(async {
        let nothing = host(Policy::deny_all(), cache.path());
        let calculator = nothing.load_tool(&paths[0]).await.unwrap();
        let full = host(full_policy(sandbox.path()), cache.path());
        let hostile_full = full.load_tool(&paths[1]).await.unwrap();
        assert!(hostile_full.ungranted().is_empty());
        let partial = host(Policy::grant_requested(), cache.path());
        let hostile_partial = partial.load_tool(&paths[1]).await.unwrap();
        let audited_at_start =
            hostile_partial.ungranted().iter().filter(|r| matches!(r.capability, "env" | "filesystem")).count();

        let baseline = instantiation(&nothing, &calculator).await;
        let granted = instantiation(&full, &hostile_full).await;
        let ungranted = instantiation(&partial, &hostile_partial).await;

        let mut session = full.new_session().await.unwrap();
        let allowed_input = json!({"attack": "state-get", "namespace": "scratch", "key": "k"});
        let denied_input = json!({"attack": "state-get", "namespace": "other", "key": "k"});
        let mut allowed = Vec::with_capacity(ITERATIONS);
        let mut denied = Vec::with_capacity(ITERATIONS);
        for i in 0..ITERATIONS + WARMUP {
            let started = Instant::now();
            black_box(session.call(&hostile_full, &allowed_input).await.unwrap());
            let granted_call = started.elapsed();
            let started = Instant::now();
            black_box(session.call(&hostile_full, &denied_input).await.unwrap_err());
            let denied_call = started.elapsed();
            if i >= WARMUP {
                allowed.push(granted_call);
                denied.push(denied_call);
            }
        }
        let (allowed, denied) = (stats(allowed), stats(denied));

        let example = workspace.join("examples/policy.toml");
        let parse = measure(|| async {
            let started = Instant::now();
            black_box(Policy::load(&example).unwrap());
            started.elapsed()
        })
        .await;
        (
            vec![
                ("instance, tool granted nothing (baseline)".to_owned(), baseline),
                ("instance, 2 preopens + 3 env vars + allowlist".to_owned(), granted),
                (format!("instance, {audited_at_start} ungranted requests audited"), ungranted),
            ],
            vec![
                ("state get, granted (baseline)".to_owned(), allowed),
                ("state get, denied + audit write".to_owned(), denied),
            ],
            parse,
        )
    });

    println!("\ntoolhost policy benchmark ({ITERATIONS} iterations per row)\n");
    for rows in [&instantiations, &calls] {
        let baseline = rows[0].1.median.as_secs_f64();
        println!("| {:<46} | {:>10} | {:>10} | {:>10} |", "measurement", "median", "p99", "x baseline");
        println!("|{:-<48}|{:-<12}|{:-<12}|{:-<12}|", "", "", "", "");
        for (name, s) in rows.iter() {
            let ratio = s.median.as_secs_f64() / baseline;
            println!("| {name:<46} | {:>10.2?} | {:>10.2?} | {ratio:>9.1}x |", s.median, s.p99);
        }
        println!();
    }
    println!("loading examples/policy.toml (read, parse, check): median {:.2?}, p99 {:.2?}", parse.median, parse.p99);
}
