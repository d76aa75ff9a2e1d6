//! Raw sockets: never granted. `wasi:sockets` socket creation is shadowed in the linker, so
//! a tool (granted network or not: HTTP goes through the host's client) gets `access-denied`
//! and an audit event, and no OS socket is ever opened. WASI's own switches are off too
//! (`allow_tcp(false)`, `allow_udp(false)`, no name lookups) in case a path around the shadow
//! appears, and every address use is denied and audited by [`deny_sockets`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::{tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::{SocketError, SocketResult, TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::SocketAddrUse;

use super::CapabilityHost;
use super::audit::Auditor;

/// What socket creation sees of an instance: its audit trail.
pub struct SocketGate<'a> {
    pub audit: &'a Auditor,
}

const REASON: &str = "raw sockets are never granted; use HTTP through a network grant";

fn family(family: IpAddressFamily) -> &'static str {
    match family {
        IpAddressFamily::Ipv4 => "ipv4",
        IpAddressFamily::Ipv6 => "ipv6",
    }
}

fn denied() -> SocketError {
    ErrorCode::AccessDenied.into()
}

// Required by the bindings to turn a `SocketError` into the guest's error code; the gate
// adds only socket creation to the linker, so WASI's own `network` functions stay in place.
impl network::Host for SocketGate<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        error.downcast()
    }

    fn network_error_code(&mut self, _err: Resource<network::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(None)
    }
}

impl network::HostNetwork for SocketGate<'_> {
    fn drop(&mut self, _network: Resource<network::Network>) -> wasmtime::Result<()> {
        // Never reached: WASI's own `network` resource keeps its destructor.
        Ok(())
    }
}

impl tcp_create_socket::Host for SocketGate<'_> {
    fn create_tcp_socket(&mut self, address_family: IpAddressFamily) -> SocketResult<Resource<TcpSocket>> {
        // Synchronous in WASI: the audit record is written beside the call.
        let request = format!("create-tcp-socket {}", family(address_family));
        self.audit.deny_detached("socket", request, REASON).map_err(SocketError::trap)?;
        Err(denied())
    }
}

impl udp_create_socket::Host for SocketGate<'_> {
    async fn create_udp_socket(&mut self, address_family: IpAddressFamily) -> SocketResult<Resource<UdpSocket>> {
        self.audit.deny("socket", &format!("create-udp-socket {}", family(address_family)), REASON).await;
        self.audit.within_limits().map_err(SocketError::trap)?;
        Err(denied())
    }
}

struct HasSocketGate;

impl HasData for HasSocketGate {
    type Data<'a> = SocketGate<'a>;
}

/// Replaces WASI's socket creation (added by `add_to_linker_async`) with the gate.
pub(crate) fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    super::shadow(linker, |linker| {
        tcp_create_socket::add_to_linker::<T, HasSocketGate>(linker, T::sockets)?;
        udp_create_socket::add_to_linker::<T, HasSocketGate>(linker, T::sockets)
    })
}

/// Switches off everything of `wasi:sockets` in the instance's WASI context: TCP, UDP and
/// name lookups, with every address use denied and recorded by [`deny_sockets`].
pub(crate) fn configure(wasi: &mut WasiCtxBuilder, audit: &Auditor) {
    wasi.allow_ip_name_lookup(false).allow_tcp(false).allow_udp(false).socket_addr_check(deny_sockets(audit.clone()));
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
            audit.deny("socket", &request, REASON).await;
        });
        Box::pin(async move {
            let _ = record.await;
            false
        })
    }
}
