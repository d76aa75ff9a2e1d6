//! One instance's workspace: its staging directory, what the store holds for it, and the
//! step-end scan that turns the directory into the step's file changes.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::grant::WorkspaceGrant;
use super::scan::{ScanError, Scanned, materialize, scan};
use crate::contract::workspace::{FileChange, Manifest, diff};
use crate::error::{CallError, Source};
use crate::store::{Chunk, Store, StoreError};

/// Up to this many bytes and paths (committed, plus what the step wrote), a scan runs on the
/// async thread: tens of microseconds of page-cache reads and hashing.
const SMALL_BYTES: u64 = 256 << 10;
const SMALL_PATHS: usize = 64;

fn is_small(committed: &Manifest, written: u64) -> bool {
    let committed_bytes: u64 = committed.values().map(|e| e.size()).sum();
    committed.len() <= SMALL_PATHS && committed_bytes.saturating_add(written) <= SMALL_BYTES
}

/// A staging directory that only this instance sees (mode 0700, removed with the instance)
/// and the manifest it was last committed (or materialized) at.
///
/// Scans and materializations read and write whole files (up to the quota), so they run
/// on tokio's blocking pool, not on the thread that runs sessions.
pub(crate) struct LiveWorkspace {
    grant: Arc<WorkspaceGrant>,
    staging: tempfile::TempDir,
    committed: Arc<Manifest>,
    /// What the step in flight would commit, once scanned.
    staged: Option<Arc<Manifest>>,
    /// Set by the filesystem layer on every mutating call; a step that did none skips the scan.
    dirty: Arc<AtomicBool>,
}

/// A step's part of the commit: its file changes and the chunks the store may not hold yet.
#[derive(Default)]
pub(crate) struct StagedFiles {
    pub changes: Vec<FileChange>,
    pub chunks: Vec<Chunk>,
}

impl LiveWorkspace {
    pub fn new(grant: &WorkspaceGrant, dirty: Arc<AtomicBool>) -> std::io::Result<Self> {
        let staging = tempfile::Builder::new().prefix("toolhost-workspace-").tempdir()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        let grant = Arc::new(grant.clone());
        Ok(Self { grant, staging, committed: Arc::default(), staged: None, dirty })
    }

    pub fn guest(&self) -> &str {
        &self.grant.guest
    }

    pub fn staging(&self) -> &Path {
        self.staging.path()
    }

    /// Fills the (fresh) staging directory with `manifest`, fetching its chunks from `store`.
    pub async fn materialize(&mut self, store: &dyn Store, manifest: Manifest) -> Result<(), StoreError> {
        let wanted: BTreeSet<[u8; 32]> = manifest.values().flat_map(|e| e.chunks().iter().copied()).collect();
        let wanted: Vec<[u8; 32]> = wanted.into_iter().collect();
        let data = store.chunks(&wanted).await?;
        let chunks: HashMap<[u8; 32], Vec<u8>> = wanted.into_iter().zip(data).collect();
        let (root, manifest) = (self.staging.path().to_owned(), Arc::new(manifest));
        let written = manifest.clone();
        let materialized = tokio::task::spawn_blocking(move || materialize(&root, &written, &chunks)).await;
        let what = "materializing the workspace";
        materialized.map_err(|e| StoreError::corrupt_by(what, e))?.map_err(|e| StoreError::corrupt_by(what, e))?;
        self.committed = manifest;
        self.staged = None;
        self.dirty.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Scans the staging directory against the committed manifest: on this thread when the
    /// workspace is small (the hop to the blocking pool would cost more than the scan), off
    /// the async thread otherwise.
    async fn scan(&self, written: u64) -> Result<Scanned, ScanError> {
        let (root, known, grant) = (self.staging.path().to_owned(), self.committed.clone(), self.grant.clone());
        if is_small(&known, written) {
            return scan(&root, &known, &grant);
        }
        tokio::task::spawn_blocking(move || scan(&root, &known, &grant))
            .await
            .map_err(|e| ScanError::Io(std::io::Error::other(e)))?
    }

    /// Scans the staging directory if the step changed anything (`written`: the bytes it
    /// wrote through WASI): its changes against the committed manifest, held as staged until
    /// [`Self::committed`].
    pub async fn stage(&mut self, written: u64) -> Result<StagedFiles, ScanError> {
        self.staged = None;
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(StagedFiles::default());
        }
        let scanned = self.scan(written).await?;
        let changes = diff(&self.committed, &scanned.manifest);
        self.staged = Some(Arc::new(scanned.manifest));
        Ok(StagedFiles { changes, chunks: scanned.new_chunks })
    }

    /// [`Self::stage`], with a scan's failure as the call's error: over a quota, a host
    /// limit; anything else, a workspace error.
    pub async fn stage_for(&mut self, tool: &str, written: u64) -> Result<StagedFiles, CallError> {
        self.stage(written).await.map_err(|e| match e {
            ScanError::Quota { resource, limit, used } => {
                CallError::HostLimit { tool: tool.to_owned(), resource, limit, used }
            }
            e => CallError::Workspace { tool: tool.to_owned(), source: Source::new(e) },
        })
    }

    /// The staged step committed: its manifest is now the committed one.
    pub fn committed(&mut self) {
        if let Some(manifest) = self.staged.take() {
            self.committed = manifest;
        }
    }

    /// Forgets what a replayed step wrote being unscanned: [`Self::verify`] checks it all.
    pub fn replayed(&self) {
        self.dirty.store(false, Ordering::Relaxed);
    }

    /// After replaying steps: the staging directory must hold exactly `expected`, the
    /// manifest the store holds for the last step; it becomes the committed one.
    pub async fn verify(&mut self, expected: Manifest) -> Result<(), String> {
        let scanned = self.scan(u64::MAX).await.map_err(|e| crate::error::chain(&e).to_string())?;
        let differences = diff(&expected, &scanned.manifest);
        if let Some(first) = differences.first() {
            let what = if first.entry.is_some() { "holds" } else { "lacks" };
            return Err(format!(
                "the replayed workspace {what} `{}` unlike the committed one ({} paths differ)",
                first.path,
                differences.len()
            ));
        }
        self.committed = Arc::new(expected);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::workspace::WorkspaceEntry;

    #[test]
    fn only_a_small_workspace_is_scanned_on_the_async_thread() {
        let file = |size| WorkspaceEntry::File { size, chunks: Vec::new() };
        let mut committed: Manifest = [("a".to_owned(), file(4096))].into();
        assert!(is_small(&committed, 4096));
        assert!(!is_small(&committed, SMALL_BYTES), "what the step wrote counts");
        assert!(!is_small(&committed, u64::MAX), "a verify scan always leaves the async thread");
        committed.insert("big".to_owned(), file(SMALL_BYTES));
        assert!(!is_small(&committed, 0));
        let many: Manifest = (0..=SMALL_PATHS).map(|i| (format!("f{i}"), file(1))).collect();
        assert!(!is_small(&many, 0));
    }
}
