//! Turning wasi-http's requests and responses into what the journal keeps, and back: the
//! request's fingerprint, bodies buffered within the grant's bound, the guest's error codes.
//! A live exchange hands the guest what it journaled (converted the same way replay does),
//! so the guest cannot tell a replayed answer from the original.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::exchange::{HttpFailure, HttpRequestPrint, HttpResponseRecord, digest, hex_hash};

/// The header the host sets on every outgoing request (replacing the guest's own).
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The fingerprint of `request` as the guest made it, its body not yet read.
pub(crate) fn head_print(request: &http::Request<WasiBody>) -> HttpRequestPrint {
    let mut headers = Sha256::new();
    for (name, value) in request.headers().iter().filter(|(name, _)| name.as_str() != IDEMPOTENCY_KEY) {
        headers.update((name.as_str().len() as u64).to_le_bytes());
        headers.update(name.as_str());
        headers.update((value.len() as u64).to_le_bytes());
        headers.update(value.as_bytes());
    }
    HttpRequestPrint {
        method: request.method().to_string(),
        url: request.uri().to_string(),
        headers: hex_hash(headers.finalize().into()),
        body: None,
    }
}

/// The key of request `number` of step `seq` in `session`: the same for every re-run of a
/// step that crashed, so a server that honours the header executes the request once.
pub(crate) fn idempotency_key(session: &str, seq: u64, number: usize) -> String {
    let session = hex::encode(&Sha256::digest(session.as_bytes())[..8]);
    format!("{session}-{seq}-{number}")
}

/// A body read whole, or why not.
pub(crate) enum ReadBody {
    Whole(Bytes),
    Over(u64),
    Failed(HttpFailure),
}

impl ReadBody {
    /// The body's part of the request fingerprint.
    pub fn print(&self) -> String {
        match self {
            Self::Whole(bytes) => digest(bytes),
            Self::Over(max) => format!("over {max} bytes"),
            Self::Failed(failure) => format!("failed: {failure}"),
        }
    }
}

/// Reads `body` whole, up to `max` bytes (trailers are dropped).
pub(crate) async fn read_bounded(mut body: WasiBody, max: usize) -> ReadBody {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > max {
                        return ReadBody::Over(max as u64);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e) => return ReadBody::Failed(failure_of(e)),
        }
    }
    ReadBody::Whole(bytes.into())
}

/// Reads a response whole within `max` body bytes: what the journal records.
pub(crate) async fn record_response(
    response: http::Response<WasiBody>,
    max: usize,
) -> Result<HttpResponseRecord, HttpFailure> {
    let (parts, body) = response.into_parts();
    let body = match read_bounded(body, max).await {
        ReadBody::Whole(bytes) => bytes.to_vec(),
        ReadBody::Over(max) => return Err(HttpFailure::ResponseBodySize(max)),
        ReadBody::Failed(failure) => return Err(failure),
    };
    let headers = parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
    Ok(HttpResponseRecord { status: parts.status.as_u16(), headers, body })
}

/// A body of bytes already in hand.
pub(crate) fn full_body(bytes: Bytes) -> WasiBody {
    Full::new(bytes).map_err(|never: std::convert::Infallible| -> HttpError { match never {} }).boxed_unsync()
}

/// The response (or error) the guest gets for a journaled outcome.
pub(crate) fn deliver(outcome: Result<HttpResponseRecord, HttpFailure>) -> Result<http::Response<WasiBody>, HttpError> {
    let record = outcome.map_err(|f| to_wasi(&f))?;
    let mut builder = http::Response::builder().status(record.status);
    for (name, value) in &record.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    builder
        .body(full_body(record.body.into()))
        .map_err(|e| HttpError::InternalError(Some(format!("a recorded response is malformed: {e}"))))
}

/// The error code the guest sees for `failure`.
pub(crate) fn to_wasi(failure: &HttpFailure) -> HttpError {
    match failure {
        HttpFailure::Denied => HttpError::HttpRequestDenied,
        HttpFailure::DestinationIpProhibited => HttpError::DestinationIpProhibited,
        HttpFailure::DnsError => HttpError::DnsError { rcode: None, info_code: None },
        HttpFailure::DnsTimeout => HttpError::DnsTimeout,
        HttpFailure::ConnectionRefused => HttpError::ConnectionRefused,
        HttpFailure::ConnectionTimeout => HttpError::ConnectionTimeout,
        HttpFailure::ConnectionReadTimeout => HttpError::ConnectionReadTimeout,
        HttpFailure::ConnectionTerminated => HttpError::ConnectionTerminated,
        HttpFailure::ResponseTimeout => HttpError::HttpResponseTimeout,
        HttpFailure::RequestBodySize(max) => HttpError::HttpRequestBodySize(Some(*max)),
        HttpFailure::ResponseBodySize(max) => HttpError::HttpResponseBodySize(Some(*max)),
        HttpFailure::ResponseIncomplete => HttpError::HttpResponseIncomplete,
        HttpFailure::TlsCertificate => HttpError::TlsCertificateError,
        HttpFailure::TlsProtocol => HttpError::TlsProtocolError,
        HttpFailure::Protocol => HttpError::HttpProtocolError,
        HttpFailure::Abandoned => HttpError::InternalError(Some(failure.to_string())),
        HttpFailure::Internal(message) => HttpError::InternalError(Some(message.clone())),
    }
}

/// What the journal keeps of a send error.
pub(crate) fn failure_of(error: HttpError) -> HttpFailure {
    match error {
        HttpError::HttpRequestDenied => HttpFailure::Denied,
        HttpError::DestinationIpProhibited => HttpFailure::DestinationIpProhibited,
        HttpError::DnsError { .. } | HttpError::InvalidDnsNameError(_) => HttpFailure::DnsError,
        HttpError::DnsTimeout => HttpFailure::DnsTimeout,
        HttpError::ConnectionRefused => HttpFailure::ConnectionRefused,
        HttpError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => HttpFailure::ConnectionRefused,
        HttpError::ConnectionTimeout => HttpFailure::ConnectionTimeout,
        HttpError::ConnectionReadTimeout => HttpFailure::ConnectionReadTimeout,
        HttpError::ConnectionTerminated => HttpFailure::ConnectionTerminated,
        HttpError::HttpResponseTimeout => HttpFailure::ResponseTimeout,
        HttpError::HttpRequestBodySize(max) => HttpFailure::RequestBodySize(max.unwrap_or(0)),
        HttpError::HttpResponseBodySize(max) => HttpFailure::ResponseBodySize(max.unwrap_or(0)),
        HttpError::HttpResponseIncomplete => HttpFailure::ResponseIncomplete,
        HttpError::TlsCertificateError => HttpFailure::TlsCertificate,
        HttpError::Tls(e) if e.to_string().contains("certificate") => HttpFailure::TlsCertificate,
        HttpError::TlsProtocolError | HttpError::Tls(_) => HttpFailure::TlsProtocol,
        HttpError::Hyper(e) if e.is_timeout() => HttpFailure::ResponseTimeout,
        HttpError::Hyper(e) if e.is_incomplete_message() => HttpFailure::ResponseIncomplete,
        HttpError::Hyper(_) | HttpError::HttpProtocolError => HttpFailure::Protocol,
        other => HttpFailure::Internal(other.to_string()),
    }
}
