//! The wasmtime engine, configured once per host: pooling allocation, copy-on-write memory
//! images, epoch interruption and the compile cache. This module and [`crate::tool`] are the
//! only places that configure or compile with wasmtime directly.

mod cache;
mod limits;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Component;

use cache::CompileCache;
pub(crate) use cache::sha256_hex;
pub use cache::{CacheError, CacheStatus};
pub use limits::Limits;
pub(crate) use limits::{GuestLimiter, MemoryLimitExceeded};

/// How the host's engine is set up. The defaults suit a service running many short sessions.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// The secret that authenticates cached artifacts (32 bytes, mode 0600, created on first
    /// use); must be outside `cache_dir`. `None`: [`EngineConfig::default_cache_key`].
    pub cache_key: Option<PathBuf>,
    /// Components larger than this are refused before they are read whole or compiled.
    pub max_component_bytes: u64,
    /// Compiling one component (or reading it from the cache) may take this long; past it the
    /// load fails with `LoadError::CompileTimeout`.
    pub max_compile_time: Duration,
    /// Pre-allocate instance slots (fast instantiation, ~10x cheaper than on demand). When
    /// every slot is in use, further instantiations fail with a typed error.
    pub pooling: bool,
    /// Instances that can be alive at once with pooling (one per session and tool in use).
    /// The host's live-instance budget ([`crate::HostConfig::live_instances`]) defaults to
    /// it and may not exceed it with pooling.
    pub max_instances: u32,
    /// The largest memory any tool may be granted; per-tool caps are in [`Limits`].
    pub max_memory_bytes: u64,
    /// Granularity of CPU deadlines: the epoch advances every tick and a running guest
    /// yields to the async executor at each one.
    pub epoch_tick: Duration,
    /// Native stack available to wasm frames.
    pub max_wasm_stack: usize,
    /// Meter wasm fuel (about 5% slower on tight loops). The host turns it on when its
    /// policy gives some tool a fuel limit.
    pub consume_fuel: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            cache_key: None,
            max_component_bytes: 64 << 20,
            max_compile_time: Duration::from_secs(120),
            pooling: true,
            max_instances: 1_000,
            max_memory_bytes: 1 << 30,
            epoch_tick: Duration::from_millis(10),
            max_wasm_stack: 512 << 10,
            consume_fuel: false,
        }
    }
}

impl EngineConfig {
    /// The per-user cache folder (`$XDG_CACHE_HOME/toolhost/components` on Linux).
    pub fn default_cache_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("toolhost").join("components"))
    }

    /// The per-user cache key (`$XDG_DATA_HOME/toolhost/cache.key` on Linux): not under the
    /// cache folder, so whoever can write the cache cannot forge artifacts with it.
    pub fn default_cache_key() -> Option<PathBuf> {
        dirs::data_local_dir().map(|d| d.join("toolhost").join("cache.key"))
    }
}

/// A compiled component and where it came from.
pub(crate) struct Compiled {
    pub component: Component,
    pub digest: String,
    pub cache: CacheStatus,
}

/// The engine plus the thread that advances its epoch.
pub(crate) struct Engine {
    wasmtime: wasmtime::Engine,
    cache: Option<CompileCache>,
    /// Length of one epoch tick, the unit of CPU deadlines.
    epoch_tick: Duration,
    max_memory_bytes: u64,
    max_component_bytes: u64,
    max_compile_time: Duration,
    consume_fuel: bool,
    ticker_stop: Arc<AtomicBool>,
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `reason` says what is wrong; `source`, if any, is wasmtime's refusal.
    #[error("invalid engine configuration: {reason}")]
    Invalid { reason: String, source: Option<crate::source::Source> },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A component cranelift refused (the host reports it as `LoadError::Compile`).
#[derive(Debug, thiserror::Error)]
#[error("{} does not compile", path.display())]
pub struct CompileError {
    pub path: PathBuf,
    /// wasmtime's error.
    pub source: crate::source::Source,
}

impl Engine {
    pub fn new(config: &EngineConfig) -> Result<Self, EngineError> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .max_wasm_stack(config.max_wasm_stack)
            .consume_fuel(config.consume_fuel)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        if config.pooling {
            // Every pool dimension follows `max_instances`: a live store keeps its async
            // fiber stack cached, so stacks bound live instances as much as memories do.
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(config.max_instances)
                .total_stacks(config.max_instances)
                .total_core_instances(config.max_instances.saturating_mul(8))
                .total_memories(config.max_instances.saturating_mul(2))
                .total_tables(config.max_instances.saturating_mul(4))
                .max_core_instances_per_component(32)
                .max_memories_per_component(4)
                .max_tables_per_component(8)
                .max_memory_size(config.max_memory_bytes as usize);
            wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let wasmtime = wasmtime::Engine::new(&wasm).map_err(|e| EngineError::Invalid {
            reason: "wasmtime refused the configuration".into(),
            source: Some(crate::source::Source::new(e)),
        })?;
        let cache = match &config.cache_dir {
            Some(dir) => {
                let key = config.cache_key.clone().or_else(EngineConfig::default_cache_key).ok_or_else(|| {
                    EngineError::Invalid {
                        reason: "no per-user data folder for the compile cache key; set `cache_key`".into(),
                        source: None,
                    }
                })?;
                Some(CompileCache::open(dir, &key, &wasmtime)?)
            }
            None => None,
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(wasmtime.clone(), config.epoch_tick, ticker_stop.clone());
        Ok(Self {
            wasmtime,
            cache,
            epoch_tick: config.epoch_tick,
            max_memory_bytes: config.max_memory_bytes,
            max_component_bytes: config.max_component_bytes,
            max_compile_time: config.max_compile_time,
            consume_fuel: config.consume_fuel,
            ticker_stop,
        })
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.wasmtime
    }

    /// Whether stores meter fuel (and so must be given some before each call).
    pub fn consumes_fuel(&self) -> bool {
        self.consume_fuel
    }

    pub fn max_memory_bytes(&self) -> u64 {
        self.max_memory_bytes
    }

    pub fn max_component_bytes(&self) -> u64 {
        self.max_component_bytes
    }

    pub fn max_compile_time(&self) -> Duration {
        self.max_compile_time
    }

    /// Compiles `bytes` (already checked to be a component), or reads it from the cache.
    pub fn compile(&self, path: &Path, bytes: &[u8]) -> Result<Compiled, CompileError> {
        let digest = sha256_hex(bytes);
        if let Some(cache) = &self.cache
            && let Some(component) = cache.get(&self.wasmtime, &digest)
        {
            tracing::debug!(path = %path.display(), %digest, "compile cache hit");
            return Ok(Compiled { component, digest, cache: CacheStatus::Hit });
        }
        let started = std::time::Instant::now();
        let component = Component::new(&self.wasmtime, bytes)
            .map_err(|e| CompileError { path: path.to_owned(), source: crate::source::Source::new(e) })?;
        tracing::debug!(path = %path.display(), %digest, elapsed = ?started.elapsed(), "compiled component");
        let status = match &self.cache {
            Some(cache) => {
                cache.put(&digest, &component);
                CacheStatus::Miss
            }
            None => CacheStatus::Disabled,
        };
        Ok(Compiled { component, digest, cache: status })
    }

    /// Epoch ticks that make up `cpu_time`, at least one.
    pub fn ticks_for(&self, cpu_time: Duration) -> u64 {
        (cpu_time.as_nanos() / self.epoch_tick.as_nanos().max(1)).max(1) as u64
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Advances the engine's epoch every `tick` until `stop` is set. A plain thread rather than a
/// tokio task: it must keep ticking while a guest hogs an executor thread.
fn spawn_epoch_ticker(engine: wasmtime::Engine, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("toolhost-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch thread");
}
