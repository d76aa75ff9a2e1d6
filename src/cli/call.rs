use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use toolhost::{CallError, Policy};

use super::CliHostConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The tool component (.wasm)
    tool: PathBuf,
    /// The input, as JSON (`-` reads it from stdin)
    input: String,
    /// Grant the tool what it requests (state namespaces, models). Without it, the tool is
    /// granted nothing and such uses are denied.
    #[arg(long, conflicts_with = "policy")]
    grant_requested: bool,
    /// The policy file (TOML) that grants the tool its capabilities
    #[arg(long, env = "TOOLHOST_POLICY")]
    policy: Option<PathBuf>,
    /// Run the call as the next step of this session (created if new); needs --db to last
    #[arg(long)]
    session: Option<String>,
    /// Model configuration (TOML: providers and aliases) answering the tool's model calls
    #[arg(long, env = "TOOLHOST_MODELS")]
    models: Option<PathBuf>,
}

pub async fn run(config: &CliHostConfig, args: Args) -> anyhow::Result<ExitCode> {
    let text = if args.input == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the input from stdin")?
    } else {
        args.input
    };
    let input: serde_json::Value = serde_json::from_str(&text).context("the input is not valid JSON")?;
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None if args.grant_requested => Policy::grant_requested(),
        None => Policy::deny_all(),
    };
    let models = match &args.models {
        Some(path) => {
            let config = toolhost::ModelsConfig::from_file(path)?;
            Some(Arc::new(toolhost::ModelRouter::from_config(&config)?) as Arc<dyn toolhost::ModelProvider>)
        }
        None => None,
    };
    let host = config.host_with_models(policy, models).await?;
    let tool = host.load_tool(&args.tool).await?;
    // One tool of a policy that may cover many: a missing section is worth a warning (a
    // typo leaves the tool with nothing), other sections are not errors here.
    let policy = host.policy();
    if args.policy.is_some() && !policy.tools.contains_key(tool.name()) && !policy.grant_requested {
        let sections: Vec<&str> = policy.tools.keys().map(String::as_str).collect();
        tracing::warn!(
            "the policy has no section for tool `{}` (it has: {}); the tool is granted nothing",
            tool.name(),
            sections.join(", ")
        );
    }
    let mut session = match &args.session {
        Some(id) => match host.open_session(id).await {
            Ok(session) => session,
            Err(toolhost::SessionError::NotFound(_)) => host.create_session(id.clone()).await?,
            Err(e) => return Err(e.into()),
        },
        None => host.new_session().await?,
    };
    let result = session.call(&tool, &input).await;
    let (id, step) = (session.id().to_owned(), session.last_step());
    // Gives up the session's lease (on a shared store) so the next command can take it now.
    if let Err(e) = session.close().await {
        tracing::warn!(session = %id, error = %toolhost::error::chain(&e), "could not release the session's lease; it will expire");
    }
    match result {
        Ok(output) => {
            tracing::info!(session = %id, step, "committed");
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(ExitCode::SUCCESS)
        }
        // A tool's own error is an answer, not a host failure: print it and exit 2.
        Err(CallError::Tool { tool, failure }) => {
            eprintln!("error: tool `{tool}` reported an error: {failure}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}
