//! On-disk compile cache: a restart with unchanged plugins compiles nothing.
//!
//! Entries are keyed by sha256 of the `.wasm` and the engine's
//! precompile-compatibility hash (wasmtime version, target, settings), so an
//! engine upgrade or config change simply misses.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Default)]
pub struct CompileCache {
    dir: PathBuf,
    compiled: AtomicU64,
    hits: AtomicU64,
}

/// What the cache has done since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CacheStats {
    /// Components compiled with Cranelift (cache misses).
    pub compiled: u64,
    /// Components loaded from a precompiled artifact.
    pub hits: u64,
}

/// The engine's compatibility hash, as hex (std's Hasher is stable within a
/// build, which is all the key needs: a different build misses).
fn engine_key(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..12])
}

impl CompileCache {
    pub fn open(dir: &Path) -> std::io::Result<CompileCache> {
        std::fs::create_dir_all(dir)?;
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            ..Default::default()
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }

    pub fn entry_path(&self, engine: &Engine, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{wasm_sha256}-{}.cwasm", engine_key(engine)))
    }

    /// The component for `wasm` (whose sha256 is `sha256`), compiling and
    /// storing it on a miss.
    pub fn load(&self, engine: &Engine, wasm: &[u8], sha256: &str) -> anyhow::Result<Component> {
        let path = self.entry_path(engine, sha256);
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine
            // with the same compatibility hash (it is in the name), into a
            // directory only this daemon writes; a truncated file fails
            // deserialization's own checks and is recompiled below.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unreadable cache entry")
                }
            }
        }
        let artifact = engine.precompile_component(wasm)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        // Write then rename, so a crash never leaves a half-written entry under
        // the real name.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &artifact)?;
        std::fs::rename(&tmp, &path)?;
        // SAFETY: just produced by this engine.
        Ok(unsafe { Component::deserialize(engine, &artifact)? })
    }
}
