//! The plugin runtime: one wasmtime engine per process, a compile cache, a
//! registry of active plugins with atomic hot swap, and sessions that run
//! parser / matcher / router calls inside the sandbox.
//!
//! No wasmtime or bindgen type leaves this module: callers see domain types,
//! [`PluginError`] and the session types below. Calls are synchronous and
//! bounded by the plugin's deadline; async callers run them on
//! `spawn_blocking`.

mod bindings;
mod cache;
pub mod inspect;
pub mod manifest;
mod registry;
mod sandbox;

pub use cache::CacheStats;
pub use inspect::{Inspection, Verdict, Version};
pub use manifest::Manifest;
pub use registry::{PluginInfo, PluginStatus, ScanReport, Watcher};

use crate::domain::{
    MatchDecision, MatchGroup, ParsedBatch, PluginIdentity, PluginKind, Route, RouteItem,
};
use bindings::latest;
use cache::CompileCache;
use sandbox::State;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::component::{InstancePre, ResourceAny};
use wasmtime::{Config, Engine, Store};

/// Why a plugin could not do what was asked. Guest errors (the plugin said
/// no) and traps (the sandbox stopped it) are distinct variants.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    #[error("no active plugin `{0}`")]
    NotFound(String),
    #[error("plugin `{plugin}` is a {actual}, not a {wanted}")]
    WrongKind {
        plugin: String,
        actual: PluginKind,
        wanted: PluginKind,
    },
    #[error("{0}")]
    Refused(String),
    #[error("plugin `{plugin}` failed to load: {message}")]
    Load { plugin: String, message: String },
    #[error("plugin `{plugin}` exceeded its {limit_ms} ms deadline")]
    Deadline { plugin: String, limit_ms: u64 },
    #[error("plugin `{plugin}` exceeded its memory limit of {limit_mib} MiB")]
    Memory { plugin: String, limit_mib: u64 },
    #[error("plugin `{plugin}` panicked: {message}")]
    Panic { plugin: String, message: String },
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin `{plugin}` returned an error ({code}): {message}")]
    Guest {
        plugin: String,
        code: GuestErrorCode,
        message: String,
    },
    #[error("plugin `{plugin}` broke the contract: {message}")]
    Contract { plugin: String, message: String },
    #[error("plugin `{plugin}`: session is unusable after an earlier failure")]
    Poisoned { plugin: String },
}

impl PluginError {
    /// Stopped by the sandbox (as opposed to refusing or failing politely).
    pub fn is_trap(&self) -> bool {
        matches!(
            self,
            Self::Deadline { .. } | Self::Memory { .. } | Self::Panic { .. } | Self::Trap { .. }
        )
    }
}

/// The contract's `error-code`, as the host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestErrorCode {
    InvalidConfig,
    MalformedInput,
    Unsupported,
    Internal,
}

impl std::fmt::Display for GuestErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InvalidConfig => "invalid-config",
            Self::MalformedInput => "malformed-input",
            Self::Unsupported => "unsupported",
            Self::Internal => "internal",
        })
    }
}

pub type Result<T, E = PluginError> = std::result::Result<T, E>;

/// Where the runtime keeps things.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Watched for `<name>.toml` + `<name>.wasm` pairs; None for a runtime that
    /// only loads files it is handed (CLI `plugin check` / `plugin test`).
    pub plugins_dir: Option<PathBuf>,
    /// The compile cache.
    pub cache_dir: PathBuf,
}

/// One loaded, verified, compiled plugin version. Immutable: a new version
/// is a new `Slot`, swapped in whole; sessions hold an `Arc` to the one they
/// started on, so calls in flight finish on the old version.
pub struct Slot {
    pub manifest: Manifest,
    pub identity: PluginIdentity,
    pub verdict: Verdict,
    pub wasm_path: PathBuf,
    pre: InstancePre<State>,
    indices: KindIndices,
}

enum KindIndices {
    Parser(latest::parser::GuestIndices),
    Matcher(latest::matcher::GuestIndices),
    Router(latest::router::GuestIndices),
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("identity", &self.identity)
            .field("verdict", &self.verdict)
            .finish()
    }
}

impl Slot {
    pub fn kind(&self) -> PluginKind {
        self.verdict.kind
    }
}

#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: wasmtime::component::Linker<State>,
    cache: CompileCache,
    registry: registry::Registry,
    plugins_dir: Option<PathBuf>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The process-wide engine configuration.
fn engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // Plugins use no WASIp3 concurrency; without it calls are ~3x cheaper.
    config.concurrency_support(false);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    Ok(Engine::new(&config)?)
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Runtime> {
        let engine = engine()?;
        let linker = sandbox::linker(&engine)?;
        let cache = CompileCache::open(&options.cache_dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            // Deadlines count epoch ticks; this thread is the clock.
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("accord-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(sandbox::TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                registry: registry::Registry::default(),
                plugins_dir: options.plugins_dir,
                stop_ticker: stop,
            }),
        })
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    pub fn plugins_dir(&self) -> Option<&Path> {
        self.inner.plugins_dir.as_deref()
    }

    /// Load new and changed plugins from the plugins directory, swap them in,
    /// and retire removed ones. A plugin that fails leaves its previous
    /// version active and the failure in [`Runtime::list`].
    pub fn rescan(&self) -> ScanReport {
        match &self.inner.plugins_dir {
            Some(dir) => self.inner.registry.rescan(dir, |m, p| self.load_slot(m, p)),
            None => ScanReport::default(),
        }
    }

    /// Watch the plugins directory (notify, plus a rescan every `interval` as
    /// a backstop) until the returned handle is dropped.
    pub fn watch(&self, interval: std::time::Duration) -> anyhow::Result<Watcher> {
        let dir = self
            .inner
            .plugins_dir
            .clone()
            .ok_or_else(|| anyhow::anyhow!("runtime has no plugins directory to watch"))?;
        registry::Watcher::start(self.clone(), dir, interval)
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        self.inner.registry.list()
    }

    /// The active version of `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Slot>> {
        self.inner
            .registry
            .active(name)
            .ok_or_else(|| PluginError::NotFound(name.to_string()))
    }

    /// Inspect and verify a component without compiling it.
    pub fn check(
        &self,
        name: &str,
        wasm: &[u8],
        expected: Option<PluginKind>,
    ) -> (Option<Inspection>, Result<Verdict>) {
        match inspect::inspect(wasm) {
            Err(e) => (
                None,
                Err(PluginError::Refused(format!("plugin `{name}`: {e}"))),
            ),
            Ok(found) => {
                let verdict =
                    inspect::verdict(name, &found, expected).map_err(PluginError::Refused);
                (Some(found), verdict)
            }
        }
    }

    /// Load a component from a file outside the registry (CLI use).
    pub fn load_file(&self, wasm_path: &Path, manifest: Option<Manifest>) -> Result<Arc<Slot>> {
        let bytes = std::fs::read(wasm_path).map_err(|e| PluginError::Load {
            plugin: wasm_path.display().to_string(),
            message: e.to_string(),
        })?;
        let manifest = match manifest {
            Some(m) => m,
            None => {
                let name = wasm_path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (_, verdict) = self.check(&name, &bytes, None);
                Manifest::for_file(wasm_path, verdict?.kind)
            }
        };
        self.load_slot(manifest, wasm_path).map(Arc::new)
    }

    /// Verify, compile (through the cache) and pre-instantiate one plugin.
    fn load_slot(&self, manifest: Manifest, wasm_path: &Path) -> Result<Slot> {
        let name = manifest.name.clone();
        let load_err = |message: String| PluginError::Load {
            plugin: name.clone(),
            message,
        };
        let bytes = std::fs::read(wasm_path)
            .map_err(|e| load_err(format!("{}: {e}", wasm_path.display())))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (_, verdict) = self.check(&name, &bytes, Some(manifest.kind));
        let verdict = verdict?;
        let component = self
            .inner
            .cache
            .load(&self.inner.engine, &bytes, &sha256)
            .map_err(|e| load_err(format!("compile: {e:#}")))?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Refused(format!("plugin `{name}`: {e:#}")))?;
        let indices = match verdict.kind {
            PluginKind::Parser => latest::parser::GuestIndices::new(&pre).map(KindIndices::Parser),
            PluginKind::Matcher => {
                latest::matcher::GuestIndices::new(&pre).map(KindIndices::Matcher)
            }
            PluginKind::Router => latest::router::GuestIndices::new(&pre).map(KindIndices::Router),
        }
        .map_err(|e| {
            PluginError::Refused(format!(
                "plugin `{name}` does not match its interface: {e:#}"
            ))
        })?;
        let identity = PluginIdentity {
            name,
            version: manifest.version.clone(),
            sha256,
        };
        Ok(Slot {
            manifest,
            identity,
            verdict,
            wasm_path: wasm_path.to_path_buf(),
            pre,
            indices,
        })
    }

    /// Open a parse session on the active version of `name`.
    pub fn open_parser(
        &self,
        name: &str,
        config: Option<&serde_json::Value>,
    ) -> Result<ParseSession> {
        let slot = self.get(name)?;
        self.open_parser_on(slot, config)
    }

    /// Open a parse session on a specific loaded version.
    pub fn open_parser_on(
        &self,
        slot: Arc<Slot>,
        config: Option<&serde_json::Value>,
    ) -> Result<ParseSession> {
        let mut instance = self.instantiate(slot, PluginKind::Parser)?;
        let KindIndices::Parser(indices) = &instance.slot.indices else {
            unreachable!("kind checked")
        };
        let indices = indices.clone();
        let config = instance.slot.manifest.config_json(config).to_string();
        let guest = instance.call(|store, inst| indices.load(store, inst))?;
        let handle = instance.call_guest(|store, _| guest.session().call_open(store, &config))?;
        Ok(ParseSession {
            instance,
            guest,
            handle,
        })
    }

    /// Open a matcher session on the active version of `name`.
    pub fn open_matcher(
        &self,
        name: &str,
        config: Option<&serde_json::Value>,
    ) -> Result<MatcherSession> {
        let slot = self.get(name)?;
        let mut instance = self.instantiate(slot, PluginKind::Matcher)?;
        let KindIndices::Matcher(indices) = &instance.slot.indices else {
            unreachable!("kind checked")
        };
        let indices = indices.clone();
        let config = instance.slot.manifest.config_json(config).to_string();
        let guest = instance.call(|store, inst| indices.load(store, inst))?;
        let handle = instance.call_guest(|store, _| guest.session().call_open(store, &config))?;
        Ok(MatcherSession {
            instance,
            guest,
            handle,
        })
    }

    /// Open a router session on the active version of `name`.
    pub fn open_router(
        &self,
        name: &str,
        config: Option<&serde_json::Value>,
    ) -> Result<RouterSession> {
        let slot = self.get(name)?;
        let mut instance = self.instantiate(slot, PluginKind::Router)?;
        let KindIndices::Router(indices) = &instance.slot.indices else {
            unreachable!("kind checked")
        };
        let indices = indices.clone();
        let config = instance.slot.manifest.config_json(config).to_string();
        let guest = instance.call(|store, inst| indices.load(store, inst))?;
        let handle = instance.call_guest(|store, _| guest.session().call_open(store, &config))?;
        Ok(RouterSession {
            instance,
            guest,
            handle,
        })
    }

    fn instantiate(&self, slot: Arc<Slot>, wanted: PluginKind) -> Result<Instance> {
        if slot.kind() != wanted {
            return Err(PluginError::WrongKind {
                plugin: slot.manifest.name.clone(),
                actual: slot.kind(),
                wanted,
            });
        }
        let mut store = sandbox::store(&self.inner.engine, &slot);
        sandbox::arm(&mut store, slot.manifest.limits.deadline());
        let instance = match slot.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(sandbox::classify(&mut store, &slot, e)),
        };
        Ok(Instance {
            slot,
            store,
            instance,
            poisoned: false,
        })
    }
}

/// One sandboxed instance: its own store, memory and deadline. After any
/// trap it is poisoned and dropped; the next session gets a fresh one.
struct Instance {
    slot: Arc<Slot>,
    store: Store<State>,
    instance: wasmtime::component::Instance,
    poisoned: bool,
}

impl Instance {
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<State>, &wasmtime::component::Instance) -> wasmtime::Result<R>,
    ) -> Result<R> {
        if self.poisoned {
            return Err(PluginError::Poisoned {
                plugin: self.slot.manifest.name.clone(),
            });
        }
        sandbox::arm(&mut self.store, self.slot.manifest.limits.deadline());
        let result = f(&mut self.store, &self.instance);
        match result {
            Ok(r) => {
                sandbox::drain_stderr(&mut self.store);
                Ok(r)
            }
            Err(e) => {
                self.poisoned = true;
                Err(sandbox::classify(&mut self.store, &self.slot, e))
            }
        }
    }

    /// A call whose guest result is `result<T, plugin-error>`.
    fn call_guest<R>(
        &mut self,
        f: impl FnOnce(
            &mut Store<State>,
            &wasmtime::component::Instance,
        ) -> wasmtime::Result<std::result::Result<R, latest::types::PluginError>>,
    ) -> Result<R> {
        let plugin = self.slot.manifest.name.clone();
        self.call(f)?.map_err(|e| PluginError::Guest {
            plugin,
            code: match e.code {
                latest::types::ErrorCode::InvalidConfig => GuestErrorCode::InvalidConfig,
                latest::types::ErrorCode::MalformedInput => GuestErrorCode::MalformedInput,
                latest::types::ErrorCode::Unsupported => GuestErrorCode::Unsupported,
                latest::types::ErrorCode::Internal => GuestErrorCode::Internal,
            },
            message: e.message,
        })
    }

    fn contract(&self, message: impl Into<String>) -> PluginError {
        PluginError::Contract {
            plugin: self.slot.manifest.name.clone(),
            message: message.into(),
        }
    }
}

/// A parser working through one input.
pub struct ParseSession {
    instance: Instance,
    guest: latest::parser::Guest,
    handle: ResourceAny,
}

impl ParseSession {
    pub fn identity(&self) -> &PluginIdentity {
        &self.instance.slot.identity
    }

    pub fn slot(&self) -> &Arc<Slot> {
        &self.instance.slot
    }

    /// Feed the next chunk (64 KiB – 1 MiB is the intended size).
    pub fn push(&mut self, chunk: &[u8]) -> Result<ParsedBatch> {
        let (guest, handle) = (&self.guest, self.handle);
        let batch = self
            .instance
            .call_guest(|store, _| guest.session().call_push(store, handle, chunk))?;
        Ok(bindings::batch(batch))
    }

    /// End of input.
    pub fn finish(mut self) -> Result<ParsedBatch> {
        let (guest, handle) = (&self.guest, self.handle);
        let batch = self
            .instance
            .call_guest(|store, _| guest.session().call_finish(store, handle))?;
        Ok(bindings::batch(batch))
    }
}

/// A matcher opened with one merchant's config.
pub struct MatcherSession {
    instance: Instance,
    guest: latest::matcher::Guest,
    handle: ResourceAny,
}

impl MatcherSession {
    pub fn identity(&self) -> &PluginIdentity {
        &self.instance.slot.identity
    }

    /// One decision per group, in order.
    pub fn decide(&mut self, groups: &[&MatchGroup]) -> Result<Vec<MatchDecision>> {
        let wit_groups: Vec<_> = groups.iter().map(|g| bindings::group_out(g)).collect();
        let (guest, handle) = (&self.guest, self.handle);
        let decisions = self
            .instance
            .call_guest(|store, _| guest.session().call_decide(store, handle, &wit_groups))?;
        if decisions.len() != groups.len() {
            return Err(self.instance.contract(format!(
                "{} decisions for {} groups",
                decisions.len(),
                groups.len()
            )));
        }
        decisions
            .into_iter()
            .zip(groups)
            .map(|(d, g)| {
                bindings::decision(d, g.candidates.len()).map_err(|e| self.instance.contract(e.0))
            })
            .collect()
    }
}

/// A router opened with its config.
pub struct RouterSession {
    instance: Instance,
    guest: latest::router::Guest,
    handle: ResourceAny,
}

impl RouterSession {
    pub fn identity(&self) -> &PluginIdentity {
        &self.instance.slot.identity
    }

    /// For each item, in order, zero or more routes.
    pub fn route(&mut self, items: &[RouteItem]) -> Result<Vec<Vec<Route>>> {
        let wit_items: Vec<_> = items.iter().map(bindings::item_out).collect();
        let (guest, handle) = (&self.guest, self.handle);
        let routes = self
            .instance
            .call_guest(|store, _| guest.session().call_route(store, handle, &wit_items))?;
        if routes.len() != items.len() {
            return Err(self.instance.contract(format!(
                "{} route lists for {} items",
                routes.len(),
                items.len()
            )));
        }
        routes
            .into_iter()
            .map(|rs| {
                rs.into_iter()
                    .map(|r| bindings::route(r).map_err(|e| self.instance.contract(e.0)))
                    .collect()
            })
            .collect()
    }
}
