//! Tasks as store records: work a client started and polls for by id (the MCP Tasks
//! extension's task handles), kept so that a handle outlives the server that minted it.
//!
//! The store indexes the id, the session and the claim; [`crate::mcp`] reads the opaque
//! JSON body. Every
//! change is a compare-and-set on [`TaskRecord::version`], so two servers that both try to
//! take over an orphaned task, or a completion racing a cancel, never overwrite each other.

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Server-minted and unguessable: it is the bearer token for the task.
    pub id: String,
    /// Grows by one with every write; a write names the version it replaces.
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The session the task's work runs in, if any: deleting the session removes the task.
    pub session: Option<String>,
    /// When retention may remove the task (its TTL, renewed with every write).
    pub expires_at_ms: i64,
    /// Until when the server running the task holds it (it renews this while it runs);
    /// `None` once the task ended. A task whose claim ran out lost its server: see
    /// [`super::Store::orphaned_tasks`].
    pub claimed_until_ms: Option<i64>,
    /// JSON, read by [`crate::mcp`].
    pub body: String,
}

/// Which tasks [`super::Store::delete_tasks`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskScope<'a> {
    /// Those whose TTL ran out by this time (ms since the epoch).
    ExpiredBy(i64),
    /// Those of a session.
    Session(&'a str),
}

/// Fails unless `found` is the version a write of `task` replaces.
pub(crate) fn check_task_version(task: &TaskRecord, found: Option<u64>) -> Result<(), super::StoreError> {
    match found {
        None => Err(super::StoreError::TaskNotFound(task.id.clone())),
        Some(found) if found + 1 != task.version => Err(super::StoreError::TaskConflict {
            task: task.id.clone(),
            expected: task.version.saturating_sub(1),
            found,
        }),
        Some(_) => Ok(()),
    }
}
