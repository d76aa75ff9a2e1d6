//! What a host and every session it opened share: the engine, the linker, the store, the
//! live-instance budget and the host-wide options. A session holds this, not the
//! [`Host`](crate::Host), so the session layer does not depend on the host that opens it.

use std::sync::Arc;

use wasmtime::component::Linker;

use crate::budget::LiveInstances;
use crate::engine::Engine;
use crate::instance::InstanceState;
use crate::lease::LeaseConfig;
use crate::model::ModelProvider;
use crate::policy::Policy;
use crate::store::Store;

/// Options that decide when snapshots are taken and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Snapshot a stateful tool after every `every` of its steps (1: after each).
    pub every: u32,
    /// Snapshots kept per (session, tool); older ones are pruned with the journals they cover.
    pub keep: u32,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self { every: 1, keep: 3 }
    }
}

pub(crate) struct Runtime {
    pub engine: Engine,
    pub linker: Linker<InstanceState>,
    pub policy: Policy,
    pub snapshots: SnapshotPolicy,
    pub models: Option<Arc<dyn ModelProvider>>,
    pub store: Arc<dyn Store>,
    pub leases: Option<LeaseConfig>,
    pub instances: LiveInstances,
}

impl Runtime {
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn model_provider(&self) -> Option<Arc<dyn ModelProvider>> {
        self.models.clone()
    }
}
