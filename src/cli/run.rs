//! `toolhost run AGENT.toml`: the agent loop driven by a config file, so an agent needs no
//! Rust code. The run is stored like any session: `toolhost sessions show ID` shows it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Deserialize;
use toolhost::model::LocalModelOptions;
use toolhost::{
    Agent, AgentConfig, Goal, HostConfig, LocalModel, ModelRouter, ModelsConfig, Policy, SessionError, Task,
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
    let mut session = match (&args.resume, &args.session) {
        (Some(id), _) => match host.open_session(id).await {
            Ok(session) => session,
            Err(SessionError::NotFound(_)) => anyhow::bail!("no session `{id}` in {}", config.db_label()),
            Err(e) => return Err(e.into()),
        },
        (None, Some(id)) => host.create_session(id.clone()).await?,
        (None, None) => host.new_session().await?,
    };
    let id = session.id().to_owned();
    println!("session {id} in {}", config.db_label());
    let mut print = |event: toolhost::AgentEvent| println!("{event}");
    let outcome = if args.resume.is_some() {
        agent.resume(&mut session, &mut print).await?
    } else {
        let goal = Goal { text: file.goal, tasks: file.tasks };
        agent.start(&mut session, goal, &mut print).await?
    };
    println!("\n{}", outcome.stop);
    println!(
        "{} model turns, {} tool calls, {} tokens; inspect with: toolhost sessions show {id}{}",
        outcome.turns,
        outcome.tool_calls,
        outcome.tokens,
        config.db_flag()
    );
    // A run stopped by its limits is not an answer: exit 3, so scripts can tell.
    Ok(if outcome.answer().is_some() { ExitCode::SUCCESS } else { ExitCode::from(3) })
}
