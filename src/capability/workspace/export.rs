//! A session's workspaces as the CLI shows and exports them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::scan::materialize;
use crate::contract::workspace::{Manifest, apply, valid_path};
use crate::store::{StepRecord, Store, StoreError};

/// Each tool's workspace after the last of `steps` (a session's steps, in order). Tools
/// whose workspace is empty are left out.
pub fn workspaces(steps: &[StepRecord]) -> BTreeMap<String, Manifest> {
    let mut all: BTreeMap<String, Manifest> = BTreeMap::new();
    for step in steps.iter().filter(|s| !s.files.is_empty()) {
        apply(all.entry(step.tool.clone()).or_default(), &step.files);
    }
    all.retain(|_, manifest| !manifest.is_empty());
    all
}

/// Why the files could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0} is not empty; pass --overwrite to write into it anyway")]
    NotEmpty(std::path::PathBuf),
    #[error("tool name `{0}` cannot be a directory name")]
    BadToolName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the files")]
    Io(#[from] std::io::Error),
}

/// Writes each tool's workspace to `dir/TOOL/`. Refuses a non-empty `dir` unless
/// `overwrite`; stored paths are checked again, so nothing is written outside `dir`.
/// Returns the number of files and directories written.
pub async fn export(
    store: &dyn Store,
    workspaces: &BTreeMap<String, Manifest>,
    dir: &Path,
    overwrite: bool,
) -> Result<usize, ExportError> {
    if !overwrite && dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(ExportError::NotEmpty(dir.to_owned()));
    }
    std::fs::create_dir_all(dir)?;
    let mut written = 0;
    for (tool, manifest) in workspaces {
        if !valid_path(tool) || tool.contains('/') {
            return Err(ExportError::BadToolName(tool.clone()));
        }
        let wanted: BTreeSet<[u8; 32]> = manifest.values().flat_map(|e| e.chunks().iter().copied()).collect();
        let wanted: Vec<[u8; 32]> = wanted.into_iter().collect();
        let data = store.chunks(&wanted).await?;
        let chunks: HashMap<[u8; 32], Vec<u8>> = wanted.into_iter().zip(data).collect();
        let root = dir.join(tool);
        std::fs::create_dir_all(&root)?;
        materialize(&root, manifest, &chunks)?;
        written += manifest.len();
    }
    Ok(written)
}
