//! The MCP request handler: one per stdio connection, per HTTP MCP session (2025-11-25) or
//! per HTTP request (2026-07-28, which has no sessions). All of them share one [`Shared`].

use std::sync::Arc;

use rmcp::ErrorData;
use rmcp::RoleServer;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpTool,
};
use rmcp::service::RequestContext;
use serde_json::Value;
use tokio::sync::{OnceCell, Semaphore};

use super::catalog::{self, Catalog};
use super::sessions::{HandleError, SessionPool, SharedSession};
use super::{HANDLE_ARGUMENT, HANDLE_META_KEY};
use crate::error::Fault;

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub catalog: Catalog,
    pub pool: Arc<SessionPool>,
    /// Bounds the tool calls running at once, over all connections.
    pub calls: Arc<Semaphore>,
    /// Per tool: its share of `calls` ([`tool_share`]), taken before a permit of `calls`, so
    /// one tool's hung calls (until their wall deadline) leave permits for every other tool.
    pub tool_calls: std::collections::HashMap<String, Arc<Semaphore>>,
}

/// The calls one tool may run at once out of `max_concurrent_calls`: all but a quarter.
pub(crate) fn tool_share(max_concurrent_calls: usize) -> usize {
    let max = max_concurrent_calls.max(1);
    (max - (max / 4).max(1)).max(1)
}

/// Serves one connection. Its default session (for calls without a handle) is minted on
/// the first such call and kept for the connection's life.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    default_session: Arc<OnceCell<String>>,
}

impl Connection {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, default_session: Arc::new(OnceCell::new()) }
    }

    /// The session a call runs in: the handle it names, else the connection's own.
    async fn session_for(&self, handle: Option<String>) -> Result<(String, SharedSession), CallToolResult> {
        let pool = &self.shared.pool;
        let handle = match handle {
            Some(handle) => handle,
            None => {
                let minted = self
                    .default_session
                    .get_or_try_init(|| async { pool.create().await.map(|(handle, _)| handle) })
                    .await
                    .map_err(|e| catalog::error_result(None, "store", &format!("cannot create a session: {e}")))?;
                minted.clone()
            }
        };
        match pool.get(&handle).await {
            Ok(session) => Ok((handle, session)),
            Err(e) => {
                let kind = match e {
                    HandleError::Malformed(_) => "malformed-handle",
                    HandleError::Unknown(_) => "unknown-handle",
                    HandleError::Leased { .. } => "leased",
                    HandleError::Store { .. } => "store",
                };
                Err(catalog::error_result(None, kind, &e.to_string()))
            }
        }
    }

    async fn call(&self, request: CallToolRequestParams) -> Result<CallToolResult, ErrorData> {
        let entry = self
            .shared
            .catalog
            .get(&request.name)
            .ok_or_else(|| ErrorData::invalid_params(format!("unknown tool `{}`", request.name), None))?;
        let mut arguments = request.arguments.unwrap_or_default();
        let handle = match take_handle(&mut arguments, entry.handle_in_arguments, request.meta.as_deref()) {
            Ok(handle) => handle,
            Err(message) => return Ok(catalog::error_result(None, "malformed-handle", &message)),
        };
        let (handle, session) = match self.session_for(handle).await {
            Ok(found) => found,
            Err(result) => return Ok(result),
        };

        let calls = self.shared.calls.clone();
        let tool_calls = self.shared.tool_calls.get(request.name.as_ref()).cloned().unwrap_or_else(|| calls.clone());
        let tool = entry.tool.clone();
        let input = Value::Object(arguments);
        // The step runs in its own task: if the client goes away mid-call, the step still
        // finishes and commits (or aborts cleanly) instead of being dropped half-way. A call
        // waiting behind another on the same handle holds no permit; nor does one waiting
        // for its tool's share.
        let step = tokio::spawn(async move {
            let mut session = session.lock_owned().await;
            let (Ok(_tool_permit), Ok(_permit)) = (tool_calls.acquire_owned().await, calls.acquire_owned().await)
            else {
                return None;
            };
            let outcome = session.call(&tool, &input).await;
            Some((outcome, session.last_step()))
        });
        let (outcome, step) = step
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "a tool call task failed");
                ErrorData::internal_error(format!("the call failed inside the server: {e}"), None)
            })?
            .ok_or_else(|| ErrorData::internal_error("the server is shutting down", None))?;
        let entry = self.shared.catalog.get(&request.name).expect("looked up above");
        Ok(match outcome {
            Ok(output) => catalog::success(entry, &handle, step, output),
            Err(error) => {
                if error.kind().fault() == Fault::StaleSession {
                    self.shared.pool.forget(&handle);
                }
                tracing::info!(session = %handle, tool = %request.name, %error, "call failed");
                catalog::failure(Some(&handle), &error)
            }
        })
    }
}

/// Takes the session handle out of the call: the `session_handle` argument, else the
/// `dev.toolhost/session` request `_meta` entry.
fn take_handle(
    arguments: &mut JsonObject,
    in_arguments: bool,
    meta: Option<&rmcp::model::MetaObject>,
) -> Result<Option<String>, String> {
    let from_arguments = if in_arguments { arguments.shift_remove(HANDLE_ARGUMENT) } else { None };
    let value = from_arguments.or_else(|| meta.and_then(|m| m.0.get(HANDLE_META_KEY).cloned()));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(handle)) => Ok(Some(handle)),
        Some(other) => Err(format!("`{HANDLE_ARGUMENT}` must be a string, not {other}")),
    }
}

impl ServerHandler for Connection {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("toolhost", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Each tool runs sandboxed in a durable session. Every result names its session in \
                 `session_handle` (text and `_meta.dev.toolhost/session`); pass it back as the \
                 `session_handle` argument to continue that session, also after a server restart. \
                 A call without a handle runs in this connection's session (stdio, or an MCP \
                 session over HTTP), or in a new session where there is none (2026-07-28 over HTTP).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.shared.catalog.definitions()))
    }

    fn get_tool(&self, name: &str) -> Option<McpTool> {
        self.shared.catalog.get(name).map(|e| e.definition.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request).await.map(CallToolResponse::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_handle_comes_from_arguments_then_meta() {
        let mut args = json!({"op": "list", "session_handle": "abc"}).as_object().unwrap().clone();
        assert_eq!(take_handle(&mut args, true, None).unwrap().as_deref(), Some("abc"));
        assert!(!args.contains_key(HANDLE_ARGUMENT), "the tool never sees the handle");

        let mut meta = rmcp::model::MetaObject::new();
        meta.0.insert(HANDLE_META_KEY.into(), json!("from-meta"));
        let mut args = json!({"op": "list"}).as_object().unwrap().clone();
        assert_eq!(take_handle(&mut args, true, Some(&meta)).unwrap().as_deref(), Some("from-meta"));

        // A tool with its own `session_handle` argument keeps it.
        let mut args = json!({"session_handle": "mine"}).as_object().unwrap().clone();
        assert_eq!(take_handle(&mut args, false, None).unwrap(), None);
        assert!(args.contains_key(HANDLE_ARGUMENT));

        let mut args = json!({"session_handle": 7}).as_object().unwrap().clone();
        assert!(take_handle(&mut args, true, None).is_err());
    }
}
