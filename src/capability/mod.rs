//! Host capabilities, one module per import a tool can use: our WIT's `state`, `model` and
//! `log`, WASI's filesystem (audited in front of wasmtime-wasi) and the session workspace
//! behind it, secure randomness (journaled OS entropy) and the network (wasi-http's send
//! hook, WASI's socket check). Each holds the per-instance context the host functions need
//! and adds itself to the linker. Anything a tool was not granted is answered with a
//! typed denial and an [`audit`] event, never a trap.

pub mod audit;
pub mod filesystem;
pub(crate) mod in_flight;
pub mod log;
pub mod model;
pub mod network;
pub mod random;
pub mod sockets;
pub mod state;
pub mod workspace;

/// Logs a capability decision to `tracing` only (target `toolhost::audit`), for decisions a
/// capability persists on its own terms. Everything else goes through [`audit::Auditor`],
/// which also writes the store's audit table.
pub(crate) fn audit(session: &str, tool: &str, capability: &str, request: &str, allowed: bool, reason: &str) {
    if allowed {
        tracing::debug!(target: "toolhost::audit", session, tool, capability, request, decision = "allow", reason);
    } else {
        tracing::warn!(target: "toolhost::audit", session, tool, capability, request, decision = "deny", reason);
    }
}

/// Adds what `add` adds over what the linker already holds (WASI's own functions), then
/// forbids shadowing again, so nothing else replaces a function by accident.
pub(crate) fn shadow<T>(
    linker: &mut wasmtime::component::Linker<T>,
    add: impl FnOnce(&mut wasmtime::component::Linker<T>) -> wasmtime::Result<()>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = add(linker);
    linker.allow_shadowing(false);
    result
}
