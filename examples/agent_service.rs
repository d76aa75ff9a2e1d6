//! The host inside a small HTTP service (axum), the way a service builder embeds it: one
//! `Host` per process (store, policy, models), a session opened or resumed per request, typed
//! errors mapped to HTTP statuses, and a graceful shutdown that lets in-flight steps commit.
//!
//!     cargo run --example agent_service                # listens on 127.0.0.1:3000
//!     curl -X POST localhost:3000/sessions                                   # {"id": "..."}
//!     curl -X POST localhost:3000/sessions/ID/calls/calculator -d '{"expression": "6 * 7"}'
//!     curl -X POST localhost:3000/sessions/ID/calls/notes -d '{"op": "add", "title": "t", "body": "b"}'
//!     curl localhost:3000/sessions/ID                                        # its steps
//!     curl -X POST localhost:3000/sessions/ID/agent -d '{"goal": "What is 17 * 23?"}'   # with --model-url
//!
//! Sessions live in `.toolhost/service.db`: stop the service (Ctrl-C) and start it again, and
//! every session continues where it was.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use toolhost::error::chain;
use toolhost::model::{ProviderConfig, ProviderKind};
use toolhost::run::{RunError, Runs};
use toolhost::store::{Durability, StepOutcome};
use toolhost::{
    Agent, AgentConfig, AgentError, AgentEvent, CallError, EngineConfig, Goal, Host, HostConfig, ModelRouter,
    ModelsConfig, Policy, SessionError, SqliteStore, Tool, ToolCalling,
};

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0: any free port; the line `listening on` names it)
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    #[arg(long, default_value = ".toolhost/service.db")]
    db: PathBuf,
    /// An OpenAI-compatible server for the agent endpoint (e.g. the local model's
    /// http://127.0.0.1:PORT/v1); without it, /agent answers 503
    #[arg(long)]
    model_url: Option<String>,
    #[arg(long, default_value = "smollm2-135m")]
    model_name: String,
}

/// What every request handler shares.
struct Service {
    host: Host,
    tools: HashMap<String, Arc<Tool>>,
    agent: Option<Agent>,
    /// A session runs one step at a time: requests for the same session queue here, requests
    /// for different sessions run in parallel.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Service {
    async fn lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.locks.lock().await.entry(id.to_owned()).or_default().clone()
    }
}

/// A typed library error as an HTTP answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound(_) => Self(StatusCode::NOT_FOUND, chain(&e).to_string()),
            e => Self(StatusCode::INTERNAL_SERVER_ERROR, chain(&e).to_string()),
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        let status = match &e {
            CallError::InvalidInput { .. } | CallError::Tool { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CallError::Conflict { .. } => StatusCode::CONFLICT,
            CallError::Deadline { .. }
            | CallError::MemoryLimit { .. }
            | CallError::Trap { .. }
            | CallError::OutputTooLarge { .. }
            | CallError::InvalidOutput { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, chain(&e).to_string())
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Agent(e) => e.into(),
            RunError::Session(e) => e.into(),
            RunError::NotFound(_) => Self(StatusCode::NOT_FOUND, chain(&e).to_string()),
            RunError::WrongState { .. } | RunError::Invalid { .. } => Self(StatusCode::CONFLICT, chain(&e).to_string()),
            e => Self(StatusCode::INTERNAL_SERVER_ERROR, chain(&e).to_string()),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Call(e) => e.into(),
            AgentError::Model { .. } => Self(StatusCode::BAD_GATEWAY, chain(&e).to_string()),
            AgentError::SessionNotEmpty { .. } | AgentError::NotAnAgentSession { .. } | AgentError::Mismatch { .. } => {
                Self(StatusCode::CONFLICT, chain(&e).to_string())
            }
            e => Self(StatusCode::INTERNAL_SERVER_ERROR, chain(&e).to_string()),
        }
    }
}

async fn create_session(State(service): State<Arc<Service>>) -> Result<Json<Value>, ApiError> {
    let session = service.host.new_session().await?;
    Ok(Json(json!({"id": session.id()})))
}

async fn call_tool(
    State(service): State<Arc<Service>>,
    UrlPath((id, tool)): UrlPath<(String, String)>,
    Json(input): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let tool = service
        .tools
        .get(&tool)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no tool `{}`", tool.escape_debug())))?;
    let lock = service.lock(&id).await;
    let _one_step_at_a_time = lock.lock().await;
    // Resumes the session at its last committed step; its instances rebuild on first use.
    let mut session = service.host.open_session(&id).await?;
    let output = session.call(tool, &input).await?;
    Ok(Json(json!({"step": session.last_step(), "output": output})))
}

async fn show_session(
    State(service): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let details = service.host.session_details(&id).await?;
    let steps: Vec<Value> = details
        .steps
        .iter()
        .map(|s| {
            let outcome = match &s.outcome {
                StepOutcome::Output(text) => {
                    json!({"output": serde_json::from_str::<Value>(text).unwrap_or(Value::Null)})
                }
                StepOutcome::Failed(failure) => json!({"error": failure.to_string()}),
                StepOutcome::Upgraded(upgrade) => json!({"upgraded": upgrade}),
            };
            json!({"seq": s.seq, "tool": s.tool, "input": s.input, "outcome": outcome})
        })
        .collect();
    Ok(Json(json!({"id": id, "last_step": details.record.last_step, "steps": steps})))
}

#[derive(serde::Deserialize)]
struct AgentRequest {
    goal: String,
}

/// Runs the agent in the session: starts it on an empty session, resumes it otherwise.
async fn run_agent(
    State(service): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Json(request): Json<AgentRequest>,
) -> Result<Json<Value>, ApiError> {
    let agent = service.agent.as_ref().ok_or_else(|| {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "no model is configured: start the service with --model-url".into())
    })?;
    let lock = service.lock(&id).await;
    let _one_run_at_a_time = lock.lock().await;
    let mut session = service.host.open_session(&id).await?;
    let mut steps = Vec::new();
    // A run record beside the session: `toolhost runs show ID --db ...` shows it.
    let runs = Runs::new(service.host.store());
    let mut progress = |event: AgentEvent| steps.push(event.to_string());
    let (run, outcome) =
        runs.drive("agent_service", agent, &mut session, Goal::new(request.goal), &mut progress).await?;
    Ok(Json(json!({
        "status": run.status,
        "answer": outcome.answer(),
        "stop": outcome.stop.to_string(),
        "turns": outcome.turns,
        "tool_calls": outcome.tool_calls,
        "tokens": outcome.tokens,
        "progress": steps,
    })))
}

async fn build(args: &Args) -> anyhow::Result<Service> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = toolhost::guest_build::build(workspace, &["calculator", "notes"]).context("building the tools")?;

    // The host: a durable store, a policy that grants the notes tool its namespace and the
    // calculator nothing, and (optionally) a model.
    if let Some(parent) = args.db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let store = Arc::new(SqliteStore::open(&args.db, Durability::Full)?);
    let policy = Policy::from_toml(
        r#"
        [tools.calculator]
        [tools.notes.state]
        namespaces = { notes = "read-write" }
        "#,
        None,
    )?;
    let models = args
        .model_url
        .as_ref()
        .map(|url| {
            let config = ModelsConfig::default()
                .with_provider("given", ProviderConfig::new(ProviderKind::Openai, url.clone()))
                .with_alias("default", "given", args.model_name.clone());
            ModelRouter::from_config(&config).map(|r| Arc::new(r) as Arc<dyn toolhost::ModelProvider>)
        })
        .transpose()?;
    let engine = EngineConfig { cache_dir: EngineConfig::default_cache_dir(), ..EngineConfig::default() };
    let host = Host::with_store(HostConfig { engine, policy, models, ..HostConfig::default() }, store)?;

    let mut tools = HashMap::new();
    for path in &paths {
        let tool = host.load_tool(path).await?;
        tools.insert(tool.name().to_owned(), tool);
    }
    let agent = match &args.model_url {
        Some(_) => {
            let config = AgentConfig { tool_calling: ToolCalling::Constrained, ..AgentConfig::new("default") };
            Some(Agent::new(&host, config, tools.values().cloned().collect())?)
        }
        None => None,
    };
    Ok(Service { host, tools, agent, locks: Mutex::default() })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let service = Arc::new(build(&args).await?);
    let app = Router::new()
        .route("/sessions", post(create_session))
        .route("/sessions/{id}", get(show_session))
        .route("/sessions/{id}/calls/{tool}", post(call_tool))
        .route("/sessions/{id}/agent", post(run_agent))
        .with_state(service);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    // Small responses go out at once rather than waiting for the client's delayed ACK.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    println!("listening on http://{address} (sessions in {}); Ctrl-C stops", args.db.display());
    // In-flight requests finish (and their steps commit) before the process exits; a request
    // cut short by a crash instead commits nothing, and its session resumes at its last step.
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down: finishing in-flight requests");
        })
        .await?;
    println!("stopped; every committed step is in {}", args.db.display());
    Ok(())
}
