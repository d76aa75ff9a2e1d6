//! Persisting the journal of the step in flight ahead of its commit. An input that cost
//! something to get (a model answer, an HTTP response) is written to the store the moment it
//! arrives: if the host crashes before the step commits, re-running the step answers it from
//! the store instead of asking the world again.

use std::sync::Arc;

use crate::journal::{SharedJournal, lock};
use crate::store::{PendingStep, Store};

/// What an instance needs to persist its step's journal so far.
#[derive(Clone)]
pub(crate) struct InFlight {
    pub session: String,
    pub tool: String,
    pub store: Arc<dyn Store>,
    pub journal: SharedJournal,
}

impl InFlight {
    /// Writes the step's journal so far as its pending journal. Outside a step (restore,
    /// snapshot, rebuild) there is nothing to persist.
    pub async fn persist(&self, what: &str) {
        let pending = {
            let journal = lock(&self.journal);
            journal.step.as_ref().map(|step| PendingStep {
                seq: step.seq,
                tool: self.tool.clone(),
                input: step.input.clone(),
                journal: journal.recorded().to_vec(),
                lease: step.lease,
            })
        };
        if let Some(pending) = pending
            && let Err(e) = self.store.put_pending(&self.session, &pending).await
        {
            // The call still succeeds; only its crash-safety is lost.
            tracing::warn!(session = %self.session, tool = %self.tool, error = %crate::source::chain(&e),
                "could not persist {what} ahead of the step's commit");
        }
    }
}
