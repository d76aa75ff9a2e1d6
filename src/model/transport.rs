//! HTTP to one provider: bounded retries with backoff, deadlines, size limits, SSE, and
//! errors mapped to the WIT `model-error` with the API key scrubbed from every message.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::config::{ModelConfigError, ProviderConfig};
use super::progress::{Progress, ProgressKind};
use super::{ModelError, ProviderFailure};

/// Longest provider error text passed on to the guest.
const MAX_ERROR_TEXT: usize = 500;

/// An API key. Never printed: `Debug` shows only that one is set.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// How the key goes on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyHeader {
    /// `Authorization: Bearer <key>`
    Bearer,
    /// `x-api-key: <key>`
    XApiKey,
}

/// One provider's HTTP client and settings.
#[derive(Debug)]
pub(crate) struct Transport {
    /// The provider's name in the config, for messages.
    pub name: String,
    pub config: ProviderConfig,
    client: reqwest::Client,
    key: Option<ApiKey>,
    key_header: KeyHeader,
}

/// Why a streamed body stopped.
#[derive(Debug)]
pub(crate) enum StreamFault {
    Http(reqwest::Error),
    TooLarge(u64),
}

impl std::fmt::Display for StreamFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(e) => write!(f, "{e}"),
            Self::TooLarge(limit) => write!(f, "the streamed answer exceeds {limit} bytes"),
        }
    }
}

impl Transport {
    /// Reads the key from the environment variable the config names.
    pub fn new(name: &str, config: &ProviderConfig, key_header: KeyHeader) -> Result<Self, ModelConfigError> {
        let key = match &config.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Some(ApiKey(value)),
                _ => return Err(ModelConfigError::MissingKey { provider: name.to_owned(), var: var.clone() }),
            },
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout().min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ModelConfigError::Client(crate::source::Source::new(e)))?;
        Ok(Self { name: name.to_owned(), config: config.clone(), client, key, key_header })
    }

    /// `base_url` joined with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.config.base_url.trim_end_matches('/'), path.trim_start_matches('/'))
    }

    /// Removes the key from text that may have come back from the provider or the network
    /// stack (a misbehaving server may echo request headers).
    pub fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(key) if !key.0.is_empty() => text.replace(key.expose(), "[redacted]"),
            _ => text.to_owned(),
        }
    }

    fn failure(&self, status: Option<u16>, message: impl AsRef<str>) -> ModelError {
        ModelError::ProviderError(ProviderFailure { status, message: self.scrub(message.as_ref()) })
    }

    /// Posts `body` to `path`, retrying 429, 5xx and connection failures as the retry policy
    /// allows. Returns the first successful response, headers read, body not yet read.
    pub async fn post(
        &self,
        path: &str,
        extra_headers: &[(&'static str, String)],
        body: &serde_json::Value,
        call_id: &str,
        progress: &Progress<'_>,
    ) -> Result<reqwest::Response, ModelError> {
        let url = self.url(path);
        let mut headers = HeaderMap::new();
        for (name, value) in extra_headers {
            let value = HeaderValue::from_str(value).map_err(|_| self.failure(None, format!("bad header {name}")))?;
            headers.insert(HeaderName::from_static(name), value);
        }
        if let Ok(value) = HeaderValue::from_str(call_id) {
            // Providers and gateways that deduplicate requests make the call exactly-once.
            headers.insert(HeaderName::from_static("idempotency-key"), value);
        }
        if let Some(key) = &self.key {
            let (name, value) = match self.key_header {
                KeyHeader::Bearer => ("authorization", format!("Bearer {}", key.expose())),
                KeyHeader::XApiKey => ("x-api-key", key.expose().to_owned()),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                self.failure(None, format!("the API key of provider `{}` is not a valid header", self.name))
            })?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), value);
        }
        let body = serde_json::to_vec(body).map_err(|e| self.failure(None, format!("cannot encode request: {e}")))?;

        let policy = self.config.retry;
        let mut retry = 0;
        loop {
            progress.emit(ProgressKind::Attempt { attempt: retry + 1 });
            let sent = self
                .client
                .post(&url)
                .headers(headers.clone())
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let (error, retry_after) = match sent {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let text = self.error_text(response).await;
                    let error = if status == StatusCode::TOO_MANY_REQUESTS {
                        ModelError::RateLimited(
                            self.scrub(&format!("provider `{}` answered 429 Too Many Requests: {text}", self.name)),
                        )
                    } else {
                        self.failure(Some(status.as_u16()), text)
                    };
                    if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) if e.is_timeout() => return Err(self.timeout()),
                Err(e) if e.is_connect() => (
                    self.failure(None, format!("cannot connect to provider `{}`: {}", self.name, error_chain(&e))),
                    None,
                ),
                Err(e) => {
                    return Err(
                        self.failure(None, format!("request to provider `{}` failed: {}", self.name, error_chain(&e)))
                    );
                }
            };
            if retry >= policy.max_retries {
                return Err(error);
            }
            let delay = policy.delay(retry, retry_after);
            let reason = error.to_string();
            tracing::info!(provider = %self.name, call_id, retry = retry + 1, ?delay, reason = %reason, "retrying model call");
            progress.emit(ProgressKind::Retrying { attempt: retry + 2, delay, reason: &reason });
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    pub fn timeout(&self) -> ModelError {
        ModelError::Timeout(format!("provider `{}` did not answer within {}s", self.name, self.config.timeout_secs))
    }

    /// An error body, shortened: the provider's `error.message` if it is JSON that has one.
    async fn error_text(&self, response: reqwest::Response) -> String {
        let status = response.status();
        let body = read_limited(response, 64 << 10).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let error = v.get("error")?;
                error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
                    .or_else(|| error.as_str().map(str::to_owned))
            })
            .unwrap_or_else(|| text.trim().to_owned());
        let message = if message.is_empty() { status.to_string() } else { message };
        self.scrub(&truncate(&message, MAX_ERROR_TEXT))
    }

    /// Reads a JSON body of at most `max_response_bytes`.
    pub async fn json_body(&self, response: reqwest::Response) -> Result<serde_json::Value, ModelError> {
        let status = response.status().as_u16();
        let limit = self.config.max_response_bytes;
        let bytes = read_limited(response, limit).await.map_err(|fault| self.stream_error(Some(status), fault))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.failure(Some(status), format!("provider `{}` sent a malformed response: {e}", self.name)))
    }

    /// The body as server-sent events, failing once more than `max_response_bytes` arrive.
    pub fn events(
        &self,
        response: reqwest::Response,
    ) -> impl Stream<Item = Result<Event, eventsource_stream::EventStreamError<StreamFault>>> + Send + use<> {
        let limit = self.config.max_response_bytes;
        let mut seen = 0u64;
        response
            .bytes_stream()
            .map(move |chunk| {
                let chunk = chunk.map_err(StreamFault::Http)?;
                seen += chunk.len() as u64;
                if seen > limit { Err(StreamFault::TooLarge(limit)) } else { Ok(chunk) }
            })
            .eventsource()
    }

    /// A body or stream failure as the guest sees it.
    pub fn stream_error(&self, status: Option<u16>, fault: StreamFault) -> ModelError {
        match fault {
            StreamFault::Http(e) if e.is_timeout() => self.timeout(),
            StreamFault::Http(e) => {
                self.failure(status, format!("the answer from provider `{}` broke off: {}", self.name, error_chain(&e)))
            }
            StreamFault::TooLarge(limit) => {
                self.failure(status, format!("the answer from provider `{}` exceeds {limit} bytes", self.name))
            }
        }
    }

    /// An SSE decoding failure as the guest sees it.
    pub fn event_error(&self, error: eventsource_stream::EventStreamError<StreamFault>) -> ModelError {
        match error {
            eventsource_stream::EventStreamError::Transport(fault) => self.stream_error(Some(200), fault),
            other => {
                self.failure(Some(200), format!("provider `{}` sent a malformed event stream: {other}", self.name))
            }
        }
    }

    /// A stream that ended before its final event.
    pub fn truncated(&self) -> ModelError {
        self.failure(
            Some(200),
            format!("the streamed answer from provider `{}` ended before it was complete", self.name),
        )
    }

    /// An error event in an otherwise well-formed stream (e.g. the provider is overloaded).
    pub fn reported(&self, message: &str) -> ModelError {
        self.failure(Some(200), format!("provider `{}` reported an error mid-answer: {message}", self.name))
    }

    /// A well-formed body whose content is not what the protocol promises.
    pub fn malformed(&self, what: impl std::fmt::Display) -> ModelError {
        self.failure(Some(200), format!("provider `{}` sent a malformed response: {what}", self.name))
    }
}

async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, StreamFault> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(StreamFault::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(StreamFault::Http)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(StreamFault::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Longest `Retry-After` the host honours; the retry policy's `max_backoff_ms` caps it further.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A provider's `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), clamped to
/// [`MAX_RETRY_AFTER`]. Anything else (negative, NaN, `1e20`, garbage) is ignored rather than
/// trusted: the header comes from the network.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get("retry-after")?.to_str().ok()?, std::time::SystemTime::now())
}

fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        return Some(Duration::try_from_secs_f64(seconds).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{MAX_RETRY_AFTER, parse_retry_after};

    #[test]
    fn retry_after_is_parsed_defensively_and_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 ", now), Some(Duration::from_millis(500)));
        for huge in ["1e20", "18446744073709551616", "1e308", "99999999999"] {
            assert_eq!(parse_retry_after(huge, now), Some(MAX_RETRY_AFTER), "{huge}");
        }
        for junk in ["-1", "NaN", "inf", "-inf", "", "soon", "1e", "Wed, 99 Foo 2023"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk}");
        }
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(10 * 365 * 86_400));
        assert_eq!(parse_retry_after(&far, now), Some(MAX_RETRY_AFTER));
    }
}
