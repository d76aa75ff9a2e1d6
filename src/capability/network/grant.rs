//! The policy side of outgoing HTTP: `[tools.NAME.network]`, its checks and its rows.

use serde::{Deserialize, Serialize};

use super::HostPattern;
use crate::capability::Issues;
use crate::contract::{CapabilityRow, Coverage};

/// The capability's name in policies, rows and audit events.
pub const NAME: &str = "network";

/// Outgoing HTTP(S) a tool may make, by destination host. Raw sockets and DNS stay denied
/// whatever this says: HTTP goes through the host's client, which checks every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkGrant {
    /// `api.example.com`, `*.example.com` (any subdomain, not the apex), with an optional
    /// `:port` (without one, any port).
    pub allow: Vec<HostPattern>,
    /// Let allowed names resolve to the host's own network (loopback, link-local incl.
    /// 169.254.169.254, private, CGNAT, unique-local). Off: such a request is refused unless
    /// the allowlist names that IP literal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_private: bool,
    /// The most bytes one response body may have, and one request body: every exchange is
    /// buffered whole and journaled, so replay answers it without the network. A larger
    /// body is the guest's `http-response-body-size` (or `http-request-body-size`) error.
    pub max_response_bytes: usize,
}

/// Default [`NetworkGrant::max_response_bytes`]: 8 MiB, half the default journal bound.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;

impl Default for NetworkGrant {
    fn default() -> Self {
        Self { allow: Vec::new(), allow_private: false, max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES }
    }
}

impl NetworkGrant {
    /// The pattern that lets a request to `host:port` through, if any.
    pub fn allowing(&self, host: &str, port: u16) -> Option<&HostPattern> {
        self.allow.iter().find(|p| p.matches(host, port))
    }
}

/// Checks the body bound (the patterns were checked when they were parsed).
pub(crate) fn validate(grant: &NetworkGrant, issues: &mut Issues) {
    if grant.max_response_bytes == 0 {
        issues.push(&[NAME, "max_response_bytes"], "must be at least 1");
    }
}

/// Each requested host against the first pattern that covers it, then each pattern that
/// covered no request.
pub(crate) fn compare(requested: &[String], grant: &NetworkGrant, rows: &mut Vec<CapabilityRow>) {
    let mut used = vec![false; grant.allow.len()];
    for host in requested {
        let covering = host
            .parse::<HostPattern>()
            .ok()
            .and_then(|asked| grant.allow.iter().position(|granted| granted.covers(&asked)));
        rows.push(match covering {
            Some(i) => {
                used[i] = true;
                CapabilityRow::new(NAME, Some(host.clone()), Some(grant.allow[i].to_string()), Coverage::Granted)
            }
            None => CapabilityRow::new(NAME, Some(host.clone()), None, Coverage::Denied),
        });
    }
    for (pattern, used) in grant.allow.iter().zip(used) {
        if !used {
            rows.push(CapabilityRow::new(NAME, None, Some(pattern.to_string()), Coverage::Unrequested));
        }
    }
}
