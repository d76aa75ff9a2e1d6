//! Grants: what each tool may use. Everything not granted is denied.
//!
//! A [`Policy`] maps tool names to [`ToolGrants`]. It is written as TOML (see
//! `examples/policy.toml` and [`Policy::load`]); the types here mirror that file one to one,
//! so an embedder can build the same policy in code. Checks live beside the types:
//! [`Policy::validate`] (shapes and names), [`Policy::check_loaded`] (a grant for a tool that
//! is not loaded), [`ToolGrants::check_pin`] (sha256 pinning) and [`compare`] (requested
//! against granted, for `toolhost inspect --policy` and the [`OnUngranted`] switch).

mod approval;
mod compare;
mod file;
mod host_pattern;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::capability::workspace::WorkspaceGrant;
use crate::engine::Limits;
use crate::tool::Descriptor;

pub use approval::{Approval, ApprovalMode, FieldValues};
pub use compare::{CapabilityRow, Coverage, compare};
pub use file::{PolicyError, PolicyIssue};
pub use host_pattern::{HostPattern, HostPatternError};

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

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::ReadWrite => "read-write",
        }
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

/// A host directory the tool sees at `guest` (a WASI preopen). Nothing else of the host's
/// filesystem is visible to the tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preopen {
    /// The host directory. In a policy file, a relative path is relative to the file.
    pub host: PathBuf,
    /// Absolute path inside the sandbox, e.g. `/data`.
    pub guest: String,
    pub access: Access,
}

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

/// Where the value of an environment variable handed to a tool comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// This literal value (`NAME = "value"`).
    Value(String),
    /// The host's variable of this name, read when an instance starts
    /// (`NAME = { from_host = "HOST_NAME" }`).
    FromHost { from_host: String },
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EnvValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string value or a table `{ from_host = \"NAME\" }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue::Value(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EnvValue, A::Error> {
                let mut from_host = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "from_host" {
                        return Err(serde::de::Error::unknown_field(&key, &["from_host"]));
                    }
                    from_host = Some(map.next_value::<String>()?);
                }
                from_host
                    .map(|from_host| EnvValue::FromHost { from_host })
                    .ok_or_else(|| serde::de::Error::missing_field("from_host"))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl EnvValue {
    /// The value to hand over now; `None` if it comes from a host variable that is unset.
    pub fn resolve(&self) -> Option<String> {
        match self {
            EnvValue::Value(v) => Some(v.clone()),
            EnvValue::FromHost { from_host } => std::env::var(from_host).ok(),
        }
    }
}

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
}

impl ToolGrants {
    /// Grants exactly what `descriptor` requests (state namespaces and models), with default
    /// limits. For development and trusted tools: a production host grants from a policy.
    /// Filesystem, network and env requests are not granted this way: they need a policy
    /// that says which host directory, which destinations and which values.
    pub fn requested_by(descriptor: &Descriptor) -> Self {
        let caps = &descriptor.capabilities;
        Self {
            state: StateGrant {
                namespaces: caps.state.iter().map(|r| (r.namespace.clone(), r.access)).collect(),
                quota: StateQuota::default(),
            },
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
            found.push("filesystem");
        }
        if !self.network.allow.is_empty() {
            found.push("network");
        }
        if !self.env.is_empty() {
            found.push("env");
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
