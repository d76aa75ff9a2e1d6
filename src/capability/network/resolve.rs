//! Where an allowed request may actually go. The allowlist names hosts; DNS turns a name
//! into addresses the tool's author may control, so a granted name could point at the host's
//! own network (loopback, the cloud metadata service at 169.254.169.254, private ranges).
//! Every name is resolved here, each address checked, and the connection made to the very
//! address that passed, so a second lookup (DNS rebinding) never gets a say. TLS still
//! verifies the certificate against the name, and the `Host` header still carries it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use super::NetworkGrant;

/// The host's own network: what a tool reaches only through an IP literal the policy names,
/// or with `allow_private = true`.
pub(crate) fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_link_local() => "link-local (incl. cloud metadata)",
        _ if ip.is_private() => "private",
        _ if a == 100 && (64..128).contains(&b) => "shared (CGNAT)",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "multicast",
        _ if first & 0xffc0 == 0xfe80 => "link-local",
        _ if first & 0xfe00 == 0xfc00 => "unique-local",
        // IPv4-compatible (deprecated) `::a.b.c.d`, and NAT64 `64:ff9b::a.b.c.d`, of an internal address.
        _ if ip.to_ipv4().is_some_and(|v4| internal_v4(v4).is_some()) => "IPv4-compatible internal",
        _ if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            && internal_v4(Ipv4Addr::from_bits(ip.to_bits() as u32)).is_some() =>
        {
            "NAT64 of an internal address"
        }
        _ => return None,
    })
}

/// Why a request was not sent.
#[derive(Debug)]
pub(crate) enum Unreachable {
    /// Every address the name has is internal, and the grant does not opt in.
    Internal {
        addr: IpAddr,
        range: &'static str,
    },
    Lookup(String),
    Timeout,
}

impl Unreachable {
    pub fn reason(&self, host: &str) -> String {
        match self {
            Self::Internal { addr, range } => format!(
                "`{}` resolves to {addr}, a {range} address; name that IP literal in the allowlist or set \
                 `allow_private = true` to reach it",
                host.escape_debug()
            ),
            Self::Lookup(e) => format!("cannot resolve `{}`: {e}", host.escape_debug()),
            Self::Timeout => format!("resolving `{}` timed out", host.escape_debug()),
        }
    }

    pub fn error(&self) -> HttpError {
        match self {
            Self::Internal { .. } => HttpError::DestinationIpProhibited,
            Self::Lookup(_) => HttpError::DnsError { rcode: None, info_code: None },
            Self::Timeout => HttpError::DnsTimeout,
        }
    }
}

/// The address to connect to for `host:port`, which the grant allows by name or literal.
/// An IP literal that passed the allowlist is named by it and goes through as is.
pub(crate) async fn checked_address(
    host: &str,
    port: u16,
    grant: &NetworkGrant,
    timeout: Duration,
) -> Result<SocketAddr, Unreachable> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved: Vec<SocketAddr> = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => return Err(Unreachable::Timeout),
        Ok(Err(e)) => return Err(Unreachable::Lookup(e.to_string())),
        Ok(Ok(addrs)) => addrs.collect(),
    };
    let mut refused = None;
    for addr in resolved {
        match internal_range(addr.ip()) {
            Some(range) if !grant.allow_private => {
                refused.get_or_insert(Unreachable::Internal { addr: addr.ip(), range });
            }
            _ => return Ok(addr),
        }
    }
    Err(refused.unwrap_or_else(|| Unreachable::Lookup("no addresses".into())))
}

type Sent = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>);

/// Sends `request` over a new connection to `addr`, the checked address of the request's
/// host: wasi-http's `default_send_request` with the connect target fixed (it would look
/// the name up again). TLS verifies the certificate against the request's host name.
pub(crate) async fn send_to(
    addr: SocketAddr,
    mut request: http::Request<WasiBody>,
    options: RequestOptions,
) -> Result<Sent, HttpError> {
    let uri = request.uri();
    let use_tls = uri.scheme() == Some(&Scheme::HTTPS);
    let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?.to_owned();
    let connect_timeout = options.connect_timeout.unwrap_or(Duration::from_secs(10));
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(Duration::from_secs(60));
    let between_bytes = options.between_bytes_timeout.unwrap_or(Duration::from_secs(60)).max(Duration::new(0, 1));

    let tcp = match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(stream) => stream.map_err(HttpError::Connect)?,
        Err(_) => return Err(HttpError::ConnectionTimeout),
    };
    let stream: Box<dyn Stream> = if use_tls {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let name = match literal.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.clone()).map_err(HttpError::InvalidDnsNameError)?,
        };
        let tls = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(wasmtime_wasi_http::io::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // hyper sends the URI as given: origin-form (path and query) for a direct request. The
    // `Host` header (set by wasi-http from the authority) keeps the name.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    *request.uri_mut() =
        http::Uri::builder().path_and_query(path).build().map_err(|_| HttpError::HttpRequestUriInvalid)?;
    if !request.headers().contains_key(http::header::HOST)
        && let Some(authority) = uri_authority(&host, addr.port(), use_tls)
    {
        request.headers_mut().insert(http::header::HOST, authority);
    }

    let conn = tokio::spawn(conn);
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    let body = response.map(move |incoming| {
        TimedBody { incoming, timeout: Box::pin(tokio::time::sleep(between_bytes)), between: between_bytes }
            .boxed_unsync()
    });
    let io = async move {
        match conn.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.is_timeout() => Err(HttpError::HttpResponseTimeout),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(HttpError::ConnectionTerminated),
        }
    };
    Ok((body, Box::new(io)))
}

fn uri_authority(host: &str, port: u16, tls: bool) -> Option<http::HeaderValue> {
    let default = if tls { 443 } else { 80 };
    let text = if port == default { host.to_owned() } else { format!("{host}:{port}") };
    http::HeaderValue::from_str(&text).ok()
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// A response body that fails when no bytes arrive for `between`.
struct TimedBody {
    incoming: hyper::body::Incoming,
    timeout: std::pin::Pin<Box<tokio::time::Sleep>>,
    between: Duration,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.between;
                self.timeout.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => Poll::Ready(Some(Err(HttpError::HttpResponseTimeout))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timeout.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::internal_range;

    #[test]
    fn internal_ranges_are_named_and_public_ones_pass() {
        for ip in [
            "127.0.0.1",
            "127.8.9.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(internal_range(ip.parse().unwrap()).is_some(), "{ip} must be internal");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(internal_range(ip.parse().unwrap()), None, "{ip} must be public");
        }
    }
}
