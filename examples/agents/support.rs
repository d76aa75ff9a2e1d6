//! What the example agents share: build the tools, start the local model, open the session
//! database, print progress, and stop cleanly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use toolhost::agent::AgentEvent;
use toolhost::model::{LocalModelChoice, LocalModelOptions, ProviderConfig, ProviderKind};
use toolhost::run::Runs;
use toolhost::store::Durability;
use toolhost::{
    Agent, AgentConfig, AgentOutcome, EngineConfig, Goal, Host, HostConfig, LocalModel, ModelRouter, ModelsConfig,
    Policy, Session, SessionError, SqliteStore, ToolCalling,
};

/// The alias the agents talk to.
pub const MODEL_ALIAS: &str = "local";

#[derive(clap::Parser)]
pub struct Args {
    /// Continue the run stored as this session (after Ctrl-C, a kill or a crash)
    #[arg(long, value_name = "SESSION")]
    pub resume: Option<String>,
    /// Start the run as a session with this id (default: a random one)
    #[arg(long, value_name = "SESSION", conflicts_with = "resume")]
    pub session: Option<String>,
    /// Session database (SQLite)
    #[arg(long, default_value = ".toolhost/agents.db")]
    pub db: PathBuf,
    /// Use the OpenAI-compatible server at this URL (e.g. http://127.0.0.1:8080/v1) instead of
    /// starting the local model
    #[arg(long, value_name = "URL")]
    pub model_url: Option<String>,
    /// The local model to start: qwen1.5b (Qwen2.5-Coder-1.5B, a 1.1 GB download on first use)
    /// or small (SmolLM2-135M, 93 MB: fast, but it cannot do the job)
    #[arg(long, default_value_t = LocalModelChoice::default())]
    pub model: LocalModelChoice,
    /// The model id to ask for at --model-url
    #[arg(long, default_value = "qwen2.5-coder-1.5b")]
    pub model_name: String,
    /// Model turns after which the run stops without an answer
    #[arg(long, default_value_t = 16)]
    pub max_turns: u32,
    /// Tokens (input plus output) the whole run may use
    #[arg(long)]
    pub token_budget: Option<u64>,
}

/// A host with the example tools loaded, talking to a model.
pub struct Setup {
    pub host: Host,
    pub agent: Agent,
    /// The local model this process started, if it started one.
    pub local_model: Option<LocalModel>,
    pub db: PathBuf,
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the tools, starts the model (unless `--model-url`), and opens the database.
async fn setup(args: &Args) -> anyhow::Result<Setup> {
    let started = Instant::now();
    let paths = toolhost::guest_build::build(workspace(), &["calculator", "notes", "reader"])
        .context("building the example tools (cargo build --target wasm32-wasip2)")?;
    println!("built the tools in {:.1?}", started.elapsed());

    let (models, local_model) = match &args.model_url {
        Some(url) => {
            let config = ModelsConfig::default()
                .with_provider("given", ProviderConfig::new(ProviderKind::Openai, url.clone()))
                .with_alias(MODEL_ALIAS, "given", args.model_name.clone());
            println!("model: {} at {url}", args.model_name);
            (config, None)
        }
        None => {
            // Installs the model on first use (scripts/setup says what it downloads).
            let started = Instant::now();
            let model = LocalModel::start(LocalModelOptions::for_project(workspace()).with_model(args.model))
                .await
                .context("starting the local model")?;
            println!("started the local model {} on {} in {:.1?}", model.model(), model.base_url(), started.elapsed());
            (model.models_config(), Some(model))
        }
    };

    let policy_path = workspace().join("examples/agents/policy.toml");
    let policy = Policy::load(&policy_path).with_context(|| format!("loading {}", policy_path.display()))?;
    if let Some(parent) = args.db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let store = SqliteStore::open(&args.db, Durability::Full)
        .with_context(|| format!("opening the session database {}", args.db.display()))?;
    let router = ModelRouter::from_config(&models).context("configuring the model")?;
    let engine =
        EngineConfig { cache_dir: EngineConfig::default_cache_dir(), max_instances: 16, ..EngineConfig::default() };
    let config = HostConfig { engine, policy, models: Some(Arc::new(router)), ..HostConfig::default() };
    let host = Host::with_store(config, Arc::new(store))?;

    let mut tools = Vec::new();
    for path in &paths {
        tools.push(host.load_tool(path).await.with_context(|| format!("loading {}", path.display()))?);
    }
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    println!("tools: {} (granted by examples/agents/policy.toml)", names.join(", "));

    // The local model cannot emit native tool calls: ask it for schema-constrained JSON.
    let config = AgentConfig {
        tool_calling: ToolCalling::Constrained,
        max_turns: args.max_turns,
        token_budget: args.token_budget,
        max_tokens_per_turn: Some(256),
        ..AgentConfig::new(MODEL_ALIAS)
    };
    let agent = Agent::new(&host, config, tools)?;
    Ok(Setup { host, agent, local_model, db: args.db.clone() })
}

/// Opens the session to run in: `--resume`'s, or a new one.
async fn session(setup: &Setup, args: &Args) -> anyhow::Result<Session> {
    Ok(match (&args.resume, &args.session) {
        (Some(id), _) => match setup.host.open_session(id).await {
            Ok(session) => session,
            Err(SessionError::NotFound(_)) => {
                anyhow::bail!("no session `{id}` in {}: nothing to resume", setup.db.display())
            }
            Err(e) => return Err(e.into()),
        },
        (None, Some(id)) => setup.host.create_session(id.clone()).await?,
        (None, None) => setup.host.new_session().await?,
    })
}

/// Runs (or resumes) the agent, printing a line per step; Ctrl-C stops it between two
/// committed steps' worth of work and says how to resume.
async fn drive(setup: &Setup, session: &mut Session, goal: Goal, resume: bool) -> anyhow::Result<()> {
    let id = session.id().to_owned();
    if resume {
        println!("\nresuming session {id}");
    } else {
        println!("\nsession {id}\ngoal: {}", goal.text);
        println!("(Ctrl-C or kill it any time; continue with --resume {id})");
    }
    println!();
    let started = Instant::now();
    let mut print = |event: AgentEvent| println!("{event}");
    // The run is a record beside its session: `cargo run -- runs show ID --store sqlite://DB`.
    let runs = Runs::new(setup.host.store());
    let name = example_name();
    let run = runs.drive(&name, &setup.agent, session, goal, &mut print);
    let outcome = tokio::select! {
        driven = run => driven?.1,
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted: every step above is committed in {}", setup.db.display());
            println!("continue with: cargo run --example {} -- --resume {id}", example_name());
            return Ok(());
        }
    };
    report(&outcome, setup, started);
    Ok(())
}

fn example_name() -> String {
    std::env::args()
        .next()
        .and_then(|p| Path::new(&p).file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "research_agent".into())
}

fn report(outcome: &AgentOutcome, setup: &Setup, started: Instant) {
    println!();
    match outcome.answer() {
        Some(answer) => println!("answer: {answer}"),
        None => println!("{}", outcome.stop),
    }
    println!(
        "\n{} model turns, {} tool calls, {} tokens, {:.1?} in this process",
        outcome.turns,
        outcome.tool_calls,
        outcome.tokens,
        started.elapsed()
    );
    println!("session {} is stored in {} ({} steps)", outcome.session, setup.db.display(), outcome.last_step);
    println!("see what it did: cargo run -- sessions show {} --db {}", outcome.session, setup.db.display());
}

/// Runs `goal` as the command line asks (a new session, or `--resume`), from set-up to
/// stopping the local model, which is stopped whether the run succeeded or not.
pub async fn run(args: &Args, goal: Goal) -> anyhow::Result<()> {
    let setup = setup(args).await?;
    let result = async {
        let mut session = session(&setup, args).await?;
        drive(&setup, &mut session, goal, args.resume.is_some()).await
    }
    .await;
    finish(setup);
    result
}

/// Stops the local model if this process started it.
fn finish(setup: Setup) {
    if let Some(model) = setup.local_model {
        model.stop();
        println!("stopped the local model");
    }
}
