//! On-disk cache of compiled components, so loading a tool a second time skips cranelift.
//!
//! An artifact is keyed by the component's sha256 and by the engine's
//! `precompile_compatibility_hash` (wasmtime version, target, and every setting that changes
//! code generation), so an engine never reads code compiled for another configuration.
//! Files are written to a temporary name and renamed, so a crash never leaves a torn
//! artifact under a valid name.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

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

pub(crate) struct CompileCache {
    /// `<root>/<engine compatibility hash>`: one folder per engine configuration.
    dir: PathBuf,
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
    pub fn open(root: &Path, engine: &wasmtime::Engine) -> std::io::Result<Self> {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..12]);
        let dir = root.join(engine_key);
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The cached component for `digest`, if present and readable by this engine.
    pub fn get(&self, engine: &wasmtime::Engine, digest: &str) -> Option<Component> {
        let path = self.artifact_path(digest);
        // Read into memory rather than `deserialize_file`: a mapped file that someone truncates
        // while the host runs kills the process with SIGBUS.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable compile cache entry; recompiling");
                return None;
            }
        };
        // SAFETY: artifacts in this folder are written only by `put` below, from code an
        // engine with this configuration compiled; the folder is the host's own (see
        // `EngineConfig::cache_dir`). wasmtime also checks the header and engine settings.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unusable compile cache entry; recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `component` under `digest`. Failures are logged, not fatal: the cache is an
    /// optimization.
    pub fn put(&self, digest: &str, component: &Component) {
        let result = (|| -> std::io::Result<()> {
            let bytes = component.serialize().map_err(std::io::Error::other)?;
            let mut tmp = tempfile_in(&self.dir)?;
            tmp.1.write_all(&bytes)?;
            tmp.1.sync_all()?;
            std::fs::rename(&tmp.0, self.artifact_path(digest))
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write compile cache entry");
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok((path, file))
}

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
