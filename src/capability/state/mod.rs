//! The `state` import: key-value state scoped to (session, tool, namespace), with a write
//! buffer per step so a call's writes commit together or not at all. The grant
//! ([`StateGrant`], `[tools.NAME.state]`), its checks and its rows are in `grant`.

mod grant;

pub use grant::{NAME, StateGrant, StateQuota};
pub(crate) use grant::{compare, validate};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::CapabilityHost;
use crate::bindings::state as wit;
use crate::contract::StateError;
use crate::journal::within_limits;
use crate::journal::{JournalEntry, SharedJournal, lock};
use crate::source::chain;
use crate::store::{StateScope, StateUsage, StateWrite, Store};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest namespace name.
pub const MAX_NAMESPACE_CHARS: usize = 64;

/// Per-instance state context: the scope, the grant and the current step's writes. Every
/// answer is journaled, and in replay every answer comes from the journal: the store holds
/// the latest state, not the state as of a replayed step.
pub struct StateCtx {
    scope: StateScope,
    grant: Arc<StateGrant>,
    audit: super::audit::Auditor,
    store: Arc<dyn Store>,
    journal: SharedJournal,
    /// This step's writes by (namespace, key); `None` is a delete. A delete of a key the
    /// step does not see is not buffered, so tombstones never outnumber the keys the quota
    /// let the session (or this step) hold.
    pending: BTreeMap<(String, String), Option<Vec<u8>>>,
    /// Usage with this step's writes so far; `None` until needed (or after a replayed write).
    usage: Option<StateUsage>,
    /// Keys this step read from the store, with the index of the journal entry holding the
    /// value: a later read of one is journaled as a repeat, not as another copy.
    read: HashMap<(String, String), usize>,
}

impl StateCtx {
    pub(crate) fn new(
        scope: StateScope,
        grant: Arc<StateGrant>,
        store: Arc<dyn Store>,
        journal: SharedJournal,
    ) -> Self {
        let audit =
            super::audit::Auditor::new(scope.session.clone(), scope.tool.clone(), store.clone(), journal.clone());
        Self { scope, grant, audit, store, journal, pending: BTreeMap::new(), usage: None, read: HashMap::new() }
    }

    /// Takes this step's writes, leaving the buffer empty for the next step.
    pub(crate) fn take_writes(&mut self) -> Vec<StateWrite> {
        self.usage = None;
        self.read.clear();
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|((namespace, key), value)| StateWrite { namespace, key, value })
            .collect()
    }

    async fn check(&self, namespace: &str, key: Option<&str>, write: bool, op: &str) -> Result<(), StateError> {
        let request = format!("{op} {}/{}", printable(namespace), key.map(printable).unwrap_or_default());
        let malformed = validate_namespace(namespace).and_then(|()| key.map_or(Ok(()), validate_key));
        if let Err(e) = malformed {
            // A crafted key is an attempt worth recording, not just a typo.
            let StateError::InvalidKey(reason) = &e else { unreachable!("validation only returns invalid-key") };
            self.audit.deny("state", &request, reason).await;
            return Err(e);
        }
        let decision = match self.grant.namespaces.get(namespace) {
            None => Err(format!("namespace `{namespace}` is not granted")),
            Some(access) if write && !access.allows_write() => Err(format!("namespace `{namespace}` is read-only")),
            Some(_) => Ok(()),
        };
        match decision {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.audit.deny("state", &request, &reason).await;
                Err(StateError::Denied(reason))
            }
        }
    }

    /// Usage as it would be after this step's writes so far: computed once per step (and
    /// after a replayed write), then kept up to date write by write.
    async fn usage_with_pending(&mut self) -> Result<StateUsage, StateError> {
        if let Some(usage) = self.usage {
            return Ok(usage);
        }
        let mut usage =
            self.store.usage(&self.scope).await.map_err(|e| StateError::Unavailable(chain(&e).to_string()))?;
        for ((namespace, key), value) in &self.pending {
            let before = self
                .store
                .get(&self.scope, namespace, key)
                .await
                .map_err(|e| StateError::Unavailable(chain(&e).to_string()))?;
            apply_delta(&mut usage, key, before.as_deref(), value.as_deref());
        }
        self.usage = Some(usage);
        Ok(usage)
    }

    /// The value as this step sees it: its own write if any, else the committed one.
    async fn current(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(pending) = self.pending.get(&(namespace.to_owned(), key.to_owned())) {
            return Ok(pending.clone());
        }
        self.store.get(&self.scope, namespace, key).await.map_err(|e| StateError::Unavailable(chain(&e).to_string()))
    }
}

fn apply_delta(usage: &mut StateUsage, key: &str, before: Option<&[u8]>, after: Option<&[u8]>) {
    let size = |v: &[u8]| (key.len() + v.len()) as u64;
    if let Some(b) = before {
        usage.keys -= 1;
        usage.bytes -= size(b);
    }
    if let Some(a) = after {
        usage.keys += 1;
        usage.bytes += size(a);
    }
}

/// Keys are shown in audit records escaped, so a crafted key cannot forge log lines.
fn printable(key: &str) -> String {
    key.escape_debug().take(MAX_KEY_BYTES).collect()
}

fn validate_namespace(namespace: &str) -> Result<(), StateError> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_CHARS
        && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidKey(format!(
            "namespace `{}` must be 1-{MAX_NAMESPACE_CHARS} chars of [a-z0-9_-]",
            printable(namespace)
        )))
    }
}

fn validate_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() {
        return Err(StateError::InvalidKey("key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError::InvalidKey(format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len())));
    }
    if key.contains('\0') {
        return Err(StateError::InvalidKey(format!("key `{}` contains a NUL byte", printable(key))));
    }
    Ok(())
}

/// Answers from the journal in replay; otherwise runs `live` and journals its result.
macro_rules! journaled {
    ($self:ident, $what:literal, $pattern:pat if $guard:expr => $result:expr, $live:expr, $record:expr) => {{
        let replayed = lock(&$self.journal).replayed($what, |entry| match entry {
            $pattern if $guard => Some($result.clone()),
            _ => None,
        });
        match replayed {
            Some(result) => result,
            None => {
                let result = $live;
                lock(&$self.journal).record($record(result.clone()));
                result
            }
        }
    }};
}

impl StateCtx {
    async fn live_set(&mut self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        let quota = self.grant.quota;
        if value.len() as u64 > quota.max_value_bytes {
            return Err(StateError::QuotaExceeded(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                value.len(),
                quota.max_value_bytes
            )));
        }
        let mut usage = self.usage_with_pending().await?;
        let before = self.current(namespace, key).await?;
        apply_delta(&mut usage, key, before.as_deref(), Some(value));
        if usage.keys > quota.max_keys {
            return Err(StateError::QuotaExceeded(format!("the limit of {} keys is reached", quota.max_keys)));
        }
        if usage.bytes > quota.max_total_bytes {
            return Err(StateError::QuotaExceeded(format!(
                "state would hold {} bytes; the limit is {}",
                usage.bytes, quota.max_total_bytes
            )));
        }
        self.usage = Some(usage);
        Ok(())
    }

    /// Whether the step sees `key`; a delete of one it sees frees its share of the quota.
    async fn live_delete(&mut self, namespace: &str, key: &str) -> Result<bool, StateError> {
        let Some(before) = self.current(namespace, key).await? else { return Ok(false) };
        if let Some(usage) = &mut self.usage {
            apply_delta(usage, key, Some(&before), None);
        }
        Ok(true)
    }

    /// A read the step's own view answers without a new copy in the journal: its own write
    /// of the key, or (live) the committed value it already read and journaled.
    fn repeat_of(&self, namespace: &str, key: &str) -> Option<RepeatSource> {
        let id = (namespace.to_owned(), key.to_owned());
        if let Some(pending) = self.pending.get(&id) {
            return Some(RepeatSource::Pending(pending.clone()));
        }
        self.read.get(&id).map(|&index| RepeatSource::Journal(index))
    }

    async fn live_list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StateError> {
        let mut keys: std::collections::BTreeSet<String> = self
            .store
            .list_keys(&self.scope, namespace, prefix)
            .await
            .map_err(|e| StateError::Unavailable(chain(&e).to_string()))?
            .into_iter()
            .collect();
        for ((ns, key), value) in &self.pending {
            if ns == namespace && key.starts_with(prefix) {
                if value.is_some() {
                    keys.insert(key.clone());
                } else {
                    keys.remove(key);
                }
            }
        }
        Ok(keys.into_iter().collect())
    }
}

enum RepeatSource {
    Pending(Option<Vec<u8>>),
    /// The index of the journal entry that recorded the value.
    Journal(usize),
}

/// A recorded write of a key: its namespace, key and result.
type RecordedWrite<'e, T> = (&'e String, &'e String, &'e Result<T, StateError>);

impl StateCtx {
    async fn get_value(&mut self, namespace: String, key: String) -> Result<Option<Vec<u8>>, StateError> {
        self.check(&namespace, Some(&key), false, "get").await?;
        let replayed = lock(&self.journal).replayed("state.get", |entry| match entry {
            JournalEntry::StateGet { namespace: n, key: k, result } if *n == namespace && *k == key => {
                Some(Ok(result.clone()))
            }
            JournalEntry::StateGetRepeat { namespace: n, key: k, .. } if *n == namespace && *k == key => Some(Err(())),
            _ => None,
        });
        match replayed {
            Some(Ok(result)) => {
                let index = lock(&self.journal).next_index().saturating_sub(1);
                self.read.entry((namespace, key)).or_insert(index);
                result
            }
            Some(Err(())) => self.replay_repeat(&namespace, &key),
            None => self.live_get(namespace, key).await,
        }
    }

    async fn live_get(&mut self, namespace: String, key: String) -> Result<Option<Vec<u8>>, StateError> {
        match self.repeat_of(&namespace, &key) {
            Some(RepeatSource::Pending(value)) => {
                lock(&self.journal).record_repeat(&namespace, &key);
                Ok(value)
            }
            Some(RepeatSource::Journal(_)) => {
                // The committed value cannot have changed under this step: its session is ours.
                let result = self.current(&namespace, &key).await;
                if result.is_ok() {
                    lock(&self.journal).record_repeat(&namespace, &key);
                } else {
                    lock(&self.journal).record(JournalEntry::StateGet { namespace, key, result: result.clone() });
                }
                result
            }
            None => {
                let result = self.current(&namespace, &key).await;
                let mut journal = lock(&self.journal);
                if result.is_ok() {
                    self.read.insert((namespace.clone(), key.clone()), journal.next_index());
                }
                journal.record(JournalEntry::StateGet { namespace, key, result: result.clone() });
                result
            }
        }
    }

    /// A repeated read in replay: the step's own write, or the value recorded earlier.
    fn replay_repeat(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let source = match self.repeat_of(namespace, key) {
            Some(RepeatSource::Pending(value)) => return Ok(value),
            Some(RepeatSource::Journal(index)) => Some(index),
            None => None,
        };
        let mut journal = lock(&self.journal);
        if let Some(JournalEntry::StateGet { result, .. }) = source.and_then(|i| journal.recorded().get(i)) {
            return result.clone();
        }
        let reason =
            format!("the journal repeats a read of {}/{} the step never made", printable(namespace), printable(key));
        journal.mark_diverged(reason.clone());
        Err(StateError::Unavailable(reason))
    }

    /// In replay, the recorded result of a write of `namespace/key` (`pick` reads it from
    /// the entry); the quota's usage is then re-read before the next live write.
    fn replayed_write<T: Clone>(
        &mut self,
        expected: &str,
        namespace: &str,
        key: &str,
        pick: fn(&JournalEntry) -> Option<RecordedWrite<'_, T>>,
    ) -> Option<Result<T, StateError>> {
        let replayed = lock(&self.journal).replayed(expected, |entry| match pick(entry) {
            Some((n, k, result)) if n == namespace && k == key => Some(result.clone()),
            _ => None,
        });
        if replayed.is_some() {
            self.usage = None;
        }
        replayed
    }

    async fn set_value(&mut self, namespace: String, key: String, value: Vec<u8>) -> Result<(), StateError> {
        self.check(&namespace, Some(&key), true, "set").await?;
        let replayed = self.replayed_write("state.set", &namespace, &key, |entry| match entry {
            JournalEntry::StateSet { namespace, key, result } => Some((namespace, key, result)),
            _ => None,
        });
        let result = match replayed {
            Some(result) => result,
            None => {
                let result = self.live_set(&namespace, &key, &value).await;
                let entry =
                    JournalEntry::StateSet { namespace: namespace.clone(), key: key.clone(), result: result.clone() };
                lock(&self.journal).record(entry);
                result
            }
        };
        match &result {
            Ok(()) => {
                self.pending.insert((namespace, key), Some(value));
            }
            Err(StateError::QuotaExceeded(reason)) => {
                let request = format!("set {}/{} ({} bytes)", namespace, printable(&key), value.len());
                self.audit.deny("state", &request, reason).await;
            }
            Err(_) => {}
        }
        result
    }

    async fn delete_value(&mut self, namespace: String, key: String) -> Result<bool, StateError> {
        self.check(&namespace, Some(&key), true, "delete").await?;
        let replayed = self.replayed_write("state.delete", &namespace, &key, |entry| match entry {
            JournalEntry::StateDelete { namespace, key, result } => Some((namespace, key, result)),
            _ => None,
        });
        let result = match replayed {
            Some(result) => result,
            None => {
                let result = self.live_delete(&namespace, &key).await;
                let entry = JournalEntry::StateDelete {
                    namespace: namespace.clone(),
                    key: key.clone(),
                    result: result.clone(),
                };
                lock(&self.journal).record(entry);
                result
            }
        };
        // A key the step does not see needs no tombstone.
        if result == Ok(true) {
            self.pending.insert((namespace, key), None);
        }
        result
    }

    async fn list(&mut self, namespace: String, prefix: String) -> Result<Vec<String>, StateError> {
        self.check(&namespace, None, false, "list-keys").await?;
        journaled!(self, "state.list-keys",
            JournalEntry::StateListKeys { namespace: n, prefix: p, result } if *n == namespace && *p == prefix => result,
            self.live_list_keys(&namespace, &prefix).await,
            |result| JournalEntry::StateListKeys { namespace: namespace.clone(), prefix: prefix.clone(), result })
    }
}

/// What the guest gets: the WIT's own error type.
type WitResult<T> = wasmtime::Result<Result<T, wit::StateError>>;

impl wit::Host for StateCtx {
    async fn get(&mut self, namespace: String, key: String) -> WitResult<Option<Vec<u8>>> {
        within_limits(&self.journal)?;
        let result = self.get_value(namespace, key).await;
        within_limits(&self.journal).map(|()| result.map_err(to_wit))
    }

    async fn set(&mut self, namespace: String, key: String, value: Vec<u8>) -> WitResult<()> {
        within_limits(&self.journal)?;
        let result = self.set_value(namespace, key, value).await;
        within_limits(&self.journal).map(|()| result.map_err(to_wit))
    }

    async fn delete(&mut self, namespace: String, key: String) -> WitResult<bool> {
        within_limits(&self.journal)?;
        let result = self.delete_value(namespace, key).await;
        within_limits(&self.journal).map(|()| result.map_err(to_wit))
    }

    async fn list_keys(&mut self, namespace: String, prefix: String) -> WitResult<Vec<String>> {
        within_limits(&self.journal)?;
        let result = self.list(namespace, prefix).await;
        within_limits(&self.journal).map(|()| result.map_err(to_wit))
    }
}

/// Our state error as the guest's.
fn to_wit(error: StateError) -> wit::StateError {
    match error {
        StateError::Denied(m) => wit::StateError::Denied(m),
        StateError::QuotaExceeded(m) => wit::StateError::QuotaExceeded(m),
        StateError::InvalidKey(m) => wit::StateError::InvalidKey(m),
        StateError::Unavailable(m) => wit::StateError::Unavailable(m),
    }
}

struct HasState;

impl HasData for HasState {
    type Data<'a> = &'a mut StateCtx;
}

pub(crate) fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasState>(linker, T::state)
}
