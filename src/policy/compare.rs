//! What a tool requests against what it is granted: the table `toolhost inspect --policy`
//! prints, and the list the [`super::OnUngranted`] switch acts on.

use serde::Serialize;

use super::{Access, HostPattern, ToolGrants};
use crate::tool::Capabilities;

/// How far a grant covers a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coverage {
    /// Requested and granted.
    Granted,
    /// Granted with less than requested (read instead of read-write).
    Partial,
    /// Requested, not granted: uses are denied.
    Denied,
    /// Granted without being requested.
    Unrequested,
}

/// One line of the requested-vs-granted table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapabilityRow {
    /// `state`, `model`, `filesystem`, `workspace`, `network` or `env`.
    pub capability: &'static str,
    pub requested: Option<String>,
    pub granted: Option<String>,
    pub coverage: Coverage,
}

impl CapabilityRow {
    /// Whether the row is a request the grants do not (fully) cover.
    pub fn is_ungranted(&self) -> bool {
        matches!(self.coverage, Coverage::Partial | Coverage::Denied)
    }
}

fn row(
    capability: &'static str,
    requested: Option<String>,
    granted: Option<String>,
    coverage: Coverage,
) -> CapabilityRow {
    CapabilityRow { capability, requested, granted, coverage }
}

fn with_access(name: &str, access: Access) -> String {
    format!("{name} ({})", access.as_str())
}

/// A host preopen as the table shows it; a writable one says its writes escape the step.
fn host_preopen(p: &super::Preopen) -> String {
    let shown = format!("{} <- {} ({})", p.guest, p.host.display(), p.access.as_str());
    if p.access.allows_write() {
        format!("{shown}, host directory: writes are outside the session's transaction")
    } else {
        shown
    }
}

fn access_coverage(requested: Access, granted: Access) -> Coverage {
    if requested.allows_write() && !granted.allows_write() { Coverage::Partial } else { Coverage::Granted }
}

/// Compares `requested` (a tool's descriptor) with `grants`, row by row: every request,
/// then every grant nobody requested.
pub fn compare(requested: &Capabilities, grants: &ToolGrants) -> Vec<CapabilityRow> {
    let mut rows = Vec::new();

    for r in &requested.state {
        let asked = Some(with_access(&r.namespace, r.access));
        rows.push(match grants.state.namespaces.get(&r.namespace) {
            Some(&a) => row("state", asked, Some(with_access(&r.namespace, a)), access_coverage(r.access, a)),
            None => row("state", asked, None, Coverage::Denied),
        });
    }
    for (ns, &a) in &grants.state.namespaces {
        if !requested.state.iter().any(|r| &r.namespace == ns) {
            rows.push(row("state", None, Some(with_access(ns, a)), Coverage::Unrequested));
        }
    }

    for alias in &requested.models {
        let granted = grants.models.allows(alias);
        let coverage = if granted { Coverage::Granted } else { Coverage::Denied };
        rows.push(row("model", Some(alias.clone()), granted.then(|| alias.clone()), coverage));
    }
    for alias in &grants.models.aliases {
        if !requested.models.contains(alias) {
            rows.push(row("model", None, Some(alias.clone()), Coverage::Unrequested));
        }
    }

    for r in &requested.filesystem {
        let asked = Some(with_access(&r.guest_path, r.access));
        rows.push(match grants.filesystem.iter().find(|p| p.guest == r.guest_path) {
            Some(p) => row("filesystem", asked, Some(host_preopen(p)), access_coverage(r.access, p.access)),
            None => match &grants.workspace {
                Some(w) if w.guest == r.guest_path => row("filesystem", asked, Some(w.describe()), Coverage::Granted),
                _ => row("filesystem", asked, None, Coverage::Denied),
            },
        });
    }
    for p in &grants.filesystem {
        if !requested.filesystem.iter().any(|r| r.guest_path == p.guest) {
            rows.push(row("filesystem", None, Some(host_preopen(p)), Coverage::Unrequested));
        }
    }

    if let Some(workspace) =
        grants.workspace.as_ref().filter(|w| !requested.filesystem.iter().any(|r| r.guest_path == w.guest))
    {
        rows.push(row("workspace", None, Some(workspace.describe()), Coverage::Unrequested));
    }

    let mut used = vec![false; grants.network.allow.len()];
    for host in &requested.network {
        let covering = host
            .parse::<HostPattern>()
            .ok()
            .and_then(|asked| grants.network.allow.iter().position(|granted| granted.covers(&asked)));
        rows.push(match covering {
            Some(i) => {
                used[i] = true;
                row("network", Some(host.clone()), Some(grants.network.allow[i].to_string()), Coverage::Granted)
            }
            None => row("network", Some(host.clone()), None, Coverage::Denied),
        });
    }
    for (pattern, used) in grants.network.allow.iter().zip(used) {
        if !used {
            rows.push(row("network", None, Some(pattern.to_string()), Coverage::Unrequested));
        }
    }

    for name in &requested.env {
        let granted = grants.env.contains_key(name);
        let coverage = if granted { Coverage::Granted } else { Coverage::Denied };
        rows.push(row("env", Some(name.clone()), granted.then(|| name.clone()), coverage));
    }
    for name in grants.env.keys() {
        if !requested.env.contains(name) {
            rows.push(row("env", None, Some(name.clone()), Coverage::Unrequested));
        }
    }
    rows
}
