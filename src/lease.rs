//! Keeping a session's lease while the session is in use: a background task renews it, and
//! the session asks [`LeaseKeeper::ensure_valid`] before it starts a step.
//!
//! The store's fencing (see [`crate::store::Lease`]) is what makes a lost lease harmless; the
//! keeper only makes it rare and noticed early: a session whose lease is known lost, or that
//! cannot prove it still holds one, refuses to start a step (and so to call a model) rather
//! than do work the store would refuse to commit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError};

/// How a host leases the sessions it runs, when several hosts share a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// This host's name in leases; unique per host process.
    pub holder: String,
    /// How long a lease lasts without renewal: how long a crashed host's sessions wait
    /// before another host may take them over.
    pub ttl: Duration,
    /// How often a live session renews its lease (well under `ttl`).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// Leases of `ttl`, renewed every third of it, held under a name unique to this process.
    pub fn new(ttl: Duration) -> Self {
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "host".into());
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Self { holder: format!("{host}-{}-{nonce}", std::process::id()), ttl, renew_every: ttl / 3 }
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

struct Shared {
    /// Until when this process knows the lease is held: the send time of the last
    /// successful acquire or renewal plus the TTL (the store's clock starts later).
    valid_until: Mutex<Instant>,
    /// Why the lease is gone, once the store said so.
    lost: Mutex<Option<String>>,
}

/// Holds a session's lease for as long as it lives; dropping it stops the renewals and
/// releases the lease.
pub(crate) struct LeaseKeeper {
    session: String,
    token: u64,
    ttl: Duration,
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LeaseKeeper {
    /// Takes the lease of `session` (failing with [`StoreError::LeaseHeld`] while another
    /// host holds it) and starts renewing it.
    pub async fn acquire(store: Arc<dyn Store>, session: &str, config: &LeaseConfig) -> Result<Self, StoreError> {
        let sent = Instant::now();
        let lease = store.acquire_lease(session, &config.holder, config.ttl).await?;
        let shared = Arc::new(Shared { valid_until: Mutex::new(sent + config.ttl), lost: Mutex::new(None) });
        let renewer = tokio::spawn(renew(
            store.clone(),
            session.to_owned(),
            lease.token,
            config.ttl,
            config.renew_every.max(Duration::from_millis(10)),
            shared.clone(),
        ));
        tracing::debug!(session, token = lease.token, holder = %config.holder, "lease acquired");
        Ok(Self {
            session: session.to_owned(),
            token: lease.token,
            ttl: config.ttl,
            store,
            shared,
            renewer,
            released: false,
        })
    }

    /// The fencing token every write of this session carries.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Succeeds if the lease is still held: known valid, or renewed now. Fails with
    /// [`StoreError::LeaseLost`] otherwise.
    pub async fn ensure_valid(&self) -> Result<(), StoreError> {
        if let Some(reason) = lock(&self.shared.lost).clone() {
            return Err(StoreError::LeaseLost { session: self.session.clone(), token: self.token, reason });
        }
        if Instant::now() < *lock(&self.shared.valid_until) {
            return Ok(());
        }
        // Not renewed in time (a slow store, or this process was paused): renewing succeeds
        // only if nobody took the session over meanwhile.
        let sent = Instant::now();
        match self.store.renew_lease(&self.session, self.token, self.ttl).await {
            Ok(_) => {
                *lock(&self.shared.valid_until) = sent + self.ttl;
                Ok(())
            }
            Err(e) => {
                if let StoreError::LeaseLost { reason, .. } = &e {
                    self.mark_lost(reason.clone());
                }
                Err(e)
            }
        }
    }

    /// Records that the store refused this lease.
    pub fn mark_lost(&self, reason: String) {
        lock(&self.shared.lost).get_or_insert(reason);
    }

    /// Whether the store has refused this lease.
    pub fn is_lost(&self) -> bool {
        lock(&self.shared.lost).is_some()
    }

    /// Stops renewing and gives the lease up, so another host may take the session at once.
    pub async fn release(mut self) -> Result<(), StoreError> {
        self.renewer.abort();
        self.released = true;
        if self.is_lost() { Ok(()) } else { self.store.release_lease(&self.session, self.token).await }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released || self.is_lost() {
            return;
        }
        // Best effort: if the release does not happen, the lease simply expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, session, token) = (self.store.clone(), self.session.clone(), self.token);
            runtime.spawn(async move {
                if let Err(e) = store.release_lease(&session, token).await {
                    tracing::debug!(session, error = %crate::source::chain(&e), "could not release a lease; it will expire");
                }
            });
        }
    }
}

async fn renew(
    store: Arc<dyn Store>,
    session: String,
    token: u64,
    ttl: Duration,
    every: Duration,
    shared: Arc<Shared>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let sent = Instant::now();
        match store.renew_lease(&session, token, ttl).await {
            Ok(_) => *lock(&shared.valid_until) = sent + ttl,
            Err(StoreError::LeaseLost { reason, .. }) => {
                tracing::warn!(session, token, %reason, "lost the session's lease");
                lock(&shared.lost).get_or_insert(reason);
                return;
            }
            // The lease may still be ours: keep trying while it runs out locally.
            Err(e) => {
                tracing::warn!(session, token, error = %crate::source::chain(&e), "could not renew the session's lease")
            }
        }
    }
}
