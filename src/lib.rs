//! toolhost runs AI-agent tools as sandboxed WebAssembly components.
//!
//! A [`Host`] loads tools (components of the `toolhost:tool` WIT world, see `wit/`), grants
//! each one what the [`Policy`] allows and nothing else, and runs their calls in
//! [`Session`]s: each session has its own instances and its own state, so sessions never
//! see each other. A call that traps, runs past its CPU deadline or its memory cap, or
//! returns oversized output fails with a typed [`CallError`]; its instance is dropped,
//! nothing it wrote is committed, and every other session keeps running.
//!
//! Module map: [`engine`] (wasmtime configuration, compile cache, limits), [`policy`]
//! (grants), [`capability`] (one module per host import), [`store`] (persistence),
//! [`tool`] (a loaded tool), [`session`] (instances and steps), [`host`] (the entry point).

pub mod agent;
mod bindings;
pub mod budget;
mod build_inputs;
pub mod capability;
mod charges;
pub mod contract;
pub mod engine;
pub mod error;
pub mod guest_build;
pub mod host;
mod instance;
mod journal;
pub mod js_build;
pub mod lease;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod model;
pub mod policy;
pub mod python_build;
pub mod run;
mod runtime;
pub mod session;
pub mod source;
pub mod store;
pub mod tool;
pub mod tool_build;

pub use agent::{Agent, AgentConfig, AgentError, AgentEvent, AgentOutcome, Goal, Stop, Task, ToolCalling};
pub use budget::{InstanceBudget, InstanceStats};
pub use contract::http as exchange;
pub use contract::{JournalEntry, OnUpgrade, RandomState, Upgrade, UpgradeVia};
pub use engine::{CacheError, CacheStatus, EngineConfig, EngineError, Limits};
pub use error::{
    CallError, CallErrorKind, Fault, HostError, HostResource, LoadError, SessionError, ToolFailure, TrapKind,
};
pub use host::{Host, HostConfig, PruneReport, ReplayLength, SessionDetails};
pub use lease::LeaseConfig;
pub use model::ModelProvider;
#[cfg(feature = "models")]
pub use model::{LocalModel, ModelRouter, ModelsConfig};
pub use policy::{
    Access, EnvValue, HostPattern, ModelGrant, NetworkGrant, OnUngranted, Policy, PolicyError, Preopen, StateGrant,
    StateQuota, ToolGrants, WorkspaceGrant,
};
pub use session::{Rebuild, Session, SnapshotPolicy};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{AuditEvent, AuditScope, MemoryStore, Store, StoreUrl};
pub use tool::{Descriptor, Tool, ToolKind};
