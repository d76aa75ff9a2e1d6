//! `toolhost run AGENT.toml`: the agent loop driven by a config file, so an agent needs no
//! Rust code, in this process. The run is a record like a worker's (`toolhost runs show ID`,
//! named after the file's stem) and its steps a session (`toolhost sessions show ID`). A run
//! that sleeps is woken here; one that waits for a person or an event is left waiting, to be
//! continued with `--resume` or by `toolhost worker`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use toolhost::agent::{Wait, Waiting};
use toolhost::model::LocalModelOptions;
use toolhost::run::{Run, Runs};
use toolhost::store::RunStatus;
use toolhost::{
    Agent, AgentConfig, AgentOutcome, Goal, Host, HostConfig, LocalModel, ModelRouter, ModelsConfig, Policy, Session,
    SessionError, Stop, Task,
};

use super::CliHostConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The agent file (TOML): goal, model, tools, policy
    agent: PathBuf,
    /// Continue the run stored as this session
    #[arg(long, value_name = "SESSION")]
    resume: Option<String>,
    /// Start the run as a session with this id (default: a random one)
    #[arg(long, value_name = "SESSION", conflicts_with = "resume")]
    session: Option<String>,
    /// The goal, instead of the file's (its plan is dropped then)
    #[arg(long, conflicts_with = "resume")]
    goal: Option<String>,
    /// Tool instances kept alive at once; past it the least recently used idle one is
    /// hibernated and rebuilt on its next call [default: 16]
    #[arg(long, value_name = "N")]
    live_instances: Option<u32>,
}

/// An agent file. Relative paths are relative to the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub goal: String,
    /// An optional plan (see [`toolhost::Goal::tasks`]).
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// The loop's settings; `model` is an alias of `models` (or `local` with `local_model`).
    pub agent: AgentConfig,
    /// Providers and aliases, as in the host's model configuration.
    #[serde(default)]
    pub models: ModelsConfig,
    /// Start the offline local model for this run (alias `local`), and stop it after.
    #[serde(default)]
    pub local_model: bool,
    /// Tool components (.wasm).
    pub tools: Vec<PathBuf>,
    /// The policy file granting the tools what they may use; without one, nothing is granted.
    #[serde(default)]
    pub policy: Option<PathBuf>,
}

impl AgentFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut file: AgentFile =
            toml::from_str(&text).with_context(|| format!("{} is not a valid agent file", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for tool in &mut file.tools {
            *tool = base.join(&*tool);
        }
        if let Some(policy) = &mut file.policy {
            *policy = base.join(&*policy);
        }
        Ok(file)
    }
}

/// Where the project's venv and model script are: the current folder when it is a checkout,
/// else the checkout this binary was built from.
fn local_model_options() -> LocalModelOptions {
    let here = LocalModelOptions::for_project(".");
    if here.script.exists() { here } else { LocalModelOptions::for_project(env!("CARGO_MANIFEST_DIR")) }
}

pub async fn run(config: &CliHostConfig, args: Args) -> anyhow::Result<ExitCode> {
    let file = AgentFile::load(&args.agent)?;
    let policy = match &file.policy {
        Some(path) => Policy::load(path).with_context(|| format!("loading the policy {}", path.display()))?,
        None => Policy::deny_all(),
    };
    let local_model = if file.local_model {
        let started = Instant::now();
        let model = LocalModel::start(local_model_options())
            .await
            .context("starting the local model (run scripts/setup once to install it)")?;
        println!("started the local model on {} in {:.1?}", model.base_url(), started.elapsed());
        Some(model)
    } else {
        None
    };
    let result = drive(config, &args, file, policy, local_model.as_ref()).await;
    if let Some(model) = local_model {
        model.stop();
    }
    result
}

async fn drive(
    config: &CliHostConfig,
    args: &Args,
    file: AgentFile,
    policy: Policy,
    local_model: Option<&LocalModel>,
) -> anyhow::Result<ExitCode> {
    let mut models = file.models;
    if let Some(local) = local_model {
        let local_config = local.models_config();
        models.providers.extend(local_config.providers);
        models.aliases.extend(local_config.aliases);
    }
    let router = ModelRouter::from_config(&models).context("the agent file's model configuration")?;
    let config = config.with_live_instances(args.live_instances);
    let host = config.host_with(HostConfig { policy, models: Some(Arc::new(router)), ..HostConfig::default() }).await?;
    let mut tools = Vec::new();
    for path in &file.tools {
        tools.push(host.load_tool(path).await?);
    }
    let agent = Agent::new(&host, file.agent, tools)?;
    let mut session = open_session(&host, args, &config).await?;
    let id = session.id().to_owned();
    println!("run {id} in {}", config.db_label());
    let goal = match &args.goal {
        Some(text) => Goal::new(text.clone()),
        None => Goal { text: file.goal, tasks: file.tasks },
    };
    let runs = Runs::new(host.store());
    let name = super::worker::agent_name(&args.agent)?;
    let (run, outcome) = drive_here(&runs, &name, &agent, &mut session, goal).await?;
    session.close().await?;
    println!("\n{}", outcome.stop);
    if run.status == RunStatus::Waiting {
        println!(
            "run {id} is waiting: `toolhost runs show {id}{flag}` says for what; once it has it, continue with \
             `toolhost run {} --resume {id}{flag}` or a `toolhost worker`",
            args.agent.display(),
            flag = config.db_flag()
        );
    }
    println!(
        "{} model turns, {} tool calls, {} tokens; inspect with: toolhost sessions show {id}{}",
        outcome.turns,
        outcome.tool_calls,
        outcome.tokens,
        config.db_flag()
    );
    // A run stopped by its limits or waiting is not an answer: exit 3, so scripts can tell.
    Ok(if outcome.answer().is_some() { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// The session `--resume` names, or a new one (`--session`'s id, or a random one).
async fn open_session(host: &Host, args: &Args, config: &CliHostConfig) -> anyhow::Result<Session> {
    Ok(match (&args.resume, &args.session) {
        (Some(id), _) => match host.open_session(id).await {
            Ok(session) => session,
            Err(SessionError::NotFound(_)) => anyhow::bail!("no session `{id}` in {}", config.db_label()),
            Err(e) => return Err(e.into()),
        },
        (None, Some(id)) => host.create_session(id.clone()).await?,
        (None, None) => host.new_session().await?,
    })
}

/// Drives the run in this process, printing each step, and sleeps through its timers.
async fn drive_here(
    runs: &Runs,
    name: &str,
    agent: &Agent,
    session: &mut Session,
    goal: Goal,
) -> anyhow::Result<(Run, AgentOutcome)> {
    let mut print = |event: toolhost::AgentEvent| println!("{event}");
    loop {
        let (run, outcome) = runs.drive(name, agent, session, goal.clone(), &mut print).await?;
        let Some(at) = sleeps_until(&outcome.stop) else { return Ok((run, outcome)) };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let wait = Duration::from_millis((at.max(0) as u128).saturating_sub(now) as u64);
        println!("sleeping until {} ({wait:.1?})", toolhost::agent::show_time(at));
        tokio::time::sleep(wait).await;
    }
}

/// When a run that stopped on `stop` can go on by itself: a timer or a tool's retry.
fn sleeps_until(stop: &Stop) -> Option<i64> {
    match stop {
        Stop::Waiting(Waiting { wait: wait @ (Wait::Timer { .. } | Wait::Retry { .. }), .. }) => wait.ready_at_ms(),
        _ => None,
    }
}
