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
    #[arg(long)]
    grant_requested: bool,
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
    let policy = if args.grant_requested { Policy::grant_requested() } else { Policy::deny_all() };
    let models = match &args.models {
        Some(path) => {
            let config = toolhost::ModelsConfig::from_file(path)?;
            Some(Arc::new(toolhost::ModelRouter::from_config(&config)?) as Arc<dyn toolhost::ModelProvider>)
        }
        None => None,
    };
    let host = config.host_with_models(policy, models)?;
    let tool = host.load_tool(&args.tool).await?;
    let mut session = match &args.session {
        Some(id) => match host.open_session(id).await {
            Ok(session) => session,
            Err(toolhost::SessionError::NotFound(_)) => host.create_session(id.clone()).await?,
            Err(e) => return Err(e.into()),
        },
        None => host.new_session().await?,
    };
    match session.call(&tool, &input).await {
        Ok(output) => {
            tracing::info!(session = session.id(), step = session.last_step(), "committed");
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
