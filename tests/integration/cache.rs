//! The compile cache: a second load reads the artifact instead of compiling, and only an
//! artifact the host itself wrote (authenticated by its key) is ever deserialized.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use toolhost::{CacheError, CacheStatus, EngineConfig, Host, HostConfig, HostError, Policy};

use crate::support::guests;

/// A host caching in `dir` (none: no cache), authenticating artifacts with the key at `key`.
fn host_with_cache(dir: Option<&Path>, key: &Path) -> Host {
    let engine = EngineConfig {
        cache_dir: dir.map(Into::into),
        cache_key: Some(key.to_owned()),
        max_instances: 8,
        ..EngineConfig::default()
    };
    Host::new(HostConfig { engine, policy: Policy::deny_all(), ..HostConfig::default() }).unwrap()
}

struct Cache {
    dir: tempfile::TempDir,
    keys: tempfile::TempDir,
}

impl Cache {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), keys: tempfile::tempdir().unwrap() }
    }
    fn key(&self) -> PathBuf {
        self.keys.path().join("cache.key")
    }
    fn host(&self) -> Host {
        host_with_cache(Some(self.dir.path()), &self.key())
    }
    fn artifacts(&self) -> Vec<PathBuf> {
        walk(self.dir.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect()
    }
    fn artifact_of(&self, digest: &str) -> PathBuf {
        let found: Vec<_> = self.artifacts().into_iter().filter(|p| p.file_stem().unwrap() == digest).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        found[0].clone()
    }
}

#[tokio::test]
async fn the_second_load_hits_the_cache_and_a_corrupt_entry_is_recompiled() {
    let cache = Cache::new();
    let calculator = &guests().calculator;

    let first = cache.host().load_tool(calculator).await.unwrap();
    assert_eq!(first.cache_status(), CacheStatus::Miss);

    let host = cache.host();
    let second = host.load_tool(calculator).await.unwrap();
    assert_eq!(second.cache_status(), CacheStatus::Hit);
    assert_eq!(second.digest(), first.digest());
    let out = host.new_session().await.unwrap().call(&second, &json!({"expression": "1 + 2"})).await.unwrap();
    assert_eq!(out["value"], 3.0);

    let uncached = host_with_cache(None, &cache.key()).load_tool(calculator).await.unwrap();
    assert_eq!(uncached.cache_status(), CacheStatus::Disabled);

    // Garbage under a valid name is detected, replaced and never executed.
    let artifacts = cache.artifacts();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    std::fs::write(&artifacts[0], b"not a compiled component").unwrap();
    let host = cache.host();
    let recompiled = host.load_tool(calculator).await.unwrap();
    assert_eq!(recompiled.cache_status(), CacheStatus::Miss);
    let out = host.new_session().await.unwrap().call(&recompiled, &json!({"expression": "2 ^ 10"})).await.unwrap();
    assert_eq!(out["value"], 1024.0);
    assert_eq!(cache.host().load_tool(calculator).await.unwrap().cache_status(), CacheStatus::Hit);
}

/// Loads the calculator from a cache whose artifact `tamper` has altered: the load must
/// recompile (never run the altered file), the tool must be the calculator, and the fresh
/// artifact must then be trusted again.
async fn refused_and_recompiled(cache: &Cache, digest: &str, what: &str) {
    let host = cache.host();
    let tool = host.load_tool(&guests().calculator).await.unwrap();
    assert_eq!(tool.cache_status(), CacheStatus::Miss, "{what}: the altered artifact was used");
    assert_eq!(tool.name(), "calculator", "{what}");
    let out = host.new_session().await.unwrap().call(&tool, &json!({"expression": "6 * 7"})).await.unwrap();
    assert_eq!(out["value"], 42.0, "{what}");
    let path = cache.artifact_of(digest);
    assert_eq!(cache.host().load_tool(&guests().calculator).await.unwrap().cache_status(), CacheStatus::Hit, "{what}");
    assert!(std::fs::metadata(path).unwrap().len() > 1000, "{what}");
}

#[tokio::test]
async fn swapped_truncated_and_bit_flipped_artifacts_are_refused_and_recompiled() {
    let cache = Cache::new();
    let calculator = cache.host().load_tool(&guests().calculator).await.unwrap();
    let notes = cache.host().load_tool(&guests().notes).await.unwrap();
    let digest = calculator.digest().to_owned();
    let calculator_path = cache.artifact_of(&digest);
    let notes_path = cache.artifact_of(notes.digest());
    let good = std::fs::read(&calculator_path).unwrap();

    // Swapped: another tool's artifact, authentic for *that* tool, under this tool's name.
    std::fs::copy(&notes_path, &calculator_path).unwrap();
    refused_and_recompiled(&cache, &digest, "swapped").await;

    // Truncated, at several points (inside the tag, just after it, mid-artifact).
    for cut in [0, 7, 32, 33, good.len() / 2, good.len() - 1] {
        std::fs::write(&calculator_path, &good[..cut]).unwrap();
        refused_and_recompiled(&cache, &digest, &format!("truncated to {cut}")).await;
    }

    // One bit flipped, in the tag and in the code.
    for at in [3, 40, good.len() / 3, good.len() - 2] {
        let mut flipped = std::fs::read(cache.artifact_of(&digest)).unwrap();
        flipped[at] ^= 0x10;
        std::fs::write(&calculator_path, &flipped).unwrap();
        refused_and_recompiled(&cache, &digest, &format!("bit flipped at {at}")).await;
    }

    // An artifact made under another key (another user's cache copied in).
    let other = Cache::new();
    other.host().load_tool(&guests().calculator).await.unwrap();
    std::fs::copy(other.artifact_of(&digest), &calculator_path).unwrap();
    refused_and_recompiled(&cache, &digest, "another key").await;
}

#[tokio::test]
async fn the_cache_folder_and_key_are_private_and_a_shared_key_is_refused() {
    let cache = Cache::new();
    // An existing root may be shared with other things: it keeps its mode; the engine's
    // folder under it is the cache's own and is private.
    std::fs::set_permissions(cache.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    cache.host().load_tool(&guests().calculator).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(cache.dir.path()), 0o755);
    assert_eq!(mode(cache.artifacts()[0].parent().unwrap()), 0o700);
    assert_eq!(mode(&cache.key()), 0o600);
    // A root (and key folder) the cache creates is private from the start.
    let fresh = cache.dir.path().join("new-root");
    let key_home = tempfile::tempdir().unwrap();
    let fresh_key = key_home.path().join("keys").join("cache.key");
    host_with_cache(Some(&fresh), &fresh_key).load_tool(&guests().calculator).await.unwrap();
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(fresh_key.parent().unwrap()), 0o700);
    assert_eq!(mode(&fresh_key), 0o600);
    assert_eq!(std::fs::read(cache.key()).unwrap().len(), 32);

    std::fs::set_permissions(cache.key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let engine = EngineConfig {
        cache_dir: Some(cache.dir.path().into()),
        cache_key: Some(cache.key()),
        ..EngineConfig::default()
    };
    let err = Host::new(HostConfig { engine, ..HostConfig::default() }).err().expect("a readable key is refused");
    assert!(matches!(err, HostError::Cache(CacheError::BadKey { .. })), "{err:?}");
    assert!(err.to_string().contains("0600"), "{err}");

    let inside = cache.dir.path().join("cache.key");
    let engine =
        EngineConfig { cache_dir: Some(cache.dir.path().into()), cache_key: Some(inside), ..EngineConfig::default() };
    let err =
        Host::new(HostConfig { engine, ..HostConfig::default() }).err().expect("a key inside the cache is refused");
    assert!(matches!(err, HostError::Cache(CacheError::KeyInsideCache { .. })), "{err:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}
