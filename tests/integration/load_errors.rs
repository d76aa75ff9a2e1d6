//! Files that are not tools are refused with errors that say why.

use std::error::Error as _;

use toolhost::error::chain;
use toolhost::{LoadError, Policy};

use crate::support::{guests, host};

#[tokio::test]
async fn each_kind_of_non_tool_gets_its_own_error() {
    let host = host(Policy::deny_all());
    let dir = tempfile::tempdir().unwrap();

    let err = host.load_tool(dir.path().join("missing.wasm")).await.unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let err = host.load_tool(&text).await.unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");

    // The smallest valid core module: magic plus version 1.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = host.load_tool(&core).await.unwrap_err();
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err:?}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");

    let err = host.load_tool(&guests().wrong_world).await.unwrap_err();
    match &err {
        LoadError::WrongWorld { expected, found, .. } => {
            assert_eq!(*expected, "toolhost:tool/tool@0.1.0");
            assert!(found.contains("wasi:cli/run"), "{found}");
        }
        other => panic!("expected WrongWorld, got {other:?}"),
    }

    let bytes = std::fs::read(&guests().calculator).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = host.load_tool(&truncated).await.unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
    // Why it does not compile is wasmtime's error, kept as the source: the same words wasmtime
    // says of these bytes, shown by `chain` after the path and not repeated by `Display`.
    let cause = err.source().expect("wasmtime's error as the source").to_string();
    let engine = wasmtime::Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
    let Err(direct) = wasmtime::component::Component::new(&engine, &bytes[..bytes.len() / 2]) else {
        panic!("wasmtime compiled the truncated component");
    };
    assert_eq!(cause, direct.to_string());
    assert_eq!(err.to_string(), format!("{} does not compile", truncated.display()));
    assert!(chain(&err).to_string().starts_with(&format!("{err}: {cause}")), "{}", chain(&err));
}

fn engine_with(adjust: impl FnOnce(&mut toolhost::EngineConfig)) -> toolhost::Host {
    let mut engine = toolhost::EngineConfig { cache_dir: None, max_instances: 8, ..toolhost::EngineConfig::default() };
    adjust(&mut engine);
    toolhost::Host::new(toolhost::HostConfig { engine, policy: Policy::deny_all(), ..Default::default() }).unwrap()
}

#[tokio::test]
async fn a_component_over_the_size_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // A sparse 65 MiB file with a component header: over the default 64 MiB cap, costing no disk.
    let big = dir.path().join("big.wasm");
    let file = std::fs::File::create(&big).unwrap();
    std::io::Write::write_all(&mut &file, b"\0asm\x0d\0\x01\0").unwrap();
    file.set_len(65 << 20).unwrap();
    let err = engine_with(|_| {}).load_tool(&big).await.unwrap_err();
    match &err {
        LoadError::TooLarge { size, limit, .. } => assert_eq!((*size, *limit), (65 << 20, 64 << 20)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("max_component_bytes"), "{err}");

    // From bytes too, and a cap set below a real tool's size refuses it while the default loads it.
    let bytes = std::fs::read(&guests().calculator).unwrap();
    let small = engine_with(|e| e.max_component_bytes = bytes.len() as u64 - 1);
    let err = small.load_tool_bytes(&guests().calculator, bytes.clone()).await.unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err:?}");
    let err = small.load_tool(&guests().calculator).await.unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err:?}");
    let exact = engine_with(|e| e.max_component_bytes = bytes.len() as u64);
    assert_eq!(exact.load_tool(&guests().calculator).await.unwrap().name(), "calculator");
}

#[tokio::test]
async fn a_compile_over_the_time_cap_fails_with_its_own_error_and_the_host_keeps_loading() {
    let slow = engine_with(|e| e.max_compile_time = std::time::Duration::from_millis(1));
    let err = slow.load_tool(&guests().calculator).await.unwrap_err();
    match &err {
        LoadError::CompileTimeout { limit, .. } => assert_eq!(*limit, std::time::Duration::from_millis(1)),
        other => panic!("expected CompileTimeout, got {other:?}"),
    }
    assert!(err.to_string().contains("max_compile_time"), "{err}");
    // The default limit compiles the same component.
    assert_eq!(engine_with(|_| {}).load_tool(&guests().calculator).await.unwrap().name(), "calculator");
}
