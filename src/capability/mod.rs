//! Host capabilities, one folder per capability, each a self-contained unit as Spin's
//! `factor-*` crates are: its grant type (`grant.rs`: the policy file's section, its
//! validation and its requested-vs-granted rows), its per-instance context, how it journals
//! what the guest observes, its audit decisions and its linker registration.
//!
//! - [`state`], [`model`], [`log`]: our WIT's imports.
//! - [`filesystem`]: host preopens, audited in front of wasmtime-wasi; [`workspace`]: the
//!   session workspace behind the same WASI interface.
//! - [`network`]: outgoing HTTP (wasi-http's send hook, journaled); [`sockets`]: raw sockets,
//!   never granted.
//! - [`random`]: journaled OS entropy and the session's seeded streams; [`clocks`]: journaled
//!   wall and monotonic clocks; [`env`]: the tool's environment.
//!
//! The policy ([`crate::policy`]) parses its file into these grant types and asks each
//! capability to check and compare its part; the instance builds each capability's context
//! and [`add_to_linker`] registers them all. Anything a tool was not granted is answered with
//! a typed denial and an [`audit`] event, never a trap.

pub mod audit;
pub mod clocks;
pub mod env;
pub mod filesystem;
pub(crate) mod in_flight;
pub mod log;
pub mod model;
pub mod network;
pub mod random;
pub mod sockets;
pub mod state;
pub mod workspace;

use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

use crate::contract::{Access, CapabilityRow};

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
    linker: &mut Linker<T>,
    add: impl FnOnce(&mut Linker<T>) -> wasmtime::Result<()>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = add(linker);
    linker.allow_shadowing(false);
    result
}

/// What the host functions of every capability reach in an instance's store data.
pub(crate) trait CapabilityHost: WasiView + WasiHttpView + Send + 'static {
    fn state(&mut self) -> &mut state::StateCtx;
    fn log(&mut self) -> &mut log::LogCtx;
    fn model(&mut self) -> &mut model::ModelCtx;
    fn filesystem(&mut self) -> filesystem::AuditedFilesystem<'_>;
    fn sockets(&mut self) -> sockets::SocketGate<'_>;
    fn secure_random(&mut self) -> random::SecureRandom<'_>;
    fn outgoing_http(&mut self) -> network::OutgoingHttp<'_>;
}

/// The linker every tool is instantiated with: WASI (sandboxed by each instance's
/// `WasiCtx`: clocks, env, insecure randomness and preopens come from it), then each
/// capability's own functions, shadowing WASI's where a capability audits or journals them.
pub(crate) fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    filesystem::add_to_linker(linker)?;
    sockets::add_to_linker(linker)?;
    random::add_to_linker(linker)?;
    network::add_to_linker(linker)?;
    state::add_to_linker(linker)?;
    log::add_to_linker(linker)?;
    model::add_to_linker(linker)?;
    Ok(())
}

/// Why a request of `capability` that is not granted is denied when the instance starts,
/// for the capabilities WASI hands over as a whole (the environment, the preopens), which
/// therefore have no later use to deny. `None` for capabilities denied at use.
pub(crate) fn denied_at_start(capability: &str) -> Option<&'static str> {
    match capability {
        env::NAME => Some(env::DENIED_AT_START),
        filesystem::NAME => Some(filesystem::DENIED_AT_START),
        _ => None,
    }
}

/// Problems found in one tool's grants, each with its key path below `tools.NAME`.
#[derive(Debug, Default)]
pub(crate) struct Issues(pub(crate) Vec<(Vec<String>, String)>);

impl Issues {
    /// Records `message` about the grant at `key` (e.g. `["state", "quota", "max_keys"]`).
    pub(crate) fn push(&mut self, key: &[&str], message: impl Into<String>) {
        self.0.push((key.iter().map(|s| s.to_string()).collect(), message.into()));
    }
}

/// Whether `name` is 1 to `max` chars of `[a-z0-9_-]` (tool names, state namespaces).
pub(crate) fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `name (access)`, as the requested-vs-granted table shows a resource.
pub(crate) fn with_access(name: &str, access: Access) -> String {
    format!("{name} ({})", access.as_str())
}

/// The rows of `capability`'s plain named requests (model aliases, env variables):
/// each request, granted or denied, then each grant nobody requested.
pub(crate) fn named_rows<'a>(
    capability: &'static str,
    requested: &'a [String],
    granted: impl Iterator<Item = &'a String> + Clone,
    rows: &mut Vec<CapabilityRow>,
) {
    use crate::contract::Coverage;
    for name in requested {
        let is_granted = granted.clone().any(|g| g == name);
        let coverage = if is_granted { Coverage::Granted } else { Coverage::Denied };
        rows.push(CapabilityRow::new(capability, Some(name.clone()), is_granted.then(|| name.clone()), coverage));
    }
    for name in granted {
        if !requested.contains(name) {
            rows.push(CapabilityRow::new(capability, None, Some(name.clone()), Coverage::Unrequested));
        }
    }
}
