//! The `model` import. The grant is checked here, each response is journaled, and the
//! journal of the step in flight is persisted as soon as a response arrives: if the host
//! crashes before the step commits, re-running the step answers the call from the store
//! instead of paying the provider again. The grant's type, checks and rows are in `grant`.

mod convert;
mod grant;

pub use grant::{ModelGrant, NAME};
pub(crate) use grant::{compare, validate};

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::CapabilityHost;
use super::in_flight::InFlight;
use crate::bindings::model as wit;
use crate::contract::{ChatRequest, ChatResponse, ModelError, ProviderFailure};
use crate::journal::{JournalEntry, SharedJournal, lock};
use crate::model::ModelProvider;
use crate::source::chain;
use crate::store::{AuditEvent, Store};

/// Per-instance model context.
pub struct ModelCtx {
    session: String,
    tool: String,
    granted: Arc<ModelGrant>,
    provider: Option<Arc<dyn ModelProvider>>,
    store: Arc<dyn Store>,
    journal: SharedJournal,
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
        Self { session, tool, granted, provider, store, journal }
    }

    /// Persists the step's journal so far, so the response just received survives a crash.
    async fn persist_in_flight(&self) {
        let in_flight = InFlight {
            session: self.session.clone(),
            tool: self.tool.clone(),
            store: self.store.clone(),
            journal: self.journal.clone(),
        };
        in_flight.persist("a model response").await;
    }
}

/// What the model ledger holds for a session: the audit trail records every answered call
/// with its token usage, so budgets survive restarts and journal pruning, and an answer
/// replayed from the journal (never sent again) is never counted again.
struct Ledger {
    session_tokens: u64,
    /// This tool's provider calls in the last minute.
    recent_calls: u32,
}

const ANSWERED: &str = "answered: ";

fn usage_reason(usage: &crate::contract::Usage) -> String {
    format!("{ANSWERED}{} input + {} output tokens", usage.input_tokens, usage.output_tokens)
}

/// Tokens in a reason written by [`usage_reason`].
fn parse_usage(reason: &str) -> Option<u64> {
    let rest = reason.strip_prefix(ANSWERED)?.strip_suffix(" output tokens")?;
    let (input, output) = rest.split_once(" input + ")?;
    Some(input.parse::<u64>().ok()? + output.parse::<u64>().ok()?)
}

impl ModelCtx {
    async fn ledger(&self) -> Result<Ledger, String> {
        let events = self.store.audit_events(Some(&self.session)).await.map_err(|e| chain(&e).to_string())?;
        let since = crate::store::timestamp_ms() - 60_000;
        let mut ledger = Ledger { session_tokens: 0, recent_calls: 0 };
        for event in events.iter().filter(|e| e.capability == "model" && e.allowed && e.request.starts_with("chat ")) {
            ledger.session_tokens += parse_usage(&event.reason).unwrap_or(0);
            if event.tool == self.tool && event.at_ms >= since {
                ledger.recent_calls += 1;
            }
        }
        Ok(ledger)
    }

    /// Records a decision in the store's audit trail (and the log).
    async fn record(&self, request: &str, allowed: bool, reason: &str) {
        // Charged like the other capabilities' decisions; past the bound the call is ending.
        // An answered call is always recorded: the ledger of budgets counts on it.
        if !allowed && !lock(&self.journal).charges.audit_event() {
            return;
        }
        super::audit(&self.session, &self.tool, "model", request, allowed, reason);
        let event = AuditEvent {
            at_ms: crate::store::timestamp_ms(),
            session: self.session.clone(),
            tool: self.tool.clone(),
            capability: "model".into(),
            request: request.to_owned(),
            allowed,
            reason: reason.to_owned(),
        };
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(session = %self.session, tool = %self.tool, error = %chain(&e), "could not record an audit event");
        }
    }

    /// Applies the grant's bounds: refuses the call (rate, budget) or returns the request to
    /// send, with `max-tokens` capped.
    async fn bound(&self, request: &ChatRequest, shown: &str) -> Result<ChatRequest, ModelError> {
        let grant = &self.granted;
        let mut cap = grant.max_tokens_per_call;
        if grant.session_token_budget.is_some() || grant.calls_per_minute.is_some() {
            let ledger = self.ledger().await.map_err(|e| {
                ModelError::ProviderError(ProviderFailure {
                    status: None,
                    message: format!(
                        "the model usage ledger is unavailable, so the grant's bounds cannot be checked: {e}"
                    ),
                })
            })?;
            if let Some(limit) = grant.calls_per_minute
                && ledger.recent_calls >= limit
            {
                let reason = format!("`{}` may call models {limit} times per minute", self.tool);
                self.record(&format!("rate {shown}"), false, &reason).await;
                return Err(ModelError::RateLimited(reason));
            }
            if let Some(budget) = grant.session_token_budget {
                if ledger.session_tokens >= budget {
                    let reason = format!("the session has used {} of its {budget} model tokens", ledger.session_tokens);
                    self.record(&format!("budget {shown}"), false, &reason).await;
                    return Err(ModelError::BudgetExceeded(reason));
                }
                // The answer may not spend more than what is left.
                let left = u32::try_from(budget - ledger.session_tokens).unwrap_or(u32::MAX);
                cap = Some(cap.map_or(left, |c| c.min(left)));
            }
        }
        let mut bounded = request.clone();
        if let Some(cap) = cap {
            bounded.max_tokens = Some(bounded.max_tokens.map_or(cap, |m| m.min(cap)));
        }
        Ok(bounded)
    }

    fn journal_and_return(&self, model: String, digest: String, result: Result<ChatResponse, ModelError>) {
        lock(&self.journal).record(JournalEntry::Model { model, request: digest, result });
    }
}

impl wit::Host for ModelCtx {
    async fn chat(
        &mut self,
        model: String,
        request: wit::ChatRequest,
    ) -> wasmtime::Result<Result<wit::ChatResponse, wit::ModelError>> {
        crate::journal::within_limits(&self.journal)?;
        let result = self.chat_checked(model, convert::request(request)).await;
        crate::journal::within_limits(&self.journal).map(|()| result.map(convert::response).map_err(convert::error))
    }
}

impl ModelCtx {
    async fn chat_checked(&mut self, model: String, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        let shown = model.escape_debug().to_string();
        if !self.granted.allows(&model) {
            let reason = format!("model `{shown}` is not granted");
            self.record(&format!("chat {shown}"), false, &reason).await;
            return Err(ModelError::Denied(reason));
        }
        // Deterministic given the request: not journaled, answered the same on replay.
        crate::model::validate_request(&request)?;
        let digest = request.fingerprint(&model);
        // Journals written before the canonical fingerprint hold the legacy one.
        let replayed = lock(&self.journal).replayed("model.chat", |entry| match entry {
            JournalEntry::Model { model: m, request: r, result }
                if *m == model && (*r == digest || *r == request.legacy_fingerprint(&model)) =>
            {
                Some(result.clone())
            }
            _ => None,
        });
        if let Some(result) = replayed {
            return result;
        }
        if lock(&self.journal).has_diverged() {
            // A diverged replay never reaches the provider: its result is discarded anyway.
            return Err(ModelError::InvalidRequest("replay diverged from the journal".into()));
        }
        let call_id = {
            let journal = lock(&self.journal);
            let index = journal.recorded().iter().filter(|e| matches!(e, JournalEntry::Model { .. })).count();
            let seq = journal.step.as_ref().map_or(0, |s| s.seq);
            format!("{}:{seq}:{index}", self.session)
        };
        // A refusal depends on time and on other steps: journal it, so replay answers the same.
        let bounded = match self.bound(&request, &shown).await {
            Ok(bounded) => bounded,
            Err(refused) => {
                self.journal_and_return(model, digest, Err(refused.clone()));
                self.persist_in_flight().await;
                return Err(refused);
            }
        };
        super::audit(&self.session, &self.tool, "model", &format!("chat {shown}"), true, "granted");
        let result = match &self.provider {
            Some(provider) => provider.chat(&model, &bounded, &call_id).await,
            None => Err(ModelError::ProviderError(ProviderFailure {
                status: None,
                message: format!("no model provider is configured for `{shown}`"),
            })),
        };
        // The ledger entry first: a crash right after it re-sends the call, which then really
        // is paid twice, and counted twice.
        let outcome = match &result {
            Ok(response) => usage_reason(&response.usage),
            Err(e) => format!("failed: {e}"),
        };
        self.record(&format!("chat {shown}"), true, &outcome).await;
        self.journal_and_return(model, digest, result.clone());
        self.persist_in_flight().await;
        result
    }
}

struct HasModel;

impl HasData for HasModel {
    type Data<'a> = &'a mut ModelCtx;
}

pub(crate) fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasModel>(linker, T::model)
}
