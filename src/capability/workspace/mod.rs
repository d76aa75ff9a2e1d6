//! The session workspace: a directory a tool sees at its granted guest path (plain WASI, so
//! `std::fs` code works unchanged) whose contents live in the session store and commit with
//! the step.
//!
//! Each instance gets a private staging directory on the host, preopened read-write at the
//! guest path, filled from the store when the instance is (re)built ([`LiveWorkspace`]).
//! Within a step the tool reads its own writes there. When the step ends, the staging
//! directory is scanned (only if the step made a mutating filesystem call), diffed against
//! the committed manifest, and the changed files' content-defined chunks (the snapshot
//! chunker, so chunks are shared with snapshots and between forks) go into the step's commit
//! with the file changes: they commit in the same transaction as the step or not at all. A
//! trapped or aborted step drops its instance, and with it the staging directory.
//!
//! The grant is [`WorkspaceGrant`]; its checks, its row and its mount in an instance are in
//! `setup`.
//!
//! Host preopens (`[[tools.NAME.filesystem]]`) are different: they are the host's real
//! directories, outside the session's transaction.

mod charged;
mod export;
mod grant;
mod live;
mod scan;
mod setup;

pub use crate::contract::workspace::{FileChange, Manifest, WorkspaceEntry, manifest_at, valid_path};
pub(crate) use charged::{WriteCharged, charge_written};
pub use export::{ExportError, export, workspaces};
pub use grant::WorkspaceGrant;
pub(crate) use live::LiveWorkspace;
pub use scan::ScanError;
pub use setup::NAME;
pub(crate) use setup::{compare, configure, validate};
