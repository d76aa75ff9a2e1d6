//! `toolhost` subcommands. Each parses its arguments, drives the library and renders the
//! result; none holds logic the library lacks.

mod build;
mod call;
mod inspect;
mod model;
mod new;
mod run;
mod runs;
mod serve;
mod sessions;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use anyhow::Context;
use toolhost::{EngineConfig, Host, HostConfig, LeaseConfig, Policy, StoreUrl};

#[derive(Parser)]
#[command(name = "toolhost", version, about = "Run AI-agent tools as sandboxed WebAssembly components")]
struct Cli {
    /// Compiled-component cache folder [default: the user cache folder]
    #[arg(long, global = true, env = "TOOLHOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile every tool from scratch, without reading or writing the cache
    #[arg(long, global = true)]
    no_cache: bool,

    /// Session database (SQLite) [default: memory for `call`, .toolhost/sessions.db for `sessions`, `serve` and `run`]
    #[arg(long, global = true, env = "TOOLHOST_DB", conflicts_with = "store")]
    db: Option<PathBuf>,

    /// Session store URL: sqlite://PATH, postgres://USER@HOST:PORT/DB (hosts sharing a
    /// Postgres store lease the sessions they run) or memory: (gone at exit). Replaces --db
    #[arg(long, global = true, env = "TOOLHOST_STORE")]
    store: Option<String>,

    /// More log output (-v: info, -vv: debug, -vvv: trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a tool project (Rust, Python or TypeScript/JavaScript) into a component; prints its path
    Build(build::Args),
    /// Write a new tool project (Rust, Python or TypeScript) with a test
    New(new::Args),
    /// Show what a tool is and what it asks for
    Inspect(inspect::Args),
    /// Call a tool as one step of a session and print its JSON output
    Call(call::Args),
    /// List, show, fork and delete stored sessions
    Sessions(sessions::Args),
    /// Run an agent described by a TOML file (goal, model, tools, policy) as a stored session
    Run(run::Args),
    /// Start, list, show, approve, deny, signal and cancel long-running agent runs
    Runs(runs::Args),
    /// Claim runs from the store and drive them (any number of workers, on any hosts)
    Worker(worker::Args),
    /// Serve tools over MCP (stdio or streamable HTTP), each call a durable session step
    Serve(serve::Args),
    /// Serve the offline local model; chat with a configured model alias
    Model(model::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let store = match (&cli.command, cli.store, cli.db) {
            (_, Some(url), _) => Some(url.parse::<StoreUrl>()?),
            (_, None, Some(path)) => Some(StoreUrl::Sqlite(path)),
            (
                Command::Sessions(_) | Command::Serve(_) | Command::Run(_) | Command::Runs(_) | Command::Worker(_),
                None,
                None,
            ) => Some(StoreUrl::Sqlite(PathBuf::from(".toolhost/sessions.db"))),
            (_, None, None) => None,
        };
        let config = cli_host_config(cli.cache_dir, cli.no_cache, store);
        match cli.command {
            Command::Build(args) => build::run(args),
            Command::New(args) => new::run(args),
            Command::Inspect(args) => inspect::run(&config, args).await,
            Command::Call(args) => call::run(&config, args).await,
            Command::Sessions(args) => sessions::run(&config, args).await,
            Command::Run(args) => run::run(&config, args).await,
            Command::Runs(args) => runs::run(&config, args).await,
            Command::Worker(args) => worker::run(&config, args).await,
            Command::Serve(args) => serve::run(&config, args).await,
            Command::Model(args) => model::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

fn fail(error: anyhow::Error) -> ExitCode {
    // `chain`, not `{:#}`: it also drops a cause a message already ends with.
    eprintln!("error: {}", toolhost::error::chain(error.as_ref()));
    ExitCode::FAILURE
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Engine and store settings shared by the subcommands; each adds its own policy.
struct CliHostConfig {
    engine: EngineConfig,
    store: Option<StoreUrl>,
    /// The live-instance budget (`--live-instances`); `None`: the engine's `max_instances`.
    live_instances: Option<u32>,
}

fn cli_host_config(cache_dir: Option<PathBuf>, no_cache: bool, store: Option<StoreUrl>) -> CliHostConfig {
    let cache_dir = if no_cache { None } else { cache_dir.or_else(EngineConfig::default_cache_dir) };
    // One-shot commands need few instance slots; a small pool starts faster.
    CliHostConfig {
        engine: EngineConfig { cache_dir, max_instances: 16, ..EngineConfig::default() },
        store,
        live_instances: None,
    }
}

impl CliHostConfig {
    /// This configuration with a budget of `live` instances (`--live-instances`), the
    /// engine's pool sized to hold them.
    fn with_live_instances(&self, live: Option<u32>) -> Self {
        let mut engine = self.engine.clone();
        if let Some(live) = live {
            engine.max_instances = engine.max_instances.max(live);
        }
        Self { engine, store: self.store.clone(), live_instances: live.or(self.live_instances) }
    }

    async fn host(&self, policy: Policy) -> anyhow::Result<Host> {
        self.host_with(HostConfig { policy, ..HostConfig::default() }).await
    }

    async fn host_with_models(
        &self,
        policy: Policy,
        models: Option<Arc<dyn toolhost::ModelProvider>>,
    ) -> anyhow::Result<Host> {
        self.host_with(HostConfig { policy, models, ..HostConfig::default() }).await
    }

    /// A host with `config`'s policy and models, and this command line's engine and store.
    async fn host_with(&self, config: HostConfig) -> anyhow::Result<Host> {
        let mut config = HostConfig { engine: self.engine.clone(), ..config };
        config.instances.live = self.live_instances;
        Ok(match &self.store {
            Some(url) => {
                // A shared store may have other hosts on it: lease the sessions this one runs.
                if matches!(url, StoreUrl::Postgres(_)) {
                    config.leases = Some(LeaseConfig::default());
                }
                let store = url.open().await.with_context(|| format!("opening the session store {url}"))?;
                Host::with_store(config, store)?
            }
            None => Host::new(config)?,
        })
    }

    /// The `--store` flag that names this store again (empty for the default).
    fn db_flag(&self) -> String {
        match &self.store {
            Some(StoreUrl::Sqlite(path)) if path == Path::new(".toolhost/sessions.db") => String::new(),
            Some(url) => format!(" --store {url}"),
            None => String::new(),
        }
    }

    fn db_label(&self) -> String {
        self.store.as_ref().map_or("memory (this process only)".into(), ToString::to_string)
    }
}
