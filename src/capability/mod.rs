//! Host capabilities, one module per import a tool can use: our WIT's `state`, `model` and
//! `log`, WASI's filesystem (audited in front of wasmtime-wasi) and the network (wasi-http's
//! send hook, WASI's socket check). Each holds the per-instance context the host functions
//! need and adds itself to the linker. Anything a tool was not granted is answered with a
//! typed denial and an [`audit`] event, never a trap.

pub mod audit;
pub mod filesystem;
pub mod log;
pub mod model;
pub mod network;
pub mod state;
