//! On-disk cache of compiled components, so loading a tool a second time skips cranelift.
//!
//! An artifact is keyed by the component's sha256 and by the engine's
//! `precompile_compatibility_hash` (wasmtime version, target, and every setting that changes
//! code generation), so an engine never reads code compiled for another configuration.
//! Files are written to a temporary name and renamed, so a crash never leaves a torn
//! artifact under a valid name.
//!
//! `Component::deserialize` runs the native code it is given, so a file in the cache is
//! trusted only once it is authenticated: each artifact starts with an HMAC-SHA256 tag, keyed
//! by a per-user secret kept outside the cache folder, over the component's sha256, the
//! engine key and the artifact. A tampered, truncated or foreign (another tool's) artifact
//! fails the check, is deleted, reported and recompiled; it is never deserialized.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of the secret key and of the tag in front of every artifact.
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// Domain separation: a tag made for anything else never verifies as an artifact's.
const TAG_CONTEXT: &[u8] = b"toolhost compile cache artifact v1\0";

/// Whether a load compiled the component or read it from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStatus {
    /// Read from the cache; nothing was compiled.
    Hit,
    /// Compiled, then written to the cache.
    Miss,
    /// Compiled; the host has no cache.
    Disabled,
}

/// Why the cache cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the compile cache folder {path}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot read or create the compile cache key {path}")]
    Key { path: PathBuf, source: std::io::Error },
    #[error(
        "the compile cache key {path} is {problem}; it must be a {KEY_LEN}-byte file only its owner can \
         read (mode 0600). Delete it to have a new one made (the cache is then recompiled)"
    )]
    BadKey { path: PathBuf, problem: String },
    #[error("the compile cache key {key} must live outside the cache folder {dir}")]
    KeyInsideCache { key: PathBuf, dir: PathBuf },
}

pub(crate) struct CompileCache {
    /// `<root>/<engine compatibility hash>`: one folder per engine configuration.
    dir: PathBuf,
    engine_key: String,
    key: [u8; KEY_LEN],
}

/// Feeds `Hash` output into sha256, giving a digest that is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the sha256 digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// Opens (creating, mode 0700) the cache under `root`, authenticated with the key at
    /// `key_path` (created, mode 0600, on first use).
    pub fn open(root: &Path, key_path: &Path, engine: &wasmtime::Engine) -> Result<Self, CacheError> {
        if absolute(key_path).starts_with(absolute(root)) {
            return Err(CacheError::KeyInsideCache { key: key_path.to_owned(), dir: root.to_owned() });
        }
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..12]);
        let dir = root.join(&engine_key);
        // The root may be a folder the user shares with other things: only what we create
        // under it is ours to tighten.
        create_private_dir(&dir)
            .and_then(|()| tighten(&dir))
            .map_err(|source| CacheError::Dir { path: dir.clone(), source })?;
        let key = load_or_create_key(key_path)?;
        Ok(Self { dir, engine_key, key })
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The tag of `artifact` as the compiled form of the component `digest`.
    fn mac(&self, digest: &str, artifact: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        for part in [TAG_CONTEXT, digest.as_bytes(), b"\0", self.engine_key.as_bytes(), b"\0", artifact] {
            mac.update(part);
        }
        mac
    }

    /// The cached component for `digest`, if present, authentic and readable by this engine.
    pub fn get(&self, engine: &wasmtime::Engine, digest: &str) -> Option<Component> {
        let path = self.artifact_path(digest);
        // Read into memory rather than `deserialize_file`: a mapped file that someone truncates
        // while the host runs kills the process with SIGBUS, and the bytes checked must be
        // the bytes deserialized.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %crate::source::chain(&e), "unreadable compile cache entry; recompiling");
                return None;
            }
        };
        let Some(artifact) = self.authenticated(digest, &bytes) else {
            tracing::warn!(
                target: "toolhost::audit",
                path = %path.display(),
                component = %digest,
                bytes = bytes.len(),
                "compile cache entry failed authentication (tampered, truncated or another component's); \
                 refusing to run it, deleting it and recompiling"
            );
            let _ = std::fs::remove_file(&path);
            return None;
        };
        // SAFETY: `artifact` carries a valid tag under the host's secret key for this
        // component and engine, so `put` below wrote it from code this engine compiled.
        // wasmtime also checks the header and engine settings.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = format!("{e:#}"), "unusable compile cache entry; recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// The artifact inside `file` if its tag is valid for `digest`.
    fn authenticated<'a>(&self, digest: &str, file: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, artifact) = file.split_at_checked(TAG_LEN)?;
        self.mac(digest, artifact).verify_slice(tag).ok()?;
        Some(artifact)
    }

    /// Stores `component` under `digest`. Failures are logged, not fatal: the cache is an
    /// optimization.
    pub fn put(&self, digest: &str, component: &Component) {
        let result = (|| -> std::io::Result<()> {
            let bytes = component.serialize().map_err(std::io::Error::other)?;
            let tag = self.mac(digest, &bytes).finalize().into_bytes();
            let mut tmp = tempfile_in(&self.dir)?;
            tmp.1.write_all(&tag)?;
            tmp.1.write_all(&bytes)?;
            tmp.1.sync_all()?;
            std::fs::rename(&tmp.0, self.artifact_path(digest))
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %crate::source::chain(&e), "could not write compile cache entry");
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Creates `dir` and its missing parents readable by their owner only (mode 0700). Folders
/// that already exist keep their mode.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Takes group and other access away from `dir`, a folder the cache owns.
fn tighten(dir: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Reads the key, or makes one from OS entropy. A new key is written to a temporary file
/// and hard-linked into place, so two hosts starting at once agree on one key.
fn load_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], CacheError> {
    let io = |source| CacheError::Key { path: path.to_owned(), source };
    match read_key(path) {
        Err(CacheError::Key { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_private_dir(parent).map_err(io)?;
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let tmp = parent.join(format!(".cache-key-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(io)?;
    read_key(path)
}

fn read_key(path: &Path) -> Result<[u8; KEY_LEN], CacheError> {
    let bad = |problem: String| CacheError::BadKey { path: path.to_owned(), problem };
    let mut file = std::fs::File::open(path).map_err(|source| CacheError::Key { path: path.to_owned(), source })?;
    let meta = file.metadata().map_err(|source| CacheError::Key { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode();
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if mode & 0o077 != 0 {
        return Err(bad(format!("accessible to others (mode {:o})", mode & 0o777)));
    }
    let mut key = [0u8; KEY_LEN];
    let mut rest = Vec::new();
    file.read_exact(&mut key).map_err(|_| bad(format!("shorter than {KEY_LEN} bytes")))?;
    file.read_to_end(&mut rest).map_err(|source| CacheError::Key { path: path.to_owned(), source })?;
    if !rest.is_empty() {
        return Err(bad(format!("longer than {KEY_LEN} bytes")));
    }
    Ok(key)
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    Ok((path, file))
}

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
