//! An outgoing HTTP exchange as the step journal records it: what identifies the request
//! (its fingerprint) and what came back (the whole response, or why there was none). These
//! are our own types, so the journal's format does not move with wasi-http's.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What identifies a request: a replayed step must make the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequestPrint {
    pub method: String,
    pub url: String,
    /// sha256 of the headers as the guest set them (the host's `Idempotency-Key` aside).
    pub headers: String,
    /// sha256 of the body, `over N bytes` past the bound, `None` while (or if) the body was
    /// never finished.
    pub body: Option<String>,
}

impl HttpRequestPrint {
    /// Method, URL and headers agree (the body comes later: see [`HttpRequestPrint::body`]).
    pub fn same_head(&self, other: &Self) -> bool {
        (&self.method, &self.url, &self.headers) == (&other.method, &other.url, &other.headers)
    }
}

impl fmt::Display for HttpRequestPrint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |hash: &str| hash.get(..12).unwrap_or(hash).to_owned();
        let body = self.body.as_deref().map_or_else(|| "unfinished".to_owned(), short);
        write!(f, "{} {} (headers {}, body {body})", self.method, self.url.escape_debug(), short(&self.headers))
    }
}

/// sha256 of `bytes`, hex.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex_hash(Sha256::digest(bytes).into())
}

/// A sha256 hash as hex (`hex::encode` goes a `char` at a time; this is on every request's
/// path, replayed or live).
pub(crate) fn hex_hash(hash: [u8; 32]) -> String {
    let mut text = [0; 64];
    hex::encode_to_slice(hash, &mut text).expect("64 hex digits for 32 bytes");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

/// A response, whole: what the guest reads (as a stream) live and on replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponseRecord {
    pub status: u16,
    /// Names (lowercase) and raw values, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "super::bytes")]
    pub body: Vec<u8>,
}

/// Why an allowed or refused request produced no response: the `error-code` the guest got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpFailure {
    /// Not on the allowlist.
    Denied,
    /// The name resolves only to the host's own network.
    DestinationIpProhibited,
    DnsError,
    DnsTimeout,
    ConnectionRefused,
    ConnectionTimeout,
    ConnectionReadTimeout,
    ConnectionTerminated,
    ResponseTimeout,
    /// The request body was over the grant's `max_response_bytes`.
    RequestBodySize(u64),
    /// The response body was over the grant's `max_response_bytes`.
    ResponseBodySize(u64),
    ResponseIncomplete,
    TlsCertificate,
    TlsProtocol,
    Protocol,
    /// The step that sent the request ended before its response was complete.
    Abandoned,
    Internal(String),
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RequestBodySize(n) => write!(f, "the request body is over {n} bytes"),
            Self::ResponseBodySize(n) => write!(f, "the response body is over {n} bytes"),
            Self::Abandoned => f.write_str("the step ended before the response was complete"),
            Self::Internal(m) => f.write_str(m),
            other => write!(f, "{other:?}"),
        }
    }
}

/// What one request came to. `None` in a pending (uncommitted) journal: the request may have
/// been in flight when the host stopped, and is sent again under the same idempotency key.
pub type HttpOutcome = Option<Result<HttpResponseRecord, HttpFailure>>;

/// Host memory an exchange holds, near enough to charge it.
pub(crate) fn approx_bytes(request: &HttpRequestPrint, outcome: &HttpOutcome) -> usize {
    let request = request.method.len() + request.url.len() + 64 + 64;
    let response = match outcome {
        Some(Ok(r)) => r.body.len() + r.headers.iter().map(|(n, v)| n.len() + v.len() + 16).sum::<usize>(),
        Some(Err(HttpFailure::Internal(m))) => m.len(),
        _ => 0,
    };
    request + response
}
