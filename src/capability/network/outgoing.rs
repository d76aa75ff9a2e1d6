//! `wasi:http/outgoing-handler`, ours rather than wasi-http's. Its `handle` spawns a task per
//! request (and another for the connection) and the guest then waits on that task, even when
//! the journal already holds the answer: under load, the wake-ups cost more than the rest of
//! a replayed step. Ours polls the gate's answer once: one already in hand (a replayed request
//! whose body is complete: none, or written before `handle`) becomes a ready response, which
//! the guest's wait returns at once (the connection's future, already finished, is left to a
//! task nobody waits on); only a request that has to wait (a live send, a body still being
//! written) gets a task for its response, as with wasi-http. A ready response still needs a
//! task handle (wasi-http's type keeps the connection's task alive with the body): one from
//! [`IdleWorkers`], which wakes no thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::runtime::{AbortOnDropJoinHandle, spawn};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Method, Scheme};
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::p2::{HttpResult, http_request_error};
use wasmtime_wasi_http::{RequestOptions, WasiHttpHooks};

use super::exchange::full_body;
use super::{HttpGate, IoFuture};
use crate::capability::CapabilityHost;

/// What `handle` reaches in an instance: its resource table and its send hook.
pub struct OutgoingHttp<'a> {
    pub table: &'a mut ResourceTable,
    pub gate: &'a mut HttpGate,
}

/// The interface whose `handle` ours replaces, at the version wasi-http 48 implements (a
/// guest importing an older 0.2 version resolves to it too).
const INTERFACE: &str = "wasi:http/outgoing-handler@0.2.12";

/// The outgoing handler's one function over wasi-http's (the `wasi:http` types stay theirs).
pub(crate) fn shadow_handle<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    type Params = (Resource<HostOutgoingRequest>, Option<Resource<RequestOptions>>);
    type Returns = (Result<Resource<HostFutureIncomingResponse>, ErrorCode>,);
    linker.instance(INTERFACE)?.func_wrap(
        "handle",
        |mut store: StoreContextMut<'_, T>, (request, options): Params| -> wasmtime::Result<Returns> {
            match store.data_mut().outgoing_http().handle(request, options) {
                Ok(response) => Ok((Ok(response),)),
                // A trap stays one; an error code goes to the guest.
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    Ok(())
}

impl OutgoingHttp<'_> {
    fn handle(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
    ) -> HttpResult<Resource<HostFutureIncomingResponse>> {
        let options = options.and_then(|options| self.table.get(&options).ok()).cloned();
        let request = self.table.delete(request)?;
        let request = to_http(request, self.gate)?;
        let answer = Box::into_pin(self.gate.send_request(request, options, Box::new(std::future::ready(Ok(())))));
        let response = match poll_once(answer) {
            Polled::Ready(answer) => {
                HostFutureIncomingResponse::Ready(answer.map(|(res, io)| (res, self.gate.idle_workers.worker(io))))
            }
            Polled::Pending(answer) => HostFutureIncomingResponse::Pending(spawn(async move {
                let (res, io) = answer.await?;
                Ok((res, drive(Box::into_pin(io))))
            })),
        };
        Ok(self.table.push(response)?)
    }
}

/// Handles for responses whose connection has finished (every replayed one). wasi-http's
/// ready response must hold a task handle, and a task spawned on the host's runtime wakes a
/// worker thread to run it (a futex and an eventfd write when spawned off the runtime's
/// workers, as `toolhost call`'s `block_on` does): that was three quarters of a replayed
/// exchange's host time. These tasks have nothing to do, so they go to a current-thread
/// runtime without drivers that nobody runs, where a spawn only queues the task. The
/// runtime is replaced (dropping what it queued) every [`IDLE_RECYCLE`] handles, which
/// bounds what it holds; a body still holding a handle of a dropped one is unaffected.
#[derive(Default)]
pub(crate) struct IdleWorkers {
    runtime: Option<tokio::runtime::Runtime>,
    spawned: usize,
}

const IDLE_RECYCLE: usize = 256;

impl IdleWorkers {
    /// The task that drives `io`: an idle one if `io` is already finished.
    fn worker(&mut self, io: IoFuture) -> AbortOnDropJoinHandle<()> {
        match poll_once(Box::into_pin(io)) {
            Polled::Ready(finished) => {
                if let Err(e) = finished {
                    tracing::warn!("an HTTP connection ended with an error: {e}");
                }
                self.idle()
            }
            Polled::Pending(io) => drive(io),
        }
    }

    fn idle(&mut self) -> AbortOnDropJoinHandle<()> {
        if self.spawned >= IDLE_RECYCLE {
            self.retire();
        }
        let runtime = match self.runtime.take() {
            Some(runtime) => runtime,
            None => match tokio::runtime::Builder::new_current_thread().build() {
                Ok(runtime) => runtime,
                // Not expected (no driver to start), and a task on the host's runtime serves too.
                Err(e) => {
                    tracing::warn!("no runtime for idle HTTP workers: {e}");
                    return spawn(async {});
                }
            },
        };
        self.spawned += 1;
        let handle = runtime.spawn(async {}).into();
        self.runtime = Some(runtime);
        handle
    }

    /// Drops the runtime and its queued tasks without waiting (this may run in async code).
    fn retire(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        self.spawned = 0;
    }
}

impl Drop for IdleWorkers {
    fn drop(&mut self) {
        self.retire();
    }
}

/// A future polled once, or still to be awaited.
enum Polled<T, F> {
    Ready(T),
    Pending(F),
}

/// Polls `future` once without a task to wake: a future that is not ready is handed back
/// (and registers its real waker when it is polled again, as every future must).
fn poll_once<F: Future + ?Sized>(mut future: Pin<Box<F>>) -> Polled<F::Output, Pin<Box<F>>> {
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        std::task::Poll::Ready(output) => Polled::Ready(output),
        std::task::Poll::Pending => Polled::Pending(future),
    }
}

/// The connection's task, which the response body keeps alive while it is read.
fn drive(io: Pin<IoFuture>) -> AbortOnDropJoinHandle<()> {
    spawn(async move {
        if let Err(e) = io.await {
            tracing::warn!("an HTTP connection ended with an error: {e}");
        }
    })
}

/// The guest's request as an `http::Request`, built as wasi-http's own `handle` builds it (the
/// same headers in the same order, so journaled fingerprints stay the same).
fn to_http(request: HostOutgoingRequest, gate: &mut HttpGate) -> HttpResult<http::Request<super::WasiBody>> {
    if content_length(&request.headers)?.is_some_and(|n| n != 0) && request.body.is_none() {
        return Err(ErrorCode::HttpRequestBodySize(Some(0)).into());
    }
    let scheme = match request.scheme {
        Some(scheme) => {
            let scheme = match scheme {
                Scheme::Http => http::uri::Scheme::HTTP,
                Scheme::Https => http::uri::Scheme::HTTPS,
                Scheme::Other(other) => other.as_str().try_into().map_err(|_| ErrorCode::HttpProtocolError)?,
            };
            if !gate.is_supported_scheme(&scheme) {
                return Err(ErrorCode::HttpProtocolError.into());
            }
            scheme
        }
        None => gate.default_scheme().ok_or(ErrorCode::HttpProtocolError)?,
    };
    let authority = request.authority.unwrap_or_default();
    let mut uri = http::Uri::builder().scheme(scheme).authority(authority.as_str());
    if let Some(path) = request.path_with_query {
        uri = uri.path_and_query(path);
    }
    let mut builder =
        http::Request::builder().method(method(request.method)?).uri(uri.build().map_err(http_request_error)?);
    if gate.set_host_header() {
        builder = builder.header(http::header::HOST, authority.as_str());
    }
    for (name, value) in request.headers.iter() {
        builder = builder.header(name, value);
    }
    let body = request.body.unwrap_or_else(|| full_body(Bytes::new()));
    Ok(builder.body(body).map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?)
}

fn method(method: Method) -> Result<http::Method, ErrorCode> {
    Ok(match method {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Connect => http::Method::CONNECT,
        Method::Options => http::Method::OPTIONS,
        Method::Trace => http::Method::TRACE,
        Method::Patch => http::Method::PATCH,
        Method::Other(other) => {
            http::Method::from_bytes(other.as_bytes()).map_err(|_| ErrorCode::HttpRequestMethodInvalid)?
        }
    })
}

/// The body length `headers` announce, checked here too (as wasi-http does) because a guest
/// need not go through the calls that check it: a malformed one is an error, and a request
/// without a body may not announce one, or the wire framing would lie.
fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, ErrorCode> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let malformed = || ErrorCode::InternalError(Some("malformed `content-length` header".into()));
    let text = value.to_str().map_err(|_| malformed())?;
    if values.next().is_some() || text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    text.parse().map(Some).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        let mut headers = http::HeaderMap::new();
        assert!(matches!(content_length(&headers), Ok(None)));
        headers.insert(http::header::CONTENT_LENGTH, "0".parse().unwrap());
        assert!(matches!(content_length(&headers), Ok(Some(0))));
        headers.insert(http::header::CONTENT_LENGTH, "12".parse().unwrap());
        assert!(matches!(content_length(&headers), Ok(Some(12))));
        for bad in ["+12", "", "1 2", "99999999999999999999999"] {
            headers.insert(http::header::CONTENT_LENGTH, bad.parse().unwrap());
            assert!(content_length(&headers).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_finished_connection_gets_an_idle_worker_and_a_running_one_its_own() {
        let mut idle = IdleWorkers::default();
        let mut held = Vec::new();
        for _ in 0..IDLE_RECYCLE + 1 {
            held.push(idle.worker(Box::new(std::future::ready(Ok(())))));
        }
        assert_eq!(idle.spawned, 1, "the runtime was replaced after {IDLE_RECYCLE} handles");
        drop(held); // aborting tasks of a retired runtime and of the live one
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running: IoFuture = Box::new(async move {
            let _ = rx.await;
            Ok(())
        });
        let driver = idle.worker(running);
        assert_eq!(idle.spawned, 1, "a connection still running is driven on the host's runtime");
        tx.send(()).unwrap();
        driver.await;
        drop(idle); // in async code, as an instance is dropped
    }

    #[test]
    fn a_ready_future_is_answered_without_a_task() {
        let ready: Pin<Box<dyn Future<Output = u8> + Send>> = Box::pin(async { 7 });
        assert!(matches!(poll_once(ready), Polled::Ready(7)));
        let pending: Pin<Box<dyn Future<Output = u8> + Send>> = Box::pin(std::future::pending());
        assert!(matches!(poll_once(pending), Polled::Pending(_)));
    }
}
