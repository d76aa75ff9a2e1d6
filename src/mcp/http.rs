//! Streamable HTTP: rmcp's service behind the guards a local or shared server needs.
//!
//! Order of checks on each request: concurrency (503 when full), bearer token (401), the
//! body of a POST (413 when too large, 400 with a JSON-RPC parse or invalid-request error
//! when it is not a JSON-RPC message), then rmcp's own: `Host` against the allowed hosts
//! (DNS rebinding) and `Origin` against the allowed origins (403), protocol headers, and
//! JSON-RPC dispatch (unknown methods get `-32601`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{McpError, McpServer};
use crate::source::Source;

/// How the HTTP endpoint is exposed.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Where to listen. Loopback by default; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The endpoint's path.
    pub path: String,
    /// `Host` values (host or host:port) accepted besides loopback names; a server bound to
    /// a non-loopback address must list the names clients reach it by.
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted (`scheme://host[:port|:*]`). Requests without `Origin`
    /// (non-browser clients) always pass; loopback origins are accepted by default.
    pub allowed_origins: Vec<String>,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// HTTP requests handled at once; more get 503.
    pub max_concurrent_requests: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/mcp".into(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            bearer_token: None,
            max_concurrent_requests: 64,
        }
    }
}

const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const LOOPBACK_ORIGINS: [&str; 4] =
    ["http://localhost:*", "http://127.0.0.1:*", "https://localhost:*", "https://127.0.0.1:*"];

/// A running HTTP server.
pub struct HttpServer {
    addr: SocketAddr,
    path: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// The address it listens on (with the port picked, if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// Stops accepting, ends open MCP sessions and streams, and waits for the server.
    pub async fn shutdown(self) -> Result<(), McpError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after [`HttpServer::shutdown`] or a failure).
    pub async fn wait(self) -> Result<(), McpError> {
        let failed = |source: Source| McpError::Transport { transport: "http", source };
        self.task.await.map_err(|e| failed(Source::new(e)))?.map_err(|e| failed(Source::new(e)))
    }

    /// A token that stops the server when cancelled (for signal handlers).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

pub(super) async fn start(server: McpServer, options: HttpOptions) -> Result<HttpServer, McpError> {
    let shutdown = CancellationToken::new();
    let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
    hosts.extend(options.allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = LOOPBACK_ORIGINS.iter().map(|o| o.to_string()).collect();
    origins.extend(options.allowed_origins.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(server.limits.max_message_bytes)
        .with_cancellation_token(shutdown.child_token());
    let factory_server = server.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(factory_server.connection()),
        Arc::new(LocalSessionManager::default()),
        config,
    );

    let token = options.bearer_token.as_deref().map(|t| Arc::new(Sha256::digest(t.as_bytes()).into()));
    let requests = Arc::new(tokio::sync::Semaphore::new(options.max_concurrent_requests.max(1)));
    let router = axum::Router::new()
        .route_service(&options.path, mcp)
        .layer(axum::middleware::from_fn_with_state(server.limits.max_message_bytes, check_jsonrpc_body))
        .layer(axum::middleware::from_fn_with_state(token, require_bearer))
        .layer(axum::middleware::from_fn_with_state(requests, limit_concurrency));

    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| McpError::Bind { addr: options.addr, source })?;
    let addr = listener.local_addr().map_err(|source| McpError::Bind { addr: options.addr, source })?;
    // A response goes out in several small writes (headers, SSE events, the last chunk):
    // with Nagle's algorithm on, each waits for the client's delayed ACK, ~40 ms a call.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %crate::source::chain(&e), "could not set TCP_NODELAY on an MCP connection");
        }
    });
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
    });
    tracing::info!(%addr, path = %options.path, auth = options.bearer_token.is_some(), "serving MCP over HTTP");
    Ok(HttpServer { addr, path: options.path, shutdown, task })
}

/// Answers 503 rather than queueing when `max_concurrent_requests` are in flight.
async fn limit_concurrency(
    State(requests): State<Arc<tokio::sync::Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    match requests.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, "too many concurrent requests\n").into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

async fn require_bearer(State(token): State<Option<Arc<[u8; 32]>>>, request: Request, next: Next) -> Response {
    let Some(expected) = token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    // Compare digests in constant time, so the comparison leaks neither length nor prefix.
    let matches = presented.is_some_and(|p| {
        let digest: [u8; 32] = Sha256::digest(p.trim().as_bytes()).into();
        digest.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if matches {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Reads a POST body (up to `limit` bytes) and answers what is not a JSON-RPC message
/// itself, with the error the streamable HTTP transport prescribes: 413 when too large,
/// 400 with a `-32700` parse error or a `-32600` invalid request otherwise.
async fn check_jsonrpc_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::DELETE {
        // rmcp acknowledges a session's termination with 202; clients (the Python SDK among
        // them) expect 200 or 204 and log a failure otherwise.
        let mut response = next.run(request).await;
        if response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.body_mut() = axum::body::Body::empty();
        }
        return response;
    }
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)).await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let message = format!("the request body is larger than {limit} bytes");
            return jsonrpc_error(StatusCode::PAYLOAD_TOO_LARGE, serde_json::Value::Null, -32600, &message);
        }
        Err(e) => {
            let message = format!("cannot read the request body: {e}");
            return jsonrpc_error(StatusCode::BAD_REQUEST, serde_json::Value::Null, -32700, &message);
        }
    };
    let message: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(message) => message,
        Err(e) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                serde_json::Value::Null,
                -32700,
                &format!("parse error: {e}"),
            );
        }
    };
    if message.get("jsonrpc").and_then(serde_json::Value::as_str) != Some("2.0") {
        let id = message.get("id").cloned().unwrap_or(serde_json::Value::Null);
        return jsonrpc_error(StatusCode::BAD_REQUEST, id, -32600, "invalid request: not a JSON-RPC 2.0 message");
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

fn jsonrpc_error(status: StatusCode, id: serde_json::Value, code: i64, message: &str) -> Response {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
