//! The policy side of state: `[tools.NAME.state]`, its checks and its rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::MAX_NAMESPACE_CHARS;
use crate::capability::{Issues, valid_name, with_access};
use crate::contract::{Access, CapabilityRow, Coverage, StateRequest};

/// The capability's name in policies, rows and audit events.
pub const NAME: &str = "state";

/// Quotas on a tool's state in one session (over all its namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateQuota {
    pub max_keys: u64,
    pub max_value_bytes: u64,
    /// Keys plus values, in bytes.
    pub max_total_bytes: u64,
}

impl Default for StateQuota {
    fn default() -> Self {
        Self { max_keys: 10_000, max_value_bytes: 1 << 20, max_total_bytes: 64 << 20 }
    }
}

/// State namespaces a tool may use, and its quota.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateGrant {
    pub namespaces: BTreeMap<String, Access>,
    pub quota: StateQuota,
}

impl StateGrant {
    /// Grants exactly the namespaces `requested`, with the default quota.
    pub fn requested(requested: &[StateRequest]) -> Self {
        Self {
            namespaces: requested.iter().map(|r| (r.namespace.clone(), r.access)).collect(),
            quota: StateQuota::default(),
        }
    }
}

/// Checks namespace names and quotas.
pub(crate) fn validate(grant: &StateGrant, issues: &mut Issues) {
    for namespace in grant.namespaces.keys() {
        if !valid_name(namespace, MAX_NAMESPACE_CHARS) {
            issues.push(
                &[NAME, "namespaces", namespace],
                format!("namespace `{}` must be 1-{MAX_NAMESPACE_CHARS} chars of [a-z0-9_-]", namespace.escape_debug()),
            );
        }
    }
    let quota = grant.quota;
    for (key, value) in [
        ("max_keys", quota.max_keys),
        ("max_value_bytes", quota.max_value_bytes),
        ("max_total_bytes", quota.max_total_bytes),
    ] {
        if value == 0 {
            issues.push(&[NAME, "quota", key], "must be at least 1");
        }
    }
}

/// Each requested namespace against the grant, then each granted one nobody requested.
pub(crate) fn compare(requested: &[StateRequest], grant: &StateGrant, rows: &mut Vec<CapabilityRow>) {
    for r in requested {
        let asked = Some(with_access(&r.namespace, r.access));
        rows.push(match grant.namespaces.get(&r.namespace) {
            Some(&a) => {
                CapabilityRow::new(NAME, asked, Some(with_access(&r.namespace, a)), Coverage::of_access(r.access, a))
            }
            None => CapabilityRow::new(NAME, asked, None, Coverage::Denied),
        });
    }
    for (ns, &a) in &grant.namespaces {
        if !requested.iter().any(|r| &r.namespace == ns) {
            rows.push(CapabilityRow::new(NAME, None, Some(with_access(ns, a)), Coverage::Unrequested));
        }
    }
}
