use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use toolhost::Policy;
use toolhost::mcp::{HttpOptions, McpAgent, McpLimits, McpServer};
use toolhost::run::{Worker, WorkerConfig};

use super::CliHostConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Tool components (.wasm) or folders of them; repeat or separate with commas
    #[arg(long, required_unless_present = "agents", value_delimiter = ',')]
    tools: Vec<PathBuf>,
    /// Also serve this agent (an agent file, as `toolhost worker` takes) as a tool whose call
    /// starts a durable run of it, driven by a worker in this process (and by any
    /// `toolhost worker` on the same store); repeat for more
    #[arg(long = "agent", value_name = "AGENT.toml")]
    agents: Vec<PathBuf>,
    /// Runs the in-process worker drives at once (with --agent)
    #[arg(long, default_value_t = 8)]
    max_runs: usize,
    /// The policy file (TOML, see examples/policy.toml) that grants the tools their
    /// capabilities; without it and without --grant-requested every tool is granted nothing
    #[arg(long, env = "TOOLHOST_POLICY", conflicts_with = "grant_requested")]
    policy: Option<PathBuf>,
    /// Grant every tool what it requests (development and trusted tools only)
    #[arg(long)]
    grant_requested: bool,
    /// Serve one client on stdin/stdout (the default)
    #[arg(long, conflicts_with = "http")]
    stdio: bool,
    /// Serve streamable HTTP on this address (e.g. 127.0.0.1:8080; port 0 picks one)
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// HTTP endpoint path
    #[arg(long, default_value = "/mcp")]
    path: String,
    /// Require `Authorization: Bearer <token>` on every HTTP request
    #[arg(long, env = "TOOLHOST_MCP_TOKEN", hide_env_values = true)]
    bearer_token: Option<String>,
    /// Accept this `Host` (besides loopback names); needed when binding a public address
    #[arg(long = "allow-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Accept requests from this browser origin (besides loopback), e.g. https://app.example.com
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Largest JSON-RPC message accepted (HTTP body or stdio line), in bytes
    #[arg(long, default_value_t = McpLimits::default().max_message_bytes)]
    max_message_bytes: usize,
    /// HTTP requests handled at once; more are answered 503
    #[arg(long, default_value_t = HttpOptions::default().max_concurrent_requests)]
    max_concurrent_requests: usize,
    /// Tool calls running at once; more wait
    #[arg(long, default_value_t = McpLimits::default().max_concurrent_calls)]
    max_concurrent_calls: usize,
    /// Sessions kept in memory; idle ones beyond this are reopened from the database on use
    #[arg(long, default_value_t = McpLimits::default().max_live_sessions)]
    max_live_sessions: usize,
    /// Close sessions unused for this many seconds (0: never), releasing their leases so
    /// another server on a shared store can serve their handles
    #[arg(long, default_value_t = 300)]
    idle_session_secs: u64,
    /// A call from a client that takes tasks (MCP 2026-07-28 Tasks extension) still running
    /// after this many milliseconds becomes a task the client polls (0: never)
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    task_after_ms: u64,
    /// How long a task's server holds it without renewing; a task whose server died is
    /// taken over by the first server (or poll) that looks after this
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    task_lease_ms: u64,
    /// Tasks this server runs at once; past it a long call answers when it ends instead of
    /// becoming a task, and an agent's call is refused (`too-many-tasks`)
    #[arg(long, value_name = "N", default_value_t = McpLimits::default().max_working_tasks)]
    max_working_tasks: usize,
    /// How long a task is kept after it ended, for its client to read (its `ttlMs`);
    /// `sessions prune` and --prune-older-than then remove it
    #[arg(long, value_name = "SECS", default_value_t = 24 * 3600)]
    task_ttl_secs: u64,
    /// Tool instances kept alive across all sessions; past it the least recently used idle
    /// one is hibernated (its session stays open and rebuilds on its next call)
    /// [default: enough for every live session]
    #[arg(long, value_name = "N")]
    live_instances: Option<u32>,
    /// Retention: every hour (or every DURATION/4, if sooner), delete the sessions that
    /// ended DURATION ago, as `sessions prune --older-than` does (e.g. `30d`)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    prune_older_than: Option<std::time::Duration>,
}

/// The .wasm files named by `paths`: files as given, folders' `*.wasm` in name order.
fn tool_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading the tool folder {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "wasm"))
                .collect();
            anyhow::ensure!(!found.is_empty(), "the tool folder {} has no .wasm files", path.display());
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

pub async fn run(config: &CliHostConfig, args: Args) -> anyhow::Result<ExitCode> {
    let policy = match (&args.policy, args.grant_requested) {
        (Some(path), _) => Policy::load(path)?,
        (None, true) => Policy::grant_requested(),
        (None, false) => {
            tracing::warn!("no --policy or --grant-requested: tools are granted nothing");
            Policy::deny_all()
        }
    };
    let limits = McpLimits {
        max_concurrent_calls: args.max_concurrent_calls,
        max_live_sessions: args.max_live_sessions,
        max_message_bytes: args.max_message_bytes,
        idle_session_timeout: (args.idle_session_secs > 0)
            .then(|| std::time::Duration::from_secs(args.idle_session_secs)),
        task_after: (args.task_after_ms > 0).then(|| std::time::Duration::from_millis(args.task_after_ms)),
        task_lease: std::time::Duration::from_millis(args.task_lease_ms.max(300)),
        task_ttl: std::time::Duration::from_secs(args.task_ttl_secs),
        max_working_tasks: args.max_working_tasks,
    };
    let files = tool_files(&args.tools)?;
    // Each live session holds an instance per tool it used; leave room for them all.
    let mut config = config.with_live_instances(args.live_instances);
    if args.live_instances.is_none() {
        let wanted = (limits.max_live_sessions + limits.max_concurrent_calls) * files.len() + 8;
        config.engine.max_instances = config.engine.max_instances.max(u32::try_from(wanted).unwrap_or(u32::MAX));
    }
    let host = config.host(policy).await?;
    let mut tools = Vec::with_capacity(files.len());
    for file in &files {
        tools.push(host.load_tool(file).await?);
    }
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    host.policy().check_loaded(&names)?;
    if let Some(older_than) = args.prune_older_than {
        let every = (older_than / 4).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(3600));
        host.spawn_pruning(older_than, every);
    }
    let (agents, worker) = agents(&config, &args.agents, &host, args.max_runs).await?;
    let server = McpServer::new(host, tools, limits)?.with_agents(agents)?;
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = worker.map(|w| {
        tokio::spawn(Arc::new(w).run_until(async move {
            let _ = worker_stopped.await;
        }))
    });

    match args.http {
        None => {
            tracing::info!(db = %config.db_label(), "serving MCP on stdio");
            server.serve_stdio().await?;
        }
        Some(addr) => {
            let options = HttpOptions {
                addr,
                path: args.path,
                allowed_hosts: args.allowed_hosts,
                allowed_origins: args.allowed_origins,
                bearer_token: args.bearer_token.filter(|t| !t.is_empty()),
                max_concurrent_requests: args.max_concurrent_requests,
            };
            if !addr.ip().is_loopback() && options.bearer_token.is_none() {
                tracing::warn!(%addr, "serving a non-loopback address without --bearer-token");
            }
            let http = server.serve_http(options).await?;
            // Tests and scripts read this line for the address (port 0 picks one).
            eprintln!("toolhost: serving MCP at {} (sessions in {})", http.url(), config.db_label());
            let stop = http.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                stop.cancel();
            });
            http.wait().await?;
        }
    }
    // Drains the worker: runs in flight stop before their next step and are handed back.
    drop(stop_worker);
    if let Some(worker) = worker {
        worker.await.context("the worker failed")??;
    }
    Ok(ExitCode::SUCCESS)
}

/// The agents `paths` name, each as an MCP tool, and the worker that drives their runs.
async fn agents(
    config: &CliHostConfig,
    paths: &[PathBuf],
    host: &toolhost::Host,
    max_runs: usize,
) -> anyhow::Result<(Vec<McpAgent>, Option<Worker>)> {
    if paths.is_empty() {
        return Ok((Vec::new(), None));
    }
    let leases = toolhost::LeaseConfig::default();
    let mut worker = Worker::new(WorkerConfig { max_runs, ..WorkerConfig::default() });
    let mut agents = Vec::new();
    for path in paths {
        let (name, agent_host, agent) = super::worker::load_agent(config, path, host.store(), &leases).await?;
        let description = format!("The `{name}` agent ({}).", path.display());
        agents.push(McpAgent { name: name.clone(), description, host: agent_host.clone() });
        worker = worker.with_agent(name, agent_host, Arc::new(agent));
    }
    Ok((agents, Some(worker)))
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
