//! Outgoing HTTP(S) through the host (`wasi:http`). The host sends a request only if its
//! destination is on the tool's network allowlist (declare hosts with
//! [`Capabilities::network`](crate::Capabilities::network)); anything else comes back as
//! [`HttpError::Denied`], which `?` turns into [`ToolError::Denied`]. Raw sockets are never
//! granted.
//!
//! ```ignore
//! let page = http::get("https://api.example.com/v1/items")?;
//! let items: Vec<Item> = serde_json::from_slice(&page.body)?;
//! ```

use std::fmt;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::ToolError;

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names (lowercase) and raw values, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host's policy does not allow this destination.
    Denied(String),
    /// The URL or a header is malformed.
    InvalidRequest(String),
    /// The request was allowed and failed (connection, TLS, timeout, protocol).
    Failed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "HTTP request denied: {m}"),
            Self::InvalidRequest(m) => write!(f, "invalid HTTP request: {m}"),
            Self::Failed(m) => write!(f, "HTTP request failed: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ToolError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(_) => ToolError::Denied(e.to_string()),
            _ => ToolError::Failed(e.to_string()),
        }
    }
}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => Self::Denied("the destination is not on the tool's allowlist".into()),
            code => Self::Failed(format!("{code:?}")),
        }
    }
}

/// Sends `request` with `body`. A body the stream takes in one write goes before the request,
/// so the host has the whole request at `handle` (a replaying host answers it from its journal
/// at once); a larger one streams after, in chunks.
fn send_with_body(
    request: OutgoingRequest,
    body: &[u8],
) -> Result<outgoing_handler::FutureIncomingResponse, HttpError> {
    let invalid = |m: &str| HttpError::InvalidRequest(m.to_owned());
    let sending = |e: StreamError| HttpError::Failed(format!("sending the body: {e:?}"));
    let outgoing = request.body().map_err(|()| invalid("body"))?;
    let stream = outgoing.write().map_err(|()| invalid("body stream"))?;
    if stream.check_write().is_ok_and(|room| room >= body.len() as u64) {
        if !body.is_empty() {
            stream.write(body).map_err(sending)?;
        }
        drop(stream);
        OutgoingBody::finish(outgoing, None)?;
        return Ok(outgoing_handler::handle(request, None)?);
    }
    let future = outgoing_handler::handle(request, None)?;
    for chunk in body.chunks(4096) {
        stream.blocking_write_and_flush(chunk).map_err(sending)?;
    }
    drop(stream);
    OutgoingBody::finish(outgoing, None)?;
    Ok(future)
}

/// GET `url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    request("GET", url, &[], None)
}

/// Sends `method` to `url` (`http://` or `https://`) with `headers` and an optional body,
/// and reads the whole response.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Response, HttpError> {
    let invalid = |m: &str| HttpError::InvalidRequest(m.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("the URL has no scheme"))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(invalid(&format!("unsupported scheme `{other}`"))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let entries: Vec<(String, Vec<u8>)> =
        headers.iter().map(|(name, value)| (name.to_string(), value.as_bytes().to_vec())).collect();
    let fields = Fields::from_list(&entries).map_err(|e| invalid(&format!("headers: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    request.set_method(&method).map_err(|()| invalid("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    request.set_path_with_query(Some(&path)).map_err(|()| invalid("path"))?;
    let future = match body {
        // No body resource at all: the host has the whole request at `handle`.
        None => outgoing_handler::handle(request, None)?,
        Some(body) => send_with_body(request, body)?,
    };

    // A response already in hand (a replaying host answers from its journal at `handle`)
    // needs no pollable: three host calls fewer.
    let response = match future.get() {
        Some(response) => response,
        None => {
            future.subscribe().block();
            future.get().ok_or_else(|| HttpError::Failed("no response after the request completed".into()))?
        }
    };
    let response = response.map_err(|()| HttpError::Failed("the response was already taken".into()))??;
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|()| HttpError::Failed("the body was already taken".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| HttpError::Failed("the body stream was already taken".into()))?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(HttpError::Failed(format!("reading the body: {e:?}"))),
            }
        }
    }
    Ok(Response { status, headers, body })
}
