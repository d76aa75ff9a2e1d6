//! The workspace as a capability: its grant's checks, its requested-vs-granted row, and its
//! mount in an instance's WASI context.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::{LiveWorkspace, WorkspaceGrant};
use crate::capability::Issues;
use crate::capability::filesystem::{Preopen, guest_path_problem, overlaps};
use crate::contract::{CapabilityRow, Coverage, FilesystemRequest};
use crate::error::{CallError, Source};

/// The capability's name in policies, rows and audit events.
pub const NAME: &str = "workspace";

/// Checks the guest path (absolute, normalized, clear of the host preopens) and the quotas.
pub(crate) fn validate(grant: &WorkspaceGrant, preopens: &[Preopen], issues: &mut Issues) {
    if let Some(problem) = guest_path_problem(&grant.guest) {
        issues.push(&[NAME, "guest"], problem);
    } else if let Some(preopen) = preopens.iter().find(|p| overlaps(&p.guest, &grant.guest)) {
        issues
            .push(&[NAME, "guest"], format!("`{}` overlaps the filesystem grant at `{}`", grant.guest, preopen.guest));
    }
    for (key, value) in [("quota_bytes", grant.quota_bytes), ("quota_files", grant.quota_files)] {
        if value == 0 {
            issues.push(&[NAME, key], "must be at least 1");
        }
    }
}

/// The workspace's row when no directory request names it (one that does is the
/// filesystem capability's row, granted by the workspace).
pub(crate) fn compare(requested: &[FilesystemRequest], grant: Option<&WorkspaceGrant>, rows: &mut Vec<CapabilityRow>) {
    if let Some(workspace) = grant.filter(|w| !requested.iter().any(|r| r.guest_path == w.guest)) {
        rows.push(CapabilityRow::new(NAME, None, Some(workspace.describe()), Coverage::Unrequested));
    }
}

/// Creates the instance's staging directory and preopens it read-write at the grant's
/// guest path. `dirty` is set by the filesystem layer on every mutating call.
pub(crate) fn configure(
    wasi: &mut WasiCtxBuilder,
    grant: Option<&WorkspaceGrant>,
    dirty: &Arc<AtomicBool>,
    tool: &str,
) -> Result<Option<LiveWorkspace>, CallError> {
    let Some(grant) = grant else { return Ok(None) };
    let fail = |reason: &str, source: Source| CallError::Instantiate {
        tool: tool.to_owned(),
        reason: reason.to_owned(),
        source: Some(source),
    };
    let live = LiveWorkspace::new(grant, dirty.clone())
        .map_err(|e| fail("cannot create the workspace's staging directory", Source::new(e)))?;
    // The staging directory is local and private to the instance, and a step's writes into
    // it are bounded by the quota: its file calls run on the calling thread, not one hop to
    // the blocking pool each. Host preopens (possibly slow mounts) keep the hop.
    wasi.allow_blocking_current_thread(true);
    let preopened = wasi.preopened_dir(live.staging(), live.guest(), FsPerms::ReadWrite).map(|_| ());
    wasi.allow_blocking_current_thread(false);
    preopened.map_err(|e| fail("cannot open the workspace's staging directory", Source::new(e)))?;
    Ok(Some(live))
}
