//! Latency statistics shared by the benchmarks.

use std::time::Duration;

/// Median and 99th percentile of a set of samples.
pub struct Stats {
    pub median: Duration,
    pub p99: Duration,
}

/// Summarizes `samples` (at least one).
pub fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats { median: at(0.5), p99: at(0.99) }
}
