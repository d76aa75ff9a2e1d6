//! Session leases: which host may advance a session, until when, and the fencing token that
//! proves it at commit time.
//!
//! A lease is a row of the store, not a lock held by a connection, so it outlives the process
//! that took it: a host killed mid-session holds its sessions until their leases expire, then
//! any host takes them over. Each takeover draws a greater token, and every commit and
//! pending-journal write names the token it was made under; the store refuses those whose
//! token was superseded or expired, so a host that was paused, partitioned or slow past its
//! lease cannot write, whatever it believes.

/// A session's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub session: String,
    /// Who holds it (a host's [`crate::host::LeaseConfig::holder`]).
    pub holder: String,
    /// The fencing token: greater on every acquisition of the session's lease.
    pub token: u64,
    /// When it runs out, in milliseconds since the Unix epoch on the store's clock.
    pub expires_at_ms: i64,
}

/// What a fenced write finds in the session row, checked in the write's transaction.
pub(crate) struct LeaseRow<'a> {
    pub holder: Option<&'a str>,
    pub token: u64,
    pub expires_at_ms: i64,
}

impl LeaseRow<'_> {
    /// Whether a write carrying `lease` (or none) may touch the session at `now_ms`.
    pub fn admits(&self, session: &str, lease: Option<u64>, now_ms: i64) -> Result<(), super::StoreError> {
        let running = self.holder.is_some() && self.expires_at_ms > now_ms;
        match lease {
            Some(token) if token != self.token || self.holder.is_none() => Err(super::StoreError::LeaseLost {
                session: session.to_owned(),
                token,
                reason: match self.holder {
                    Some(holder) => format!("`{holder}` took the session over with token {}", self.token),
                    None => "the lease was released".to_owned(),
                },
            }),
            Some(token) if !running => Err(super::StoreError::LeaseLost {
                session: session.to_owned(),
                token,
                reason: format!("the lease expired {} ms ago", now_ms - self.expires_at_ms),
            }),
            Some(_) => Ok(()),
            None if running => Err(super::StoreError::LeaseHeld {
                session: session.to_owned(),
                holder: self.holder.unwrap_or_default().to_owned(),
                expires_in_ms: (self.expires_at_ms - now_ms) as u64,
            }),
            None => Ok(()),
        }
    }
}
