//! Progress of model calls as they happen, for an agent loop's display. With a listener set,
//! providers stream answers (SSE) and report text as it is generated.

use std::sync::Arc;
use std::time::Duration;

use super::Usage;

/// What happened in a model call.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressKind<'a> {
    /// An HTTP attempt starts (1 for the first).
    Attempt { attempt: u32 },
    /// The previous attempt failed in a retryable way; attempt `attempt` follows after `delay`.
    Retrying { attempt: u32, delay: Duration, reason: &'a str },
    /// Generated text, as it streams in.
    Text(&'a str),
    /// The model started a tool call.
    ToolCall { name: &'a str },
    /// The answer is complete.
    Finished { usage: Usage },
}

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressEvent<'a> {
    /// The alias the tool called.
    pub alias: &'a str,
    /// The host's id of the call (session, step, call within the step).
    pub call_id: &'a str,
    pub kind: ProgressKind<'a>,
}

/// Receives progress reports. Called on the host's executor: keep it quick (send to a
/// channel, update a display).
pub type ProgressListener = Arc<dyn Fn(&ProgressEvent<'_>) + Send + Sync>;

/// A call's progress reporter.
#[derive(Clone, Copy)]
pub(crate) struct Progress<'a> {
    pub alias: &'a str,
    pub call_id: &'a str,
    pub listener: Option<&'a ProgressListener>,
}

impl Progress<'_> {
    pub fn emit(&self, kind: ProgressKind<'_>) {
        if let Some(listener) = self.listener {
            listener(&ProgressEvent { alias: self.alias, call_id: self.call_id, kind });
        }
    }

    pub fn is_listening(&self) -> bool {
        self.listener.is_some()
    }
}
