//! The library's typed errors. Every failure a caller can act on has its own variant; the
//! messages name the file, tool or limit involved.
//!
//! An error that another error caused keeps it as its [`std::error::Error::source`] and does
//! not repeat its text (ripgrep's and wasmtime's convention): the edges that show errors to
//! people or models print the whole chain with [`chain`].

use std::path::PathBuf;
use std::time::Duration;

pub use crate::source::{Chain, Source, chain};

use crate::contract::OnUpgrade;

/// Why a tool could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },

    #[error("{path} is not a WebAssembly binary (it does not start with the `\\0asm` magic)")]
    NotWasm { path: PathBuf },

    #[error(
        "{path} is a core WebAssembly module, not a component; build tools with \
         `cargo build --target wasm32-wasip2` (which emits a component)"
    )]
    CoreModule { path: PathBuf },

    /// cranelift refused the component (`source`: wasmtime's error), or the compiler task died.
    #[error("{path} does not compile")]
    Compile { path: PathBuf, source: Source },

    /// Larger than the engine's `max_component_bytes`; refused before it is read whole.
    #[error("{path} is {size} bytes, over the {limit}-byte limit for a component (`max_component_bytes`)")]
    TooLarge { path: PathBuf, size: u64, limit: u64 },

    /// Compiling took longer than the engine's `max_compile_time`.
    #[error("{path} did not compile within {limit:?} (`max_compile_time`); refusing to load it")]
    CompileTimeout { path: PathBuf, limit: Duration },

    #[error(
        "{path} is a component but not a toolhost tool: it does not export `{expected}` \
         (it exports: {found})"
    )]
    WrongWorld { path: PathBuf, expected: &'static str, found: String },

    /// The component imports something the host's linker does not define (`source`: wasmtime's
    /// error, naming the import).
    #[error("{path} needs imports the host does not provide")]
    UnsatisfiedImports { path: PathBuf, source: Source },

    /// `describe` ran past the load deadline (it ran the tool's code with nothing granted).
    #[error("{path}: `describe` did not return within {limit:?}")]
    DescribeDeadline { path: PathBuf, limit: Duration },

    /// Instantiating the tool, or running its `describe`, failed (`source`: why).
    #[error("{path}: calling `describe` failed")]
    Describe { path: PathBuf, source: Source },

    /// The descriptor breaks a rule (`reason`), or one of its schemas does not parse
    /// (`source`: the JSON or JSON Schema error).
    #[error("{path}: the tool's descriptor is invalid: {reason}")]
    InvalidDescriptor { path: PathBuf, reason: String, source: Option<Source> },

    /// The policy pins the tool to another component.
    #[error(
        "{path}: tool `{tool}` is pinned to sha256 {expected}, but this component is sha256 {actual}; refusing to load it"
    )]
    PinMismatch { path: PathBuf, tool: String, expected: String, actual: String },

    /// `require_pins = true` and this tool would be granted something without a `sha256` pin.
    #[error(
        "{path}: tool `{tool}` is granted capabilities but not pinned, and the policy has `require_pins = true`; \
         add `sha256 = \"{actual}\"` to its section if this is the component you mean to grant"
    )]
    Unpinned { path: PathBuf, tool: String, actual: String },

    /// The policy refuses tools that request what they are not granted.
    #[error("{path}: tool `{tool}` requests capabilities the policy does not grant ({}); the policy's `on_ungranted = \"refuse\"` refuses to load it", ungranted.join("; "))]
    Ungranted { path: PathBuf, tool: String, ungranted: Vec<String> },
}

pub use crate::contract::ToolFailure;

/// What made a tool's instance stop abruptly. The instance is dropped; the session rebuilds
/// it on the next call and nothing from the aborted call is committed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrapKind {
    /// The native or guest stack overflowed (Rust guests keep their stack in linear memory,
    /// so unbounded recursion there shows as an out-of-bounds access).
    StackOverflow,
    /// An out-of-bounds memory access.
    MemoryOutOfBounds,
    /// `unreachable` (a Rust panic in the guest lands here).
    Unreachable,
    /// Any other trap, by wasmtime's description.
    Other(String),
}

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StackOverflow => f.write_str("stack overflow"),
            Self::MemoryOutOfBounds => f.write_str("out-of-bounds memory access (possibly guest stack overflow)"),
            Self::Unreachable => f.write_str("unreachable executed (guest panic)"),
            Self::Other(m) => f.write_str(m),
        }
    }
}

/// A host-side resource a call is charged for (see [`crate::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostResource {
    /// The step's journal (state reads, model answers, clock readings): `max_journal_bytes`.
    Journal,
    /// The message of the tool's own error: `max_error_bytes`.
    ToolError,
    /// A stateful tool's snapshot: `max_snapshot_bytes`.
    Snapshot,
    /// Log messages of the step: `max_log_bytes_per_step`.
    Log,
    /// WASI handles the instance holds (files, streams, pollables): `max_handles`.
    Handles,
    /// Audit events of the step (refusals): `max_audit_events_per_step`.
    Audit,
    /// Bytes of files in the session workspace: the workspace grant's `quota_bytes`.
    WorkspaceBytes,
    /// Files and directories in the session workspace: the workspace grant's `quota_files`.
    WorkspaceFiles,
}

impl HostResource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Journal => "journal",
            Self::ToolError => "tool error",
            Self::Snapshot => "snapshot",
            Self::Log => "log",
            Self::Handles => "handles",
            Self::Audit => "audit events",
            Self::WorkspaceBytes => "workspace bytes",
            Self::WorkspaceFiles => "workspace files",
        }
    }
}

impl std::fmt::Display for HostResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a tool call did not produce output.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("input for `{tool}` does not match its schema: {}", errors.join("; "))]
    InvalidInput { tool: String, errors: Vec<String> },

    #[error("tool `{tool}` reported an error: {failure}")]
    Tool { tool: String, failure: ToolFailure },

    #[error("tool `{tool}` exceeded its CPU time limit of {limit:?}")]
    Deadline { tool: String, limit: Duration },

    /// The call ran past `wall_time_ms`, host calls included (a sleep, a blocking poll, a slow
    /// HTTP peer or model). The instance is dropped and nothing is committed.
    #[error("tool `{tool}` exceeded its wall-clock limit of {limit:?}")]
    WallDeadline { tool: String, limit: Duration },

    /// The call made the host hold more of `resource` than the tool's limits allow. The
    /// instance is dropped and nothing is committed.
    #[error("tool `{tool}` exceeded its host limit on {resource}: {used} > {limit}")]
    HostLimit { tool: String, resource: HostResource, limit: u64, used: u64 },

    #[error("tool `{tool}` ran out of fuel (its limit is {limit} per call)")]
    FuelExhausted { tool: String, limit: u64 },

    #[error("tool `{tool}` exceeded its memory limit of {limit_bytes} bytes (asked for {requested_bytes})")]
    MemoryLimit { tool: String, limit_bytes: u64, requested_bytes: u64 },

    #[error("tool `{tool}` trapped: {trap}")]
    Trap { tool: String, trap: TrapKind },

    #[error("tool `{tool}` returned {bytes} bytes of output; the limit is {limit}")]
    OutputTooLarge { tool: String, bytes: usize, limit: usize },

    #[error("tool `{tool}` returned output that is not valid: {reason}")]
    InvalidOutput { tool: String, reason: String },

    /// The step left its session workspace in a state it cannot keep (a symlink, a special
    /// file, a name that is not UTF-8) or the host could not read it. Nothing is committed.
    /// `source`: the scan's refusal, or the store's error.
    #[error("tool `{tool}`: the session workspace cannot be committed")]
    Workspace { tool: String, source: Source },

    /// `reason` says what could not be set up; `source`, if any, why.
    #[error("cannot start an instance of `{tool}`: {reason}")]
    Instantiate { tool: String, reason: String, source: Option<Source> },

    #[error("the store failed during a call to `{tool}`")]
    Store { tool: String, source: crate::store::StoreError },

    /// Rebuilding the tool's instance by replay produced something other than what was
    /// recorded: the tool is not deterministic given its journal, or its code changed.
    /// `reason` says how; `source`, if any, is the replayed call's error.
    #[error("replaying step {step} of session `{session}` on `{tool}` diverged: {reason}")]
    ReplayDiverged { tool: String, session: String, step: u64, reason: String, source: Option<Source> },

    /// Rebuilding the tool's instance would replay more steps than its `max_replay_steps`
    /// allows: resume cost would grow with the session's history.
    #[error(
        "rebuilding `{tool}` in session `{session}` would replay {steps} steps, over its limit of {limit} \
         (`max_replay_steps`): export snapshots (`export_stateful_tool!`) or, if it keeps no in-memory \
         state, declare it stateless (`export_stateless_tool!`)"
    )]
    ReplayTooLong { tool: String, session: String, steps: u64, limit: u32 },

    /// Every live instance the host's budget allows was busy for the whole wait: nothing idle
    /// could be hibernated to make room. Retry later, or raise the budget.
    #[error("no instance of `{tool}` could start: all {limit} live instances stayed busy for {waited:?}")]
    Busy { tool: String, limit: usize, waited: Duration },

    /// Another host committed a step of this session first; this session handle is stale.
    /// `source`: the store's [`StoreError::Conflict`](crate::store::StoreError::Conflict).
    #[error("session `{session}` was advanced elsewhere")]
    Conflict { tool: String, session: String, source: crate::store::StoreError },

    /// This host no longer holds the session's lease (it expired while the host was paused
    /// or cut off, or another host took the session over): the step was not committed and
    /// this session handle is stale. Open the session again to continue, here or elsewhere.
    /// `source`: the store's [`StoreError::LeaseLost`](crate::store::StoreError::LeaseLost).
    #[error("lost the lease of session `{session}`; the step was not committed")]
    LeaseLost { tool: String, session: String, source: crate::store::StoreError },

    /// The session used another component of the tool (sha256 `from`) and could not switch
    /// to this one (`to`) under the tool's `on_upgrade` policy: the policy refuses, the new
    /// component refused the old snapshot, or replaying the old steps under it diverged.
    /// Nothing was committed: the session goes on with the old component as before.
    #[error(
        "the session ran tool `{tool}` as sha256 {from} and cannot switch to sha256 {to} \
         (on_upgrade = \"{policy}\"): {reason}. Nothing was committed. Go on with the old component, \
         set `on_upgrade` for `{tool}` in the policy (\"snapshot\" or \"replay\") if the new one can take \
         the session over, fork the session from before its first step of `{tool}`, or end the session"
    )]
    UpgradeRefused { tool: String, from: String, to: String, policy: OnUpgrade, reason: String },
}

impl CallError {
    /// The tool the call was for.
    pub fn tool(&self) -> &str {
        match self {
            Self::InvalidInput { tool, .. }
            | Self::Tool { tool, .. }
            | Self::Deadline { tool, .. }
            | Self::WallDeadline { tool, .. }
            | Self::HostLimit { tool, .. }
            | Self::FuelExhausted { tool, .. }
            | Self::MemoryLimit { tool, .. }
            | Self::Trap { tool, .. }
            | Self::OutputTooLarge { tool, .. }
            | Self::InvalidOutput { tool, .. }
            | Self::Workspace { tool, .. }
            | Self::Instantiate { tool, .. }
            | Self::Store { tool, .. }
            | Self::ReplayDiverged { tool, .. }
            | Self::ReplayTooLong { tool, .. }
            | Self::Busy { tool, .. }
            | Self::Conflict { tool, .. }
            | Self::LeaseLost { tool, .. }
            | Self::UpgradeRefused { tool, .. } => tool,
        }
    }

    /// What kind of failure this is: one classification for every layer that acts on it
    /// (the agent loop, the MCP server), so they agree.
    pub fn kind(&self) -> CallErrorKind {
        use CallErrorKind as K;
        match self {
            Self::InvalidInput { .. } => K::InvalidInput,
            Self::Tool { failure: ToolFailure::InvalidInput(_), .. } => K::ToolInvalidInput,
            Self::Tool { failure: ToolFailure::Denied(_), .. } => K::Denied,
            Self::Tool { failure: ToolFailure::Failed(_), .. } => K::ToolFailed,
            Self::Deadline { .. } => K::Deadline,
            Self::WallDeadline { .. } => K::WallDeadline,
            Self::HostLimit { .. } => K::HostLimit,
            Self::FuelExhausted { .. } => K::FuelExhausted,
            Self::MemoryLimit { .. } => K::MemoryLimit,
            Self::Trap { .. } => K::Trap,
            Self::OutputTooLarge { .. } => K::OutputTooLarge,
            Self::InvalidOutput { .. } => K::InvalidOutput,
            Self::Workspace { .. } => K::Workspace,
            Self::Instantiate { .. } => K::Instantiate,
            Self::Store { .. } => K::Store,
            Self::ReplayDiverged { .. } => K::ReplayDiverged,
            Self::ReplayTooLong { .. } => K::ReplayTooLong,
            Self::Busy { .. } => K::Busy,
            Self::Conflict { .. } => K::Conflict,
            Self::LeaseLost { .. } => K::LeaseLost,
            Self::UpgradeRefused { .. } => K::UpgradeRefused,
        }
    }
}

/// The kinds of [`CallError`], with a stable name each ([`CallErrorKind::code`]) and whose
/// fault it is ([`CallErrorKind::fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallErrorKind {
    InvalidInput,
    ToolInvalidInput,
    Denied,
    ToolFailed,
    Deadline,
    WallDeadline,
    HostLimit,
    FuelExhausted,
    MemoryLimit,
    Trap,
    OutputTooLarge,
    InvalidOutput,
    Workspace,
    Instantiate,
    Store,
    ReplayDiverged,
    ReplayTooLong,
    Busy,
    Conflict,
    LeaseLost,
    UpgradeRefused,
}

/// Whose fault a failed call is, which says what a caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The input or the tool: it was refused, misbehaved or hit a limit on this input.
    /// Nothing was committed but the session is intact; tell the model, which may try
    /// otherwise.
    Tool,
    /// The host could not run the call (its store, an instance it could not start or
    /// rebuild). Stop at the last committed step; the session resumes once that is fixed.
    Host,
    /// This session handle is stale: another host advanced the session or holds its lease.
    /// Open the session again (here or on the host that has it).
    StaleSession,
    /// Every live instance was busy: retry later, or raise the budget.
    Overloaded,
}

impl CallErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 21] = [
        Self::InvalidInput,
        Self::ToolInvalidInput,
        Self::Denied,
        Self::ToolFailed,
        Self::Deadline,
        Self::WallDeadline,
        Self::HostLimit,
        Self::FuelExhausted,
        Self::MemoryLimit,
        Self::Trap,
        Self::OutputTooLarge,
        Self::InvalidOutput,
        Self::Workspace,
        Self::Instantiate,
        Self::Store,
        Self::ReplayDiverged,
        Self::ReplayTooLong,
        Self::Busy,
        Self::Conflict,
        Self::LeaseLost,
        Self::UpgradeRefused,
    ];

    /// A stable kebab-case name, as the MCP server reports it (`dev.toolhost/error`).
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid-input",
            Self::ToolInvalidInput => "tool-invalid-input",
            Self::Denied => "denied",
            Self::ToolFailed => "tool-failed",
            Self::Deadline => "deadline",
            Self::WallDeadline => "wall-deadline",
            Self::HostLimit => "host-limit",
            Self::FuelExhausted => "fuel-exhausted",
            Self::MemoryLimit => "memory-limit",
            Self::Trap => "trap",
            Self::OutputTooLarge => "output-too-large",
            Self::InvalidOutput => "invalid-output",
            Self::Workspace => "workspace",
            Self::Instantiate => "instantiate",
            Self::Store => "store",
            Self::ReplayDiverged => "replay-diverged",
            Self::ReplayTooLong => "replay-too-long",
            Self::Busy => "busy",
            Self::Conflict => "conflict",
            Self::LeaseLost => "lease-lost",
            Self::UpgradeRefused => "upgrade-refused",
        }
    }

    pub fn fault(self) -> Fault {
        match self {
            Self::Instantiate | Self::Store | Self::ReplayDiverged | Self::ReplayTooLong | Self::UpgradeRefused => {
                Fault::Host
            }
            Self::Conflict | Self::LeaseLost => Fault::StaleSession,
            Self::Busy => Fault::Overloaded,
            _ => Fault::Tool,
        }
    }
}

/// Why a session operation (open, fork, delete, inspect) failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no session `{0}`")]
    NotFound(String),
    /// Another host runs the session; it may be taken over when the lease expires.
    #[error("session `{session}` is leased by `{holder}` for another {expires_in:?}")]
    Leased { session: String, holder: String, expires_in: Duration },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `reason` says what is wrong; `source`, if any, is wasmtime's refusal.
    #[error("invalid engine configuration: {reason}")]
    Engine { reason: String, source: Option<Source> },
    #[error(transparent)]
    Cache(#[from] crate::engine::CacheError),
    #[error("cannot open the store")]
    Store(#[from] crate::store::StoreError),
}

impl From<crate::engine::EngineError> for HostError {
    fn from(error: crate::engine::EngineError) -> Self {
        match error {
            crate::engine::EngineError::Invalid { reason, source } => Self::Engine { reason, source },
            crate::engine::EngineError::Cache(cache) => Self::Cache(cache),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_error_kind_has_its_own_code_and_a_fault() {
        let codes: std::collections::HashSet<&str> = CallErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), CallErrorKind::ALL.len());
        let lost = CallError::LeaseLost {
            tool: "t".into(),
            session: "s".into(),
            source: crate::store::StoreError::LeaseLost { session: "s".into(), token: 3, reason: "expired".into() },
        };
        assert_eq!((lost.kind(), lost.kind().fault()), (CallErrorKind::LeaseLost, Fault::StaleSession));
        let denied = CallError::Tool { tool: "t".into(), failure: ToolFailure::Denied("no".into()) };
        assert_eq!((denied.kind().code(), denied.kind().fault()), ("denied", Fault::Tool));
        let busy = CallError::Busy { tool: "t".into(), limit: 1, waited: Duration::ZERO };
        assert_eq!(busy.kind().fault(), Fault::Overloaded);
        let refused = CallError::UpgradeRefused {
            tool: "notes".into(),
            from: "aa".into(),
            to: "bb".into(),
            policy: OnUpgrade::Snapshot,
            reason: "the new component refused the snapshot".into(),
        };
        assert_eq!((refused.kind().code(), refused.kind().fault()), ("upgrade-refused", Fault::Host));
        let message = refused.to_string();
        assert!(message.contains("`notes`") && message.contains("aa") && message.contains("bb"), "{message}");
        assert!(message.contains("on_upgrade") && message.contains("fork"), "{message}");
    }

    #[test]
    fn chain_shows_each_source_once() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no entry");
        let store = crate::store::StoreError::backend("opening /db", io);
        let call = CallError::Store { tool: "notes".into(), source: store };
        assert_eq!(call.to_string(), "the store failed during a call to `notes`");
        assert_eq!(
            chain(&call).to_string(),
            "the store failed during a call to `notes`: store backend: opening /db: no entry"
        );
        let io = call.source().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(std::io::Error::kind), Some(std::io::ErrorKind::PermissionDenied));

        // A cause whose text its error already printed (tokio-postgres does) is not repeated.
        #[derive(Debug, thiserror::Error)]
        #[error("db error: {0}")]
        struct Echoes(#[source] std::io::Error);
        let echoed = Echoes(std::io::Error::other("ERROR: refused"));
        assert_eq!(chain(&echoed).to_string(), "db error: ERROR: refused");
    }
}
