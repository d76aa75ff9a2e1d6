//! Files that are not tools are refused with errors that say why.

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
}
