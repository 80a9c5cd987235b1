//! The directory channel: one watcher per source inbox.
//!
//! A file is taken in only when complete: dot-files, `*.part` and `*.tmp`
//! names and names outside the inbox glob are ignored, and its size and
//! mtime must be unchanged across two looks [`STABLE_FOR`] apart. Files of a
//! source are processed one at a time, in name order, by that source's task;
//! notify events only wake the task early, and a rescan every
//! [`RESCAN_EVERY`] catches whatever notify missed.
//!
//! After the import is committed the file moves to
//! `<data_dir>/archive/<source>/<yyyy-mm-dd (UTC)>/<name>` (parsed or
//! duplicate) or `<data_dir>/failed/<source>/<name>` with
//! `<name>.error.txt` beside it; a name already taken there gets a `.1`,
//! `.2` … before its extension. Then the move is recorded on the import
//! ([`crate::store::Store::mark_disposed`]).
//!
//! # Crash safety
//!
//! Killed at any point, the next start leaves every file in exactly one of
//! inbox / archive / failed and every row stored once:
//!
//! - before the receive commits, nothing was recorded: the file is taken in
//!   again;
//! - after it, the file's sha256 finds its import
//!   ([`crate::store::Store::find_import_by_sha`]): one still `received` is
//!   parsed (if [`crate::pipeline::recover`] has not already), one parsed or
//!   failed but not disposed just has its move finished — it is not
//!   recorded again as a duplicate. Only a directory import of the same file
//!   name counts: the same bytes under another name, or once brought by HTTP,
//!   are a new drop;
//! - the move is one `rename` within the data dir's file system. When the
//!   inbox is on another file system the file is copied to a hidden
//!   temporary name beside its destination, renamed into place, then
//!   removed from the inbox: a crash between those last two steps leaves a
//!   copy in both places (the only window, and only across file systems).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Inbox;
use crate::pipeline::{self, Context, ImportOutcome, IngestError};
use crate::store::{Channel, ImportFilter, ImportRow, ImportStatus};

/// Backstop rescan interval, for events notify missed (or could not watch).
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// A file's size and mtime must hold this long before it is taken: long
/// enough to see a copy in progress move, short enough to feel immediate.
pub const STABLE_FOR: Duration = Duration::from_millis(250);

/// After a failure that may pass (store unavailable, a move that failed),
/// leave the file alone this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Failures other than "store unavailable" before the file is given up on
/// and moved to `failed/`.
const MAX_ATTEMPTS: u32 = 3;

/// Read size for hashing and importing files.
const READ_CHUNK: usize = 256 * 1024;

/// How many recent duplicate imports of a source are checked for an
/// interrupted move (a duplicate is recorded and moved within seconds, so
/// an unfinished one is always among the latest).
const RECENT_DUPLICATES: u32 = 200;

/// What happened to one inbox file.
#[derive(Debug)]
pub enum Disposition {
    /// Parsed (or a duplicate) and moved to the archive.
    Archived {
        outcome: ImportOutcome,
        path: PathBuf,
    },
    /// Moved to `failed/` with its `.error.txt`.
    Failed {
        import_id: Option<i64>,
        reason: String,
        path: PathBuf,
    },
    /// Left in the inbox to try again later (the store was unavailable, or
    /// a move failed).
    Retry { reason: String, give_up: bool },
    /// The file went away before it was read.
    Vanished,
}

/// The running inbox watchers; [`Inboxes::shutdown`] stops them.
pub struct Inboxes {
    tasks: Vec<(String, JoinHandle<()>)>,
    stop: CancellationToken,
}

impl Inboxes {
    /// Start one watcher per source with an inbox (creating the inbox
    /// directories). Fails only when an inbox cannot be created.
    pub fn start(ctx: Arc<Context>) -> std::io::Result<Inboxes> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for source in &ctx.config.sources {
            let Some(inbox) = source.inbox.clone() else {
                continue;
            };
            std::fs::create_dir_all(&inbox.path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{}: {e}", inbox.path.display()))
            })?;
            let task = tokio::spawn(watch(
                ctx.clone(),
                source.name.clone(),
                inbox,
                stop.child_token(),
            ));
            tasks.push((source.name.clone(), task));
        }
        Ok(Inboxes { tasks, stop })
    }

    /// Stop taking new files, give the ones in progress `grace` to finish,
    /// then abandon them (a rolled-back import is redone at the next start).
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        for (source, mut task) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(source = %source, "inbox still busy at shutdown; abandoning its import");
                task.abort();
            }
        }
    }
}

/// What one file looked like at the last scan.
struct Seen {
    size: u64,
    mtime: Option<SystemTime>,
    since: Instant,
    /// Set after a failure: not before then.
    retry_at: Option<Instant>,
    attempts: u32,
}

async fn watch(ctx: Arc<Context>, source: String, inbox: Inbox, stop: CancellationToken) {
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let _watcher = notify_watcher(&inbox.path, wake_tx)
        .map_err(|e| {
            tracing::warn!(source = %source, inbox = %inbox.path.display(), error = %e,
                "inbox watch unavailable; rescanning every second")
        })
        .ok();
    tracing::info!(source = %source, inbox = %inbox.path.display(), glob = %inbox.glob, "watching inbox");
    let mut seen: HashMap<OsString, Seen> = HashMap::new();
    let mut unreadable_names = std::collections::HashSet::new();
    loop {
        let (ready, waiting) = scan(&inbox, &mut seen, &mut unreadable_names).await;
        for name in ready {
            if stop.is_cancelled() {
                return;
            }
            let path = inbox.path.join(&name);
            let result = process_file(&ctx, &source, &path).await;
            match result {
                Disposition::Retry { give_up: false, .. } => {
                    if let Some(s) = seen.get_mut(&name) {
                        s.attempts += 1;
                        s.retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                }
                Disposition::Retry {
                    give_up: true,
                    reason,
                } => {
                    let attempts = seen.get(&name).map_or(0, |s| s.attempts) + 1;
                    if attempts >= MAX_ATTEMPTS {
                        give_up(&ctx, &source, &path, &reason).await;
                        seen.remove(&name);
                    } else if let Some(s) = seen.get_mut(&name) {
                        s.attempts = attempts;
                        s.retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                }
                _ => {
                    seen.remove(&name);
                }
            }
        }
        let wait = if waiting { STABLE_FOR } else { RESCAN_EVERY };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake_rx.recv() => {
                // A burst of events is one wake-up.
                while wake_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn notify_watcher(
    dir: &Path,
    wake: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut w = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        // Full means a wake-up is already pending: nothing is lost.
        let _ = wake.try_send(());
    })?;
    w.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(w)
}

/// Whether a name in the inbox is a candidate at all.
pub fn is_candidate(inbox: &Inbox, name: &str) -> bool {
    !name.starts_with('.')
        && !name.ends_with(".part")
        && !name.ends_with(".tmp")
        && inbox.matches(name)
}

/// List the inbox; return the files that have been stable for
/// [`STABLE_FOR`] (name order) and whether others are still settling.
async fn scan(
    inbox: &Inbox,
    seen: &mut HashMap<OsString, Seen>,
    unreadable_names: &mut std::collections::HashSet<OsString>,
) -> (Vec<OsString>, bool) {
    let dir = inbox.path.clone();
    let listing = tokio::task::spawn_blocking(
        move || -> std::io::Result<Vec<(OsString, u64, Option<SystemTime>)>> {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let Ok(entry) = entry else { continue };
                let Ok(meta) = std::fs::metadata(entry.path()) else {
                    continue;
                };
                if meta.is_file() {
                    out.push((entry.file_name(), meta.len(), meta.modified().ok()));
                }
            }
            Ok(out)
        },
    )
    .await;
    let listing = match listing {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::warn!(inbox = %inbox.path.display(), error = %e, "cannot list inbox");
            return (Vec::new(), false);
        }
        Err(_) => return (Vec::new(), false),
    };
    let now = Instant::now();
    let mut ready = Vec::new();
    let mut waiting = false;
    let mut present = std::collections::HashSet::new();
    for (name, size, mtime) in listing {
        let Some(text) = name.to_str() else {
            // Once per name, not every scan.
            if unreadable_names.insert(name.clone()) {
                tracing::warn!(inbox = %inbox.path.display(), name = ?name, "ignoring a file name that is not UTF-8");
            }
            continue;
        };
        if !is_candidate(inbox, text) {
            continue;
        }
        present.insert(name.clone());
        match seen.get_mut(&name) {
            Some(s) if s.size == size && s.mtime == mtime => {
                if s.retry_at.is_some_and(|t| now < t) {
                    continue;
                }
                if now.duration_since(s.since) >= STABLE_FOR {
                    ready.push(name);
                } else {
                    waiting = true;
                }
            }
            Some(s) => {
                *s = Seen {
                    size,
                    mtime,
                    since: now,
                    retry_at: None,
                    attempts: s.attempts,
                };
                waiting = true;
            }
            None => {
                seen.insert(
                    name,
                    Seen {
                        size,
                        mtime,
                        since: now,
                        retry_at: None,
                        attempts: 0,
                    },
                );
                waiting = true;
            }
        }
    }
    seen.retain(|name, _| present.contains(name));
    ready.sort();
    (ready, waiting)
}

/// Take one complete inbox file through the pipeline and move it out of
/// the inbox (see the module docs for what happens after a crash).
pub async fn process_file(ctx: &Context, source: &str, path: &Path) -> Disposition {
    let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
        return Disposition::Retry {
            reason: format!("{}: not a file name", path.display()),
            give_up: true,
        };
    };
    let sha256 = match hash_file(path).await {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Disposition::Vanished,
        Err(e) => {
            tracing::error!(source = %source, file = %name, error = %e, "cannot read inbox file");
            return Disposition::Retry {
                reason: format!("reading {name}: {e}"),
                give_up: true,
            };
        }
    };

    let result = match unfinished_import(ctx, source, &name, &sha256).await {
        Err(e) => Err(IngestError::Store(e)),
        Ok(Some(row)) => {
            tracing::info!(source = %source, file = %name, import = row.id, status = %row.status,
                "finishing an interrupted import");
            match row.status {
                ImportStatus::Received => pipeline::parse_import(ctx, row.id).await,
                _ => pipeline::settled(ctx, row).await,
            }
        }
        Ok(None) => import_file(ctx, source, &name, path).await,
    };

    match result {
        Ok(outcome) => archive(ctx, source, &name, path, outcome).await,
        Err(IngestError::Unparseable { import_id, reason }) => {
            fail(ctx, source, &name, path, Some(import_id), &reason).await
        }
        Err(IngestError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Disposition::Vanished
        }
        Err(IngestError::Io(e)) => {
            tracing::error!(source = %source, file = %name, error = %e, "cannot read inbox file");
            Disposition::Retry {
                reason: format!("reading {name}: {e}"),
                give_up: true,
            }
        }
        Err(IngestError::Store(e)) if e.is_unavailable() => {
            tracing::error!(source = %source, file = %name, error = %e, "store unavailable; will retry");
            Disposition::Retry {
                reason: e.to_string(),
                give_up: false,
            }
        }
        Err(e) => {
            tracing::error!(source = %source, file = %name, error = %e, "import failed; will retry");
            Disposition::Retry {
                reason: e.to_string(),
                give_up: true,
            }
        }
    }
}

async fn import_file(
    ctx: &Context,
    source: &str,
    name: &str,
    path: &Path,
) -> Result<ImportOutcome, IngestError> {
    let file = tokio::fs::File::open(path).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK);
    // Files are as large as they are: the size limit is the HTTP channel's.
    pipeline::import_stream(
        ctx,
        source,
        Channel::Directory,
        Some(name.to_owned()),
        None,
        u64::MAX,
        body,
    )
    .await
}

/// A directory import of this file (same source, bytes and name) whose
/// move never finished, if any.
async fn unfinished_import(
    ctx: &Context,
    source: &str,
    name: &str,
    sha256: &str,
) -> crate::store::Result<Option<ImportRow>> {
    let ours = |row: &ImportRow| {
        row.channel == Channel::Directory
            && row.disposed_at.is_none()
            && row.original_name.as_deref() == Some(name)
            && row.sha256 == sha256
    };
    if let Some(row) = ctx.store.find_import_by_sha(source, sha256).await?
        && ours(&row)
    {
        return Ok(Some(row));
    }
    let recent = ctx
        .store
        .list_imports(&ImportFilter {
            source: Some(source.to_owned()),
            status: Some(ImportStatus::Duplicate),
            limit: Some(RECENT_DUPLICATES),
            cursor: None,
        })
        .await?;
    Ok(recent.items.into_iter().find(ours))
}

async fn hash_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn archive(
    ctx: &Context,
    source: &str,
    name: &str,
    path: &Path,
    outcome: ImportOutcome,
) -> Disposition {
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let dir = ctx.config.data_dir.join("archive").join(source).join(day);
    let (from, dir2, name2) = (path.to_owned(), dir.clone(), name.to_owned());
    let moved = tokio::task::spawn_blocking(move || move_into(&from, &dir2, &name2, None))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    match moved {
        Ok(dest) => {
            record_disposal(ctx, outcome.import_id, &dest).await;
            tracing::info!(source = %source, file = %name, import = outcome.import_id, status = %outcome.status,
                archived = %dest.display(), "inbox file archived");
            Disposition::Archived {
                outcome,
                path: dest,
            }
        }
        Err(e) => {
            tracing::error!(source = %source, file = %name, import = outcome.import_id, error = %e,
                "cannot move the file to the archive; will retry");
            Disposition::Retry {
                reason: format!("moving {name} to {}: {e}", dir.display()),
                give_up: false,
            }
        }
    }
}

async fn fail(
    ctx: &Context,
    source: &str,
    name: &str,
    path: &Path,
    import_id: Option<i64>,
    reason: &str,
) -> Disposition {
    let dir = ctx.config.data_dir.join("failed").join(source);
    let note = match import_id {
        Some(id) => format!(
            "{name}: import {id} of source `{source}` failed\n\n{reason}\n\n\
             The bytes are retained with the import; fix the cause and drop the file again.\n"
        ),
        None => format!("{name}: source `{source}`: could not be imported\n\n{reason}\n"),
    };
    let (from, dir2, name2) = (path.to_owned(), dir.clone(), name.to_owned());
    let moved = tokio::task::spawn_blocking(move || move_into(&from, &dir2, &name2, Some(&note)))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    match moved {
        Ok(dest) => {
            if let Some(id) = import_id {
                record_disposal(ctx, id, &dest).await;
            }
            tracing::info!(source = %source, file = %name, import = ?import_id, failed = %dest.display(),
                "inbox file moved to failed");
            Disposition::Failed {
                import_id,
                reason: reason.to_owned(),
                path: dest,
            }
        }
        Err(e) => {
            tracing::error!(source = %source, file = %name, import = ?import_id, error = %e,
                "cannot move the file to failed; will retry");
            Disposition::Retry {
                reason: format!("moving {name} to {}: {e}", dir.display()),
                give_up: false,
            }
        }
    }
}

/// A file that could not be imported at all, after [`MAX_ATTEMPTS`].
async fn give_up(ctx: &Context, source: &str, path: &Path, reason: &str) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let _ = fail(ctx, source, name, path, None, reason).await;
}

async fn record_disposal(ctx: &Context, import_id: i64, dest: &Path) {
    if let Err(e) = ctx
        .store
        .mark_disposed(import_id, &dest.display().to_string())
        .await
    {
        // The file is where it belongs; only the record of it is missing.
        tracing::error!(import = import_id, to = %dest.display(), error = %e,
            "could not record where the file went");
    }
}

/// Move `from` into `dir` under `name` (or the first free `stem.N.ext`),
/// writing `note` to `<final name>.error.txt` first when given. Returns the
/// destination.
fn move_into(from: &Path, dir: &Path, name: &str, note: Option<&str>) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let dest = free_name(dir, name);
    if let Some(note) = note {
        let mut err_name = dest.file_name().unwrap_or_default().to_owned();
        err_name.push(".error.txt");
        // Best effort: the note must not keep the file in the inbox (a full
        // disk can refuse it while a rename still works).
        if let Err(e) = std::fs::write(dir.join(&err_name), note) {
            tracing::warn!(file = %dir.join(&err_name).display(), error = %e, "cannot write the error note");
        }
    }
    match std::fs::rename(from, &dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = dir.join(format!(
                ".{}.accord-tmp",
                dest.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::copy(from, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &dest)?;
            std::fs::remove_file(from)?;
        }
        Err(e) => return Err(e),
    }
    // Durable across power loss too, not only a process kill.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    if let Some(parent) = from.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(dest)
}

/// `dir/name`, or `dir/stem.1.ext`, `dir/stem.2.ext` … whichever is free.
/// Only the file counts: an error note without its file is a leftover of an
/// interrupted move, and the retried move rewrites it.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let taken = |n: &str| dir.join(n).symlink_metadata().is_ok();
    if !taken(name) {
        return dir.join(name);
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    (1u64..)
        .map(|n| format!("{stem}.{n}{ext}"))
        .find(|candidate| !taken(candidate))
        .map(|n| dir.join(n))
        .unwrap_or_else(|| dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        let inbox = Inbox {
            path: "/in".into(),
            glob: "*.csv".into(),
        };
        assert!(is_candidate(&inbox, "day-1.csv"));
        assert!(!is_candidate(&inbox, ".day-1.csv"));
        assert!(!is_candidate(&inbox, "day-1.csv.part"));
        assert!(!is_candidate(&inbox, "day-1.csv.tmp"));
        assert!(!is_candidate(&inbox, "day-1.txt"));
        let any = Inbox {
            path: "/in".into(),
            glob: "*".into(),
        };
        assert!(!is_candidate(&any, "x.part") && !is_candidate(&any, "x.tmp"));
        assert!(is_candidate(&any, "x"));
    }

    #[test]
    fn free_names_keep_the_extension() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(free_name(dir.path(), "a.csv"), dir.path().join("a.csv"));
        std::fs::write(dir.path().join("a.csv"), "").unwrap();
        assert_eq!(free_name(dir.path(), "a.csv"), dir.path().join("a.1.csv"));
        std::fs::write(dir.path().join("a.1.csv.error.txt"), "").unwrap();
        assert_eq!(free_name(dir.path(), "a.csv"), dir.path().join("a.1.csv"));
        std::fs::write(dir.path().join("a.1.csv"), "").unwrap();
        assert_eq!(free_name(dir.path(), "a.csv"), dir.path().join("a.2.csv"));
        std::fs::write(dir.path().join("noext"), "").unwrap();
        assert_eq!(free_name(dir.path(), "noext"), dir.path().join("noext.1"));
    }

    #[test]
    fn moves_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("in");
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::write(inbox.join("x.csv"), "data").unwrap();
        let dest = move_into(
            &inbox.join("x.csv"),
            &dir.path().join("failed"),
            "x.csv",
            Some("why"),
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "data");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("failed/x.csv.error.txt")).unwrap(),
            "why"
        );
        assert!(!inbox.join("x.csv").exists());
    }
}
