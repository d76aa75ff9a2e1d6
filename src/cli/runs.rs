//! `toolhost runs`: start, list, show, decide, signal and cancel long-running agent runs
//! (driven by `toolhost worker`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};
use toolhost::agent::show_time;
use toolhost::run::{Run, Runs};
use toolhost::store::RunStatus;
use toolhost::{Goal, Policy};

use super::CliHostConfig;
use super::run::AgentFile;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a run of the agent in AGENT.toml (its name is the file's stem); a worker with
    /// that agent file drives it. Prints the run's id
    Start {
        agent: PathBuf,
        /// The run's (and its session's) id [default: a random one]
        #[arg(long)]
        id: Option<String>,
        /// The goal, instead of the file's (its plan is dropped then)
        #[arg(long)]
        goal: Option<String>,
    },
    /// List runs
    List {
        /// Only runs with this status (running, waiting, done, failed, cancelled)
        #[arg(long)]
        status: Option<RunStatus>,
        #[arg(long)]
        json: bool,
    },
    /// Show a run: status, what it waits for, decisions, pending events, outcome
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve the call a run waits on; it continues on whichever worker claims it
    Approve {
        id: String,
        /// Make the call with this input (a JSON object) instead of the model's
        #[arg(long, value_name = "JSON")]
        edit: Option<String>,
        /// Who decides (recorded in the run's steps and the audit trail)
        #[arg(long, default_value_t = default_reviewer())]
        by: String,
    },
    /// Deny the call a run waits on; the model is told the reason as the call's result
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value_t = default_reviewer())]
        by: String,
    },
    /// Send the event NAME with a JSON payload to a run
    Signal { id: String, name: String, payload: String },
    /// Cancel a run: it never runs again
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn default_reviewer() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "cli".into())
}

fn parse_json(what: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not JSON: {text}"))
}

pub async fn run(config: &CliHostConfig, args: Args) -> anyhow::Result<ExitCode> {
    let host = config.host(Policy::deny_all()).await?;
    let runs = Runs::new(host.store());
    let shown = match args.command {
        Command::Start { agent, id, goal } => {
            let file = AgentFile::load(&agent)?;
            let name = super::worker::agent_name(&agent)?;
            let goal = match goal {
                Some(text) => Goal::new(text),
                None => Goal { text: file.goal, tasks: file.tasks },
            };
            let run = runs.create(&host, id, &name, goal).await?;
            println!("{}", run.id);
            return Ok(ExitCode::SUCCESS);
        }
        Command::List { status, json } => {
            let list = runs.list(status).await?;
            if json {
                println!("{}", Value::Array(list.iter().map(to_json).collect()));
            } else if list.is_empty() {
                println!("no runs in {}", config.db_label());
            } else {
                println!("{:<38} {:<12} {:<9} waiting for", "run", "agent", "status");
                for run in &list {
                    let waits = run.body.waiting.as_ref().map(|w| w.wait.to_string()).unwrap_or_default();
                    println!("{:<38} {:<12} {:<9} {waits}", run.id, run.agent, run.status.as_str());
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Show { id, json } => {
            let run = runs.get(&id).await?;
            if json {
                println!("{}", to_json(&run));
            } else {
                print_run(&run);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Approve { id, edit, by } => {
            let edit = edit.map(|e| parse_json("--edit", &e)).transpose()?;
            runs.approve(&id, edit, &by).await?
        }
        Command::Deny { id, reason, by } => runs.deny(&id, &reason, &by).await?,
        Command::Signal { id, name, payload } => runs.signal(&id, &name, parse_json("the payload", &payload)?).await?,
        Command::Cancel { id, reason } => runs.cancel(&id, &reason).await?,
    };
    println!("run {} is {}", shown.id, shown.status);
    Ok(ExitCode::SUCCESS)
}

fn to_json(run: &Run) -> Value {
    json!({
        "id": run.id,
        "agent": run.agent,
        "status": run.status,
        "ready_at_ms": run.ready_at_ms,
        "version": run.version,
        "created_at_ms": run.created_at_ms,
        "updated_at_ms": run.updated_at_ms,
        "waiting": run.body.waiting,
        "decisions": run.body.decisions,
        "signals": run.body.signals,
        "outcome": run.body.outcome,
        "failed_attempts": run.body.failed_attempts,
        "last_error": run.body.last_error,
        "steps": run.body.steps,
        "goal": run.body.goal,
    })
}

fn print_run(run: &Run) {
    println!("run      {}", run.id);
    println!("agent    {}", run.agent);
    println!("status   {}", run.status);
    println!("goal     {}", run.body.goal.text);
    if let Some(waiting) = &run.body.waiting {
        println!("waiting  for {} (step {}, call {})", waiting.wait, waiting.step, waiting.call);
    }
    if let Some(at) = run.ready_at_ms {
        println!("ready at {}", show_time(at));
    }
    for (step, decision) in &run.body.decisions {
        println!("decision on step {step}: {}", serde_json::to_string(decision).unwrap_or_default());
    }
    for signal in &run.body.signals {
        println!("event    {} #{}: {}", signal.name, signal.id, signal.payload);
    }
    if let Some(outcome) = &run.body.outcome {
        println!("outcome  {outcome}");
    }
    if let Some(error) = &run.body.last_error {
        println!("error    {error} ({} failed drives in a row)", run.body.failed_attempts);
    }
    println!("steps    {} (toolhost sessions show {})", run.body.steps, run.id);
}
