//! Destination patterns of the network grant: `host`, `*.domain`, either with `:port`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A destination a tool may send HTTP(S) requests to.
///
/// `api.example.com` matches that host only; `*.example.com` matches every subdomain at any
/// depth but not `example.com` itself; IP literals (`127.0.0.1`, `[::1]`) match themselves.
/// A `:port` suffix restricts the port; without one, any port matches. Host names compare
/// case-insensitively and ignore a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern {
    /// Lowercase host, or the domain after `*.` for a wildcard; IPv6 without brackets.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

/// Why a host pattern is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern `{pattern}`: {reason}")]
pub struct HostPatternError {
    pub pattern: String,
    pub reason: String,
}

const MAX_HOST_CHARS: usize = 253;

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

impl FromStr for HostPattern {
    type Err = HostPatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        let fail =
            |reason: &str| HostPatternError { pattern: pattern.escape_debug().to_string(), reason: reason.into() };
        if pattern.contains("://") || pattern.contains('/') {
            return Err(fail("give a host (and optional :port), not a URL"));
        }
        // Split off the port: `[v6]:port`, `host:port`.
        let (host, port) = if let Some(rest) = pattern.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(|| fail("unclosed `[` in an IPv6 address"))?;
            v6.parse::<Ipv6Addr>().map_err(|_| fail("not an IPv6 address inside `[...]`"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| fail("expected `:port` after `]`"))?),
            };
            (v6.to_ascii_lowercase(), port)
        } else {
            match pattern.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (pattern.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(fail("the port must be a number from 1 to 65535")),
                Ok(p) => Some(p),
            },
            None => None,
        };
        if host.contains(':') {
            // Only a bracketed IPv6 literal may contain colons.
            if host.parse::<Ipv6Addr>().is_ok() && !pattern.starts_with('[') {
                return Err(fail("write IPv6 addresses in brackets, e.g. `[::1]`"));
            }
            if !pattern.starts_with('[') {
                return Err(fail("more than one `:`"));
            }
            return Ok(Self { host, wildcard: false, port });
        }
        let (wildcard, domain) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain),
            None => (false, host.as_str()),
        };
        if domain.contains('*') {
            return Err(fail("`*` is allowed only as the whole first label, as in `*.example.com`"));
        }
        let domain = normalize_host(domain);
        if domain.is_empty() || domain.len() > MAX_HOST_CHARS {
            return Err(fail("the host must be 1-253 characters"));
        }
        if domain.parse::<Ipv4Addr>().is_ok() {
            if wildcard {
                return Err(fail("a wildcard cannot apply to an IP address"));
            }
            return Ok(Self { host: domain, wildcard, port });
        }
        if !domain.split('.').all(valid_label) {
            return Err(fail("each label must be 1-63 characters of [a-z0-9-], not starting or ending with `-`"));
        }
        if wildcard && !domain.contains('.') {
            return Err(fail("a wildcard needs a domain of two or more labels (`*.example.com`, not `*.com`)"));
        }
        Ok(Self { host: domain, wildcard, port })
    }
}

impl TryFrom<String> for HostPattern {
    type Error = HostPatternError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HostPattern> for String {
    fn from(p: HostPattern) -> String {
        p.to_string()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl HostPattern {
    fn matches_host(&self, host: &str) -> bool {
        let host = normalize_host(host.trim_start_matches('[').trim_end_matches(']'));
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }

    /// Whether a request to `host` on `port` is allowed by this pattern.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.matches_host(host)
    }

    /// Whether every destination `other` matches is also matched by `self` (for comparing
    /// what a tool requests with what it is granted).
    pub fn covers(&self, other: &HostPattern) -> bool {
        let ports = match (self.port, other.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        let hosts = match (self.wildcard, other.wildcard) {
            (false, false) => self.host == other.host,
            (true, false) => self.matches_host(&other.host),
            // `*.a.example.com` is inside `*.example.com`, and so is `*.example.com` itself.
            (true, true) => other.host == self.host || self.matches_host(&other.host),
            (false, true) => false,
        };
        ports && hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn exact_wildcard_and_port() {
        assert!(p("api.example.com").matches("API.example.com.", 443));
        assert!(!p("api.example.com").matches("example.com", 443));
        assert!(p("*.example.com").matches("a.b.example.com", 80));
        assert!(!p("*.example.com").matches("example.com", 80));
        assert!(!p("*.example.com").matches("evilexample.com", 80));
        assert!(p("127.0.0.1:8080").matches("127.0.0.1", 8080));
        assert!(!p("127.0.0.1:8080").matches("127.0.0.1", 8081));
        assert!(p("[::1]").matches("[::1]", 1));
        assert_eq!(p("[::1]:99").to_string(), "[::1]:99");
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in [
            "",
            "*",
            "*.com",
            "a.*.com",
            "http://a.com",
            "a.com/x",
            "a.com:0",
            "a.com:99999",
            "::1",
            "-a.com",
            "a..com",
            "*.1.2.3.4",
            "a b.com",
            "[::1",
            "a.com:",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn coverage() {
        assert!(p("*.example.com").covers(&p("api.example.com:443")));
        assert!(p("*.example.com").covers(&p("*.a.example.com")));
        assert!(!p("api.example.com").covers(&p("*.example.com")));
        assert!(!p("api.example.com:443").covers(&p("api.example.com")));
    }
}
