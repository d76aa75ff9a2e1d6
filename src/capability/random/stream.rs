//! The session's seeded random streams: each (session, tool) draws insecure randomness (and,
//! in steps committed before secure randomness was journaled entropy, secure randomness) from
//! a ChaCha20 stream derived from the session's seed. A step records the streams' positions
//! ([`crate::journal::RandomState`]), which is enough to reproduce every byte.

use std::sync::{Arc, Mutex};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};

/// A deterministic random stream shared between the WASI context and the session.
#[derive(Clone)]
pub(crate) struct SessionRng {
    rng: Arc<Mutex<(ChaCha20Rng, [u8; 32])>>,
    tool: Arc<str>,
    purpose: &'static str,
}

fn derive_stream(seed: &[u8; 32], tool: &str, purpose: &str) -> ChaCha20Rng {
    let mut hasher = Sha256::new();
    hasher.update(seed);
    hasher.update(tool.as_bytes());
    hasher.update([0]);
    hasher.update(purpose.as_bytes());
    ChaCha20Rng::from_seed(hasher.finalize().into())
}

impl SessionRng {
    /// The stream `purpose` of `tool` drawn from `seed`.
    pub fn new(seed: &[u8; 32], tool: &str, purpose: &'static str) -> Self {
        Self { rng: Arc::new(Mutex::new((derive_stream(seed, tool, purpose), *seed))), tool: tool.into(), purpose }
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, (ChaCha20Rng, [u8; 32])> {
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn seed(&self) -> [u8; 32] {
        self.rng().1
    }

    pub fn position(&self) -> u128 {
        self.rng().0.get_word_pos()
    }

    /// Moves to `position` of the stream drawn from `seed`.
    pub fn seek(&self, seed: &[u8; 32], position: u128) {
        let mut guard = self.rng();
        if &guard.1 != seed {
            *guard = (derive_stream(seed, &self.tool, self.purpose), *seed);
        }
        guard.0.set_word_pos(position);
    }
}

impl rand_core::TryRng for SessionRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(rand_core::Rng::next_u32(&mut self.rng().0))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(rand_core::Rng::next_u64(&mut self.rng().0))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand_core::Rng::fill_bytes(&mut self.rng().0, dst);
        Ok(())
    }
}

/// The insecure-seed WASI hands a guest (e.g. for hash map keys). WASI defines it as
/// neither secret nor unique; it is fixed per tool so replays and forks see the same one.
pub(crate) fn insecure_seed(tool: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(tool.as_bytes());
    hasher.update(b"\0insecure-seed");
    u128::from_le_bytes(hasher.finalize()[..16].try_into().expect("16 bytes"))
}
