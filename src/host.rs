//! The entry point for embedders: a [`Host`] loads tools and opens sessions.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Linker;

use crate::engine::{Engine, EngineConfig};
use crate::error::{HostError, LoadError};
use crate::instance::{Instance, InstanceState};
use crate::policy::{Policy, ToolGrants};
use crate::session::Session;
use crate::store::{MemoryStore, StateStore};
use crate::tool::{self, Blueprint, Loaded, Tool, ToolKind};

/// How a [`Host`] is built.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    pub engine: EngineConfig,
    /// What each tool is granted; everything else is denied.
    pub policy: Policy,
}

/// Loads tools and runs sessions. Cheap to clone; clones share the engine, compile cache,
/// policy and store. Use one per process.
///
/// ```ignore
/// // Compiled for real in examples/quickstart.rs.
/// use toolhost::{Host, HostConfig, Policy};
///
/// let host = Host::new(HostConfig { policy: Policy::grant_requested(), ..Default::default() })?;
/// let calculator = host.load_tool("calculator.wasm").await?;
/// let mut session = host.new_session();
/// let out = session.call(&calculator, &serde_json::json!({"expression": "6 * 7"})).await?;
/// assert_eq!(out["value"], 42.0);
/// ```
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<InstanceState>,
    policy: Policy,
    state: Arc<dyn StateStore>,
}

impl Host {
    /// A host whose tool state lives in memory.
    pub fn new(config: HostConfig) -> Result<Self, HostError> {
        Self::with_store(config, Arc::new(MemoryStore::new()))
    }

    /// A host whose tool state lives in `store`.
    pub fn with_store(config: HostConfig, store: Arc<dyn StateStore>) -> Result<Self, HostError> {
        let engine = Engine::new(&config.engine)?;
        let linker = crate::instance::linker(engine.wasmtime()).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        Ok(Self { inner: Arc::new(HostInner { engine, linker, policy: config.policy, state: store }) })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn state_store(&self) -> Arc<dyn StateStore> {
        self.inner.state.clone()
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Loads the tool component at `path`: checks it is a component of the tool world,
    /// compiles it (or reads the compile cache), asks it to describe itself and attaches the
    /// grants the policy gives it.
    pub async fn load_tool(&self, path: impl AsRef<Path>) -> Result<Arc<Tool>, LoadError> {
        let path = path.as_ref().to_owned();
        let bytes = tokio::fs::read(&path).await.map_err(|source| LoadError::Read { path: path.clone(), source })?;
        self.load_tool_bytes(&path, bytes).await
    }

    /// Like [`Host::load_tool`], from bytes; `origin` names them in errors.
    pub async fn load_tool_bytes(&self, origin: &Path, bytes: Vec<u8>) -> Result<Arc<Tool>, LoadError> {
        tool::check_component_header(origin, &bytes)?;
        let this = self.clone();
        let path = origin.to_owned();
        // Compiling is CPU-bound and can take seconds: keep it off the async executor.
        let compiled =
            tokio::task::spawn_blocking(move || this.inner.engine.compile(&path, &bytes)).await.map_err(|e| {
                LoadError::Compile { path: origin.to_owned(), reason: format!("compiler task failed: {e}") }
            })??;

        let pre = self
            .inner
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| LoadError::UnsatisfiedImports { path: origin.to_owned(), reason: format!("{e:#}") })?;
        let (tool_indices, stateful_indices) = tool::locate_exports(origin, self.inner.engine.wasmtime(), &pre)?;
        let kind = if stateful_indices.is_some() { ToolKind::Stateful } else { ToolKind::Plain };
        let blueprint = Blueprint { pre, tool_indices, stateful_indices, digest: compiled.digest };

        // `describe` runs in a throwaway instance that is granted nothing.
        let describe_grants = ToolGrants::default();
        let describe_error = |reason: String| LoadError::Describe { path: origin.to_owned(), reason };
        let mut instance = Instance::new(
            &self.inner.engine,
            &blueprint,
            "(loading)",
            "(describe)",
            &describe_grants,
            self.state_store(),
        )
        .await
        .map_err(|e| describe_error(e.to_string()))?;
        let raw = instance
            .describe(&self.inner.engine, &describe_grants.limits)
            .await
            .map_err(|e| describe_error(format!("{e:#}")))?;
        drop(instance);
        let (descriptor, input_validator, output_validator) = tool::parse_descriptor(origin, raw)?;

        let grants = self.inner.policy.grants_for(&descriptor);
        tracing::info!(
            tool = %descriptor.name, version = %descriptor.version, kind = ?kind, cache = ?compiled.cache,
            path = %origin.display(), "loaded tool"
        );
        let loaded = Loaded {
            descriptor,
            kind,
            path: origin.to_owned(),
            cache: compiled.cache,
            blueprint,
            input_validator,
            output_validator,
        };
        Ok(Arc::new(loaded.into_tool(grants)))
    }

    /// A session with a fresh random id.
    pub fn new_session(&self) -> Session {
        self.session(uuid::Uuid::new_v4().to_string())
    }

    /// The session `id`: its tools see the state stored under that id. Instances start fresh.
    pub fn session(&self, id: impl Into<String>) -> Session {
        Session::new(id.into(), self.clone())
    }
}
