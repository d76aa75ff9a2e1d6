//! `toolhost model`: the local model server, and one-off chats to check a configuration.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use toolhost::model::{
    ChatRequest, LocalModel, LocalModelChoice, LocalModelOptions, Message, ModelProvider, ModelRouter, ModelsConfig,
    ProgressKind, Role,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve an offline local model (via llama.cpp) on 127.0.0.1 until Ctrl-C; installs it on first use
    ServeLocal(ServeLocalArgs),
    /// Send one prompt to an alias of a model configuration and print the reply as it streams
    Chat(ChatArgs),
}

#[derive(clap::Args)]
struct ServeLocalArgs {
    /// Port [default: a free one]
    #[arg(long)]
    port: Option<u16>,
    /// The model: qwen1.5b (Qwen2.5-Coder-1.5B, 1.1 GB download) or small (SmolLM2-135M, 93 MB)
    #[arg(long, default_value_t = LocalModelChoice::default())]
    model: LocalModelChoice,
    /// The project checkout holding .venv and scripts/ [default: the current folder]
    #[arg(long, default_value = ".")]
    project: PathBuf,
}

#[derive(clap::Args)]
struct ChatArgs {
    /// Model configuration (TOML: providers and aliases)
    #[arg(long, env = "TOOLHOST_MODELS")]
    models: PathBuf,
    /// The alias to call
    alias: String,
    /// The user prompt
    prompt: String,
    /// Upper bound on generated tokens
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::ServeLocal(args) => serve_local(args).await,
        Command::Chat(args) => chat(args).await,
    }
}

async fn serve_local(args: ServeLocalArgs) -> anyhow::Result<ExitCode> {
    let options =
        LocalModelOptions { port: args.port, ..LocalModelOptions::for_project(&args.project).with_model(args.model) };
    let server = LocalModel::start(options).await.context("starting the local model")?;
    let config = toml::to_string_pretty(&server.models_config()).context("rendering the model configuration")?;
    println!("local model `{}` listening on {}", server.model(), server.base_url());
    println!("OpenAI endpoint:    {}/v1/chat/completions", server.base_url());
    println!("Anthropic endpoint: {}/v1/messages", server.base_url());
    println!("\n# A model configuration for it (toolhost --models FILE):\n{config}");
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    eprintln!("stopping the local model");
    tokio::task::spawn_blocking(move || server.stop()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn chat(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let config = ModelsConfig::from_file(&args.models)?;
    let router = ModelRouter::from_config(&config)?.with_progress(Arc::new(|event| {
        if let ProgressKind::Text(piece) = event.kind {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    }));
    let request = ChatRequest {
        messages: vec![Message { role: Role::User, content: args.prompt, tool_calls: Vec::new(), tool_call_id: None }],
        tools: Vec::new(),
        tool_choice: None,
        max_tokens: Some(args.max_tokens),
        temperature: None,
        stop: Vec::new(),
        response_schema: None,
    };
    match router.chat(&args.alias, &request, "cli").await {
        Ok(response) => {
            println!();
            eprintln!(
                "model {}, finish {:?}, {} input + {} output tokens",
                response.model, response.finish_reason, response.usage.input_tokens, response.usage.output_tokens
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
