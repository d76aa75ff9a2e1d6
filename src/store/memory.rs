//! An in-process [`Store`]: everything in memory, gone when the store is dropped.
//!
//! It keeps the whole contract (atomic steps with the sequence check, snapshots with shared
//! chunks, forks, pending journals, leases with fencing, the audit trail) so a session on it
//! behaves exactly as on disk while the process lives: a trapped instance is rebuilt from its
//! snapshot and journals, a fork sees the state as of its step. What it gives up is surviving
//! the process. That makes it the store for one-shot calls, tests, and services whose
//! sessions need isolation but not durability; a step commits in a few microseconds instead
//! of a disk flush (see `cargo bench --bench runtime`).
//!
//! Like the other stores it keeps every step (a tool without snapshots is rebuilt by
//! replaying all of its steps), so memory grows with a session's history until the session
//! is deleted or the store dropped.
//!
//! One mutex guards everything. Work that can be slow (chunking and hashing a snapshot) is
//! done before taking it, so a critical section is map updates only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::lease::LeaseRow;
use super::{
    AuditEvent, AuditScope, Lease, PendingStep, SessionRecord, SessionSummary, SnapshotInfo, StateScope, StateUsage,
    StateWrite, StepCommit, StepRecord, StorageStats, Store, StoreError, chunk_snapshot, timestamp_ms,
};
use super::{RunRecord, RunStatus, runs::check_version};
use super::{TaskRecord, TaskScope, tasks::check_task_version};
use crate::contract::workspace::{Manifest, manifest_at};

type ChunkHash = [u8; 32];

/// The in-memory [`Store`]. Cheap to share behind an `Arc`; every method answers at once.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Wakes workers waiting for runs.
    runs_changed: tokio::sync::Notify,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("sessions", &inner.sessions.len())
            .field("chunks", &inner.chunks.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<String, SessionEntry>,
    /// Snapshot chunks by hash, shared between snapshots and sessions, with their reference
    /// counts; a chunk goes when its last snapshot does.
    chunks: HashMap<ChunkHash, StoredChunk>,
    audit: Vec<AuditEvent>,
    runs: BTreeMap<String, RunRecord>,
    tasks: BTreeMap<String, TaskRecord>,
}

struct StoredChunk {
    data: Arc<[u8]>,
    refs: u64,
}

struct SessionEntry {
    record: SessionRecord,
    /// (tool, namespace, key) -> value; ordered, so prefix listings are range scans.
    state: BTreeMap<(String, String, String), Vec<u8>>,
    /// Committed steps, `steps[i].seq == i + 1`.
    steps: Vec<StoredStep>,
    /// (tool, seq) -> snapshot.
    snapshots: BTreeMap<(String, u64), StoredSnapshot>,
    pending: Option<PendingStep>,
    lease_holder: Option<String>,
    /// The last token drawn; kept after a release, so the next acquisition draws a greater one.
    lease_token: u64,
    lease_expires_ms: i64,
}

struct StoredStep {
    record: StepRecord,
    /// Whether `record.journal` was dropped because a kept snapshot covers the step (replay
    /// never reaches behind it).
    journal_pruned: bool,
}

#[derive(Clone)]
struct StoredSnapshot {
    bytes: u64,
    chunks: Vec<ChunkHash>,
}

impl SessionEntry {
    fn new(record: SessionRecord) -> Self {
        Self {
            record,
            state: BTreeMap::new(),
            steps: Vec::new(),
            snapshots: BTreeMap::new(),
            pending: None,
            lease_holder: None,
            lease_token: 0,
            lease_expires_ms: 0,
        }
    }

    fn admits(&self, lease: Option<u64>) -> Result<(), StoreError> {
        let row = LeaseRow {
            holder: self.lease_holder.as_deref(),
            token: self.lease_token,
            expires_at_ms: self.lease_expires_ms,
        };
        row.admits(&self.record.id, lease, timestamp_ms())
    }

    fn lease(&self) -> Option<Lease> {
        self.lease_holder.as_ref().map(|holder| Lease {
            session: self.record.id.clone(),
            holder: holder.clone(),
            token: self.lease_token,
            expires_at_ms: self.lease_expires_ms,
        })
    }

    fn apply_writes(&mut self, tool: &str, writes: &[StateWrite]) {
        for w in writes {
            let key = (tool.to_owned(), w.namespace.clone(), w.key.clone());
            match &w.value {
                Some(value) => {
                    self.state.insert(key, value.clone());
                }
                None => {
                    self.state.remove(&key);
                }
            }
        }
    }

    /// Committed steps up to and including `seq`.
    fn steps_through(&self, seq: u64) -> &[StoredStep] {
        &self.steps[..self.steps.partition_point(|s| s.record.seq <= seq)]
    }
}

impl Inner {
    fn session(&self, id: &str) -> Result<&SessionEntry, StoreError> {
        self.sessions.get(id).ok_or_else(|| StoreError::SessionNotFound(id.to_owned()))
    }

    fn session_mut(&mut self, id: &str) -> Result<&mut SessionEntry, StoreError> {
        self.sessions.get_mut(id).ok_or_else(|| StoreError::SessionNotFound(id.to_owned()))
    }

    fn add_refs(&mut self, hashes: &[ChunkHash]) {
        for hash in hashes {
            if let Some(chunk) = self.chunks.get_mut(hash) {
                chunk.refs += 1;
            }
        }
    }

    fn drop_refs(&mut self, hashes: &[ChunkHash]) {
        for hash in hashes {
            if let Some(chunk) = self.chunks.get_mut(hash) {
                chunk.refs = chunk.refs.saturating_sub(1);
                if chunk.refs == 0 {
                    self.chunks.remove(hash);
                }
            }
        }
    }
}

/// Bytes a step takes, counted as the SQLite store counts them (its encoded columns), so
/// `storage_stats` compares across backends.
fn step_bytes(step: &StoredStep) -> u64 {
    fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
        crate::contract::encode_record(value).map_or(0, |bytes| bytes.len())
    }
    let r = &step.record;
    let journal = if step.journal_pruned {
        0
    } else {
        crate::contract::encode_journal(&r.journal).map_or(0, |bytes| bytes.len())
    };
    let files = if r.files.is_empty() { 0 } else { encoded_len(&r.files) };
    (r.input.len() + encoded_len(&r.outcome) + journal + encoded_len(&r.writes) + encoded_len(&r.random) + files) as u64
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside a critical section cannot leave a half-applied step: every mutation
        // follows all of its checks. So a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(&session.id) {
            return Err(StoreError::SessionExists(session.id.clone()));
        }
        inner.sessions.insert(session.id.clone(), SessionEntry::new(session.clone()));
        Ok(())
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().sessions.get(id).map(|s| s.record.clone()))
    }

    async fn list_sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        let inner = self.lock();
        let mut sessions: Vec<SessionSummary> = inner
            .sessions
            .values()
            .map(|s| SessionSummary {
                id: s.record.id.clone(),
                steps: s.record.last_step,
                created_at_ms: s.record.created_at_ms,
                forked_from: s.record.forked_from.clone(),
            })
            .collect();
        sessions.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(sessions)
    }

    async fn delete_session(&self, id: &str, lease: Option<u64>) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.sessions.get(id) {
            Some(session) => session.admits(lease)?,
            None => return Ok(false),
        }
        let session = inner.sessions.remove(id).expect("found above");
        inner.runs.remove(id);
        for snapshot in session.snapshots.values() {
            inner.drop_refs(&snapshot.chunks);
        }
        let files: Vec<ChunkHash> = session.steps.iter().flat_map(|s| s.record.file_chunk_refs().copied()).collect();
        inner.drop_refs(&files);
        Ok(true)
    }

    async fn fork_session(&self, parent: &str, at: u64, child: &SessionRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let source = inner.session(parent)?;
        if at > source.record.last_step {
            return Err(StoreError::StepNotFound { session: parent.to_owned(), step: at });
        }
        // A step whose journal was pruned can only be rebuilt from a snapshot at or after it.
        let covered = |tool: &str, seq: u64| source.snapshots.keys().any(|(t, s)| t == tool && *s >= seq && *s <= at);
        if let Some(step) =
            source.steps_through(at).iter().find(|s| s.journal_pruned && !covered(&s.record.tool, s.record.seq))
        {
            return Err(StoreError::backend_refused(format!(
                "cannot fork `{parent}` at step {at}: the history of step {} was pruned; fork at a later step",
                step.record.seq
            )));
        }
        if inner.sessions.contains_key(&child.id) {
            return Err(StoreError::SessionExists(child.id.clone()));
        }
        let source = inner.session(parent)?;
        let mut entry = SessionEntry::new(SessionRecord {
            forked_from: Some((parent.to_owned(), at)),
            last_step: at,
            ..child.clone()
        });
        for step in source.steps_through(at) {
            entry.steps.push(StoredStep { record: step.record.clone(), journal_pruned: step.journal_pruned });
        }
        entry.snapshots =
            source.snapshots.iter().filter(|((_, seq), _)| *seq <= at).map(|(k, v)| (k.clone(), v.clone())).collect();
        // State as of step `at`: the writes of steps 1..=at, in order.
        let history: Vec<(String, Vec<StateWrite>)> =
            entry.steps.iter().map(|s| (s.record.tool.clone(), s.record.writes.clone())).collect();
        for (tool, writes) in &history {
            entry.apply_writes(tool, writes);
        }
        let mut shared: Vec<ChunkHash> = entry.snapshots.values().flat_map(|s| s.chunks.iter().copied()).collect();
        shared.extend(entry.steps.iter().flat_map(|s| s.record.file_chunk_refs().copied()));
        inner.add_refs(&shared);
        inner.sessions.insert(child.id.clone(), entry);
        Ok(())
    }

    async fn get(&self, scope: &StateScope, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = self.lock();
        let Some(session) = inner.sessions.get(&scope.session) else { return Ok(None) };
        let key = (scope.tool.clone(), namespace.to_owned(), key.to_owned());
        Ok(session.state.get(&key).cloned())
    }

    async fn list_keys(&self, scope: &StateScope, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let Some(session) = inner.sessions.get(&scope.session) else { return Ok(Vec::new()) };
        let start = (scope.tool.clone(), namespace.to_owned(), prefix.to_owned());
        Ok(session
            .state
            .range(start..)
            .take_while(|((tool, ns, key), _)| *tool == scope.tool && ns == namespace && key.starts_with(prefix))
            .map(|((_, _, key), _)| key.clone())
            .collect())
    }

    async fn usage(&self, scope: &StateScope) -> Result<StateUsage, StoreError> {
        let inner = self.lock();
        let Some(session) = inner.sessions.get(&scope.session) else { return Ok(StateUsage::default()) };
        let mut usage = StateUsage::default();
        for ((_, _, key), value) in session.state.iter().filter(|((tool, _, _), _)| *tool == scope.tool) {
            usage.keys += 1;
            usage.bytes += (key.len() + value.len()) as u64;
        }
        Ok(usage)
    }

    async fn state_keys(&self, session: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let inner = self.lock();
        Ok(inner.sessions.get(session).map(|s| s.state.keys().cloned().collect()).unwrap_or_default())
    }

    async fn commit_step(&self, commit: StepCommit) -> Result<(), StoreError> {
        let StepCommit { session: id, step, snapshot, file_chunks, keep_snapshots, lease } = commit;
        step.check_files()?;
        // Chunking hashes the whole snapshot: do it before taking the lock.
        let chunks = snapshot.as_deref().map(|bytes| (bytes.len() as u64, chunk_snapshot(bytes)));

        let mut inner = self.lock();
        let session = inner.session(&id)?;
        session.admits(lease)?;
        let found = session.record.last_step;
        if found + 1 != step.seq {
            return Err(StoreError::Conflict { session: id, expected: step.seq - 1, found });
        }
        // Checks are done: from here the commit cannot fail, so it is all or nothing.
        let tool = step.tool.clone();
        let snapshot = chunks.map(|(bytes, chunks)| {
            let hashes: Vec<ChunkHash> = chunks.iter().map(|c| c.hash).collect();
            for chunk in chunks {
                inner.chunks.entry(chunk.hash).or_insert_with(|| StoredChunk { data: chunk.data.into(), refs: 0 });
            }
            inner.add_refs(&hashes);
            StoredSnapshot { bytes, chunks: hashes }
        });
        for chunk in file_chunks {
            inner.chunks.entry(chunk.hash).or_insert_with(|| StoredChunk { data: chunk.data.into(), refs: 0 });
        }
        let file_refs: Vec<ChunkHash> = step.file_chunk_refs().copied().collect();
        inner.add_refs(&file_refs);
        let session = inner.session_mut(&id).expect("checked above");
        session.apply_writes(&tool, &step.writes);
        session.record.last_step = step.seq;
        session.pending = None;
        let seq = step.seq;
        session.steps.push(StoredStep { record: step, journal_pruned: false });
        if let Some(snapshot) = snapshot {
            session.snapshots.insert((tool.clone(), seq), snapshot);
            let pruned = prune_snapshots(session, &tool, keep_snapshots.max(1) as usize);
            inner.drop_refs(&pruned);
        }
        Ok(())
    }

    async fn steps(&self, session: &str, tool: Option<&str>, after: u64) -> Result<Vec<StepRecord>, StoreError> {
        let inner = self.lock();
        let Some(entry) = inner.sessions.get(session) else { return Ok(Vec::new()) };
        let from = entry.steps.partition_point(|s| s.record.seq <= after);
        Ok(entry.steps[from..]
            .iter()
            .filter(|s| tool.is_none_or(|t| s.record.tool == t))
            .map(|s| s.record.clone())
            .collect())
    }

    async fn last_step_of(&self, session: &str, tool: &str, at: u64) -> Result<Option<StepRecord>, StoreError> {
        let inner = self.lock();
        let Some(entry) = inner.sessions.get(session) else { return Ok(None) };
        let upto = entry.steps.partition_point(|s| s.record.seq <= at);
        Ok(entry.steps[..upto].iter().rev().find(|s| s.record.tool == tool).map(|s| s.record.clone()))
    }

    async fn workspace_at(&self, session: &str, tool: &str, at: u64) -> Result<Manifest, StoreError> {
        let inner = self.lock();
        let Some(entry) = inner.sessions.get(session) else { return Ok(Manifest::new()) };
        let upto = entry.steps.partition_point(|s| s.record.seq <= at);
        let changes = entry.steps[..upto].iter().filter(|s| s.record.tool == tool && !s.record.files.is_empty());
        Ok(manifest_at(changes.map(|s| (s.record.seq, s.record.files.as_slice())), at))
    }

    async fn latest_snapshot(&self, session: &str, tool: &str, at: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let inner = self.lock();
        let Some(entry) = inner.sessions.get(session) else { return Ok(None) };
        let found = entry.snapshots.range((tool.to_owned(), 0)..=(tool.to_owned(), at)).next_back();
        let Some(((_, seq), snapshot)) = found else { return Ok(None) };
        let mut bytes = Vec::with_capacity(snapshot.bytes as usize);
        for hash in &snapshot.chunks {
            let chunk = inner
                .chunks
                .get(hash)
                .ok_or_else(|| StoreError::corrupt(format!("snapshot of `{tool}` at step {seq} misses a chunk")))?;
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(Some((*seq, bytes)))
    }

    async fn chunks(&self, hashes: &[[u8; 32]]) -> Result<Vec<Vec<u8>>, StoreError> {
        let inner = self.lock();
        hashes
            .iter()
            .map(|hash| {
                inner
                    .chunks
                    .get(hash)
                    .map(|c| c.data.to_vec())
                    .ok_or_else(|| StoreError::corrupt("a workspace file misses a chunk"))
            })
            .collect()
    }

    async fn snapshots(&self, session: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        let inner = self.lock();
        let Some(entry) = inner.sessions.get(session) else { return Ok(Vec::new()) };
        let mut snapshots: Vec<SnapshotInfo> = entry
            .snapshots
            .iter()
            .map(|((tool, seq), s)| SnapshotInfo {
                tool: tool.clone(),
                seq: *seq,
                bytes: s.bytes,
                chunks: s.chunks.len() as u64,
            })
            .collect();
        snapshots.sort_by(|a, b| (a.seq, &a.tool).cmp(&(b.seq, &b.tool)));
        Ok(snapshots)
    }

    async fn storage_stats(&self, session: &str) -> Result<StorageStats, StoreError> {
        let inner = self.lock();
        let chunk_bytes = inner.chunks.values().map(|c| c.data.len() as u64).sum();
        let Some(entry) = inner.sessions.get(session) else {
            return Ok(StorageStats { chunk_bytes, ..StorageStats::default() });
        };
        Ok(StorageStats {
            step_bytes: entry.steps.iter().map(step_bytes).sum(),
            snapshot_bytes: entry.snapshots.values().map(|s| s.bytes).sum(),
            chunk_bytes,
        })
    }

    async fn put_pending(&self, session: &str, pending: &PendingStep) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let entry = inner.session_mut(session)?;
        entry.admits(pending.lease)?;
        entry.pending = Some(PendingStep { lease: None, ..pending.clone() });
        Ok(())
    }

    async fn pending(&self, session: &str) -> Result<Option<PendingStep>, StoreError> {
        Ok(self.lock().sessions.get(session).and_then(|s| s.pending.clone()))
    }

    async fn clear_pending(&self, session: &str, lease: Option<u64>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let entry = inner.session_mut(session)?;
        entry.admits(lease)?;
        entry.pending = None;
        Ok(())
    }

    async fn acquire_lease(&self, session: &str, holder: &str, ttl: std::time::Duration) -> Result<Lease, StoreError> {
        let mut inner = self.lock();
        let entry = inner.session_mut(session)?;
        let now = timestamp_ms();
        if let Some(current) = &entry.lease_holder
            && current != holder
            && entry.lease_expires_ms > now
        {
            return Err(StoreError::LeaseHeld {
                session: session.to_owned(),
                holder: current.clone(),
                expires_in_ms: (entry.lease_expires_ms - now) as u64,
            });
        }
        entry.lease_holder = Some(holder.to_owned());
        entry.lease_token += 1;
        entry.lease_expires_ms = now.saturating_add(ttl_ms(ttl));
        Ok(entry.lease().expect("just taken"))
    }

    async fn renew_lease(&self, session: &str, token: u64, ttl: std::time::Duration) -> Result<Lease, StoreError> {
        let mut inner = self.lock();
        let entry = inner.session_mut(session)?;
        match &entry.lease_holder {
            Some(_) if entry.lease_token == token => {
                entry.lease_expires_ms = timestamp_ms().saturating_add(ttl_ms(ttl));
                Ok(entry.lease().expect("held"))
            }
            Some(holder) => Err(StoreError::LeaseLost {
                session: session.to_owned(),
                token,
                reason: format!("`{holder}` holds it with token {}", entry.lease_token),
            }),
            None => Err(StoreError::LeaseLost {
                session: session.to_owned(),
                token,
                reason: "the lease was released".to_owned(),
            }),
        }
    }

    async fn release_lease(&self, session: &str, token: u64) -> Result<(), StoreError> {
        if let Some(entry) = self.lock().sessions.get_mut(session)
            && entry.lease_token == token
        {
            entry.lease_holder = None;
            entry.lease_expires_ms = 0;
        }
        Ok(())
    }

    async fn lease(&self, session: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self.lock().session(session)?.lease())
    }

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.lock().audit.push(event.clone());
        Ok(())
    }

    async fn audit_events(&self, session: Option<&str>) -> Result<Vec<AuditEvent>, StoreError> {
        let inner = self.lock();
        Ok(inner.audit.iter().filter(|e| session.is_none_or(|s| e.session == s)).cloned().collect())
    }

    async fn ended_sessions(&self, before_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let now = timestamp_ms();
        let mut ended: Vec<(i64, &String)> = inner
            .sessions
            .iter()
            .filter(|(_, s)| s.lease_holder.is_none() || s.lease_expires_ms <= now)
            .map(|(id, s)| (s.steps.last().map_or(s.record.created_at_ms, |st| st.record.committed_at_ms), id))
            .filter(|(last, _)| *last < before_ms)
            .collect();
        ended.sort();
        Ok(ended.into_iter().take(limit).map(|(_, id)| id.clone()).collect())
    }

    async fn delete_audit(&self, scope: AuditScope<'_>, before_ms: i64) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let Inner { sessions, audit, .. } = &mut *inner;
        let before = audit.len();
        audit.retain(|e| {
            let in_scope = match scope {
                AuditScope::Session(id) => e.session == id,
                AuditScope::DeletedSessions => !sessions.contains_key(&e.session),
            };
            !(in_scope && e.at_ms < before_ms)
        });
        Ok((before - audit.len()) as u64)
    }

    // ---- Agent runs ----

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        {
            let mut inner = self.lock();
            inner.session(&run.id)?;
            if inner.runs.contains_key(&run.id) {
                return Err(StoreError::RunExists(run.id.clone()));
            }
            inner.runs.insert(run.id.clone(), RunRecord { version: 1, ..run.clone() });
        }
        self.runs_changed.notify_waiters();
        self.runs_changed.notify_one();
        Ok(())
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.lock().runs.get(id).cloned())
    }

    async fn list_runs(&self, status: Option<RunStatus>) -> Result<Vec<RunRecord>, StoreError> {
        let inner = self.lock();
        let mut runs: Vec<RunRecord> =
            inner.runs.values().filter(|r| status.is_none_or(|s| r.status == s)).cloned().collect();
        runs.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(runs)
    }

    async fn update_run(&self, run: &RunRecord, lease: Option<u64>) -> Result<(), StoreError> {
        {
            let mut inner = self.lock();
            check_version(run, inner.runs.get(&run.id).map(|r| r.version))?;
            if lease.is_some() {
                inner.session(&run.id)?.admits(lease)?;
            }
            inner.runs.insert(run.id.clone(), run.clone());
        }
        self.runs_changed.notify_waiters();
        self.runs_changed.notify_one();
        Ok(())
    }

    async fn claim_runs(
        &self,
        agents: &[String],
        holder: &str,
        ttl: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let mut inner = self.lock();
        let now = timestamp_ms();
        // Due waits first, as `DUE_WAITS_FIRST` orders the SQL stores' claims.
        let mut ready: Vec<(bool, i64, String)> = inner
            .runs
            .values()
            .filter(|r| agents.contains(&r.agent))
            .filter_map(|r| {
                let at = r.ready_at_ms.filter(|at| *at <= now)?;
                Some((r.status != RunStatus::Waiting, at, r.id.clone()))
            })
            .collect();
        ready.sort();
        let mut claimed = Vec::new();
        for (_, _, id) in ready {
            if claimed.len() >= limit {
                break;
            }
            let Some(entry) = inner.sessions.get_mut(&id) else { continue };
            if entry.lease_holder.is_some() && entry.lease_expires_ms > now {
                continue;
            }
            entry.lease_holder = Some(holder.to_owned());
            entry.lease_token += 1;
            entry.lease_expires_ms = now.saturating_add(ttl_ms(ttl));
            claimed.extend(entry.lease());
        }
        Ok(claimed)
    }

    async fn next_ready_at(&self, agents: &[String]) -> Result<Option<i64>, StoreError> {
        let inner = self.lock();
        let claimable_from = |run: &RunRecord| {
            let ready = run.ready_at_ms?;
            let leased = inner.sessions.get(&run.id).filter(|s| s.lease_holder.is_some()).map(|s| s.lease_expires_ms);
            Some(leased.map_or(ready, |expires| ready.max(expires)))
        };
        Ok(inner.runs.values().filter(|r| agents.contains(&r.agent)).filter_map(claimable_from).min())
    }

    async fn wait_for_runs(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.runs_changed.notified()).await;
    }

    // ---- Tasks ----

    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.tasks.contains_key(&task.id) {
            return Err(StoreError::TaskExists(task.id.clone()));
        }
        inner.tasks.insert(task.id.clone(), TaskRecord { version: 1, ..task.clone() });
        Ok(())
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.lock().tasks.get(id).cloned())
    }

    async fn update_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        check_task_version(task, inner.tasks.get(&task.id).map(|t| t.version))?;
        inner.tasks.insert(task.id.clone(), task.clone());
        Ok(())
    }

    async fn delete_tasks(&self, scope: TaskScope<'_>) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before = inner.tasks.len();
        inner.tasks.retain(|_, t| match scope {
            TaskScope::ExpiredBy(now) => t.expires_at_ms > now,
            TaskScope::Session(session) => t.session.as_deref() != Some(session),
        });
        Ok((before - inner.tasks.len()) as u64)
    }

    async fn orphaned_tasks(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let mut orphans: Vec<(i64, &String)> = inner
            .tasks
            .values()
            .filter_map(|t| t.claimed_until_ms.filter(|until| *until <= now_ms).map(|until| (until, &t.id)))
            .collect();
        orphans.sort();
        Ok(orphans.into_iter().take(limit).map(|(_, id)| id.clone()).collect())
    }
}

/// Keeps the newest `keep` snapshots of `tool`, marks the journals of the steps the oldest
/// kept one covers as pruned, and returns the chunk references the dropped snapshots held.
fn prune_snapshots(session: &mut SessionEntry, tool: &str, keep: usize) -> Vec<ChunkHash> {
    let seqs: Vec<u64> = session
        .snapshots
        .range((tool.to_owned(), 0)..=(tool.to_owned(), u64::MAX))
        .rev()
        .map(|((_, seq), _)| *seq)
        .collect();
    if seqs.len() <= keep {
        return Vec::new();
    }
    let mut released = Vec::new();
    for seq in &seqs[keep..] {
        if let Some(snapshot) = session.snapshots.remove(&(tool.to_owned(), *seq)) {
            released.extend(snapshot.chunks);
        }
    }
    let oldest_kept = seqs[keep - 1];
    let covered = session.steps.partition_point(|s| s.record.seq <= oldest_kept);
    for step in session.steps[..covered].iter_mut().filter(|s| s.record.tool == tool && !s.journal_pruned) {
        step.record.journal = Vec::new();
        step.journal_pruned = true;
    }
    released
}

fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}
