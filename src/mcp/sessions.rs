//! Live sessions shared by every MCP connection of one server, keyed by handle.
//!
//! A handle is the id of a session in the host's store, minted by the server (a random
//! UUID) when a call arrives without one. Every call on a handle goes through the one live
//! [`Session`] the pool holds for it, so calls on a handle from several connections run one
//! at a time and the session's instances stay warm. Idle sessions beyond the pool's capacity
//! are dropped from memory (never from the store): the next call on their handle reopens
//! them and rebuilds their instances from snapshots and journals, as after a restart.
//!
//! Sessions unused for the idle timeout are closed the same way, by a sweeper task. On a
//! store shared by several servers that also releases their leases, so a handle whose
//! client moved to another server (a load balancer's choice, a failover) is served there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::SessionError;
use crate::host::Host;
use crate::session::Session;

/// Longest handle accepted; server-minted ones are 36 characters.
const MAX_HANDLE_CHARS: usize = 128;

pub(crate) type SharedSession = Arc<tokio::sync::Mutex<Session>>;

/// Why a handle cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandleError {
    #[error("`{0}` is not a session handle (expected up to 128 letters, digits, `-`, `_` or `.`)")]
    Malformed(String),
    #[error("no session with handle `{0}`: it was never minted by this server's store or has been deleted")]
    Unknown(String),
    /// Another server runs the session (it holds its lease).
    #[error("session `{handle}` is in use on another server; retry when it is released")]
    Leased { handle: String, source: SessionError },
    #[error("cannot open session `{handle}`")]
    Store { handle: String, source: SessionError },
}

struct Live {
    session: SharedSession,
    last_used: Instant,
}

pub(crate) struct SessionPool {
    host: Host,
    capacity: usize,
    /// Sessions unused this long are closed; `None`: only capacity evicts.
    idle_timeout: Option<Duration>,
    live: Mutex<HashMap<String, Live>>,
    sweeping: AtomicBool,
}

impl SessionPool {
    pub fn new(host: Host, capacity: usize, idle_timeout: Option<Duration>) -> Self {
        Self {
            host,
            capacity: capacity.max(1),
            idle_timeout,
            live: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Starts the task that closes idle sessions (once; it needs a runtime, so serving
    /// starts it). It ends when the pool is dropped.
    pub fn start_sweeper(self: &Arc<Self>) {
        let Some(timeout) = self.idle_timeout else { return };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.close_idle(timeout);
            }
        });
    }

    /// Drops the sessions nobody has used for `timeout` (and nobody is using now).
    fn close_idle(&self, timeout: Duration) {
        let mut live = self.live();
        live.retain(|handle, l| {
            let idle = Arc::strong_count(&l.session) == 1 && l.last_used.elapsed() >= timeout;
            if idle {
                tracing::debug!(session = %handle, "closing an idle session");
            }
            !idle
        });
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        // The map is only ever left consistent; a panic elsewhere does not poison its meaning.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Mints a new session and returns its handle.
    pub async fn create(&self) -> Result<(String, SharedSession), SessionError> {
        let session = self.host.new_session().await?;
        let handle = session.id().to_owned();
        tracing::info!(session = %handle, "minted a session");
        Ok((handle.clone(), self.insert(handle, session)))
    }

    /// The live session of `handle`, reopened from the store if it is not in memory.
    pub async fn get(&self, handle: &str) -> Result<SharedSession, HandleError> {
        check_handle(handle)?;
        if let Some(live) = self.live().get_mut(handle) {
            live.last_used = Instant::now();
            return Ok(live.session.clone());
        }
        let session = match self.host.open_session(handle).await {
            Ok(session) => session,
            Err(SessionError::NotFound(_)) => return Err(HandleError::Unknown(handle.to_owned())),
            Err(source @ SessionError::Leased { .. }) => {
                return Err(HandleError::Leased { handle: handle.to_owned(), source });
            }
            Err(source) => return Err(HandleError::Store { handle: handle.to_owned(), source }),
        };
        tracing::info!(session = %handle, step = session.last_step(), "resumed a session");
        Ok(self.insert(handle.to_owned(), session))
    }

    /// Drops the in-memory session of `handle` (for instance after another process advanced
    /// it), so the next call reopens it from the store.
    pub fn forget(&self, handle: &str) {
        self.live().remove(handle);
    }

    fn insert(&self, handle: String, session: Session) -> SharedSession {
        let mut live = self.live();
        // Another call may have opened it meanwhile: both must share one session.
        if let Some(existing) = live.get_mut(&handle) {
            existing.last_used = Instant::now();
            return existing.session.clone();
        }
        let shared = Arc::new(tokio::sync::Mutex::new(session));
        live.insert(handle, Live { session: shared.clone(), last_used: Instant::now() });
        evict(&mut live, self.capacity);
        shared
    }

    #[cfg(test)]
    fn live_count(&self) -> usize {
        self.live().len()
    }
}

/// Drops the least recently used sessions that nobody is using until at most `capacity`
/// remain (sessions in use stay, even over capacity).
fn evict(live: &mut HashMap<String, Live>, capacity: usize) {
    if live.len() <= capacity {
        return;
    }
    let mut idle: Vec<(Instant, String)> = live
        .iter()
        .filter(|(_, l)| Arc::strong_count(&l.session) == 1)
        .map(|(h, l)| (l.last_used, h.clone()))
        .collect();
    idle.sort();
    let excess = live.len() - capacity;
    for (_, handle) in idle.into_iter().take(excess) {
        tracing::debug!(session = %handle, "dropping an idle session from memory");
        live.remove(&handle);
    }
}

fn check_handle(handle: &str) -> Result<(), HandleError> {
    let valid = !handle.is_empty()
        && handle.len() <= MAX_HANDLE_CHARS
        && handle.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid { Ok(()) } else { Err(HandleError::Malformed(handle.chars().take(MAX_HANDLE_CHARS).collect())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostConfig;

    #[test]
    fn handles_are_checked() {
        assert!(check_handle("0b7d3c3e-5f7a-4c1e-9a55-3f7e2b9c1d20").is_ok());
        assert!(check_handle("").is_err());
        assert!(check_handle("../etc/passwd").is_err());
        assert!(check_handle(&"a".repeat(129)).is_err());
    }

    #[tokio::test]
    async fn idle_sessions_beyond_capacity_leave_memory_but_stay_resumable() {
        let host = Host::new(HostConfig::default()).unwrap();
        let pool = SessionPool::new(host, 2, None);
        let (first, held) = pool.create().await.unwrap();
        let (second, _) = pool.create().await.unwrap();
        let (third, _) = pool.create().await.unwrap();
        // `first` is in use, so the idle `second` went instead.
        assert_eq!(pool.live_count(), 2);
        assert!(pool.live().contains_key(&first));
        assert!(!pool.live().contains_key(&second));
        drop(held);
        let reopened = pool.get(&second).await.unwrap();
        assert_eq!(reopened.lock().await.id(), second);
        assert!(pool.live().contains_key(&third) || pool.live().contains_key(&first));
        assert!(matches!(pool.get("no-such-session").await, Err(HandleError::Unknown(_))));
        assert!(matches!(pool.get("bad handle").await, Err(HandleError::Malformed(_))));
    }

    #[tokio::test]
    async fn the_sweeper_closes_sessions_idle_past_the_timeout_but_not_those_in_use() {
        let host = Host::new(HostConfig::default()).unwrap();
        let pool = Arc::new(SessionPool::new(host, 8, Some(Duration::from_millis(100))));
        pool.start_sweeper();
        let (idle, _) = pool.create().await.unwrap();
        let (busy, held) = pool.create().await.unwrap();
        assert_eq!(pool.live_count(), 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!pool.live().contains_key(&idle), "the idle session is closed");
        assert!(pool.live().contains_key(&busy), "a session in use stays");
        drop(held);
        // Closed is not gone: the handle reopens it from the store.
        assert_eq!(pool.get(&idle).await.unwrap().lock().await.id(), idle);
    }
}
