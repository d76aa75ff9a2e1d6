//! The step journal: every nondeterministic input a guest receives during a step (clock
//! readings, state operation results, model responses), recorded in order. Replaying a step
//! answers the guest from its journal, so a rebuilt instance reaches exactly the state it had,
//! without side effects and without a single model call leaving the host.
//!
//! Outgoing HTTP is journaled like a model call: each request's fingerprint and its whole
//! response (see [`crate::exchange`]). The entry takes its place when the guest sends the
//! request, not when the response arrives, so the order of inputs does not depend on network
//! timing; the response fills it in.
//!
//! Secure randomness is OS entropy, journaled like any other input (consecutive draws share
//! one entry). Insecure randomness is not journaled value by value: each (session, tool)
//! draws from a ChaCha20 stream seeded from the session's seed, and a step records the
//! stream's position ([`RandomState`]), which is enough to reproduce every byte. (Steps
//! committed before entropy was journaled drew secure bytes from a seeded stream too; their
//! replay does again.)
//!
//! This module is the journal's mechanics (the entries, recording, replay in order,
//! divergence); each capability decides what it records and how it reads its entries back
//! (e.g. [`crate::capability::clocks`] for clock runs, [`crate::capability::random`] for
//! entropy and the seeded streams).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::charges::StepCharges;
use crate::contract::http::{HttpFailure, HttpOutcome};
pub use crate::contract::{JournalEntry, RandomState};

/// Replay fingerprint of a request: sha256 of its canonical JSON form, which fields added
/// later with default values leave unchanged (see [`crate::contract::ChatRequest::fingerprint`]).
pub(crate) fn request_digest<T: Serialize>(request: &T) -> String {
    crate::contract::canonical_digest(request)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Inputs come from the world and are recorded.
    Live,
    /// Inputs come from the journal. `strict`: the step committed before, so asking for more
    /// or different inputs than recorded is a divergence. Not strict: re-running a step that
    /// crashed before commit; once the recorded inputs run out, the step continues live.
    Replay { strict: bool },
    /// Outside a step (restore, snapshot): inputs are live and not recorded.
    Off,
}

/// The journal of the step an instance is running.
/// The step being run, for persisting its journal before it commits.
#[derive(Debug, Clone)]
pub(crate) struct StepInFlight {
    pub seq: u64,
    pub input: String,
    /// The session's lease token, which fences the step's pending-journal writes.
    pub lease: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Journal {
    pub step: Option<StepInFlight>,
    mode: Mode,
    replay: VecDeque<JournalEntry>,
    recorded: Vec<JournalEntry>,
    /// Readings already taken from the run entry at the front of `replay`.
    run_taken: u32,
    diverged: Option<String>,
    /// The step being replayed drew its secure random bytes from the session-seeded stream
    /// (it was committed before entropy was journaled).
    seeded_random: bool,
    /// Counts steps begun, so a response that arrives after its step ended is not recorded
    /// in a later one.
    generation: u64,
    /// What the step has made the host hold, against the tool's limits.
    pub charges: StepCharges,
}

/// Where an HTTP exchange of the step in flight is recorded, once its response is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpSlot {
    generation: u64,
    index: usize,
    /// The request's number within its step (0 for the first): part of its idempotency key.
    pub number: usize,
}

/// Shared between an instance's capability contexts and its virtual clocks.
pub(crate) type SharedJournal = Arc<Mutex<Journal>>;

pub(crate) fn lock(journal: &SharedJournal) -> std::sync::MutexGuard<'_, Journal> {
    journal.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends the call (as a trap) if its step is already past one of its host limits (see
/// [`crate::charges`]).
pub(crate) fn within_limits(journal: &SharedJournal) -> wasmtime::Result<()> {
    match lock(journal).charges.exceeded() {
        Some(exceeded) => Err(exceeded.into()),
        None => Ok(()),
    }
}

impl Journal {
    pub fn new() -> SharedJournal {
        Arc::new(Mutex::new(Self {
            step: None,
            mode: Mode::Off,
            replay: VecDeque::new(),
            recorded: Vec::new(),
            run_taken: 0,
            diverged: None,
            seeded_random: false,
            generation: 0,
            charges: StepCharges::unbounded(),
        }))
    }

    /// Starts a live step.
    pub fn begin_live(&mut self) {
        self.begin(Mode::Live, Vec::new());
    }

    /// Starts replaying `entries`.
    pub fn begin_replay(&mut self, entries: Vec<JournalEntry>, strict: bool) {
        self.begin(Mode::Replay { strict }, entries);
    }

    fn begin(&mut self, mode: Mode, entries: Vec<JournalEntry>) {
        self.mode = mode;
        self.replay = entries.into();
        self.recorded.clear();
        self.run_taken = 0;
        self.diverged = None;
        self.seeded_random = false;
        self.generation += 1;
        self.charges.reset();
    }

    /// Marks the step being replayed as one that drew secure randomness from the seeded
    /// stream, as steps committed before entropy was journaled did.
    pub fn replay_seeded_random(&mut self) {
        self.seeded_random = matches!(self.mode, Mode::Replay { .. });
    }

    /// Whether secure random bytes come from the seeded stream (see [`Journal::replay_seeded_random`]).
    pub fn replays_seeded_random(&self) -> bool {
        self.seeded_random
    }

    /// Ends the step: its recorded entries, or why the replay diverged.
    pub fn finish(&mut self) -> Result<Vec<JournalEntry>, String> {
        let mode = std::mem::replace(&mut self.mode, Mode::Off);
        self.step = None;
        if let Some(reason) = self.diverged.take() {
            return Err(reason);
        }
        if mode == (Mode::Replay { strict: true }) && !self.replay.is_empty() {
            return Err(format!("the step used {} fewer recorded inputs than it did originally", self.replay.len()));
        }
        self.replay.clear();
        // A response still outstanding is the guest's `Abandoned`, live and on replay.
        for entry in &mut self.recorded {
            if let JournalEntry::Http { outcome: outcome @ None, .. } = entry {
                *outcome = Some(Err(HttpFailure::Abandoned));
            }
        }
        Ok(std::mem::take(&mut self.recorded))
    }

    /// The entries recorded so far in this step (to persist ahead of commit).
    pub fn recorded(&self) -> &[JournalEntry] {
        &self.recorded
    }

    /// In replay, the next entry if `matches` accepts it. `None` means: go live (and then
    /// [`Journal::record`] the result). A mismatch in strict replay marks the step diverged.
    pub fn replayed<T>(&mut self, expected: &str, matches: impl FnOnce(&JournalEntry) -> Option<T>) -> Option<T> {
        self.replayed_in_run(expected, |entry, _| matches(entry))
    }

    /// Like [`Journal::replayed`], also handing `matches` the reading's index within a run
    /// entry; the entry is consumed once all its readings are.
    pub fn replayed_in_run<T>(
        &mut self,
        expected: &str,
        matches: impl FnOnce(&JournalEntry, u32) -> Option<T>,
    ) -> Option<T> {
        let Mode::Replay { strict } = self.mode else { return None };
        match self.replay.front() {
            Some(entry) => match matches(entry, self.run_taken) {
                Some(value) => {
                    self.run_taken += 1;
                    if self.run_taken >= entry.run_len() {
                        self.run_taken = 0;
                        let entry = self.replay.pop_front().expect("front exists");
                        self.charges.journal(entry.approx_bytes());
                        self.recorded.push(entry);
                    }
                    Some(value)
                }
                None => {
                    let found = entry.kind();
                    self.diverge(format!("the guest asked for {expected} where the journal has {found}"));
                    None
                }
            },
            None if strict => {
                self.diverge(format!("the guest asked for {expected} beyond the end of the journal"));
                None
            }
            None => {
                self.mode = Mode::Live;
                None
            }
        }
    }

    /// Marks the step diverged for a reason a capability found (see [`Journal::replayed`]).
    pub fn mark_diverged(&mut self, reason: String) {
        self.diverge(reason);
    }

    fn diverge(&mut self, reason: String) {
        if self.diverged.is_none() {
            self.diverged = Some(reason);
        }
        // Answer the rest of the step live: its result is discarded anyway.
        self.replay.clear();
        self.mode = Mode::Replay { strict: true };
    }

    /// Whether the step answers from a journal (a rebuild), not live.
    pub fn is_replaying(&self) -> bool {
        matches!(self.mode, Mode::Replay { .. })
    }

    /// Whether the step has diverged (a live fallback must then avoid side effects).
    pub fn has_diverged(&self) -> bool {
        self.diverged.is_some()
    }

    /// Records a live input (ignored outside a step), charged to the step's journal bound;
    /// past it, the entry is dropped (the step is ending with a host-limit error anyway).
    pub fn record(&mut self, entry: JournalEntry) {
        if !matches!(self.mode, Mode::Off) && self.charges.journal(entry.approx_bytes()) {
            self.recorded.push(entry);
        }
    }

    /// Records one more repeated read of `namespace/key`, extending the last entry when it
    /// is a repeat of the same key.
    pub fn record_repeat(&mut self, namespace: &str, key: &str) {
        if let Some(JournalEntry::StateGetRepeat { namespace: n, key: k, count }) = self.recorded.last_mut()
            && n == namespace
            && k == key
            && *count < u32::MAX
            && !matches!(self.mode, Mode::Off)
        {
            *count += 1;
            return;
        }
        self.record(JournalEntry::StateGetRepeat { namespace: namespace.to_owned(), key: key.to_owned(), count: 1 });
    }

    /// In replay, the next `len` recorded secure random bytes. `None` means: draw live (and
    /// then [`Journal::record_random`] them). A draw the journal cannot answer in strict
    /// replay marks the step diverged.
    pub fn replayed_random(&mut self, len: usize) -> Option<Vec<u8>> {
        let Mode::Replay { strict } = self.mode else { return None };
        let taken = self.run_taken as usize;
        let found = match self.replay.front() {
            Some(JournalEntry::SecureRandom { bytes }) if bytes.len() - taken >= len => {
                let drawn = bytes[taken..taken + len].to_vec();
                if taken + len == bytes.len() {
                    self.run_taken = 0;
                    let entry = self.replay.pop_front().expect("front exists");
                    self.charges.journal(entry.approx_bytes());
                    self.recorded.push(entry);
                } else {
                    self.run_taken += len as u32;
                }
                return Some(drawn);
            }
            Some(JournalEntry::SecureRandom { bytes }) => format!("{} unread secure random bytes", bytes.len() - taken),
            Some(entry) => entry.kind().to_owned(),
            None if strict => "nothing (the end of the journal)".to_owned(),
            None => {
                self.mode = Mode::Live;
                return None;
            }
        };
        self.diverge(format!("the guest asked for {len} secure random bytes where the journal has {found}"));
        None
    }

    /// Records secure random bytes drawn live, extending the last entry when it holds draws
    /// too. Charged to the journal bound like [`Journal::record`].
    pub fn record_random(&mut self, drawn: &[u8]) {
        if matches!(self.mode, Mode::Off) {
            return;
        }
        if let Some(JournalEntry::SecureRandom { bytes }) = self.recorded.last_mut() {
            if self.charges.journal(drawn.len()) {
                bytes.extend_from_slice(drawn);
            }
            return;
        }
        self.record(JournalEntry::SecureRandom { bytes: drawn.to_vec() });
    }

    /// Whether a step is running (outside one, inputs are live and not recorded).
    pub fn is_recording(&self) -> bool {
        !matches!(self.mode, Mode::Off)
    }

    /// The slot of the entry just recorded or replayed, an `Http` one, if the step records.
    pub fn last_http_slot(&self) -> Option<HttpSlot> {
        if matches!(self.mode, Mode::Off) || !matches!(self.recorded.last(), Some(JournalEntry::Http { .. })) {
            return None;
        }
        let number = self.recorded.iter().filter(|e| matches!(e, JournalEntry::Http { .. })).count() - 1;
        Some(HttpSlot { generation: self.generation, index: self.recorded.len() - 1, number })
    }

    /// Fills in the outcome of the exchange at `slot`, charging its bytes. `false` if its
    /// step has ended (the guest then gets `Abandoned`, as the committed journal says).
    pub fn fill_http(&mut self, slot: HttpSlot, body: Option<String>, result: HttpOutcome) -> bool {
        if slot.generation != self.generation || matches!(self.mode, Mode::Off) {
            return false;
        }
        let Some(JournalEntry::Http { request, outcome }) = self.recorded.get_mut(slot.index) else { return false };
        let before = crate::exchange::approx_bytes(request, outcome);
        request.body = body;
        *outcome = result;
        let added = crate::exchange::approx_bytes(request, outcome).saturating_sub(before);
        self.charges.journal(added);
        true
    }

    /// The index in [`Journal::recorded`] the next recorded entry gets.
    pub fn next_index(&self) -> usize {
        self.recorded.len()
    }

    /// The entry recorded last, for a capability that extends a run of readings (`None`
    /// outside a step, where nothing is recorded).
    pub fn last_recorded_mut(&mut self) -> Option<&mut JournalEntry> {
        if matches!(self.mode, Mode::Off) { None } else { self.recorded.last_mut() }
    }
}

#[cfg(test)]
mod secure_random_tests {
    use super::*;

    #[test]
    fn consecutive_draws_share_an_entry_and_replay_exactly() {
        let journal = Journal::new();
        let mut j = lock(&journal);
        j.begin_live();
        j.record_random(&[1, 2, 3, 4]);
        j.record_random(&[5, 6]);
        j.record(JournalEntry::MonotonicClock { nanos: 9 });
        j.record_random(&[7]);
        let entries = j.finish().unwrap();
        assert_eq!(
            entries,
            [
                JournalEntry::SecureRandom { bytes: vec![1, 2, 3, 4, 5, 6] },
                JournalEntry::MonotonicClock { nanos: 9 },
                JournalEntry::SecureRandom { bytes: vec![7] },
            ]
        );

        j.begin_replay(entries.clone(), true);
        assert_eq!(j.replayed_random(4), Some(vec![1, 2, 3, 4]));
        assert_eq!(j.replayed_random(2), Some(vec![5, 6]));
        assert_eq!(
            j.replayed("monotonic", |e| matches!(e, JournalEntry::MonotonicClock { .. }).then_some(())),
            Some(())
        );
        assert_eq!(j.replayed_random(1), Some(vec![7]));
        assert_eq!(j.finish().unwrap(), entries, "a replayed step keeps its journal");
    }

    #[test]
    fn a_draw_the_journal_cannot_answer_diverges_in_strict_replay() {
        let journal = Journal::new();
        let mut j = lock(&journal);
        j.begin_replay(vec![JournalEntry::SecureRandom { bytes: vec![1, 2] }], true);
        assert_eq!(j.replayed_random(3), None);
        assert!(j.finish().unwrap_err().contains("3 secure random bytes where the journal has 2 unread"));

        j.begin_replay(vec![JournalEntry::MonotonicClock { nanos: 1 }], true);
        assert_eq!(j.replayed_random(1), None);
        assert!(j.has_diverged());
    }

    #[test]
    fn a_crashed_step_answers_its_recorded_draws_then_draws_live() {
        let journal = Journal::new();
        let mut j = lock(&journal);
        j.begin_replay(vec![JournalEntry::SecureRandom { bytes: vec![1, 2] }], false);
        assert_eq!(j.replayed_random(2), Some(vec![1, 2]));
        assert_eq!(j.replayed_random(2), None, "past the pending journal the step goes live");
        j.record_random(&[3, 4]);
        assert_eq!(j.finish().unwrap(), [JournalEntry::SecureRandom { bytes: vec![1, 2, 3, 4] }]);
    }
}

#[cfg(test)]
mod http_slot_tests {
    use super::*;
    use crate::exchange::{HttpRequestPrint, HttpResponseRecord};

    fn print(url: &str) -> HttpRequestPrint {
        HttpRequestPrint { method: "GET".into(), url: url.into(), headers: "h".into(), body: None }
    }

    #[test]
    fn an_exchange_keeps_the_place_it_was_sent_at_and_an_unanswered_one_is_abandoned() {
        let journal = Journal::new();
        let mut j = lock(&journal);
        j.begin_live();
        j.record(JournalEntry::Http { request: print("/a"), outcome: None });
        let first = j.last_http_slot().unwrap();
        j.record(JournalEntry::WallClock { secs: 1, nanos: 0 });
        j.record(JournalEntry::Http { request: print("/b"), outcome: None });
        assert_eq!(j.last_http_slot().unwrap().number, 1);
        let response = HttpResponseRecord { status: 200, headers: Vec::new(), body: b"ok".to_vec() };
        assert!(j.fill_http(first, Some("body".into()), Some(Ok(response.clone()))));
        let entries = j.finish().unwrap();
        assert_eq!(
            entries[0],
            JournalEntry::Http {
                request: HttpRequestPrint { body: Some("body".into()), ..print("/a") },
                outcome: Some(Ok(response.clone())),
            }
        );
        assert!(matches!(entries[1], JournalEntry::WallClock { .. }));
        assert_eq!(entries[2], JournalEntry::Http { request: print("/b"), outcome: Some(Err(HttpFailure::Abandoned)) });
        // A response that arrives after its step is not recorded in the next one.
        j.begin_live();
        assert!(!j.fill_http(first, None, Some(Ok(response))));
        assert!(j.finish().unwrap().is_empty());
    }
}
