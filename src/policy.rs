//! Grants: what each tool may use. Everything not granted is denied.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::engine::Limits;
use crate::tool::Descriptor;

/// Access granted on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Read,
    ReadWrite,
}

impl Access {
    pub fn allows_write(self) -> bool {
        self == Access::ReadWrite
    }
}

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

/// Model aliases a tool may call, and the bounds on its use. The model capability enforces
/// the bounds; `None` means unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelGrant {
    pub aliases: BTreeSet<String>,
    /// Caps a request's `max-tokens` (and sets it when the tool gives none).
    pub max_tokens_per_call: Option<u32>,
    /// Input plus output tokens, as providers report them, per session.
    pub session_token_budget: Option<u64>,
    pub calls_per_minute: Option<u32>,
}

impl ModelGrant {
    /// Grants `aliases` without bounds.
    pub fn aliases<I: IntoIterator<Item = S>, S: Into<String>>(aliases: I) -> Self {
        Self { aliases: aliases.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    pub fn allows(&self, alias: &str) -> bool {
        self.aliases.contains(alias)
    }
}

/// Everything one tool is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolGrants {
    pub state: StateGrant,
    pub models: ModelGrant,
    pub limits: Limits,
}

impl ToolGrants {
    /// Grants exactly what `descriptor` requests (state namespaces and models), with default
    /// limits. For development and trusted tools: a production host grants from a policy.
    pub fn requested_by(descriptor: &Descriptor) -> Self {
        let caps = &descriptor.capabilities;
        Self {
            state: StateGrant {
                namespaces: caps.state.iter().map(|r| (r.namespace.clone(), r.access)).collect(),
                quota: StateQuota::default(),
            },
            models: ModelGrant::aliases(caps.models.iter().cloned()),
            limits: Limits::default(),
        }
    }
}

/// Grants per tool name. A tool without an entry is granted nothing (and default limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub tools: BTreeMap<String, ToolGrants>,
    /// Grant every tool what its descriptor requests, for tools without an entry.
    pub grant_requested: bool,
}

impl Policy {
    /// Denies everything to every tool.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Grants each tool what it requests. Only for development and trusted tools.
    pub fn grant_requested() -> Self {
        Self { grant_requested: true, ..Self::default() }
    }

    /// Sets the grants of the tool named `tool`.
    pub fn with_tool(mut self, tool: impl Into<String>, grants: ToolGrants) -> Self {
        self.tools.insert(tool.into(), grants);
        self
    }

    /// The grants for a tool that describes itself as `descriptor`.
    pub fn grants_for(&self, descriptor: &Descriptor) -> ToolGrants {
        match self.tools.get(&descriptor.name) {
            Some(grants) => grants.clone(),
            None if self.grant_requested => ToolGrants::requested_by(descriptor),
            None => ToolGrants::default(),
        }
    }
}
