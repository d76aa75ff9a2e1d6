//! The `log` import: guest diagnostics into the host's `tracing` output.

use wasmtime::component::{HasData, Linker};

use super::CapabilityHost;
use crate::bindings::log::{self as wit, Level};
use crate::journal::within_limits;
use crate::journal::{SharedJournal, lock};

/// Longest message kept; longer ones are cut at a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Per-instance log context: who is logging, and the step its volume is charged to.
pub struct LogCtx {
    session: String,
    tool: String,
    journal: SharedJournal,
}

impl LogCtx {
    pub(crate) fn new(session: String, tool: String, journal: SharedJournal) -> Self {
        Self { session, tool, journal }
    }
}

fn truncate(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl wit::Host for LogCtx {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        within_limits(&self.journal)?;
        let message = truncate(&message);
        // Each line is charged as kept; past the step's volume the call ends, unlogged.
        lock(&self.journal).charges.log(message.len());
        within_limits(&self.journal)?;
        let (session, tool) = (self.session.as_str(), self.tool.as_str());
        match level {
            Level::Trace => tracing::trace!(target: "toolhost::guest", session, tool, "{message}"),
            Level::Debug => tracing::debug!(target: "toolhost::guest", session, tool, "{message}"),
            Level::Info => tracing::info!(target: "toolhost::guest", session, tool, "{message}"),
            Level::Warn => tracing::warn!(target: "toolhost::guest", session, tool, "{message}"),
            Level::Error => tracing::error!(target: "toolhost::guest", session, tool, "{message}"),
        }
        Ok(())
    }
}

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = &'a mut LogCtx;
}

pub(crate) fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasLog>(linker, T::log)
}
