//! `wasi:random/random`: secure randomness is OS entropy, journaled. A tool's keys and
//! nonces come from `getrandom`, never from a seed stored beside the session (anyone who
//! can read the database could regenerate those), and each draw is recorded in the step's
//! journal, so a replayed step sees the same bytes. Consecutive draws share one journal
//! entry; the bytes are charged to the step's journal bound like any other input.
//!
//! Steps committed before entropy was journaled drew from the session-seeded stream; their
//! replay draws from it again (the journal says so by having moved the stream).
//! `wasi:random/insecure` stays seeded and is not journaled (WASI makes no promise for it).

mod stream;

pub(crate) use stream::{SessionRng, insecure_seed};

use rand_core::Rng;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::p2::bindings::random::random;

use wasmtime_wasi::WasiCtxBuilder;

use super::CapabilityHost;
use crate::journal::{SharedJournal, lock};

/// What `wasi:random/random` sees of an instance.
pub(crate) struct SecureRandom<'a> {
    pub(crate) journal: &'a SharedJournal,
    /// The seeded stream, for replaying steps that drew from it.
    pub(crate) legacy: &'a mut SessionRng,
    /// The largest single draw: a host buffer, bounded by the tool's memory.
    pub(crate) max_draw: u64,
}

impl SecureRandom<'_> {
    fn bounded(&self, len: u64) -> wasmtime::Result<usize> {
        if len > self.max_draw {
            wasmtime::bail!("a draw of {len} random bytes exceeds this tool's limit of {}", self.max_draw);
        }
        Ok(len as usize)
    }

    /// `len` bytes of OS entropy, or the journal's answer in replay.
    fn entropy(&mut self, len: usize) -> wasmtime::Result<Vec<u8>> {
        let mut journal = lock(self.journal);
        if let Some(bytes) = journal.replayed_random(len) {
            return Ok(bytes);
        }
        let mut bytes = vec![0; len];
        getrandom::fill(&mut bytes).map_err(|e| wasmtime::format_err!("the OS entropy source failed: {e}"))?;
        journal.record_random(&bytes);
        Ok(bytes)
    }

    fn replays_seeded(&self) -> bool {
        lock(self.journal).replays_seeded_random()
    }
}

impl random::Host for SecureRandom<'_> {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        let len = self.bounded(len)?;
        if self.replays_seeded() {
            // As wasmtime-wasi drew them from the seeded stream: one word per byte.
            return Ok((0..len).map(|_| Rng::next_u32(self.legacy) as u8).collect());
        }
        self.entropy(len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        if self.replays_seeded() {
            return Ok(Rng::next_u64(self.legacy));
        }
        let bytes = self.entropy(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes drawn")))
    }
}

struct HasSecureRandom;

impl HasData for HasSecureRandom {
    type Data<'a> = SecureRandom<'a>;
}

/// Replaces WASI's `wasi:random/random` (added by `add_to_linker_async`) with the journaled one.
pub(crate) fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    super::shadow(linker, |linker| random::add_to_linker::<T, HasSecureRandom>(linker, T::secure_random))
}

/// Gives the instance's WASI context its seeded insecure stream, its fixed insecure seed and
/// the bound on one draw.
pub(crate) fn configure(wasi: &mut WasiCtxBuilder, insecure: &SessionRng, tool: &str, max_draw: u64) {
    wasi.insecure_random(insecure.clone()).insecure_random_seed(insecure_seed(tool)).max_random_size(max_draw);
}
