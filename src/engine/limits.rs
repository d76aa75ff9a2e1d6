//! Per-call resource limits and the limiter that enforces memory and table caps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits on one tool call. Each tool gets [`Limits::default`] unless its grants say otherwise.
/// In a policy file: `memory_mib`, `cpu_time_ms`, `wall_time_ms`, `fuel`, `max_output_bytes`,
/// `max_error_bytes`, `max_snapshot_bytes`, `max_log_bytes_per_step`, `max_journal_bytes`,
/// `max_handles`, `max_audit_events_per_step`, `max_replay_steps`.
///
/// The `max_*` bounds beyond the output charge the call for what it makes the *host* hold or
/// do (guest memory is bounded by `memory_mib`): passing one ends the call with
/// [`crate::CallError::HostLimit`] naming the resource, and nothing is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory the tool's instance may hold, in bytes, across all its memories.
    #[serde(with = "mib", rename = "memory_mib")]
    pub memory_bytes: u64,
    /// CPU time one call may run in the guest (host calls such as model requests don't count).
    #[serde(with = "duration_ms", rename = "cpu_time_ms")]
    pub cpu_time: Duration,
    /// Wall-clock time one call may take, host calls included (sleeps, polls, HTTP, model
    /// calls, state I/O): the CPU deadline does not see time a guest spends waiting.
    /// `Duration::MAX` (for embedders and benchmarks; a policy file cannot say it) sets none.
    #[serde(with = "duration_ms", rename = "wall_time_ms")]
    pub wall_time: Duration,
    /// Size of the JSON a call may return.
    pub max_output_bytes: usize,
    /// Size of the message of a tool error (the step's committed outcome).
    pub max_error_bytes: usize,
    /// Size of a stateful tool's snapshot.
    pub max_snapshot_bytes: usize,
    /// Bytes of log messages one step may emit (each message is also cut at 4 KiB).
    pub max_log_bytes_per_step: usize,
    /// Host memory the step's journal may hold: state reads, model answers, clock runs. Repeated
    /// reads of a value and runs of clock readings are recorded compactly, so an honest step
    /// stays far below this.
    pub max_journal_bytes: usize,
    /// WASI handles (files, streams, pollables, sockets) one instance may hold at once.
    pub max_handles: usize,
    /// Capability decisions one step may add to the audit trail (each refusal is one).
    pub max_audit_events_per_step: u32,
    /// Steps a rebuild of a plain tool's instance may replay (after a restart or
    /// hibernation); past it the call fails with [`crate::CallError::ReplayTooLong`]. A
    /// stateful tool replays only the steps since its last snapshot; a stateless one none.
    pub max_replay_steps: u32,
    /// Wasm fuel one call may burn (about one unit per instruction): a deterministic bound
    /// on work, unlike `cpu_time`. `None`: unmetered. The engine meters fuel only if some
    /// tool's limits set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu_time: Duration::from_secs(5),
            wall_time: Duration::from_secs(60),
            max_output_bytes: 1 << 20,
            max_error_bytes: 64 << 10,
            max_snapshot_bytes: 16 << 20,
            max_log_bytes_per_step: 256 << 10,
            max_journal_bytes: 16 << 20,
            max_handles: 1024,
            max_audit_events_per_step: 256,
            max_replay_steps: 10_000,
            fuel: None,
        }
    }
}

mod mib {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(bytes.div_ceil(1 << 20))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let mib = u64::deserialize(d)?;
        mib.checked_mul(1 << 20).ok_or_else(|| serde::de::Error::custom(format!("{mib} MiB is too large")))
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Raised (as the trap's error) when a guest grows memory past its cap. `trap_on_grow_failure`
/// semantics: the guest traps at the `memory.grow` instead of seeing -1 and aborting inside
/// its allocator, and the host can tell this trap from any other.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("memory limit of {limit_bytes} bytes exceeded (asked for {requested_bytes})")]
pub(crate) struct MemoryLimitExceeded {
    pub limit_bytes: u64,
    pub requested_bytes: u64,
}

/// Largest table a guest may grow to (function tables of ordinary programs are far smaller).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Enforces [`Limits::memory_bytes`] over all memories of one instance.
#[derive(Debug)]
pub(crate) struct GuestLimiter {
    limit_bytes: u64,
    /// Bytes held by memories other than the one growing, summed as they grow.
    used_bytes: u64,
}

impl GuestLimiter {
    pub fn new(limit_bytes: u64) -> Self {
        Self { limit_bytes, used_bytes: 0 }
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let grow_by = (desired - current) as u64;
        let requested = self.used_bytes.saturating_add(grow_by);
        if requested > self.limit_bytes {
            return Err(MemoryLimitExceeded { limit_bytes: self.limit_bytes, requested_bytes: requested }.into());
        }
        self.used_bytes = requested;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
