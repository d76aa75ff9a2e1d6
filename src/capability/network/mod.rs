//! Network: outgoing HTTP(S) through `wasi:http`, granted by a [`NetworkGrant`] (`grant`:
//! the policy section, its checks and rows; [`HostPattern`]: the allowlist's entries) and
//! checked against the tool's allowlist in the send hook (wasi-http's default client does not
//! consult WASI's socket checks, so the hook is the only gate). Raw sockets and name lookups
//! stay denied whatever the grant says (see [`super::sockets`]). An allowed name is resolved
//! by the host and connected to only at an address that passed [`resolve`]'s check.
//!
//! Every request is journaled like a model call ([`exchange`]): its place in the step's
//! inputs is taken when the guest sends it, its whole response is recorded and persisted the
//! moment it is in, and a replayed step is answered from the journal without touching the
//! network. Each request carries an `Idempotency-Key` derived from session, step and request
//! number, so the one request that may be in flight at a crash can be deduplicated by the
//! server.

mod exchange;
mod grant;
mod host_pattern;
mod outgoing;
mod resolve;

pub use grant::{DEFAULT_MAX_RESPONSE_BYTES, NAME, NetworkGrant};
pub(crate) use grant::{compare, validate};
pub use host_pattern::{HostPattern, HostPatternError};
pub use outgoing::OutgoingHttp;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use self::exchange::{IDEMPOTENCY_KEY, ReadBody, deliver, full_body, head_print, idempotency_key, read_bounded};
use super::CapabilityHost;
use super::audit::Auditor;
use super::in_flight::InFlight;
use crate::exchange::{HttpFailure, HttpRequestPrint, HttpResponseRecord};
use crate::journal::{HttpSlot, JournalEntry, lock};

/// The send hook of one instance: journals every request, lets through those to allowed
/// hosts and denies the rest.
pub struct HttpGate {
    sender: Sender,
    flight: InFlight,
    /// Requests sent outside any step (a restore or snapshot export), for their keys.
    unjournaled: usize,
    idle_workers: outgoing::IdleWorkers,
}

impl HttpGate {
    pub(crate) fn new(grant: Arc<NetworkGrant>, audit: Auditor, flight: InFlight) -> Self {
        Self { sender: Sender { grant, audit }, flight, unjournaled: 0, idle_workers: Default::default() }
    }
}

/// Upper bounds on how long a request may wait, whatever the tool asks: time waiting on
/// the network is not guest CPU time, so the CPU deadline does not bound it.
const MAX_CONNECT: Duration = Duration::from_secs(10);
const MAX_FIRST_BYTE: Duration = Duration::from_secs(60);
const MAX_BETWEEN_BYTES: Duration = Duration::from_secs(60);

fn capped(options: Option<RequestOptions>) -> RequestOptions {
    let cap = |asked: Option<Duration>, max: Duration| Some(asked.map_or(max, |a| a.min(max)));
    let asked = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: cap(asked.connect_timeout, MAX_CONNECT),
        first_byte_timeout: cap(asked.first_byte_timeout, MAX_FIRST_BYTE),
        between_bytes_timeout: cap(asked.between_bytes_timeout, MAX_BETWEEN_BYTES),
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, IoFuture), HttpError>;

/// What the journal says about a request the guest just sent.
enum Claim {
    /// Answered from the journal; `recorded.body` is checked against the guest's body.
    Answered { slot: HttpSlot, recorded: HttpRequestPrint, outcome: Result<HttpResponseRecord, HttpFailure> },
    /// Sent for real, its outcome filled into `slot` (none outside a step).
    Send { slot: Option<HttpSlot>, key: String },
    /// The replay has diverged, or the journal is full: nothing is sent.
    Refused(String),
}

impl HttpGate {
    /// Takes the request's place among the step's inputs, in the order the guest sends.
    fn claim(&mut self, head: &HttpRequestPrint) -> Claim {
        let mut journal = lock(&self.flight.journal);
        let replayed = journal.replayed("an HTTP request", |entry| match entry {
            JournalEntry::Http { request, outcome } => Some((request.clone(), outcome.clone())),
            _ => None,
        });
        let seq = journal.step.as_ref().map_or(0, |s| s.seq);
        let key = |slot: HttpSlot| idempotency_key(&self.flight.session, seq, slot.number);
        if let Some((recorded, outcome)) = replayed {
            let slot = journal.last_http_slot().expect("an HTTP entry was just replayed");
            if !recorded.same_head(head) {
                journal.mark_diverged(changed_request(slot, head, &recorded));
                return Claim::Refused("the replay diverged from the journal".into());
            }
            return match outcome {
                Some(outcome) => Claim::Answered { slot, recorded, outcome },
                // In flight when the host stopped: sent again, under the same key.
                None => Claim::Send { slot: Some(slot), key: key(slot) },
            };
        }
        if journal.has_diverged() {
            // A diverged replay never reaches the network: its result is discarded anyway.
            return Claim::Refused("the replay diverged from the journal".into());
        }
        if !journal.is_recording() {
            self.unjournaled += 1;
            return Claim::Send { slot: None, key: idempotency_key(&self.flight.session, 0, self.unjournaled) };
        }
        let before = journal.next_index();
        journal.record(JournalEntry::Http { request: head.clone(), outcome: None });
        match journal.last_http_slot() {
            Some(slot) if journal.next_index() > before => Claim::Send { slot: Some(slot), key: key(slot) },
            _ => Claim::Refused("the step's journal is full".into()),
        }
    }
}

fn changed_request(slot: HttpSlot, now: &HttpRequestPrint, recorded: &HttpRequestPrint) -> String {
    format!("HTTP request {} of the step is `{now}` where the journal has `{recorded}`", slot.number + 1)
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let _ = fut;
        let head = head_print(&request);
        let max = self.sender.grant.max_response_bytes;
        let flight = self.flight.clone();
        match self.claim(&head) {
            Claim::Answered { slot, recorded, outcome } => Box::new(async move {
                if let Some(expected) = &recorded.body {
                    let now =
                        HttpRequestPrint { body: Some(read_bounded(request.into_body(), max).await.print()), ..head };
                    if now.body.as_ref() != Some(expected) {
                        lock(&flight.journal).mark_diverged(changed_request(slot, &now, &recorded));
                        return Err(HttpError::InternalError(Some("the replay diverged from the journal".into())));
                    }
                }
                Ok((deliver(outcome)?, done()))
            }),
            Claim::Refused(reason) => Box::new(async move { Err(HttpError::InternalError(Some(reason))) }),
            Claim::Send { slot, key } => {
                let sender = self.sender.clone();
                Box::new(async move {
                    let (body, outcome) = sender.exchange(request, options, &key).await;
                    if let Some(slot) = slot {
                        if !lock(&flight.journal).fill_http(slot, body, Some(outcome.clone())) {
                            return Err(exchange::to_wasi(&HttpFailure::Abandoned));
                        }
                        flight.persist("an HTTP response").await;
                    }
                    Ok((deliver(outcome)?, done()))
                })
            }
        }
    }
}

/// The connection's own future: a response is read whole before the guest sees it.
fn done() -> IoFuture {
    Box::new(std::future::ready(Ok(())))
}

/// Sends requests for real: the allowlist, the address check, the bounded read.
#[derive(Clone)]
struct Sender {
    grant: Arc<NetworkGrant>,
    audit: Auditor,
}

impl Sender {
    /// Sends `request` with `key`; returns the body's fingerprint (if it was read) and what
    /// came of it.
    async fn exchange(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        key: &str,
    ) -> (Option<String>, Result<HttpResponseRecord, HttpFailure>) {
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = uri.host().unwrap_or_default().to_owned();
        let shown = format!("{} {}", request.method(), uri.to_string().escape_debug());
        let Some(pattern) = self.grant.allowing(&host, port).map(ToString::to_string) else {
            let reason = format!("host `{}:{port}` is not on the allowlist", host.escape_debug());
            self.audit.deny("network", &shown, &reason).await;
            return (None, Err(HttpFailure::Denied));
        };
        let max = self.grant.max_response_bytes;
        let (mut parts, body) = request.into_parts();
        let read = read_bounded(body, max).await;
        let print = Some(read.print());
        let body = match read {
            ReadBody::Whole(bytes) => bytes,
            ReadBody::Over(max) => return (print, Err(HttpFailure::RequestBodySize(max))),
            ReadBody::Failed(failure) => return (print, Err(failure)),
        };
        let options = capped(options);
        let lookup_timeout = options.connect_timeout.unwrap_or(MAX_CONNECT);
        let addr = match resolve::checked_address(&host, port, &self.grant, lookup_timeout).await {
            Ok(addr) => addr,
            Err(unreachable) => {
                self.audit.deny("network", &shown, &unreachable.reason(&host)).await;
                return (print, Err(exchange::failure_of(unreachable.error())));
            }
        };
        self.audit.allow("network", &shown, &format!("host matches `{pattern}`, connecting to {addr}")).await;
        // The host's key replaces any the guest set: it is what makes a re-sent request known.
        match http::HeaderValue::from_str(key) {
            Ok(value) => parts.headers.insert(IDEMPOTENCY_KEY, value),
            Err(_) => parts.headers.remove(IDEMPOTENCY_KEY),
        };
        let request = http::Request::from_parts(parts, full_body(body));
        let outcome = match resolve::send_to(addr, request, options).await {
            Ok((response, _io)) => exchange::record_response(response, max).await,
            Err(e) => Err(exchange::failure_of(e)),
        };
        (print, outcome)
    }
}

/// Adds `wasi:http`: wasi-http's types, and our outgoing handler, whose every request goes
/// through the instance's [`HttpGate`].
pub(crate) fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    super::shadow(linker, outgoing::shadow_handle)
}
