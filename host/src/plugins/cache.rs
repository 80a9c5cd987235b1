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
        // Write a uniquely named temporary file, then rename: a crash never
        // leaves a half-written entry under the real name, and two runtimes
        // compiling the same component at once (threads of one process
        // included) each publish a whole file; the last rename wins.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, &artifact)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        // SAFETY: just produced by this engine.
        Ok(unsafe { Component::deserialize(engine, &artifact)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the preamble of an empty one.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn concurrent_misses_on_one_entry_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = std::sync::Arc::new(CompileCache::open(dir.path()).unwrap());
        let engine = Engine::default();
        let sha = hex::encode(Sha256::digest(EMPTY_COMPONENT));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (cache, engine, sha) = (cache.clone(), engine.clone(), sha.clone());
                std::thread::spawn(move || cache.load(&engine, EMPTY_COMPONENT, &sha).map(|_| ()))
            })
            .collect();
        for t in threads {
            t.join().unwrap().expect("every concurrent load succeeds");
        }
        let stats = cache.stats();
        assert_eq!(stats.compiled + stats.hits, 6);
        assert!(cache.entry_path(&engine, &sha).exists());
        // Only the entry is left behind, no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn second_load_is_a_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path()).unwrap();
        let engine = Engine::default();
        let sha = hex::encode(Sha256::digest(EMPTY_COMPONENT));
        cache.load(&engine, EMPTY_COMPONENT, &sha).unwrap();
        cache.load(&engine, EMPTY_COMPONENT, &sha).unwrap();
        assert_eq!(
            cache.stats(),
            CacheStats {
                compiled: 1,
                hits: 1
            }
        );
    }
}
