//! The `model` import. The grant is checked here, each response is journaled, and the
//! journal of the step in flight is persisted as soon as a response arrives: if the host
//! crashes before the step commits, re-running the step answers the call from the store
//! instead of paying the provider again.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::model::{self as wit, ChatRequest, ChatResponse, ModelError, ProviderFailure};
use crate::journal::{JournalEntry, SharedJournal, lock, request_digest};
use crate::model::ModelProvider;
use crate::policy::ModelGrant;
use crate::store::{PendingStep, Store};

/// Per-instance model context.
pub struct ModelCtx {
    session: String,
    tool: String,
    granted: Arc<ModelGrant>,
    provider: Option<Arc<dyn ModelProvider>>,
    store: Arc<dyn Store>,
    journal: SharedJournal,
    audit: super::audit::Auditor,
}

impl ModelCtx {
    pub(crate) fn new(
        session: String,
        tool: String,
        granted: Arc<ModelGrant>,
        provider: Option<Arc<dyn ModelProvider>>,
        store: Arc<dyn Store>,
        journal: SharedJournal,
    ) -> Self {
        let audit = super::audit::Auditor::new(session.clone(), tool.clone(), store.clone(), journal.clone());
        Self { session, tool, granted, provider, store, journal, audit }
    }

    /// Persists the step's journal so far, so the response just received survives a crash.
    async fn persist_in_flight(&self) {
        let pending = {
            let journal = lock(&self.journal);
            journal.step.as_ref().map(|step| PendingStep {
                seq: step.seq,
                tool: self.tool.clone(),
                input: step.input.clone(),
                journal: journal.recorded().to_vec(),
            })
        };
        if let Some(pending) = pending {
            if let Err(e) = self.store.put_pending(&self.session, &pending).await {
                // The call still succeeds; only its crash-safety is lost.
                tracing::warn!(session = %self.session, tool = %self.tool, error = %e,
                    "could not persist a model response ahead of the step's commit");
            }
        }
    }
}

impl wit::Host for ModelCtx {
    async fn chat(&mut self, model: String, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        let shown = model.escape_debug().to_string();
        if !self.granted.allows(&model) {
            let reason = format!("model `{shown}` is not granted");
            self.audit.deny("model", &format!("chat {shown}"), &reason).await;
            return Err(ModelError::Denied(reason));
        }
        let digest = request_digest(&(&model, &request));
        let replayed = lock(&self.journal).replayed("model.chat", |entry| match entry {
            JournalEntry::Model { model: m, request: r, result } if *m == model && *r == digest => Some(result.clone()),
            _ => None,
        });
        if let Some(result) = replayed {
            return result;
        }
        if lock(&self.journal).has_diverged() {
            // A diverged replay never reaches the provider: its result is discarded anyway.
            return Err(ModelError::InvalidRequest("replay diverged from the journal".into()));
        }
        self.audit.allow("model", &format!("chat {shown}"), "granted").await;
        let call_id = {
            let journal = lock(&self.journal);
            let index = journal.recorded().iter().filter(|e| matches!(e, JournalEntry::Model { .. })).count();
            let seq = journal.step.as_ref().map_or(0, |s| s.seq);
            format!("{}:{seq}:{index}", self.session)
        };
        let result = match &self.provider {
            Some(provider) => provider.chat(&model, &request, &call_id).await,
            None => Err(ModelError::ProviderError(ProviderFailure {
                status: None,
                message: format!("no model provider is configured for `{shown}`"),
            })),
        };
        lock(&self.journal).record(JournalEntry::Model { model, request: digest, result: result.clone() });
        self.persist_in_flight().await;
        result
    }
}

struct HasModel;

impl HasData for HasModel {
    type Data<'a> = &'a mut ModelCtx;
}

pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ModelCtx,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasModel>(linker, get)
}
