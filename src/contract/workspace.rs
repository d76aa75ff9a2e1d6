//! What the store keeps of a workspace: per step, the files it changed; a file is a list of
//! content-addressed chunks. These are our own serde types, encoded like the step's other
//! columns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One path in a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkspaceEntry {
    Dir,
    /// A regular file: its size and the sha256 of its chunks, in order.
    File {
        size: u64,
        #[serde(with = "super::bytes::hashes")]
        chunks: Vec<[u8; 32]>,
    },
}

impl WorkspaceEntry {
    pub fn size(&self) -> u64 {
        match self {
            Self::Dir => 0,
            Self::File { size, .. } => *size,
        }
    }

    pub fn chunks(&self) -> &[[u8; 32]] {
        match self {
            Self::Dir => &[],
            Self::File { chunks, .. } => chunks,
        }
    }
}

/// A step's change to one path (`/`-separated, relative to the workspace root): `None`
/// removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub entry: Option<WorkspaceEntry>,
}

/// A workspace's contents: path to entry. Sorted, so a directory comes before what it holds.
pub type Manifest = BTreeMap<String, WorkspaceEntry>;

/// Applies a step's changes to `manifest`.
pub fn apply(manifest: &mut Manifest, changes: &[FileChange]) {
    for change in changes {
        match &change.entry {
            Some(entry) => {
                manifest.insert(change.path.clone(), entry.clone());
            }
            None => {
                manifest.remove(&change.path);
            }
        }
    }
}

/// The workspace of a tool as of step `at`, from that tool's steps' changes (in order).
pub fn manifest_at<'a>(steps: impl IntoIterator<Item = (u64, &'a [FileChange])>, at: u64) -> Manifest {
    let mut manifest = Manifest::new();
    for (seq, changes) in steps {
        if seq <= at {
            apply(&mut manifest, changes);
        }
    }
    manifest
}

/// What turns `old` into `new`.
pub(crate) fn diff(old: &Manifest, new: &Manifest) -> Vec<FileChange> {
    let removed =
        old.keys().filter(|path| !new.contains_key(*path)).map(|path| FileChange { path: path.clone(), entry: None });
    let changed = new
        .iter()
        .filter(|(path, entry)| old.get(*path) != Some(entry))
        .map(|(path, entry)| FileChange { path: path.clone(), entry: Some(entry.clone()) });
    removed.chain(changed).collect()
}

/// Whether `path` is a stored workspace path: relative, `/`-separated, no empty, `.` or `..`
/// component, no NUL or backslash. Checked when a path is stored and again before one is
/// written out, so an export never leaves its directory.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty() && !path.contains(['\0', '\\']) && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(byte: u8) -> WorkspaceEntry {
        WorkspaceEntry::File { size: 1, chunks: vec![[byte; 32]] }
    }

    #[test]
    fn diff_then_apply_reaches_the_new_manifest() {
        let old: Manifest = [("a".into(), file(1)), ("d".into(), WorkspaceEntry::Dir), ("d/x".into(), file(2))].into();
        let new: Manifest = [("a".into(), file(3)), ("b".into(), file(2))].into();
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 4, "{changes:?}");
        let mut applied = old.clone();
        apply(&mut applied, &changes);
        assert_eq!(applied, new);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn paths_that_could_leave_the_directory_are_not_valid() {
        for bad in ["", "/etc/passwd", "a/../../b", "..", "./a", "a//b", "a/", "a\\b", "a\0b"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        for good in ["a", "dir/file.txt", "...", "a b/c"] {
            assert!(valid_path(good), "{good:?}");
        }
    }
}
