//! The host side of a staging directory: write a manifest out into it, and read it back.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use super::grant::WorkspaceGrant;
use crate::contract::workspace::{Manifest, WorkspaceEntry, valid_path};
use crate::error::HostResource;
use crate::store::{Chunk, chunk_snapshot};

/// Files' modification and access times in a materialized workspace: fixed, so a rebuilt
/// instance sees the same times whatever host rebuilt it (times set within a step are host
/// times and are not journaled).
pub(crate) const MATERIALIZED_TIME: std::time::SystemTime = std::time::UNIX_EPOCH;

/// Why a staging directory could not be taken into a step.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The workspace holds more than its grant's quota.
    #[error("the workspace is over its quota on {resource}: {used} > {limit}")]
    Quota { resource: HostResource, limit: u64, used: u64 },
    /// Something a workspace cannot keep: a symlink, a special file, a name that is not UTF-8.
    #[error("the workspace holds {what} at `{path}`, which it cannot keep")]
    Unsupported { path: String, what: &'static str },
    #[error("reading the staging directory")]
    Io(#[from] io::Error),
}

/// What a scan found: the staging directory's manifest and the chunks of its files that
/// `known` (the committed manifest) does not already hold.
pub(crate) struct Scanned {
    pub manifest: Manifest,
    pub new_chunks: Vec<Chunk>,
}

/// Reads `root` into a manifest, bounded by `grant`'s quotas: a file is read only after its
/// size fits the byte quota, so a scan never holds more than the quota allows.
pub(crate) fn scan(root: &Path, known: &Manifest, grant: &WorkspaceGrant) -> Result<Scanned, ScanError> {
    let known_chunks: HashSet<[u8; 32]> = known.values().flat_map(|e| e.chunks().iter().copied()).collect();
    let mut manifest = Manifest::new();
    let mut new_chunks: HashMap<[u8; 32], Chunk> = HashMap::new();
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(root.join(&dir))? {
            let entry = entry?;
            let name = entry.file_name();
            let path = match name.to_str() {
                Some(name) if dir.is_empty() => name.to_owned(),
                Some(name) => format!("{dir}/{name}"),
                None => {
                    let shown = format!("{dir}/{}", name.to_string_lossy());
                    return Err(ScanError::Unsupported { path: shown, what: "a name that is not UTF-8" });
                }
            };
            if !valid_path(&path) {
                return Err(ScanError::Unsupported { path, what: "a name with a backslash" });
            }
            files += 1;
            if files > grant.quota_files {
                let (limit, used) = (grant.quota_files, files);
                return Err(ScanError::Quota { resource: HostResource::WorkspaceFiles, limit, used });
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                manifest.insert(path.clone(), WorkspaceEntry::Dir);
                pending.push(path);
            } else if kind.is_file() {
                let size = entry.metadata()?.len();
                bytes = bytes.saturating_add(size);
                if bytes > grant.quota_bytes {
                    let (limit, used) = (grant.quota_bytes, bytes);
                    return Err(ScanError::Quota { resource: HostResource::WorkspaceBytes, limit, used });
                }
                let data = fs::read(root.join(&path))?;
                let chunks = chunk_snapshot(&data);
                let hashes = chunks.iter().map(|c| c.hash).collect();
                for chunk in chunks.into_iter().filter(|c| !known_chunks.contains(&c.hash)) {
                    new_chunks.entry(chunk.hash).or_insert(chunk);
                }
                manifest.insert(path, WorkspaceEntry::File { size: data.len() as u64, chunks: hashes });
            } else if kind.is_symlink() {
                return Err(ScanError::Unsupported { path, what: "a symlink" });
            } else {
                return Err(ScanError::Unsupported { path, what: "a special file" });
            }
        }
    }
    Ok(Scanned { manifest, new_chunks: new_chunks.into_values().collect() })
}

/// Writes `manifest` out under `root` (empty, or holding exactly what was written before
/// and is being replaced), with `chunks` holding the data of every chunk it names.
pub(crate) fn materialize(root: &Path, manifest: &Manifest, chunks: &HashMap<[u8; 32], Vec<u8>>) -> io::Result<()> {
    for (path, entry) in manifest {
        if !valid_path(path) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("stored path `{path}` is not valid")));
        }
        refuse_symlinks(root, path)?;
        let target = root.join(path);
        match entry {
            WorkspaceEntry::Dir => fs::create_dir_all(&target)?,
            WorkspaceEntry::File { chunks: hashes, .. } => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut data = Vec::with_capacity(entry.size() as usize);
                for hash in hashes {
                    let chunk = chunks.get(hash).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("a chunk of `{path}` is missing"))
                    })?;
                    data.extend_from_slice(chunk);
                }
                fs::write(&target, &data)?;
                let times = fs::FileTimes::new().set_accessed(MATERIALIZED_TIME).set_modified(MATERIALIZED_TIME);
                fs::File::options().write(true).open(&target)?.set_times(times)?;
            }
        }
    }
    Ok(())
}

/// Fails if `path` under `root`, or a directory on the way to it, is a symlink: writing
/// through one could land outside `root` (an export into a directory that already held one).
fn refuse_symlinks(root: &Path, path: &str) -> io::Result<()> {
    let mut at = root.to_path_buf();
    for component in path.split('/') {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let message = format!("`{}` is a symlink; refusing to write through it", at.display());
                return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> WorkspaceGrant {
        WorkspaceGrant { guest: "/workspace".into(), quota_bytes: 1 << 20, quota_files: 10 }
    }

    #[test]
    fn a_scanned_tree_materializes_back_byte_for_byte() {
        let first = tempfile::tempdir().unwrap();
        fs::create_dir_all(first.path().join("d/empty")).unwrap();
        fs::write(first.path().join("d/f.txt"), b"hello").unwrap();
        fs::write(first.path().join("big"), vec![7u8; 100_000]).unwrap();
        let scanned = scan(first.path(), &Manifest::new(), &grant()).unwrap();
        assert_eq!(scanned.manifest.len(), 4);
        let chunks = scanned.new_chunks.iter().map(|c| (c.hash, c.data.clone())).collect();
        let second = tempfile::tempdir().unwrap();
        materialize(second.path(), &scanned.manifest, &chunks).unwrap();
        assert_eq!(fs::read(second.path().join("d/f.txt")).unwrap(), b"hello");
        assert!(second.path().join("d/empty").is_dir());
        let again = scan(second.path(), &scanned.manifest, &grant()).unwrap();
        assert_eq!(again.manifest, scanned.manifest);
        assert!(again.new_chunks.is_empty(), "unchanged files bring no new chunks");
        let modified = fs::metadata(second.path().join("big")).unwrap().modified().unwrap();
        assert_eq!(modified, MATERIALIZED_TIME);
    }

    #[test]
    fn materializing_never_writes_through_a_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("d")).unwrap();
        let manifest: Manifest = [("d/f".to_owned(), WorkspaceEntry::File { size: 0, chunks: vec![] })].into();
        let error = materialize(root.path(), &manifest, &HashMap::new()).unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
        assert!(!outside.path().join("f").exists());
    }

    #[test]
    fn quotas_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![0u8; 600]).unwrap();
        fs::write(dir.path().join("b"), vec![1u8; 600]).unwrap();
        let small = WorkspaceGrant { quota_bytes: 1000, ..grant() };
        let error = scan(dir.path(), &Manifest::new(), &small).err().unwrap();
        assert!(matches!(error, ScanError::Quota { resource: HostResource::WorkspaceBytes, limit: 1000, .. }));
        let few = WorkspaceGrant { quota_files: 1, ..grant() };
        let error = scan(dir.path(), &Manifest::new(), &few).err().unwrap();
        assert!(matches!(error, ScanError::Quota { resource: HostResource::WorkspaceFiles, limit: 1, used: 2 }));
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let error = scan(dir.path(), &Manifest::new(), &grant()).err().unwrap();
        assert!(matches!(error, ScanError::Unsupported { what: "a symlink", .. }), "{error}");
    }
}
