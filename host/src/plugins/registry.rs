//! Which version of each plugin is active, and hot-loading from the plugins
//! directory.
//!
//! A new or changed plugin is verified and compiled outside the lock, then
//! swapped in with one map write. Sessions hold an `Arc<Slot>`, so calls in
//! flight finish on the version they started with. A plugin that fails to
//! load leaves its previous version active and the failure visible.

use super::{Manifest, PluginError, Runtime, Slot};
use crate::domain::PluginKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How a plugin directory entry stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "error")]
pub enum PluginStatus {
    Active,
    /// Never loaded successfully: not usable.
    Failed(String),
    /// An update failed; the previous version is still serving.
    UpdateFailed(String),
}

impl std::fmt::Display for PluginStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Active => f.write_str("active"),
            Self::Failed(e) => write!(f, "failed: {e}"),
            Self::UpdateFailed(e) => write!(f, "active (update failed: {e})"),
        }
    }
}

/// One row of `accord plugin list`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub kind: Option<PluginKind>,
    pub version: Option<String>,
    pub contract: Option<String>,
    pub sha256: Option<String>,
    pub status: PluginStatus,
    pub manifest: PathBuf,
}

/// What one rescan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub loaded: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub removed: Vec<String>,
}

/// Cheap change detection: a file is re-read only when its size or mtime moved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    manifest: (u64, Option<SystemTime>),
    wasm: (u64, Option<SystemTime>),
}

fn stat(path: &Path) -> (u64, Option<SystemTime>) {
    match std::fs::metadata(path) {
        Ok(m) => (m.len(), m.modified().ok()),
        Err(_) => (0, None),
    }
}

struct Entry {
    manifest_path: PathBuf,
    active: Option<Arc<Slot>>,
    failure: Option<String>,
    seen: Fingerprint,
}

#[derive(Default)]
pub struct Registry {
    entries: RwLock<BTreeMap<String, Entry>>,
    /// Serialises rescans (watcher and periodic backstop) so one change is
    /// compiled once.
    scanning: std::sync::Mutex<()>,
}

impl Registry {
    pub fn active(&self, name: &str) -> Option<Arc<Slot>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .and_then(|e| e.active.clone())
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|(name, e)| {
                let status = match (&e.active, &e.failure) {
                    (Some(_), None) => PluginStatus::Active,
                    (Some(_), Some(f)) => PluginStatus::UpdateFailed(f.clone()),
                    (None, f) => PluginStatus::Failed(f.clone().unwrap_or_default()),
                };
                PluginInfo {
                    name: name.clone(),
                    kind: e.active.as_ref().map(|s| s.kind()),
                    version: e.active.as_ref().map(|s| s.identity.version.clone()),
                    contract: e.active.as_ref().map(|s| s.verdict.export.clone()),
                    sha256: e.active.as_ref().map(|s| s.identity.sha256.clone()),
                    status,
                    manifest: e.manifest_path.clone(),
                }
            })
            .collect()
    }

    pub fn rescan(
        &self,
        dir: &Path,
        load: impl Fn(Manifest, &Path) -> Result<Slot, PluginError>,
    ) -> ScanReport {
        let _one_at_a_time = self.scanning.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = ScanReport::default();
        let mut manifests: Vec<PathBuf> = Vec::new();
        let mut wasm_files: Vec<PathBuf> = Vec::new();
        if let Ok(read) = std::fs::read_dir(dir) {
            for entry in read.flatten() {
                let path = entry.path();
                let hidden = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                match path.extension().and_then(|e| e.to_str()) {
                    _ if hidden => {}
                    Some("toml") => manifests.push(path),
                    Some("wasm") => wasm_files.push(path),
                    _ => {}
                }
            }
        }
        manifests.sort();

        let mut present: BTreeMap<String, ()> = BTreeMap::new();
        for manifest_path in &manifests {
            let stem = manifest_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let manifest = Manifest::load(manifest_path);
            let name = manifest.as_ref().map(|m| m.name.clone()).unwrap_or(stem);
            if present.insert(name.clone(), ()).is_some() {
                let msg = format!(
                    "{}: another manifest already declares plugin `{name}`",
                    manifest_path.display()
                );
                tracing::error!(plugin = %name, "{msg}");
                report.failed.push((name, msg));
                continue;
            }
            let wasm_path = match &manifest {
                Ok(m) => m.wasm_path(manifest_path),
                Err(_) => manifest_path.with_extension("wasm"),
            };
            let seen = Fingerprint {
                manifest: stat(manifest_path),
                wasm: stat(&wasm_path),
            };
            {
                let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
                if entries
                    .get(&name)
                    .is_some_and(|e| e.seen == seen && &e.manifest_path == manifest_path)
                {
                    continue;
                }
            }
            // Compile outside the lock: serving goes on meanwhile.
            let outcome = manifest.map_err(|e| e.to_string()).and_then(|m| {
                if !wasm_path.exists() {
                    return Err(format!("{}: component not found", wasm_path.display()));
                }
                load(m, &wasm_path).map_err(|e| e.to_string())
            });
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            let entry = entries.entry(name.clone()).or_insert_with(|| Entry {
                manifest_path: manifest_path.clone(),
                active: None,
                failure: None,
                seen: seen.clone(),
            });
            entry.seen = seen;
            entry.manifest_path = manifest_path.clone();
            match outcome {
                Ok(slot) => {
                    tracing::info!(
                        plugin = %name, version = %slot.identity.version, sha256 = %slot.identity.sha256,
                        contract = %slot.verdict.export, "plugin active"
                    );
                    entry.active = Some(Arc::new(slot));
                    entry.failure = None;
                    report.loaded.push(name);
                }
                Err(reason) => {
                    if entry.active.is_some() {
                        tracing::error!(plugin = %name, %reason, "plugin update failed; previous version stays active");
                    } else {
                        tracing::error!(plugin = %name, %reason, "plugin failed to load");
                    }
                    entry.failure = Some(reason.clone());
                    report.failed.push((name, reason));
                }
            }
        }

        // A component without a manifest is visible as a failure, not ignored.
        for wasm in wasm_files {
            let claimed = manifests.iter().any(|m| {
                Manifest::load(m)
                    .map(|mf| mf.wasm_path(m) == wasm)
                    .unwrap_or(m.with_extension("wasm") == wasm)
            });
            if !claimed {
                let name = wasm
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if present.insert(name.clone(), ()).is_none() {
                    let reason = format!("{}: no manifest ({name}.toml) beside it", wasm.display());
                    let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
                    let e = entries.entry(name.clone()).or_insert_with(|| Entry {
                        manifest_path: wasm.with_extension("toml"),
                        active: None,
                        failure: None,
                        seen: Fingerprint {
                            manifest: (0, None),
                            wasm: (0, None),
                        },
                    });
                    if e.failure.as_deref() != Some(reason.as_str()) {
                        tracing::error!(plugin = %name, %reason, "plugin failed to load");
                        report.failed.push((name, reason.clone()));
                    }
                    e.failure = Some(reason);
                }
            }
        }

        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = entries
            .keys()
            .filter(|k| !present.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            entries.remove(&name);
            tracing::info!(plugin = %name, "plugin removed");
            report.removed.push(name);
        }
        report
    }
}

/// Watches the plugins directory until dropped.
pub struct Watcher {
    _watcher: Option<notify::RecommendedWatcher>,
    stop: mpsc::Sender<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// Events arriving within this window are one change (a copy is many writes).
const DEBOUNCE: Duration = Duration::from_millis(150);

impl Watcher {
    pub fn start(runtime: Runtime, dir: PathBuf, interval: Duration) -> anyhow::Result<Watcher> {
        use notify::Watcher as _;
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        // If notify is unavailable (e.g. inotify limits), the periodic rescan
        // still picks changes up.
        let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            let _ = tx.try_send(());
        })
        .and_then(|mut w| w.watch(&dir, notify::RecursiveMode::NonRecursive).map(|_| w))
        .map_err(|e| tracing::warn!(error = %e, "plugin directory watch unavailable; rescanning periodically"))
        .ok();
        std::thread::Builder::new()
            .name("accord-plugins".into())
            .spawn(move || {
                loop {
                    if stop_rx.try_recv().is_ok() {
                        return;
                    }
                    match rx.recv_timeout(interval) {
                        Ok(()) => {
                            std::thread::sleep(DEBOUNCE);
                            while rx.try_recv().is_ok() {}
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(interval),
                    }
                    if stop_rx.try_recv().is_ok() {
                        return;
                    }
                    runtime.rescan();
                }
            })?;
        Ok(Watcher {
            _watcher: watcher,
            stop: stop_tx,
        })
    }
}
