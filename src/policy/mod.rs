//! Grants: what each tool may use. Everything not granted is denied.
//!
//! A [`Policy`] maps tool names to [`ToolGrants`]. It is written as TOML (see
//! `examples/policy.toml` and [`Policy::load`]); the types mirror that file one to one, so an
//! embedder can build the same policy in code. Each capability's grant type lives in its own
//! folder under [`crate::capability`] (re-exported here), with its checks and its rows; this
//! module holds the file format, the top-level [`Policy`] and [`ToolGrants`], and the checks
//! that dispatch to each capability: [`Policy::validate`] (shapes and names),
//! [`Policy::check_loaded`] (a grant for a tool that is not loaded), [`ToolGrants::check_pin`]
//! (sha256 pinning) and [`compare`] (requested against granted, for `toolhost inspect
//! --policy` and the [`OnUngranted`] switch).

mod approval;
mod compare;
mod file;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::capability::env::EnvValue;
pub use crate::capability::filesystem::Preopen;
pub use crate::capability::model::ModelGrant;
pub use crate::capability::network::{DEFAULT_MAX_RESPONSE_BYTES, HostPattern, HostPatternError, NetworkGrant};
pub use crate::capability::state::{StateGrant, StateQuota};
pub use crate::capability::workspace::WorkspaceGrant;
use crate::contract::Descriptor;
pub use crate::contract::{Access, CapabilityRow, Coverage, OnUpgrade};
use crate::engine::Limits;

pub use approval::{Approval, ApprovalMode, FieldValues};
pub use compare::compare;
pub use file::{PolicyError, PolicyIssue};

/// Everything one tool is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolGrants {
    /// Pins the component: a tool whose lowercase hex sha256 differs is refused at load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub state: StateGrant,
    #[serde(rename = "model")]
    pub models: ModelGrant,
    /// Host directories: the host's own files, outside the session's transaction.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filesystem: Vec<Preopen>,
    /// A session workspace: files kept in the session store, committed with each step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceGrant>,
    pub network: NetworkGrant,
    /// Variables the tool sees; it sees none of the host's environment besides these.
    pub env: BTreeMap<String, EnvValue>,
    pub limits: Limits,
    /// Which calls an agent's run must have approved by a person before it makes them.
    #[serde(skip_serializing_if = "Approval::is_never")]
    pub approval: Approval,
    /// What a session that used another component of this tool does when it meets this one.
    #[serde(skip_serializing_if = "OnUpgrade::is_default")]
    pub on_upgrade: OnUpgrade,
}

impl ToolGrants {
    /// Grants exactly what `descriptor` requests (state namespaces and models), with default
    /// limits. For development and trusted tools: a production host grants from a policy.
    /// Filesystem, network and env requests are not granted this way: they need a policy
    /// that says which host directory, which destinations and which values.
    pub fn requested_by(descriptor: &Descriptor) -> Self {
        let caps = &descriptor.capabilities;
        Self {
            state: StateGrant::requested(&caps.state),
            models: ModelGrant::aliases(caps.models.iter().cloned()),
            ..Self::default()
        }
    }

    /// The grants that a component gets by calling itself this tool's name and that reach
    /// outside the sandbox (host files, the network, the host's environment): unpinned,
    /// they are worth a loud warning.
    pub fn identity_sensitive(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        if !self.filesystem.is_empty() {
            found.push(crate::capability::filesystem::NAME);
        }
        if !self.network.allow.is_empty() {
            found.push(crate::capability::network::NAME);
        }
        if !self.env.is_empty() {
            found.push(crate::capability::env::NAME);
        }
        found
    }

    /// Checks the component's digest against the pin, if any.
    pub fn check_pin(&self, actual: &str) -> Result<(), PinMismatch> {
        match &self.sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(actual) => {
                Err(PinMismatch { expected: expected.to_ascii_lowercase(), actual: actual.to_owned() })
            }
            _ => Ok(()),
        }
    }
}

/// A pinned tool whose component has another digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMismatch {
    pub expected: String,
    pub actual: String,
}

/// What loading a tool does when it requests a capability its grants do not cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUngranted {
    /// Load it; each use of what was not granted is denied (and audited) when it happens.
    #[default]
    DenyAtUse,
    /// Refuse to load it, naming every capability not granted.
    Refuse,
}

/// Grants per tool name. A tool without an entry is granted nothing (and default limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Grant every tool what its descriptor requests, for tools without an entry.
    pub grant_requested: bool,
    pub on_ungranted: OnUngranted,
    /// Grants bind to a component, not to a name: every `[tools.X]` section needs a `sha256`
    /// pin (checked when the policy is loaded), and a tool granted anything without a pin
    /// (e.g. through `grant_requested`) is refused at load.
    pub require_pins: bool,
    pub tools: BTreeMap<String, ToolGrants>,
    /// The file and text the policy was read from, to locate errors found after loading.
    #[serde(skip)]
    origin: Option<Arc<file::Origin>>,
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

    /// Requires a `sha256` pin on every tool granted anything (see [`Policy::require_pins`]).
    pub fn requiring_pins(mut self) -> Self {
        self.require_pins = true;
        self
    }

    /// Sets what loading a tool does when its requests are not all granted.
    pub fn on_ungranted(mut self, on_ungranted: OnUngranted) -> Self {
        self.on_ungranted = on_ungranted;
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

    /// Whether some tool's limits set a fuel budget: only then does the engine meter fuel
    /// (it costs ~5% on tight loops).
    pub fn uses_fuel(&self) -> bool {
        self.tools.values().any(|g| g.limits.fuel.is_some())
    }

    /// Fails if the policy grants to a tool that is not among `loaded` (usually a typo in
    /// the policy, which would otherwise leave the real tool with nothing). Call it once
    /// every tool is loaded; the error names the file and line of each stray section.
    pub fn check_loaded<S: AsRef<str>>(&self, loaded: &[S]) -> Result<(), PolicyError> {
        let issues: Vec<PolicyIssue> = self
            .tools
            .keys()
            .filter(|name| !loaded.iter().any(|l| l.as_ref() == name.as_str()))
            .map(|name| {
                let loaded: Vec<&str> = loaded.iter().map(AsRef::as_ref).collect();
                let message = format!(
                    "grants for tool `{name}`, which is not loaded (loaded: {})",
                    if loaded.is_empty() { "none".to_owned() } else { loaded.join(", ") }
                );
                self.issue(&["tools", name], message)
            })
            .collect();
        if issues.is_empty() { Ok(()) } else { Err(self.error(issues)) }
    }

    /// Checks names, paths, patterns and limits; every problem found, with its key.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let issues: Vec<PolicyIssue> =
            validate::check(self).into_iter().map(|(key, message)| self.issue_at(&key, message)).collect();
        if issues.is_empty() { Ok(()) } else { Err(self.error(issues)) }
    }

    fn issue(&self, key: &[&str], message: String) -> PolicyIssue {
        let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
        self.issue_at(&key, message)
    }

    fn issue_at(&self, key: &[String], message: String) -> PolicyIssue {
        match &self.origin {
            Some(origin) => origin.issue(key, message),
            None => PolicyIssue::unlocated(key, message),
        }
    }

    fn error(&self, issues: Vec<PolicyIssue>) -> PolicyError {
        PolicyError::Invalid { origin: self.origin.as_ref().map(|o| o.name()), issues }
    }
}
