//! The sandbox every plugin call runs in: one `Store` per instance, deny-by-
//! default WASI, a memory cap, an epoch deadline, bounded stderr, and the
//! classification of what went wrong.
//!
//! Deny by default, in one place: no preopened directories, sockets or clocks
//! are linked at all (see `linker`); `wasi:cli/environment` is linked because
//! Rust's std imports it, with no variables or arguments in it; the only host import is `accord:host/log`.

use super::bindings::latest;
use super::{PluginError, Slot};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Epoch tick: the granularity of deadlines.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(10);
/// Guest stderr kept per instance; beyond it writes fail (the guest sees a
/// closed stream) so a chatty plugin cannot fill the host's memory or logs.
pub const STDERR_CAP: usize = 64 * 1024;
/// Fields and bytes of one `log` call kept: plugins cannot flood tracing.
const LOG_MESSAGE_CAP: usize = 4096;

pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    stderr: MemoryOutputPipe,
    stderr_seen: usize,
    plugin: String,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl latest::log::Host for State {
    fn log(&mut self, level: latest::log::Level, message: String, fields: Vec<(String, String)>) {
        use latest::log::Level;
        let mut message = message;
        message.truncate(LOG_MESSAGE_CAP);
        let fields: Vec<_> = fields.into_iter().take(32).collect();
        let plugin = self.plugin.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "accord::plugin", plugin, ?fields, "{message}"),
            Level::Debug => tracing::debug!(target: "accord::plugin", plugin, ?fields, "{message}"),
            Level::Info => tracing::info!(target: "accord::plugin", plugin, ?fields, "{message}"),
            Level::Warn => tracing::warn!(target: "accord::plugin", plugin, ?fields, "{message}"),
            Level::Error => tracing::error!(target: "accord::plugin", plugin, ?fields, "{message}"),
        }
    }
}

/// Memory cap per instance; remembers that it refused, so the resulting trap
/// can be reported as a memory limit rather than a generic failure.
struct Limiter {
    max_memory: usize,
    refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.refused = true;
            // Erroring (rather than returning false) traps the guest at once:
            // Rust guests abort on allocation failure anyway, and a trap
            // carries the reason.
            wasmtime::bail!(
                "memory limit: wanted {desired} bytes, cap is {}",
                self.max_memory
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Link exactly the interfaces the policy in `inspect::ALLOWED_IMPORTS`
/// grants; a component importing anything else cannot even be
/// pre-instantiated.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    use wasmtime_wasi::p2::bindings::sync as wasi;
    use wasmtime_wasi::p2::bindings::{cli, random};
    let mut l = Linker::<State>::new(engine);
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<State, HasIo>(&mut l, |t| {
        &mut t.table
    })?;
    wasi::io::poll::add_to_linker::<State, HasIo>(&mut l, |t| &mut t.table)?;
    wasi::io::streams::add_to_linker::<State, HasIo>(&mut l, |t| &mut t.table)?;
    cli::exit::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    // Linked because std imports it; the context configures no variables.
    cli::environment::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::stdin::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::stdout::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::stderr::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_input::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_output::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_stdin::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_stdout::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_stderr::add_to_linker::<State, wasmtime_wasi::cli::WasiCli>(
        &mut l,
        <State as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    random::random::add_to_linker::<State, wasmtime_wasi::random::WasiRandom>(&mut l, |t| {
        t.wasi.random()
    })?;
    random::insecure::add_to_linker::<State, wasmtime_wasi::random::WasiRandom>(&mut l, |t| {
        t.wasi.random()
    })?;
    random::insecure_seed::add_to_linker::<State, wasmtime_wasi::random::WasiRandom>(
        &mut l,
        |t| t.wasi.random(),
    )?;
    latest::log::add_to_linker::<State, HasSelf<State>>(&mut l, |s| s)?;
    Ok(l)
}

struct HasIo;
impl wasmtime::component::HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// A fresh store for one instance of `slot`'s plugin.
pub fn store(engine: &Engine, slot: &Slot) -> Store<State> {
    let stderr = MemoryOutputPipe::new(STDERR_CAP);
    // Deny by default: no env, args, preopens or network are configured.
    let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
    let state = State {
        wasi,
        table: ResourceTable::new(),
        limiter: Limiter {
            max_memory: slot.manifest.limits.memory_bytes(),
            refused: false,
        },
        stderr,
        stderr_seen: 0,
        plugin: slot.manifest.name.clone(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store
}

/// Arm the deadline for the next call.
pub fn arm(store: &mut Store<State>, deadline: std::time::Duration) {
    let ticks = (deadline.as_millis() / TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
}

/// Forward what the guest wrote to stderr since the last call into tracing,
/// and return it (for panic messages).
pub fn drain_stderr(store: &mut Store<State>) -> String {
    let state = store.data_mut();
    let all = state.stderr.contents();
    let new = &all[state.stderr_seen.min(all.len())..];
    state.stderr_seen = all.len();
    let text = String::from_utf8_lossy(new).into_owned();
    for line in text.lines().filter(|l| !l.is_empty()) {
        tracing::warn!(target: "accord::plugin::stderr", plugin = %state.plugin, "{line}");
    }
    text
}

/// Turn a failed call into the specific reason.
pub fn classify(store: &mut Store<State>, slot: &Slot, err: wasmtime::Error) -> PluginError {
    let stderr = drain_stderr(store);
    let plugin = slot.manifest.name.clone();
    if store.data().limiter.refused {
        return PluginError::Memory {
            plugin,
            limit_mib: slot.manifest.limits.memory_mib,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::Deadline {
            plugin,
            limit_ms: slot.manifest.limits.deadline_ms,
        },
        Some(Trap::UnreachableCodeReached) if stderr.contains("panicked") => {
            let message = stderr
                .lines()
                .skip_while(|l| !l.contains("panicked"))
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            PluginError::Panic { plugin, message }
        }
        Some(trap) => PluginError::Trap {
            plugin,
            message: trap.to_string(),
        },
        None => PluginError::Trap {
            plugin,
            message: format!("{err:#}"),
        },
    }
}
