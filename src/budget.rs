//! The host's live-instance budget, shared by all its sessions.
//!
//! An open session does not pin a live instance. A session's instances live here while idle,
//! keyed by a slot (one per session handle and tool); a call checks its instance out, runs,
//! and checks it back in. When the budget is full, admitting a new instance drops the least
//! recently used idle one (hibernation): its session stays open, and its next call rebuilds
//! the instance from the latest snapshot plus the journal tail, as after a restart. Recent
//! snapshots are kept in a bounded cache so that rebuild does not read the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::instance::Instance;

/// How many instances a host keeps alive, and what happens when they are all busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceBudget {
    /// Instances alive at once across all sessions (busy and idle). `None`: the engine's
    /// `max_instances`. With pooling it may not exceed `max_instances`.
    pub live: Option<u32>,
    /// How long a call waits for an instance to become idle when every live one is busy,
    /// before failing with [`crate::CallError::Busy`].
    pub busy_wait: Duration,
    /// Bytes of recent snapshots kept in memory for rebuilding hibernated instances.
    pub snapshot_cache_bytes: usize,
}

impl Default for InstanceBudget {
    fn default() -> Self {
        Self { live: None, busy_wait: Duration::from_secs(5), snapshot_cache_bytes: 64 << 20 }
    }
}

/// What the budget holds now, for inspection and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceStats {
    /// The budget.
    pub limit: usize,
    /// Instances alive (busy or idle).
    pub live: usize,
    /// Live instances no call is using.
    pub idle: usize,
    /// Instances dropped to make room since the host started.
    pub hibernated: u64,
    /// Rebuilds that restored a snapshot from the cache rather than the store.
    pub snapshot_cache_hits: u64,
    /// Bytes in the snapshot cache.
    pub snapshot_cache_bytes: usize,
}

/// The budget of one host. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LiveInstances {
    shared: Arc<Shared>,
}

struct Shared {
    limit: usize,
    busy_wait: Duration,
    live: AtomicUsize,
    next_slot: AtomicU64,
    hibernated: AtomicU64,
    cache_hits: AtomicU64,
    idle: Mutex<Lru<Live>>,
    snapshots: Mutex<SnapshotCache>,
    /// Signalled when a place frees up or an instance becomes idle (evictable).
    changed: Notify,
}

/// A session's place for one tool's instance: stable for the session handle's life.
pub(crate) type Slot = u64;

/// A place in the budget; dropping it frees the place.
pub(crate) struct Place(Arc<Shared>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// An instance counted against the budget.
pub(crate) struct Live {
    instance: Instance,
    _place: Place,
}

impl std::ops::Deref for Live {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.instance
    }
}

impl std::ops::DerefMut for Live {
    fn deref_mut(&mut self) -> &mut Instance {
        &mut self.instance
    }
}

impl Live {
    pub fn new(instance: Instance, place: Place) -> Self {
        Self { instance, _place: place }
    }
}

/// Every live instance is busy and none became idle within `busy_wait`.
#[derive(Debug)]
pub(crate) struct Busy {
    pub limit: usize,
    pub waited: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; recover the data if something did.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LiveInstances {
    pub fn new(limit: usize, budget: &InstanceBudget) -> Self {
        Self {
            shared: Arc::new(Shared {
                limit: limit.max(1),
                busy_wait: budget.busy_wait,
                live: AtomicUsize::new(0),
                next_slot: AtomicU64::new(1),
                hibernated: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                idle: Mutex::new(Lru::default()),
                snapshots: Mutex::new(SnapshotCache::new(budget.snapshot_cache_bytes)),
                changed: Notify::new(),
            }),
        }
    }

    pub fn new_slot(&self) -> Slot {
        self.shared.next_slot.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes the idle instance of `slot` for a call; `None` if it has none (never built,
    /// hibernated or dropped).
    pub fn check_out(&self, slot: Slot) -> Option<Live> {
        lock(&self.shared.idle).remove(slot).map(|(_, live)| live)
    }

    /// Returns `slot`'s instance after a call: idle, most recently used.
    pub fn check_in(&self, slot: Slot, live: Live) {
        lock(&self.shared.idle).insert(slot, live);
        self.shared.changed.notify_one();
    }

    pub fn is_idle(&self, slot: Slot) -> bool {
        lock(&self.shared.idle).contains(slot)
    }

    /// Drops `slot`'s instance and cached snapshot (its session closed or ran ahead of the store).
    pub fn forget(&self, slot: Slot) {
        let dropped = lock(&self.shared.idle).remove(slot);
        lock(&self.shared.snapshots).remove(slot);
        drop(dropped);
    }

    /// A place for a new instance: free, or made by hibernating the least recently used idle
    /// instance. Waits up to `busy_wait` while every live instance is busy.
    pub async fn admit(&self) -> Result<Place, Busy> {
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now() + shared.busy_wait;
        loop {
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(place) = self.try_admit() {
                return Ok(place);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.try_admit().ok_or(Busy { limit: shared.limit, waited: shared.busy_wait });
            }
        }
    }

    fn try_admit(&self) -> Option<Place> {
        let shared = &self.shared;
        loop {
            let live = shared.live.load(Ordering::Acquire);
            if live < shared.limit {
                if shared.live.compare_exchange(live, live + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return Some(Place(shared.clone()));
                }
                continue;
            }
            // Dropped outside the lock: tearing down a store is not instant.
            let victim = lock(&shared.idle).pop_oldest()?;
            shared.hibernated.fetch_add(1, Ordering::Relaxed);
            drop(victim);
        }
    }

    /// Keeps `slot`'s snapshot taken at `seq`, replacing the previous one.
    pub fn cache_snapshot(&self, slot: Slot, seq: u64, bytes: Bytes) {
        lock(&self.shared.snapshots).insert(slot, seq, bytes);
    }

    /// Drops `slot`'s cached snapshot (a newer one was not cached).
    pub fn forget_snapshot(&self, slot: Slot) {
        lock(&self.shared.snapshots).remove(slot);
    }

    /// `slot`'s latest snapshot, if cached.
    pub fn cached_snapshot(&self, slot: Slot) -> Option<(u64, Bytes)> {
        let found = lock(&self.shared.snapshots).get(slot);
        if found.is_some() {
            self.shared.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Whether a snapshot of `len` bytes would be cached (larger ones are not copied at all).
    pub fn caches(&self, len: usize) -> bool {
        len <= lock(&self.shared.snapshots).max_entry()
    }

    pub fn stats(&self) -> InstanceStats {
        let shared = &self.shared;
        let idle = lock(&shared.idle).len();
        let snapshot_cache_bytes = lock(&shared.snapshots).bytes;
        InstanceStats {
            limit: shared.limit,
            live: shared.live.load(Ordering::Acquire),
            idle,
            hibernated: shared.hibernated.load(Ordering::Relaxed),
            snapshot_cache_hits: shared.cache_hits.load(Ordering::Relaxed),
            snapshot_cache_bytes,
        }
    }
}

/// Values by slot, with the least recently inserted first out.
struct Lru<T> {
    by_slot: HashMap<Slot, (u64, T)>,
    order: BTreeMap<u64, Slot>,
    tick: u64,
}

impl<T> Default for Lru<T> {
    fn default() -> Self {
        Self { by_slot: HashMap::new(), order: BTreeMap::new(), tick: 0 }
    }
}

impl<T> Lru<T> {
    /// Inserts or replaces, as the most recent; returns the replaced value.
    fn insert(&mut self, slot: Slot, value: T) -> Option<T> {
        self.tick += 1;
        let old = self.remove(slot).map(|(_, v)| v);
        self.by_slot.insert(slot, (self.tick, value));
        self.order.insert(self.tick, slot);
        old
    }

    /// Removes `slot`'s value with its recency.
    fn remove(&mut self, slot: Slot) -> Option<(u64, T)> {
        let (tick, value) = self.by_slot.remove(&slot)?;
        self.order.remove(&tick);
        Some((tick, value))
    }

    fn pop_oldest(&mut self) -> Option<T> {
        let (_, slot) = self.order.pop_first()?;
        self.by_slot.remove(&slot).map(|(_, v)| v)
    }

    fn contains(&self, slot: Slot) -> bool {
        self.by_slot.contains_key(&slot)
    }

    fn len(&self) -> usize {
        self.by_slot.len()
    }
}

/// Recent snapshots by slot, bounded in bytes; the least recently stored go first.
struct SnapshotCache {
    entries: Lru<(u64, Bytes)>,
    bytes: usize,
    capacity: usize,
}

impl SnapshotCache {
    fn new(capacity: usize) -> Self {
        Self { entries: Lru::default(), bytes: 0, capacity }
    }

    /// One snapshot may take at most a sixteenth of the cache, so a few large ones cannot
    /// flush every small one.
    fn max_entry(&self) -> usize {
        self.capacity / 16
    }

    fn insert(&mut self, slot: Slot, seq: u64, bytes: Bytes) {
        if bytes.len() > self.max_entry() {
            self.remove(slot);
            return;
        }
        self.bytes += bytes.len();
        if let Some((_, old)) = self.entries.insert(slot, (seq, bytes)) {
            self.bytes -= old.len();
        }
        while self.bytes > self.capacity {
            match self.entries.pop_oldest() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    fn get(&self, slot: Slot) -> Option<(u64, Bytes)> {
        self.entries.by_slot.get(&slot).map(|(_, (seq, bytes))| (*seq, bytes.clone()))
    }

    fn remove(&mut self, slot: Slot) {
        if let Some((_, (_, old))) = self.entries.remove(slot) {
            self.bytes -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_pops_least_recently_inserted() {
        let mut lru = Lru::default();
        lru.insert(1, "a");
        lru.insert(2, "b");
        lru.insert(1, "a2");
        assert_eq!(lru.pop_oldest(), Some("b"));
        assert_eq!(lru.pop_oldest(), Some("a2"));
        assert_eq!(lru.pop_oldest(), None);
    }

    #[test]
    fn snapshot_cache_stays_within_its_bytes() {
        let mut cache = SnapshotCache::new(16 * 100);
        for slot in 0..40 {
            cache.insert(slot, 1, Bytes::from(vec![0u8; 100]));
            assert!(cache.bytes <= cache.capacity);
        }
        assert_eq!(cache.bytes, 1600);
        assert!(cache.get(0).is_none(), "the oldest went first");
        assert!(cache.get(39).is_some());
        cache.insert(39, 2, Bytes::from(vec![0u8; 101]));
        assert!(cache.get(39).is_none(), "too large to cache replaces nothing stale");
        assert_eq!(cache.bytes, 1500);
    }
}
