//! `wasi:clocks`: the wall and monotonic clocks a guest reads are real time, journaled, so a
//! replayed step reads exactly what the original read. Readings are quantized (1 ms wall,
//! 100 us monotonic) and a reading within the quantum of the previous one extends a run
//! entry one nanosecond later, so a clock read in a loop costs one entry per quantum of real
//! time, not one per read. There is no grant: every tool has the clocks, and they are
//! injected into the instance's WASI context ([`configure`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime_wasi::WasiCtxBuilder;

use crate::journal::{Journal, JournalEntry, SharedJournal, lock};

/// Granularity of live clock readings: readings within one quantum extend a run.
const WALL_QUANTUM_NANOS: u64 = 1_000_000;
const MONOTONIC_QUANTUM_NANOS: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClockKind {
    Wall,
    Monotonic,
}

/// A live clock reading, quantized: a reading within the quantum of the previous one
/// continues its run one nanosecond later (readings stay strictly increasing), so a clock
/// read in a loop extends one entry instead of adding one per read.
fn record(journal: &mut Journal, kind: ClockKind, real_nanos: u64) -> u64 {
    let quantum = match kind {
        ClockKind::Wall => WALL_QUANTUM_NANOS,
        ClockKind::Monotonic => MONOTONIC_QUANTUM_NANOS,
    };
    let reading = real_nanos - real_nanos % quantum;
    let run = match (kind, journal.last_recorded_mut()) {
        (ClockKind::Wall, Some(JournalEntry::WallClockRun { start_nanos, count })) => Some((*start_nanos, count)),
        (ClockKind::Monotonic, Some(JournalEntry::MonotonicClockRun { start, count })) => Some((*start, count)),
        _ => None,
    };
    if let Some((start, count)) = run {
        let next = start.saturating_add(u64::from(*count));
        if reading <= next && *count < u32::MAX {
            *count += 1;
            return next;
        }
    }
    journal.record(match kind {
        ClockKind::Wall => JournalEntry::WallClockRun { start_nanos: reading, count: 1 },
        ClockKind::Monotonic => JournalEntry::MonotonicClockRun { start: reading, count: 1 },
    });
    reading
}

/// Wall clock seen by a guest: real time, journaled.
pub(crate) struct JournaledWallClock(pub SharedJournal);

impl wasmtime_wasi::HostWallClock for JournaledWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(WALL_QUANTUM_NANOS)
    }

    fn now(&self) -> Duration {
        let mut journal = lock(&self.0);
        let replayed = journal.replayed_in_run("the wall clock", |e, i| match e {
            JournalEntry::WallClock { secs, nanos } => Some(Duration::new(*secs, *nanos)),
            JournalEntry::WallClockRun { start_nanos, .. } => {
                Some(Duration::from_nanos(start_nanos.saturating_add(u64::from(i))))
            }
            _ => None,
        });
        replayed.unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(record(&mut journal, ClockKind::Wall, nanos))
        })
    }
}

/// Monotonic clock seen by a guest, journaled. Its origin is the host's process start, so
/// only differences are meaningful, as WASI specifies.
pub(crate) struct JournaledMonotonicClock(pub SharedJournal);

fn process_origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

impl wasmtime_wasi::HostMonotonicClock for JournaledMonotonicClock {
    fn resolution(&self) -> u64 {
        MONOTONIC_QUANTUM_NANOS
    }

    fn now(&self) -> u64 {
        let mut journal = lock(&self.0);
        let replayed = journal.replayed_in_run("the monotonic clock", |e, i| match e {
            JournalEntry::MonotonicClock { nanos } => Some(*nanos),
            JournalEntry::MonotonicClockRun { start, .. } => Some(start.saturating_add(u64::from(i))),
            _ => None,
        });
        replayed.unwrap_or_else(|| {
            let nanos = process_origin().elapsed().as_nanos() as u64;
            record(&mut journal, ClockKind::Monotonic, nanos)
        })
    }
}

/// Makes the instance's WASI clocks the journaled ones.
pub(crate) fn configure(wasi: &mut WasiCtxBuilder, journal: &SharedJournal) {
    wasi.wall_clock(JournaledWallClock(journal.clone())).monotonic_clock(JournaledMonotonicClock(journal.clone()));
}

#[cfg(test)]
mod tests {
    use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

    use super::*;

    #[test]
    fn a_clock_read_in_a_loop_is_one_entry_per_quantum_and_replays_exactly() {
        let journal = Journal::new();
        lock(&journal).begin_live();
        let (wall, mono) = (JournaledWallClock(journal.clone()), JournaledMonotonicClock(journal.clone()));
        let readings: Vec<(Duration, u64)> = (0..10_000).map(|_| (wall.now(), mono.now())).collect();
        let single: Vec<u64> = (0..10_000).map(|_| mono.now()).collect();
        let entries = lock(&journal).finish().unwrap();
        // Alternating reads cannot share a run; a loop on one clock extends one.
        assert!(single.windows(2).all(|w| w[0] < w[1]), "monotonic readings stay strictly increasing");
        let runs = entries.iter().filter(|e| matches!(e, JournalEntry::MonotonicClockRun { .. })).count();
        assert!(runs <= 20_000 + 1 + 10_000 / 100, "{runs} monotonic entries");
        let last_runs =
            entries.iter().rev().take_while(|e| matches!(e, JournalEntry::MonotonicClockRun { .. })).count();
        assert!(last_runs < 100, "10,000 reads in a row took {last_runs} entries");

        lock(&journal).begin_replay(entries, true);
        let replayed: Vec<(Duration, u64)> = (0..10_000).map(|_| (wall.now(), mono.now())).collect();
        let replayed_single: Vec<u64> = (0..10_000).map(|_| mono.now()).collect();
        assert_eq!((replayed, replayed_single), (readings, single));
        lock(&journal).finish().unwrap();
    }

    #[test]
    fn a_replay_that_reads_the_clock_fewer_times_diverges() {
        let journal = Journal::new();
        lock(&journal).begin_live();
        let mono = JournaledMonotonicClock(journal.clone());
        for _ in 0..5 {
            mono.now();
        }
        let entries = lock(&journal).finish().unwrap();
        lock(&journal).begin_replay(entries, true);
        for _ in 0..4 {
            mono.now();
        }
        assert!(lock(&journal).finish().is_err());
    }
}
