//! A private PostgreSQL server under accord's data dir, for running without
//! a `database_url`.
//!
//! Uses the server binaries already installed on the machine (found via
//! `pg_config --bindir`, `/usr/lib/postgresql/<version>/bin`,
//! `/usr/local/pgsql/bin`, then `PATH`); initialises a cluster at
//! `<data_dir>/postgres` the first time; listens only on a unix socket in
//! `<data_dir>/run` (no TCP port to collide with or expose); creates the
//! `accord` database; and stops the server on [`EmbeddedPostgres::stop`] or
//! drop.
//!
//! PostgreSQL refuses to run as root. When accord runs as root, the cluster
//! and the socket directory are handed to the `postgres` system user (which
//! the server package creates) and every server command runs as that user.
//!
//! After a crash of accord (even SIGKILL) the next start copes: a server
//! still running on the cluster is reused, and a stale `postmaster.pid` or
//! socket lock from a dead one is cleared first (in containers the old pid
//! is often reused by an unrelated process, which would make PostgreSQL
//! refuse to start).

use std::ffi::{CString, OsStr};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

/// The port only names the socket file (`.s.PGSQL.5432`); nothing listens
/// on TCP, so it cannot clash with another server.
pub const SOCKET_PORT: u16 = 5432;

/// How long `pg_ctl` may take to start or stop the server. Crash recovery
/// after an unclean stop replays WAL, which can take a while on big clusters.
const PG_CTL_TIMEOUT_SECS: &str = "120";

/// The database accord uses inside the cluster.
pub const DATABASE: &str = "accord";

/// sockaddr_un.sun_path is 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb, pg_ctl and postgres in: {searched}); \
         install the PostgreSQL server package (e.g. `apt-get install postgresql`), \
         or set `database_url` in accord.toml (or ACCORD_DATABASE_URL) to use an existing server"
    )]
    NoServer { searched: String },
    #[error(
        "accord runs as root, PostgreSQL refuses to, and there is no `postgres` system user to run \
         the embedded server as; install the PostgreSQL server package (e.g. `apt-get install \
         postgresql`, which creates that user), or set `database_url` in accord.toml (or \
         ACCORD_DATABASE_URL)"
    )]
    NoPostgresUser,
    #[error(
        "the embedded server runs as the `postgres` user (uid {uid}), which cannot reach {data_dir}: \
         {blocker} is not searchable by it; use a data_dir outside it, or `chmod o+x {blocker}`"
    )]
    NotTraversable {
        uid: u32,
        data_dir: PathBuf,
        blocker: PathBuf,
    },
    #[error(
        "socket path {path} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of unix sockets; \
         use a shorter data_dir"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error(
        "cluster {cluster} was created by PostgreSQL {cluster_version}, but the server binaries in \
         {bindir} are version {found}; install PostgreSQL {cluster_version} or move the cluster away"
    )]
    VersionMismatch {
        cluster: PathBuf,
        cluster_version: String,
        bindir: PathBuf,
        found: String,
    },
    #[error(
        "cluster {cluster} is in use by a server (pid {pid}) that does not answer on {socket}; \
         stop it first"
    )]
    InUse {
        cluster: PathBuf,
        pid: i32,
        socket: PathBuf,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("embedded server at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: sqlx::Error,
    },
}

type Result<T, E = EmbeddedError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A running private server; see the module docs.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bindir: PathBuf,
    data_dir: PathBuf,
    cluster: PathBuf,
    run_dir: PathBuf,
    run_as: Option<RunAs>,
    url: String,
    running: bool,
}

#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Initialise (first time) and start the cluster under `data_dir`, or
    /// adopt one already running there; then ensure the `accord` database.
    pub async fn start(data_dir: &Path) -> Result<EmbeddedPostgres> {
        std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        let data_dir = std::fs::canonicalize(data_dir).map_err(io_err(data_dir))?;
        let cluster = data_dir.join("postgres");
        let run_dir = data_dir.join("run");

        let socket = run_dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(EmbeddedError::SocketPathTooLong { path: socket, len });
        }

        // SAFETY: geteuid has no preconditions and cannot fail.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            let user = postgres_user().ok_or(EmbeddedError::NoPostgresUser)?;
            ensure_reachable(&data_dir, user)?;
            Some(user)
        } else {
            None
        };

        create_private_dir(&run_dir, run_as)?;

        let cluster_version = std::fs::read_to_string(cluster.join("PG_VERSION"))
            .ok()
            .map(|v| v.trim().to_owned());
        let (bindir, found) = find_bindir(cluster_version.as_deref()).await?;
        if let Some(v) = &cluster_version
            && *v != found
        {
            return Err(EmbeddedError::VersionMismatch {
                cluster: cluster.clone(),
                cluster_version: v.clone(),
                bindir,
                found,
            });
        }

        let mut pg = EmbeddedPostgres {
            url: socket_url(&run_dir, DATABASE),
            bindir,
            data_dir,
            cluster,
            run_dir,
            run_as,
            running: false,
        };
        if cluster_version.is_none() {
            pg.initdb().await?;
        }
        pg.write_config()?;

        match pg.live_postmaster()? {
            Some(pid) => {
                // Left running by an accord that died without stopping it.
                tracing::info!(pid, cluster = %pg.cluster.display(), "adopting running embedded PostgreSQL");
                if connect_with_retry(&pg.run_dir, "postgres", Duration::from_secs(10))
                    .await
                    .is_err()
                {
                    return Err(EmbeddedError::InUse {
                        cluster: pg.cluster.clone(),
                        pid,
                        socket,
                    });
                }
            }
            None => {
                pg.clear_stale_locks()?;
                pg.pg_ctl_start().await?;
            }
        }
        pg.running = true;
        pg.ensure_database().await?;
        Ok(pg)
    }

    /// A sqlx URL for the `accord` database over the unix socket.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the socket (what libpq calls the host).
    pub fn socket_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Stop the server (fast shutdown: active sessions are ended, committed
    /// work is safe).
    pub async fn stop(mut self) -> Result<()> {
        self.running = false;
        let cluster = self.cluster.clone();
        self.pg_ctl(&[
            "stop".as_ref(),
            "-D".as_ref(),
            cluster.as_os_str(),
            "-m".as_ref(),
            "fast".as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            PG_CTL_TIMEOUT_SECS.as_ref(),
        ])
        .await
        .map(drop)
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bindir.join(program));
        cmd.current_dir(&self.data_dir)
            // Our arguments say everything; inherited libpq settings must not.
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGOPTIONS")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C meant for accord must not
            // reach the server before accord has finished its work.
            .process_group(0);
        if let Some(user) = self.run_as {
            // std drops root's supplementary groups along with the uid.
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    async fn run(&self, program: &str, args: &[&OsStr]) -> Result<String> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .await
            .map_err(io_err(&self.bindir.join(program)))?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        if output.status.success() {
            Ok(text)
        } else {
            Err(EmbeddedError::Command {
                command: describe(program, args),
                status: output.status.to_string(),
                output: text.trim().to_owned(),
            })
        }
    }

    async fn pg_ctl(&self, args: &[&OsStr]) -> Result<String> {
        self.run("pg_ctl", args).await
    }

    /// initdb into a scratch directory and rename it into place, so a crash
    /// mid-initdb never leaves a half cluster that looks initialised.
    async fn initdb(&self) -> Result<()> {
        let scratch = self.data_dir.join("postgres.initdb");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).map_err(io_err(&scratch))?;
        }
        create_private_dir(&scratch, self.run_as)?;
        tracing::info!(cluster = %self.cluster.display(), "initialising embedded PostgreSQL cluster");
        self.run(
            "initdb",
            &[
                "-D".as_ref(),
                scratch.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )
        .await?;
        // --no-sync above, one sync here: initdb's own per-file fsyncs take
        // seconds on slow disks; syncing the finished tree once is enough
        // for the rename below to be durable.
        sync_all(&scratch)?;
        let conf = scratch.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_err(&conf))?;
        f.write_all(
            b"\n# accord: settings it owns (socket only, logging) are rewritten at every start.\n\
              include_if_exists = 'accord.conf'\n",
        )
        .map_err(io_err(&conf))?;
        std::fs::rename(&scratch, &self.cluster).map_err(io_err(&self.cluster))?;
        Ok(())
    }

    /// Rewritten at each start so moving the data dir moves the socket too.
    fn write_config(&self) -> Result<()> {
        let path = self.cluster.join("accord.conf");
        let text = format!(
            "# Written by accord at every start; put your own settings in postgresql.conf.\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{}'\n\
             port = {SOCKET_PORT}\n\
             logging_collector = on\n\
             log_directory = 'log'\n\
             log_filename = 'postgresql-%a.log'\n\
             log_truncate_on_rotation = on\n\
             log_rotation_age = 1d\n\
             log_rotation_size = 0\n",
            self.run_dir.display().to_string().replace('\'', "''"),
        );
        std::fs::write(&path, text).map_err(io_err(&path))?;
        chown_to(&path, self.run_as)
    }

    /// The pid of a live postmaster on this cluster, if any.
    fn live_postmaster(&self) -> Result<Option<i32>> {
        let pid_file = self.cluster.join("postmaster.pid");
        let text = match std::fs::read_to_string(&pid_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(EmbeddedError::Io {
                    path: pid_file,
                    source: e,
                });
            }
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Ok(None);
        };
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if Path::new("/proc/self").exists() {
            // A pid alone proves nothing after a restart (containers reuse
            // low pids at once): it must be a server started on this cluster
            // (the postmaster keeps its `-D <cluster>` command line).
            let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
            let cluster = self.cluster.as_os_str().as_encoded_bytes();
            let ours = cmdline.windows(cluster.len()).any(|w| w == cluster);
            Ok(ours.then_some(pid))
        } else {
            // SAFETY: kill with signal 0 only checks for existence.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            Ok(alive.then_some(pid))
        }
    }

    fn clear_stale_locks(&self) -> Result<()> {
        let lock = format!(".s.PGSQL.{SOCKET_PORT}");
        for path in [
            self.cluster.join("postmaster.pid"),
            self.run_dir.join(&lock),
            self.run_dir.join(format!("{lock}.lock")),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed stale PostgreSQL lock"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EmbeddedError::Io { path, source: e }),
            }
        }
        Ok(())
    }

    async fn pg_ctl_start(&self) -> Result<()> {
        // Startup messages before the logging collector takes over; with -l
        // the server does not hold our output pipes open either.
        let startup_log = self.cluster.join("startup.log");
        let started = self
            .pg_ctl(&[
                "start".as_ref(),
                "-D".as_ref(),
                self.cluster.as_os_str(),
                "-l".as_ref(),
                startup_log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                PG_CTL_TIMEOUT_SECS.as_ref(),
            ])
            .await;
        match started {
            Ok(_) => Ok(()),
            Err(EmbeddedError::Command {
                command,
                status,
                mut output,
            }) => {
                if let Ok(log) = std::fs::read_to_string(&startup_log) {
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    output.push_str("\nserver log (");
                    output.push_str(&startup_log.display().to_string());
                    output.push_str("):\n");
                    output.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                }
                Err(EmbeddedError::Command {
                    command,
                    status,
                    output,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn ensure_database(&self) -> Result<()> {
        let connect_err = |source| EmbeddedError::Connect {
            socket: self.run_dir.clone(),
            source,
        };
        let mut conn = connect_with_retry(&self.run_dir, "postgres", Duration::from_secs(10))
            .await
            .map_err(connect_err)?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(DATABASE)
                .fetch_optional(&mut conn)
                .await
                .map_err(connect_err)?;
        if exists.is_none() {
            match sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
                .execute(&mut conn)
                .await
            {
                Ok(_) => {}
                // Created meanwhile by another process: that is the goal.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                Err(e) => return Err(connect_err(e)),
            }
        }
        let _ = conn.close().await;
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        // Blocking, but only at shutdown; an async stop() is the normal path.
        let mut cmd = std::process::Command::new(self.bindir.join("pg_ctl"));
        cmd.args(["stop", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.cluster)
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = self.run_as {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(user.uid).gid(user.gid);
        }
        if let Err(e) = cmd.status() {
            tracing::warn!(error = %e, "could not stop the embedded PostgreSQL server");
        }
    }
}

fn describe(program: &str, args: &[&OsStr]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn postgres_user() -> Option<RunAs> {
    let name = CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns NULL or a pointer to static storage valid
    // until the next getpw* call; both fields are copied out immediately.
    // Start-up is single-threaded with respect to getpw* in accord.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(RunAs {
                uid: (*pw).pw_uid,
                gid: (*pw).pw_gid,
            })
        }
    }
}

/// The postgres user must be able to walk down to `data_dir`. Make
/// `data_dir` itself searchable (search only, not listable) if needed, but
/// never loosen its parents behind the operator's back.
fn ensure_reachable(data_dir: &Path, user: RunAs) -> Result<()> {
    let searchable = |meta: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt as _;
        let mode = meta.mode();
        if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    };
    for ancestor in data_dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(io_err(ancestor))?;
        if !searchable(&meta) {
            return Err(EmbeddedError::NotTraversable {
                uid: user.uid,
                data_dir: data_dir.to_owned(),
                blocker: ancestor.to_owned(),
            });
        }
    }
    let meta = std::fs::metadata(data_dir).map_err(io_err(data_dir))?;
    if !searchable(&meta) {
        let mut perms = meta.permissions();
        perms.set_mode(perms.mode() | 0o001);
        std::fs::set_permissions(data_dir, perms).map_err(io_err(data_dir))?;
    }
    Ok(())
}

fn chown_to(path: &Path, run_as: Option<RunAs>) -> Result<()> {
    if let Some(user) = run_as {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_err(path))?;
    }
    Ok(())
}

/// A 0700 directory owned by the server's user (PostgreSQL insists on it
/// for the cluster; for the socket it keeps other local users out, which
/// matters because the cluster trusts every local connection).
fn create_private_dir(path: &Path, run_as: Option<RunAs>) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io_err(path))?;
    chown_to(path, run_as)
}

fn sync_all(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err(&path))?;
        if kind.is_dir() {
            sync_all(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&path))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// Candidate bin directories, best first; with an existing cluster of
/// `want` major version, that version's directory comes first.
fn candidate_bindirs(pg_config_bindir: Option<PathBuf>, want: Option<&str>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(want) = want {
        out.push(PathBuf::from(format!("/usr/lib/postgresql/{want}/bin")));
    }
    out.extend(pg_config_bindir);
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    out.extend(versioned.into_iter().map(|(_, p)| p));
    out.push(PathBuf::from("/usr/local/pgsql/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// Find server binaries; returns the directory and its major version.
async fn find_bindir(want: Option<&str>) -> Result<(PathBuf, String)> {
    let pg_config = tokio::process::Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = candidate_bindirs(pg_config, want);
    let mut first = None;
    for dir in candidates.iter().filter(|d| has_server(d)) {
        let version = server_version(dir).await?;
        if want.is_none_or(|w| w == version) {
            return Ok((dir.clone(), version));
        }
        first.get_or_insert((dir.clone(), version));
    }
    first.ok_or_else(|| EmbeddedError::NoServer {
        searched: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Major version of the server in `dir`, as PG_VERSION spells it ("15",
/// or "9.6" for old ones).
async fn server_version(dir: &Path) -> Result<String> {
    let postgres = dir.join("postgres");
    let out = tokio::process::Command::new(&postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_err(&postgres))?;
    // "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let full = text.split_whitespace().nth(2).unwrap_or_default();
    let mut parts = full.split('.');
    let major = parts.next().unwrap_or_default();
    Ok(match major.parse::<u32>() {
        Ok(m) if m < 10 => format!("{major}.{}", parts.next().unwrap_or("0")),
        _ => major.to_owned(),
    })
}

/// `postgres://postgres@localhost:5432/<db>?host=<socket dir>`: sqlx takes
/// a `host` starting with `/` as a unix socket directory and appends
/// `.s.PGSQL.<port>`.
fn socket_url(run_dir: &Path, database: &str) -> String {
    let mut host = String::new();
    for &b in run_dir.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            host.push(b as char);
        } else {
            host.push_str(&format!("%{b:02X}"));
        }
    }
    format!("postgres://postgres@localhost:{SOCKET_PORT}/{database}?host={host}")
}

async fn connect_with_retry(
    run_dir: &Path,
    database: &str,
    patience: Duration,
) -> std::result::Result<PgConnection, sqlx::Error> {
    let url = socket_url(run_dir, database);
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match PgConnection::connect(&url).await {
            Ok(conn) => return Ok(conn),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_url_escapes_the_path() {
        assert_eq!(
            socket_url(Path::new("/tmp/a b/run"), "accord"),
            "postgres://postgres@localhost:5432/accord?host=/tmp/a%20b/run"
        );
        let opts: sqlx::postgres::PgConnectOptions =
            socket_url(Path::new("/tmp/a b/run"), "accord")
                .parse()
                .unwrap();
        assert_eq!(opts.get_socket(), Some(&PathBuf::from("/tmp/a b/run")));
        assert_eq!(opts.get_database(), Some("accord"));
    }

    #[test]
    fn candidates_put_the_clusters_version_first() {
        let c = candidate_bindirs(Some("/opt/pg/bin".into()), Some("13"));
        assert_eq!(c[0], PathBuf::from("/usr/lib/postgresql/13/bin"));
        assert_eq!(c[1], PathBuf::from("/opt/pg/bin"));
    }

    /// Starts a real cluster (~3 s): init, connect, migrate, stop, restart
    /// (reusing the cluster), and adopt a server left running.
    #[tokio::test]
    async fn embedded_cluster_starts_migrates_and_stops() {
        if find_bindir(None).await.is_err() {
            eprintln!("skipping: no PostgreSQL server binaries on this machine");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        // The tempdir itself is 0700; the postgres user must reach data/.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

        let pg = EmbeddedPostgres::start(&data_dir).await.unwrap();
        assert!(pg.url().contains("host=/"), "{}", pg.url());
        let store = crate::store::Store::connect(pg.url()).await.unwrap();
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        store.close().await;
        pg.stop().await.unwrap();

        // Second start: no initdb, same data.
        let pg = EmbeddedPostgres::start(&data_dir).await.unwrap();
        let store = crate::store::Store::connect(pg.url()).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(applied, crate::store::MIGRATOR.iter().count() as i64);
        store.close().await;

        // Simulate a SIGKILLed accord: the server outlives its owner, and
        // the next start adopts it.
        let mut orphan = pg;
        orphan.running = false;
        drop(orphan);
        let pg = EmbeddedPostgres::start(&data_dir).await.unwrap();
        let store = crate::store::Store::connect(pg.url()).await.unwrap();
        store.ping().await.unwrap();
        store.close().await;
        pg.stop().await.unwrap();
        assert!(!data_dir.join("postgres/postmaster.pid").exists());
    }

    #[test]
    fn no_server_error_says_what_to_do() {
        let msg = EmbeddedError::NoServer {
            searched: "/x".into(),
        }
        .to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("ACCORD_DATABASE_URL"), "{msg}");
        assert!(msg.contains("database_url"), "{msg}");
    }
}
