//! Persistence behind the capabilities. [`StateStore`] holds tool key-value state, scoped by
//! session and tool; a step's writes reach it in one [`StateStore::commit`].

mod memory;

use async_trait::async_trait;

pub use memory::MemoryStore;

/// Whose state an operation touches. The host fills it in: a tool never names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateScope {
    pub session: String,
    pub tool: String,
}

/// One buffered write: `None` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    pub namespace: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// What a scope holds, for quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateUsage {
    pub keys: u64,
    /// Key plus value bytes.
    pub bytes: u64,
}

/// The store failed (I/O, corruption, lost connection).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Key-value state of tools, by scope and namespace.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, scope: &StateScope, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Keys of `namespace` starting with `prefix`, sorted by byte order.
    async fn list_keys(&self, scope: &StateScope, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Keys and bytes held by `scope` over all namespaces.
    async fn usage(&self, scope: &StateScope) -> Result<StateUsage, StoreError>;

    /// Applies `writes` atomically: all or none.
    async fn commit(&self, scope: &StateScope, writes: Vec<StateWrite>) -> Result<(), StoreError>;
}
