//! `toolhost worker --agent AGENT.toml ...`: claims runs of those agents from the store and
//! drives them, until SIGTERM or Ctrl-C (then it drains: the runs in flight stop before
//! their next step and are handed back).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use toolhost::run::{Worker, WorkerConfig};
use toolhost::{Agent, Host, HostConfig, LeaseConfig, ModelRouter, Policy, StoreUrl};

use super::CliHostConfig;
use super::run::AgentFile;

#[derive(clap::Args)]
pub struct Args {
    /// Agent files whose runs this worker drives (a run names its agent by the file's stem)
    #[arg(long = "agent", value_name = "AGENT.toml", required = true)]
    agents: Vec<PathBuf>,
    /// Runs driven at once
    #[arg(long, default_value_t = 8)]
    max_runs: usize,
    /// Session lease TTL: how long a killed worker's runs wait before another takes them
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    lease_ttl_ms: u64,
    /// The longest an idle worker waits before looking again (a run changed on this store
    /// wakes it sooner on Postgres)
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    poll_ms: u64,
}

/// The name runs of the agent in `path` carry: the file's stem.
pub fn agent_name(path: &Path) -> anyhow::Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("cannot name an agent after {}", path.display()))
}

pub async fn run(config: &CliHostConfig, args: Args) -> anyhow::Result<ExitCode> {
    let url = config.store.clone().unwrap_or_else(|| StoreUrl::Sqlite(PathBuf::from(".toolhost/sessions.db")));
    let store = url.open().await.with_context(|| format!("opening the session store {url}"))?;
    let ttl = Duration::from_millis(args.lease_ttl_ms.max(100));
    let leases = LeaseConfig::new(ttl);
    let worker_config = WorkerConfig {
        max_runs: args.max_runs,
        poll: Duration::from_millis(args.poll_ms.max(10)),
        ..WorkerConfig::default()
    };
    let mut worker = Worker::new(worker_config);
    for path in &args.agents {
        let (name, host, agent) = load_agent(config, path, store.clone(), &leases).await?;
        worker = worker.with_agent(name, host, Arc::new(agent));
    }
    eprintln!("worker {} on {url}: {} runs at most", leases.holder, args.max_runs);
    let stats = Arc::new(worker).run_until(shutdown_signal()).await?;
    eprintln!(
        "worker stopped: {} drives, {} runs ended, {} suspended, {} handed back, {} errors",
        stats.drives, stats.ended, stats.suspended, stats.released, stats.errors
    );
    Ok(ExitCode::SUCCESS)
}

/// The agent in `path` (named after the file), on a host of its own over `store` that
/// leases the sessions it runs with `leases`, as a worker needs.
pub async fn load_agent(
    config: &CliHostConfig,
    path: &Path,
    store: Arc<dyn toolhost::Store>,
    leases: &LeaseConfig,
) -> anyhow::Result<(String, Host, Agent)> {
    let name = agent_name(path)?;
    let file = AgentFile::load(path)?;
    if file.local_model {
        anyhow::bail!("{}: a worker does not start the local model; serve it and name it in [models]", path.display());
    }
    let policy = match &file.policy {
        Some(p) => Policy::load(p).with_context(|| format!("loading the policy {}", p.display()))?,
        None => Policy::deny_all(),
    };
    let router = ModelRouter::from_config(&file.models).context("the agent file's model configuration")?;
    let mut host_config = HostConfig {
        engine: config.engine.clone(),
        policy,
        models: Some(Arc::new(router)),
        leases: Some(leases.clone()),
        ..HostConfig::default()
    };
    host_config.instances.live = config.live_instances;
    let host = Host::with_store(host_config, store)?;
    let mut tools = Vec::new();
    for tool in &file.tools {
        tools.push(host.load_tool(tool).await?);
    }
    let agent = Agent::new(&host, file.agent, tools)?;
    Ok((name, host, agent))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
