//! Host capabilities, one module per WIT import. Each holds the per-instance context the
//! host functions need, implements the generated `Host` trait on it, and adds itself to the
//! linker. Anything a tool was not granted is answered with a typed `denied` error and an
//! audit event, never a trap.

pub mod log;
pub mod model;
pub mod state;

/// Records a capability decision. Denials are warnings: they mean a tool tried something its
/// policy does not allow.
pub(crate) fn audit(session: &str, tool: &str, capability: &str, request: &str, allowed: bool, reason: &str) {
    if allowed {
        tracing::debug!(target: "toolhost::audit", session, tool, capability, request, decision = "allow", reason);
    } else {
        tracing::warn!(target: "toolhost::audit", session, tool, capability, request, decision = "deny", reason);
    }
}
