use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{StateScope, StateStore, StateUsage, StateWrite, StoreError};

type Key = (StateScope, String, String);

/// State kept in process memory: lost when the process exits. For tests and one-shot calls.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<Key, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Vec<u8>>> {
        // A panic while holding the lock cannot leave a half-applied commit (commit builds
        // its changes before touching the map), so a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, scope: &StateScope, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries().get(&(scope.clone(), namespace.to_owned(), key.to_owned())).cloned())
    }

    async fn list_keys(&self, scope: &StateScope, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let start = (scope.clone(), namespace.to_owned(), prefix.to_owned());
        Ok(self
            .entries()
            .range(start..)
            .take_while(|((s, ns, k), _)| s == scope && ns == namespace && k.starts_with(prefix))
            .map(|((_, _, k), _)| k.clone())
            .collect())
    }

    async fn usage(&self, scope: &StateScope) -> Result<StateUsage, StoreError> {
        let entries = self.entries();
        let mut usage = StateUsage::default();
        for ((_, _, key), value) in entries.iter().filter(|((s, _, _), _)| s == scope) {
            usage.keys += 1;
            usage.bytes += (key.len() + value.len()) as u64;
        }
        Ok(usage)
    }

    async fn commit(&self, scope: &StateScope, writes: Vec<StateWrite>) -> Result<(), StoreError> {
        let mut entries = self.entries();
        for write in writes {
            let key = (scope.clone(), write.namespace, write.key);
            match write.value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
        Ok(())
    }
}
