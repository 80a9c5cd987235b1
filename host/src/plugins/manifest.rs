//! The plugin manifest: `<name>.toml` beside `<name>.wasm` in the plugins
//! directory.
//!
//! ```toml
//! name = "csv"
//! kind = "parser"
//! version = "0.1.0"
//! description = "Configurable CSV parser"
//! # wasm = "csv.wasm"        # default: the manifest's file stem + .wasm
//! [limits]
//! deadline_ms = 5000          # per call
//! memory_mib = 256            # per instance
//! [config]                    # defaults; a source's config overlays these keys
//! delimiter = ","
//! ```

use crate::domain::PluginKind;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Per-call deadline unless the manifest says otherwise: long enough for a
/// 1 MiB chunk of any sane format, short enough that a stuck plugin does not
/// stall an import queue for long.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Per-instance memory cap unless the manifest says otherwise: a parser holds
/// one chunk plus its output batch; whole-document formats buffer more.
pub const DEFAULT_MEMORY_MIB: u64 = 256;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub wasm: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub config: toml::Table,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
}

fn default_deadline_ms() -> u64 {
    DEFAULT_DEADLINE.as_millis() as u64
}
fn default_memory_mib() -> u64 {
    DEFAULT_MEMORY_MIB
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: default_deadline_ms(),
            memory_mib: default_memory_mib(),
        }
    }
}

impl Limits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize).saturating_mul(1 << 20)
    }
}

impl Manifest {
    /// Read and check a manifest; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m: Manifest = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{}: name `{}` must be non-empty [A-Za-z0-9_-]",
                path.display(),
                m.name
            ));
        }
        if super::inspect::Version::parse(&m.version).is_none() {
            return Err(format!(
                "{}: version `{}` is not semver (x.y.z)",
                path.display(),
                m.version
            ));
        }
        if m.limits.deadline_ms == 0 || m.limits.memory_mib == 0 {
            return Err(format!("{}: limits must be positive", path.display()));
        }
        Ok(m)
    }

    /// A manifest for a bare `.wasm` (CLI use): named after the file.
    pub fn for_file(wasm: &Path, kind: PluginKind) -> Manifest {
        Manifest {
            name: wasm
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind,
            version: "0.0.0".into(),
            description: String::new(),
            wasm: Some(wasm.to_path_buf()),
            limits: Limits::default(),
            config: toml::Table::new(),
        }
    }

    /// Where the component lives, relative to the manifest's directory.
    pub fn wasm_path(&self, manifest_path: &Path) -> PathBuf {
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        match &self.wasm {
            Some(p) => dir.join(p),
            None => manifest_path.with_extension("wasm"),
        }
    }

    /// The manifest's default config overlaid with `overrides` (top-level keys
    /// replace), as the JSON the plugin receives.
    pub fn config_json(&self, overrides: Option<&serde_json::Value>) -> serde_json::Value {
        let mut base = serde_json::to_value(&self.config)
            .unwrap_or(serde_json::Value::Object(Default::default()));
        if let (Some(serde_json::Value::Object(over)), serde_json::Value::Object(map)) =
            (overrides, &mut base)
        {
            for (k, v) in over {
                map.insert(k.clone(), v.clone());
            }
        }
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("csv.toml");
        std::fs::write(
            &p,
            "name='csv'\nkind='parser'\nversion='0.1.0'\n[config]\ndelimiter=','\nzone='UTC'\n",
        )
        .unwrap();
        let m = Manifest::load(&p).unwrap();
        assert_eq!(m.limits.deadline(), DEFAULT_DEADLINE);
        assert_eq!(m.wasm_path(&p), dir.path().join("csv.wasm"));
        let cfg = m.config_json(Some(&serde_json::json!({"zone": "Europe/London"})));
        assert_eq!(
            cfg,
            serde_json::json!({"delimiter": ",", "zone": "Europe/London"})
        );
    }

    #[test]
    fn bad_keys_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.toml");
        std::fs::write(&p, "name='x'\nkind='parsr'\nversion='0.1.0'\n").unwrap();
        let err = Manifest::load(&p).unwrap_err();
        assert!(err.contains("x.toml") && err.contains("parsr"), "{err}");
        std::fs::write(
            &p,
            "name='x'\nkind='parser'\nversion='0.1.0'\n[limits]\ndeadline='5s'\n",
        )
        .unwrap();
        let err = Manifest::load(&p).unwrap_err();
        assert!(err.contains("deadline"), "{err}");
    }
}
