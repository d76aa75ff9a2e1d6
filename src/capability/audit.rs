//! The audit trail: every denial, and the allowed uses that are rare and consequential
//! (outgoing HTTP; model calls are recorded by the model capability with their usage), go
//! to `tracing` (target `toolhost::audit`) and to the store's audit table. Routine allowed
//! uses (state reads and writes) are not recorded: they would cost a store write each.

use std::sync::Arc;

use crate::journal::{SharedJournal, lock};
use crate::store::{AuditEvent, Store};

/// Records the capability decisions of one instance (one session, one tool).
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

struct Inner {
    session: String,
    tool: String,
    store: Arc<dyn Store>,
    journal: SharedJournal,
}

impl Auditor {
    pub(crate) fn new(session: String, tool: String, store: Arc<dyn Store>, journal: SharedJournal) -> Self {
        Self { inner: Arc::new(Inner { session, tool, store, journal }) }
    }

    pub fn session(&self) -> &str {
        &self.inner.session
    }

    pub fn tool(&self) -> &str {
        &self.inner.tool
    }

    /// Records a denial: the tool tried something its policy does not allow.
    pub async fn deny(&self, capability: &str, request: &str, reason: &str) {
        self.record(capability, request, false, reason).await;
    }

    /// Records an allowed use worth keeping (outgoing HTTP).
    pub async fn allow(&self, capability: &str, request: &str, reason: &str) {
        self.record(capability, request, true, reason).await;
    }

    /// The trap that ends the call once its step is past a host limit.
    pub(crate) fn within_limits(&self) -> wasmtime::Result<()> {
        crate::journal::within_limits(&self.inner.journal)
    }

    /// Records a denial from a synchronous host function: charged now, written beside the
    /// call. Past the step's bound of audit events, the trap that ends the call.
    pub(crate) fn deny_detached(
        &self,
        capability: &str,
        request: String,
        reason: &'static str,
    ) -> wasmtime::Result<()> {
        let Some(replaying) = self.admit() else {
            return crate::journal::within_limits(&self.inner.journal);
        };
        let (this, capability) = (self.clone(), capability.to_owned());
        tokio::spawn(async move { this.write(&capability, &request, false, reason, replaying).await });
        Ok(())
    }

    async fn record(&self, capability: &str, request: &str, allowed: bool, reason: &str) {
        if let Some(replaying) = self.admit() {
            self.write(capability, request, allowed, reason, replaying).await;
        }
    }

    /// Whether a decision is recorded (`Some(replaying)`): each one is a log line and a store
    /// write, charged to the step; past its bound the call is ending and goes unrecorded.
    fn admit(&self) -> Option<bool> {
        let mut journal = lock(&self.inner.journal);
        // A replayed step re-asks what the original asked; its decisions are already recorded.
        let replaying = journal.is_replaying();
        (replaying || journal.charges.audit_event()).then_some(replaying)
    }

    async fn write(&self, capability: &str, request: &str, allowed: bool, reason: &str, replaying: bool) {
        let Inner { session, tool, store, .. } = &*self.inner;
        let decision = if allowed { "allow" } else { "deny" };
        let request: String = request.chars().take(MAX_REQUEST_CHARS).collect();
        let request = request.as_str();
        if allowed {
            tracing::info!(target: "toolhost::audit", session, tool, capability, request, decision, reason, replaying);
        } else {
            tracing::warn!(target: "toolhost::audit", session, tool, capability, request, decision, reason, replaying);
        }
        if replaying {
            return;
        }
        let event = AuditEvent {
            at_ms: crate::store::timestamp_ms(),
            session: session.clone(),
            tool: tool.clone(),
            capability: capability.to_owned(),
            request: request.to_owned(),
            allowed,
            reason: reason.to_owned(),
        };
        if let Err(e) = store.record_audit(&event).await {
            // The decision stands; only its persisted record is lost, and the log has it.
            tracing::error!(target: "toolhost::audit", session, tool, error = %crate::source::chain(&e), "could not persist an audit event");
        }
    }
}

/// Longest request kept in an audit event (a tool chooses URLs and keys).
const MAX_REQUEST_CHARS: usize = 1024;
