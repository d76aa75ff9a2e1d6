//! The policy side of host preopens: `[[tools.NAME.filesystem]]`, its checks, its rows, and
//! the preopens an instance's WASI context gets.

use std::collections::BTreeSet;
use std::path::{Component, PathBuf};

use serde::{Deserialize, Serialize};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::capability::workspace::WorkspaceGrant;
use crate::capability::{Issues, with_access};
use crate::contract::{Access, CapabilityRow, Coverage, FilesystemRequest};
use crate::error::{CallError, Source};

/// The capability's name in policies, rows and audit events.
pub const NAME: &str = "filesystem";

/// Why an ungranted directory request is denied when the instance starts.
pub(crate) const DENIED_AT_START: &str = "not granted: nothing (or only read-only) is mounted there";

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

/// What is wrong with a guest path, if anything: it must be absolute and normalized
/// (`/data`, `/srv/docs`). Workspaces are mounted at guest paths too.
pub(crate) fn guest_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("the guest path must be absolute, e.g. `/data`");
    }
    if path.contains('\0') {
        return Some("the guest path contains a NUL byte");
    }
    if path.len() > 1 && (path.ends_with('/') || path.contains("//")) {
        return Some("the guest path must not contain empty segments or end with `/`");
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Some("the guest path must not contain `.` or `..`");
    }
    None
}

/// Whether one guest path lies in (or is) the other.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        let outer = outer.trim_end_matches('/');
        inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/')) || outer.is_empty()
    };
    within(a, b) || within(b, a)
}

/// Checks each preopen's guest path (absolute, normalized, mapped once) and host directory.
pub(crate) fn validate(preopens: &[Preopen], issues: &mut Issues) {
    let mut guest_paths = BTreeSet::new();
    for (i, preopen) in preopens.iter().enumerate() {
        let index = i.to_string();
        if let Some(problem) = guest_path_problem(&preopen.guest) {
            issues.push(&[NAME, &index, "guest"], problem);
        } else if !guest_paths.insert(preopen.guest.as_str()) {
            issues.push(&[NAME, &index, "guest"], format!("`{}` is mapped twice", preopen.guest));
        }
        if preopen.host.as_os_str().is_empty() {
            issues.push(&[NAME, &index, "host"], "the host directory is empty");
        } else if preopen.host.components().any(|c| c == Component::ParentDir) {
            issues.push(&[NAME, &index, "host"], "the host directory must not contain `..`: name the directory itself");
        }
    }
}

/// A host preopen as the table shows it; a writable one says its writes escape the step.
fn shown(p: &Preopen) -> String {
    let shown = format!("{} <- {} ({})", p.guest, p.host.display(), p.access.as_str());
    if p.access.allows_write() {
        format!("{shown}, host directory: writes are outside the session's transaction")
    } else {
        shown
    }
}

/// Each requested directory against the preopens (or the workspace mounted there), then
/// each preopen nobody requested.
pub(crate) fn compare(
    requested: &[FilesystemRequest],
    preopens: &[Preopen],
    workspace: Option<&WorkspaceGrant>,
    rows: &mut Vec<CapabilityRow>,
) {
    for r in requested {
        let asked = Some(with_access(&r.guest_path, r.access));
        rows.push(match preopens.iter().find(|p| p.guest == r.guest_path) {
            Some(p) => CapabilityRow::new(NAME, asked, Some(shown(p)), Coverage::of_access(r.access, p.access)),
            None => match workspace {
                Some(w) if w.guest == r.guest_path => {
                    CapabilityRow::new(NAME, asked, Some(w.describe()), Coverage::Granted)
                }
                _ => CapabilityRow::new(NAME, asked, None, Coverage::Denied),
            },
        });
    }
    for p in preopens {
        if !requested.iter().any(|r| r.guest_path == p.guest) {
            rows.push(CapabilityRow::new(NAME, None, Some(shown(p)), Coverage::Unrequested));
        }
    }
}

/// Opens each granted host directory as a preopen of the instance's WASI context.
pub(crate) fn configure(wasi: &mut WasiCtxBuilder, preopens: &[Preopen], tool: &str) -> Result<(), CallError> {
    for preopen in preopens {
        let perms = match preopen.access {
            Access::Read => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        wasi.preopened_dir(&preopen.host, &preopen.guest, perms).map_err(|e| CallError::Instantiate {
            tool: tool.to_owned(),
            reason: format!("cannot open the granted directory {} for {}", preopen.host.display(), preopen.guest),
            source: Some(Source::new(e)),
        })?;
    }
    Ok(())
}
