//! What the Python and JS builders share: the WIT their SDKs build against, and the content
//! hash of a tool project's build inputs (a build is reused only while it is unchanged).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Directories below a project's root followed at most this deep, so a symlink that points
/// back up (`ln -s . loop`) ends the walk with an error instead of the process's stack.
const MAX_DEPTH: usize = 32;

/// The WIT the Python and TypeScript SDKs build against, as (path under the staged `wit`
/// directory, text): the SDK's worlds (`sdk/wit/sdk.wit`, the tool worlds plus
/// `wasi:http/outgoing-handler`), the tool contract and the WASI packages they use.
pub(crate) const SDK_WIT: &[(&str, &str)] = &[
    ("sdk.wit", include_str!("../sdk/wit/sdk.wit")),
    ("deps/tool.wit", include_str!("../wit/tool.wit")),
    ("deps/cli.wit", include_str!("../sdk/wit/deps/cli.wit")),
    ("deps/clocks.wit", include_str!("../sdk/wit/deps/clocks.wit")),
    ("deps/filesystem.wit", include_str!("../sdk/wit/deps/filesystem.wit")),
    ("deps/http.wit", include_str!("../sdk/wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../sdk/wit/deps/io.wit")),
    ("deps/random.wit", include_str!("../sdk/wit/deps/random.wit")),
    ("deps/sockets.wit", include_str!("../sdk/wit/deps/sockets.wit")),
];

/// Writes [`SDK_WIT`] under `dir`; fails with the path that could not be written.
pub(crate) fn write_sdk_wit(dir: &Path) -> Result<(), (PathBuf, io::Error)> {
    fs::create_dir_all(dir.join("deps")).map_err(|e| (dir.join("deps"), e))?;
    for (name, text) in SDK_WIT {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| (path.clone(), e))?;
    }
    Ok(())
}

/// Which files of a project are its sources.
pub(crate) struct Sources<'a> {
    /// Directory names never entered (besides hidden ones): caches, dependencies, build output.
    pub skip_dirs: &'a [&'a str],
    /// Whether a file, by its name, is a source.
    pub is_source: fn(&str) -> bool,
}

/// sha256 over `pins` (toolchain pins, the WIT, entry points), the embedded SDK files and every
/// source file under `dir`, in path order. Fails with the path that could not be read.
pub(crate) fn hash(
    pins: &[&str],
    sdk_files: &[(&str, &str)],
    dir: &Path,
    sources: &Sources,
) -> Result<String, (PathBuf, io::Error)> {
    let mut hasher = Sha256::new();
    for part in pins {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    for (name, text) in sdk_files {
        hasher.update(name.as_bytes());
        hasher.update(text.as_bytes());
    }
    for (relative, path) in files(dir, sources)? {
        let bytes = fs::read(&path).map_err(|e| (path.clone(), e))?;
        hasher.update(relative.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The source files under `dir` as (path relative to `dir`, path), sorted.
pub(crate) fn files(dir: &Path, sources: &Sources) -> Result<Vec<(String, PathBuf)>, (PathBuf, io::Error)> {
    let mut files = Vec::new();
    collect(dir, dir, sources, 0, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect(
    root: &Path,
    dir: &Path,
    sources: &Sources,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), (PathBuf, io::Error)> {
    if depth > MAX_DEPTH {
        let reason = format!("more than {MAX_DEPTH} directories deep (a symlink loop?)");
        return Err((dir.to_owned(), io::Error::other(reason)));
    }
    for entry in fs::read_dir(dir).map_err(|e| (dir.to_owned(), e))? {
        let path = entry.map_err(|e| (dir.to_owned(), e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') || sources.skip_dirs.contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, sources, depth + 1, out)?;
        } else if (sources.is_source)(&name) {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.push((relative, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY: Sources = Sources { skip_dirs: &["__pycache__"], is_source: |n| n.ends_with(".py") };

    #[test]
    fn embedded_sdk_wit_lists_every_wasi_package() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/wit/deps");
        let mut on_disk: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| Some(format!("deps/{}", e.ok()?.file_name().into_string().ok()?)))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> =
            SDK_WIT.iter().map(|(name, _)| *name).filter(|n| n.starts_with("deps/") && *n != "deps/tool.wit").collect();
        assert_eq!(embedded, on_disk, "update SDK_WIT in src/build_inputs.rs");
    }

    #[test]
    fn sources_change_the_hash_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("pkg")).unwrap();
        fs::write(dir.path().join("pkg/tool.py"), "x = 1").unwrap();
        let first = hash(&["pin"], &[("sdk.py", "")], dir.path(), &PY).unwrap();
        fs::write(dir.path().join("notes.txt"), "not a source").unwrap();
        fs::create_dir(dir.path().join("__pycache__")).unwrap();
        fs::write(dir.path().join("__pycache__/tool.py"), "cached").unwrap();
        assert_eq!(hash(&["pin"], &[("sdk.py", "")], dir.path(), &PY).unwrap(), first);
        fs::write(dir.path().join("pkg/tool.py"), "x = 2").unwrap();
        assert_ne!(hash(&["pin"], &[("sdk.py", "")], dir.path(), &PY).unwrap(), first);
        assert_ne!(hash(&["other pin"], &[("sdk.py", "")], dir.path(), &PY).unwrap(), first);
    }

    #[test]
    fn a_symlink_loop_is_an_error_not_a_stack_overflow() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("tool.py"), "x = 1").unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let (path, error) = hash(&[], &[], dir.path(), &PY).unwrap_err();
        assert!(path.starts_with(dir.path()), "{path:?}");
        assert!(error.to_string().contains("symlink loop"), "{error}");
    }
}
