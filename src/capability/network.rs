//! Network: outgoing HTTP(S) through `wasi:http`, checked against the tool's allowlist in
//! the send hook (wasi-http's default client does not consult WASI's socket checks, so the
//! hook is the only gate), and raw sockets, which stay denied whatever the grant says.
//! Name lookups are disabled outright (`allow_ip_name_lookup(false)`). An allowed name is
//! resolved by the host and connected to only at an address that passed [`resolve`]'s check.

mod resolve;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::audit::Auditor;
use crate::policy::NetworkGrant;

/// The send hook of one instance: lets through requests to allowed hosts, denies the rest.
pub struct HttpGate {
    grant: Arc<NetworkGrant>,
    audit: Auditor,
}

impl HttpGate {
    pub(crate) fn new(grant: Arc<NetworkGrant>, audit: Auditor) -> Self {
        Self { grant, audit }
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

type SendResult = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>), HttpError>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let _ = fut;
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = uri.host().unwrap_or_default().to_owned();
        let shown = format!("{} {}", request.method(), uri.to_string().escape_debug());
        let allowed = self.grant.allowing(&host, port).map(ToString::to_string);
        let audit = self.audit.clone();
        let grant = self.grant.clone();
        Box::new(async move {
            match allowed {
                Some(pattern) => {
                    let options = capped(options);
                    let lookup_timeout = options.connect_timeout.unwrap_or(MAX_CONNECT);
                    let addr = match resolve::checked_address(&host, port, &grant, lookup_timeout).await {
                        Ok(addr) => addr,
                        Err(unreachable) => {
                            audit.deny("network", &shown, &unreachable.reason(&host)).await;
                            return Err(unreachable.error());
                        }
                    };
                    audit.allow("network", &shown, &format!("host matches `{pattern}`, connecting to {addr}")).await;
                    resolve::send_to(addr, request, options).await
                }
                None => {
                    let reason = format!("host `{}:{port}` is not on the allowlist", host.escape_debug());
                    audit.deny("network", &shown, &reason).await;
                    Err(HttpError::HttpRequestDenied)
                }
            }
        })
    }
}

/// The socket check every instance gets: every connect, listen and datagram is denied (the
/// tool sees `access-denied`) and recorded. The one thing let through is the implicit TCP
/// bind to an ephemeral port that precedes a connect (`0.0.0.0:0`), so that the connect
/// itself is checked and the trail names its destination; such a socket can do nothing
/// without a connect or listen, and both are denied.
pub(crate) fn deny_sockets(
    audit: Auditor,
) -> impl Fn(SocketAddr, SocketAddrUse) -> Pin<Box<dyn Future<Output = bool> + Send + Sync>> + Send + Sync + 'static {
    move |addr, use_| {
        if matches!(use_, SocketAddrUse::TcpBind) && addr.ip().is_unspecified() && addr.port() == 0 {
            return Box::pin(std::future::ready(true));
        }
        let audit = audit.clone();
        // The store's futures are not `Sync`; a spawned task's handle is.
        let record = tokio::spawn(async move {
            let request = format!("{use_:?} {addr}");
            audit.deny("socket", &request, "raw sockets are never granted; use HTTP through a network grant").await;
        });
        Box::pin(async move {
            let _ = record.await;
            false
        })
    }
}
