//! What a step makes the host hold or do on its behalf, charged against the tool's
//! [`Limits`]. The charges live in the step's journal (one per instance, reset when a step
//! begins) so every capability reaches them; passing a bound records a
//! [`HostLimitExceeded`], which ends the call at the next host call, epoch tick or return,
//! whichever comes first.

use crate::engine::Limits;
use crate::error::HostResource;

/// A host-side bound a step passed. Also the trap error that ends the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("host limit on {resource} exceeded: {used} > {limit}")]
pub(crate) struct HostLimitExceeded {
    pub resource: HostResource,
    pub limit: u64,
    pub used: u64,
}

/// The bounds of one step and what it has used so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepCharges {
    max_journal_bytes: u64,
    max_log_bytes: u64,
    max_audit_events: u64,
    /// Bytes a step may write through WASI when the tool has a session workspace (its
    /// `quota_bytes`), so one step cannot fill the host disk before the step-end scan.
    max_written_bytes: u64,
    journal_bytes: u64,
    log_bytes: u64,
    audit_events: u64,
    written_bytes: u64,
    exceeded: Option<HostLimitExceeded>,
}

impl StepCharges {
    /// The journal may hold at most what the tool may hold in its own memory.
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_journal_bytes: (limits.max_journal_bytes as u64).min(limits.memory_bytes),
            max_log_bytes: limits.max_log_bytes_per_step as u64,
            max_audit_events: u64::from(limits.max_audit_events_per_step),
            max_written_bytes: u64::MAX,
            journal_bytes: 0,
            log_bytes: 0,
            audit_events: 0,
            written_bytes: 0,
            exceeded: None,
        }
    }

    /// No charges: for a journal outside any tool's limits.
    pub fn unbounded() -> Self {
        Self::new(&Limits {
            max_journal_bytes: usize::MAX,
            memory_bytes: u64::MAX,
            max_log_bytes_per_step: usize::MAX,
            max_audit_events_per_step: u32::MAX,
            ..Limits::default()
        })
    }

    /// Starts a step: nothing used yet.
    pub fn reset(&mut self) {
        *self = Self { journal_bytes: 0, log_bytes: 0, audit_events: 0, written_bytes: 0, exceeded: None, ..*self };
    }

    /// The first bound this step passed, if any.
    pub fn exceeded(&self) -> Option<HostLimitExceeded> {
        self.exceeded
    }

    /// Whether `bytes` more journal fit; if not, the step is over its limit.
    pub fn journal(&mut self, bytes: usize) -> bool {
        Self::charge(&mut self.journal_bytes, self.max_journal_bytes, bytes, HostResource::Journal, &mut self.exceeded)
    }

    pub fn log(&mut self, bytes: usize) -> bool {
        Self::charge(&mut self.log_bytes, self.max_log_bytes, bytes, HostResource::Log, &mut self.exceeded)
    }

    /// Bounds the bytes each step writes through WASI (see `max_written_bytes`).
    pub fn with_max_written_bytes(self, limit: u64) -> Self {
        Self { max_written_bytes: limit, ..self }
    }

    /// Whether `bytes` more written through WASI fit; if not, the step is over its limit
    /// on workspace bytes.
    pub fn written(&mut self, bytes: usize) -> bool {
        let resource = HostResource::WorkspaceBytes;
        Self::charge(&mut self.written_bytes, self.max_written_bytes, bytes, resource, &mut self.exceeded)
    }

    /// The bytes this step wrote through WASI so far.
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    pub fn audit_event(&mut self) -> bool {
        Self::charge(&mut self.audit_events, self.max_audit_events, 1, HostResource::Audit, &mut self.exceeded)
    }

    fn charge(
        used: &mut u64,
        limit: u64,
        amount: usize,
        resource: HostResource,
        exceeded: &mut Option<HostLimitExceeded>,
    ) -> bool {
        *used = used.saturating_add(amount as u64);
        if *used <= limit {
            return true;
        }
        exceeded.get_or_insert(HostLimitExceeded { resource, limit, used: *used });
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bound_passed_is_kept_and_reset_clears_it() {
        let limits = Limits { max_journal_bytes: 100, max_audit_events_per_step: 2, ..Limits::default() };
        let mut charges = StepCharges::new(&limits);
        assert!(charges.journal(60));
        assert!(charges.audit_event() && charges.audit_event());
        assert!(!charges.journal(60));
        assert!(!charges.audit_event());
        let first = charges.exceeded().unwrap();
        assert_eq!((first.resource, first.limit, first.used), (HostResource::Journal, 100, 120));
        charges.reset();
        assert_eq!(charges.exceeded(), None);
        assert!(charges.journal(100));
    }

    #[test]
    fn the_journal_bound_never_exceeds_the_tools_memory() {
        let limits = Limits { memory_bytes: 1 << 20, max_journal_bytes: 16 << 20, ..Limits::default() };
        let mut charges = StepCharges::new(&limits);
        assert!(!charges.journal((1 << 20) + 1));
        assert_eq!(charges.exceeded().unwrap().limit, 1 << 20);
    }
}
