//! The policy side of model calls: `[tools.NAME.model]`, its checks and its rows.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::capability::{Issues, named_rows};
use crate::contract::CapabilityRow;

/// The capability's name in policies, rows and audit events.
pub const NAME: &str = "model";

/// Model aliases a tool may call, and the bounds on its use. The model capability enforces
/// the bounds; `None` means unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelGrant {
    pub aliases: BTreeSet<String>,
    /// Caps a request's `max-tokens` (and sets it when the tool gives none).
    pub max_tokens_per_call: Option<u32>,
    /// Input plus output tokens, as providers report them, per session.
    pub session_token_budget: Option<u64>,
    pub calls_per_minute: Option<u32>,
}

impl ModelGrant {
    /// Grants `aliases` without bounds.
    pub fn aliases<I: IntoIterator<Item = S>, S: Into<String>>(aliases: I) -> Self {
        Self { aliases: aliases.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    /// Whether the tool may call `alias`.
    pub fn allows(&self, alias: &str) -> bool {
        self.aliases.contains(alias)
    }
}

/// Checks aliases and bounds.
pub(crate) fn validate(grant: &ModelGrant, issues: &mut Issues) {
    for alias in &grant.aliases {
        if alias.trim().is_empty() {
            issues.push(&[NAME, "aliases"], "a model alias is empty");
        }
    }
    for (key, zero) in [
        ("max_tokens_per_call", grant.max_tokens_per_call == Some(0)),
        ("session_token_budget", grant.session_token_budget == Some(0)),
        ("calls_per_minute", grant.calls_per_minute == Some(0)),
    ] {
        if zero {
            issues.push(&[NAME, key], "must be at least 1 (omit it for no bound)");
        }
    }
}

/// Each requested alias against the grant, then each granted one nobody requested.
pub(crate) fn compare(requested: &[String], grant: &ModelGrant, rows: &mut Vec<CapabilityRow>) {
    named_rows(NAME, requested, grant.aliases.iter(), rows);
}
