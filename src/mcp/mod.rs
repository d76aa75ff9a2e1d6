//! An MCP server for loaded tools: every tool is an MCP tool, and every call is a durable
//! step in a session.
//!
//! This module is our adapter over `rmcp` (pinned): the rest of the crate never sees its
//! types. [`McpServer`] serves over stdio ([`McpServer::serve_stdio`]) or streamable HTTP
//! ([`McpServer::serve_http`]), speaking both the 2025-11-25 protocol (`initialize`,
//! `Mcp-Session-Id`) and the sessionless 2026-07-28 one.
//!
//! Sessions: MCP 2026-07-28 has no protocol sessions; state that spans calls travels in an
//! explicit, server-minted handle (SEP-2567). Here the handle is the id of a host session.
//! Every result carries it (as `session_handle` text and in `_meta`), and a call passes it
//! back in the optional `session_handle` argument that every served tool's input schema gets
//! (or in request `_meta`). A call without a handle runs in its connection's session: one
//! per stdio connection, per HTTP MCP session (2025-11-25), or per request (2026-07-28),
//! minted on first use. Sessions live in the host's store, so a handle resumes its session
//! after the server restarts.
//!
//! Failures of a call (schema violations, the tool's own errors, denials, traps, limits)
//! are tool results with `isError`, never protocol errors or dropped connections.
//!
//! Tasks: a client that declares the `io.modelcontextprotocol/tasks` extension in a
//! request's capabilities (2026-07-28) gets a task handle (`resultType: "task"`) for a call
//! still running after [`McpLimits::task_after`], and polls it with `tasks/get`. Tasks are
//! rows in the host's store, so a handle outlives the server: see `tasks.rs`. Other clients
//! (all 2025-11-25 ones) get the result when the call ends, as before; an approval an agent's
//! run waits for comes back to a 2026-07-28 one as the call's multi round-trip input request
//! (SEP-2322, see `agents.rs`). Each server keeps its tasks alive, takes over those of dead
//! servers without waiting for a poll, and runs at most [`McpLimits::max_working_tasks`].

mod agents;
mod catalog;
mod handler;
mod http;
mod sessions;
mod stdio;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;

pub use agents::McpAgent;
pub use http::{HttpOptions, HttpServer};

use crate::host::Host;
use crate::tool::Tool;

/// The tool argument that carries a session handle.
pub const HANDLE_ARGUMENT: &str = "session_handle";
/// The `_meta` key that carries a session handle, in requests and results.
pub const HANDLE_META_KEY: &str = "dev.toolhost/session";

/// Why the MCP server could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("two tools are named `{name}`: {} and {}", first.display(), second.display())]
    DuplicateTool { name: String, first: PathBuf, second: PathBuf },
    #[error("tool `{name}` cannot be served over MCP: {reason}")]
    UnsupportedTool { name: String, reason: String },
    #[error("cannot listen on {addr}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    /// `source`: the transport's (rmcp's, the socket's) error.
    #[error("the {transport} transport failed")]
    Transport { transport: &'static str, source: crate::source::Source },
}

/// Limits of one server, over all its connections.
#[derive(Debug, Clone, Copy)]
pub struct McpLimits {
    /// Tool calls running at once; further calls wait. One tool may take all but a quarter
    /// of them (at least one left to others), so a tool whose calls hang until their wall
    /// deadline never holds every permit.
    pub max_concurrent_calls: usize,
    /// Sessions kept in memory with their instances; idle ones beyond this are reopened
    /// from the store when next used.
    pub max_live_sessions: usize,
    /// Largest JSON-RPC message accepted (an HTTP body, a stdio line), in bytes.
    pub max_message_bytes: usize,
    /// Sessions unused this long are closed (their instances freed, their leases released,
    /// so that on a shared store another server can serve their handles); the next call on
    /// a handle reopens its session. `None`: only `max_live_sessions` closes sessions.
    pub idle_session_timeout: Option<std::time::Duration>,
    /// A call from a client that declares the tasks extension (2026-07-28) still running
    /// after this long becomes a task: the client gets a task handle and polls it. `None`:
    /// calls never become tasks.
    pub task_after: Option<std::time::Duration>,
    /// How long a task's server holds its claim without renewing it (it renews every third
    /// of this while the task runs, an agent run's task for as long as the run goes on). A
    /// task whose server died is taken over, once its claim ran out, by the first server on
    /// the store that looks (each looks on start and every third of this) or by a `tasks/get`.
    pub task_lease: std::time::Duration,
    /// How long a task is kept after it ended (a working one: after its claim ran out);
    /// retention ([`crate::Host::prune_sessions`]) then removes it, and deleting its session
    /// removes it at once. Reported to clients as the task's `ttlMs`.
    pub task_ttl: std::time::Duration,
    /// Tasks this server runs at once (calls in flight as tasks, agent runs it holds tasks
    /// of; orphans it takes over count too). At the limit a long call is not made a task (its
    /// client waits for the result, holding its request, which `max_concurrent_requests`
    /// bounds), and an agent's call, which would start a run, is refused with a
    /// `too-many-tasks` tool error: a client cannot flood the store with task and run rows.
    pub max_working_tasks: usize,
}

impl Default for McpLimits {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 16,
            max_live_sessions: 64,
            max_message_bytes: 4 << 20,
            idle_session_timeout: Some(std::time::Duration::from_secs(300)),
            task_after: Some(std::time::Duration::from_secs(1)),
            task_lease: std::time::Duration::from_secs(10),
            task_ttl: std::time::Duration::from_secs(24 * 3600),
            max_working_tasks: 256,
        }
    }
}

/// Serves a host's tools over MCP.
#[derive(Clone)]
pub struct McpServer {
    shared: Arc<handler::Shared>,
    limits: McpLimits,
}

impl McpServer {
    /// Serves `tools` (loaded by `host`). Fails if two share a name or one's input is not an
    /// object (MCP tool arguments always are).
    pub fn new(host: Host, tools: Vec<Arc<Tool>>, limits: McpLimits) -> Result<Self, McpError> {
        let share = handler::tool_share(limits.max_concurrent_calls);
        let tool_calls =
            tools.iter().map(|t| (t.name().to_owned(), Arc::new(tokio::sync::Semaphore::new(share)))).collect();
        let tasks = tasks::TaskBoard::new(host.store(), limits.task_lease, limits.task_ttl)
            .with_max_working(limits.max_working_tasks);
        let shared = handler::Shared {
            catalog: catalog::Catalog::new(tools)?,
            tasks,
            task_after: limits.task_after,
            keeping: std::sync::atomic::AtomicBool::new(false),
            agents: std::collections::HashMap::new(),
            pool: Arc::new(sessions::SessionPool::new(host, limits.max_live_sessions, limits.idle_session_timeout)),
            calls: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_calls.max(1))),
            tool_calls,
        };
        Ok(Self { shared: Arc::new(shared), limits })
    }

    /// Also serves each of `agents` as a tool whose call starts a run of it (see
    /// [`McpAgent`]); the runs are driven by [`crate::run::Worker`]s, in this process or not.
    /// Before serving; every agent's host must share the server's store.
    pub fn with_agents(mut self, agents: Vec<McpAgent>) -> Result<Self, McpError> {
        let unsupported =
            |name: &str, reason: &str| McpError::UnsupportedTool { name: name.into(), reason: reason.into() };
        let shared = Arc::get_mut(&mut self.shared).ok_or_else(|| unsupported("*", "add agents before serving"))?;
        for agent in agents {
            if !Arc::ptr_eq(&agent.host.store(), &shared.pool.host().store()) {
                return Err(unsupported(&agent.name, "the agent's host must share the server's store"));
            }
            if shared.catalog.get(&agent.name).is_some() || shared.agents.contains_key(&agent.name) {
                return Err(unsupported(&agent.name, "another tool or agent has that name"));
            }
            shared.agents.insert(agent.name.clone(), agents::AgentEntry::new(agent));
        }
        Ok(self)
    }

    fn connection(&self) -> handler::Connection {
        handler::Connection::new(self.shared.clone())
    }

    /// Serves one client on stdin/stdout until it closes its end.
    pub async fn serve_stdio(&self) -> Result<(), McpError> {
        self.serve_stream(tokio::io::stdin(), tokio::io::stdout()).await
    }

    /// Serves one client over a byte stream pair (newline-delimited JSON-RPC, as stdio).
    pub async fn serve_stream<R, W>(&self, read: R, write: W) -> Result<(), McpError>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
        W: tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        use rmcp::ServiceExt;
        self.shared.pool.start_sweeper();
        handler::start_task_keeper(&self.shared);
        let max = self.limits.max_message_bytes;
        let (ours, theirs) = tokio::io::duplex(64 << 10);
        let (rmcp_read, rmcp_write) = tokio::io::split(theirs);
        let (from_rmcp, to_rmcp) = tokio::io::split(ours);
        let pump = tokio::spawn(stdio::pump(read, write, from_rmcp, to_rmcp, max));
        // Lines reaching rmcp are already checked against the limit.
        let transport = rmcp::transport::async_rw::AsyncRwTransport::new_server(rmcp_read, rmcp_write)
            .with_max_line_length(max.saturating_add(2));
        let failed = |source: crate::source::Source| McpError::Transport { transport: "stdio", source };
        let running = self.connection().serve(transport).await.map_err(|e| failed(crate::source::Source::new(e)))?;
        running.waiting().await.map_err(|e| failed(crate::source::Source::new(e)))?;
        pump.await
            .map_err(|e| failed(crate::source::Source::new(e)))?
            .map_err(|e| failed(crate::source::Source::new(e)))?;
        Ok(())
    }

    /// Starts serving streamable HTTP as `options` say; see [`HttpServer`].
    pub async fn serve_http(&self, options: HttpOptions) -> Result<HttpServer, McpError> {
        self.shared.pool.start_sweeper();
        handler::start_task_keeper(&self.shared);
        http::start(self.clone(), options).await
    }
}
