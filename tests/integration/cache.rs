//! The compile cache: a second load reads the artifact instead of compiling.

use serde_json::json;
use toolhost::{CacheStatus, EngineConfig, Host, HostConfig, Policy};

use crate::support::guests;

fn host_with_cache(dir: Option<&std::path::Path>) -> Host {
    let engine = EngineConfig { cache_dir: dir.map(Into::into), max_instances: 8, ..EngineConfig::default() };
    Host::new(HostConfig { engine, policy: Policy::deny_all(), ..HostConfig::default() }).unwrap()
}

#[tokio::test]
async fn the_second_load_hits_the_cache_and_a_corrupt_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let calculator = &guests().calculator;

    let first = host_with_cache(Some(dir.path())).load_tool(calculator).await.unwrap();
    assert_eq!(first.cache_status(), CacheStatus::Miss);

    let host = host_with_cache(Some(dir.path()));
    let second = host.load_tool(calculator).await.unwrap();
    assert_eq!(second.cache_status(), CacheStatus::Hit);
    assert_eq!(second.digest(), first.digest());
    let out = host.new_session().await.unwrap().call(&second, &json!({"expression": "1 + 2"})).await.unwrap();
    assert_eq!(out["value"], 3.0);

    let uncached = host_with_cache(None).load_tool(calculator).await.unwrap();
    assert_eq!(uncached.cache_status(), CacheStatus::Disabled);

    // Garbage under a valid name is detected, replaced and never executed.
    let artifacts: Vec<_> =
        walk(dir.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    std::fs::write(&artifacts[0], b"not a compiled component").unwrap();
    let host = host_with_cache(Some(dir.path()));
    let recompiled = host.load_tool(calculator).await.unwrap();
    assert_eq!(recompiled.cache_status(), CacheStatus::Miss);
    let out = host.new_session().await.unwrap().call(&recompiled, &json!({"expression": "2 ^ 10"})).await.unwrap();
    assert_eq!(out["value"], 1024.0);
    assert_eq!(host_with_cache(Some(dir.path())).load_tool(calculator).await.unwrap().cache_status(), CacheStatus::Hit);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}
