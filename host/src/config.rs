//! `accord.toml`: the daemon's configuration, checked whole at start-up.
//!
//! ```toml
//! # database_url = "postgres://accord@db/accord"   # absent: embedded server under data_dir
//! data_dir = "accord-data"          # default ./accord-data
//! plugins_dir = "plugins-dir"       # default <data_dir>/plugins
//! listen = "127.0.0.1:8080"         # default
//! max_body_bytes = 1073741824       # default 1 GiB
//! match_workers = 3                 # matching batches decided at once (1–64; default 3)
//! transaction_cache_mb = 512        # transactions kept between staging and matching (0: off)
//!
//! [api_tokens]                      # bearer tokens of the redress endpoints
//! ops = "a-long-random-secret"      # name (recorded as the actor) = token
//!
//! [[sources]]
//! name = "iceland"                  # [a-z0-9_-]+, unique
//! side = "merchant"                 # payment | merchant | standalone
//! parser = "merchant-feeds"         # plugin name
//! merchant = "iceland-bonus-card"   # merchant side: whose records (default: by MID)
//! http = true                       # POST /v1/sources/iceland/imports (default true)
//! content_types = ["text/csv"]      # empty (default): any
//! [sources.inbox]                   # optional directory channel
//! path = "inbox/iceland"
//! glob = "*.csv"                    # default "*"; `*` and `?` match within a file name
//! [sources.config]                  # handed to the parser plugin as JSON
//! delimiter = ";"
//! ```
//!
//! Relative paths in the file are resolved against the file's directory (so
//! the daemon behaves the same from any working directory); relative paths
//! from the environment against the working directory. Unknown keys are
//! errors, and every error names the file (or environment variable), the key
//! path and the reason: `accord.toml: sources[1].side: unknown variant
//! `merchnt`, expected one of `payment`, `merchant`, `standalone``.
//!
//! # Environment overrides
//!
//! Every key can be set by an `ACCORD_*` variable, which wins over the file:
//!
//! - top level: `ACCORD_DATABASE_URL`, `ACCORD_DATA_DIR`, `ACCORD_PLUGINS_DIR`,
//!   `ACCORD_LISTEN`, `ACCORD_MAX_BODY_BYTES` (an empty `ACCORD_DATABASE_URL`
//!   means "none": use the embedded server);
//! - per source: `ACCORD_SOURCES__<NAME>__<KEY>`, where `<NAME>` is the source
//!   name upper-cased with `-` written as `_`, and `<KEY>` is `PARSER`, `SIDE`,
//!   `HTTP` (`true`/`false`), `CONTENT_TYPES` (comma-separated), `INBOX__PATH`,
//!   `INBOX__GLOB`, or `CONFIG__<PARSER_KEY>` (the parser-config key,
//!   lower-cased; the value is read as a TOML value if it is one — `42`,
//!   `true`, `"007"`, `[1, 2]` — and as a plain string otherwise). A `<NAME>`
//!   matching no source in the file adds a source of that (lower-cased) name,
//!   so a container can be configured from the environment alone:
//!   `ACCORD_SOURCES__ICELAND__PARSER=csv`, `ACCORD_SOURCES__ICELAND__SIDE=payment`.
//!
//! - API tokens: `ACCORD_API_TOKENS__<NAME>=<token>` (`<NAME>` lower-cased,
//!   `_` read as `-`).
//!
//! Other `ACCORD_*` variables (e.g. ones the CLI reads) are ignored here;
//! unknown keys under `ACCORD_SOURCES__` are errors.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::Side;

/// `path` with `.` and `dir/..` pairs folded away (without touching the
/// filesystem), so logs and the API show `/srv/accord-data/inbox`, not
/// `/srv/examples/../accord-data/inbox`.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// 1 GiB: the largest file the issue asks us to stream, and larger than any
/// settlement file seen in practice.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// Matching workers per daemon. Each worker's batch goes back and forth
/// between the matcher plugin (accord's CPU) and PostgreSQL (its CPU),
/// waiting on round trips and commits in between; on a 2-core machine, two
/// workers left 12 % of the CPU idle once staging was done, three about 5 %
/// (`bench match --match-workers`, 61.2 / 58.6 s with 2 against 58.3 /
/// 57.6 s with 3, back to back).
pub const DEFAULT_MATCH_WORKERS: usize = 3;
/// Transactions kept in memory between staging and matching: about a
/// million (see `store::cache`).
pub const DEFAULT_TRANSACTION_CACHE_MB: u64 = 512;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "accord-data";
const ENV_PREFIX: &str = "ACCORD_";
const ENV_SOURCES: &str = "ACCORD_SOURCES__";
const ENV_API_TOKENS: &str = "ACCORD_API_TOKENS__";

#[derive(Clone, PartialEq, Serialize)]
pub struct Config {
    /// `None`: run the embedded PostgreSQL under `data_dir`.
    #[serde(serialize_with = "serialize_redacted")]
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    /// Where the plugin `.wasm` files are; default `<data_dir>/plugins`, so
    /// all of a deployment's state lives under one directory.
    pub plugins_dir: PathBuf,
    pub listen: SocketAddr,
    pub max_body_bytes: u64,
    /// Matching batches claimed and decided concurrently (each on its own
    /// database connection); several daemons on one database add theirs.
    pub match_workers: usize,
    /// Size of the in-memory copy of staged transactions that matching
    /// claims read (MiB; 0 turns it off).
    pub transaction_cache_mb: u64,
    pub sources: Vec<Source>,
    /// `[api_tokens]`: name → bearer token for the redress endpoints (force
    /// match, review decisions); the name is recorded as the actor.
    #[serde(skip)]
    pub api_tokens: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub name: String,
    pub side: Side,
    /// Name of the parser plugin.
    pub parser: String,
    /// Merchant-side sources: the merchant (slug) whose records these are.
    /// Absent: each record's merchant is found through its MIDs.
    pub merchant: Option<String>,
    /// The `[sources.config]` table, as JSON for the plugin.
    pub parser_config: serde_json::Value,
    pub inbox: Option<Inbox>,
    /// Whether `POST /v1/sources/<name>/imports` accepts data.
    pub http: bool,
    /// Lower-cased `type/subtype` (or `type/*`) the HTTP channel accepts;
    /// empty: any.
    pub content_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inbox {
    /// Absolute.
    pub path: PathBuf,
    /// File-name pattern: `*` any run of characters, `?` any one.
    pub glob: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// `origin` is the config file or the environment variable the value
    /// came from; `key` a path like `sources[1].inbox.glob`.
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl ConfigError {
    /// The offending key path, for [`ConfigError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Config {
    /// Load `path` (if given; `None` means defaults plus environment), apply
    /// the `ACCORD_*` overrides found in `env`, and validate everything.
    /// `env` is passed in (usually `std::env::vars()`) so tests need not
    /// touch the process environment.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let (table, origin, base) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string().trim_end().to_owned(),
                    })?;
                let dir = path.parent().unwrap_or(Path::new(""));
                (table, path.display().to_string(), cwd.join(dir))
            }
            None => (toml::Table::new(), "configuration".to_owned(), cwd.clone()),
        };
        let mut cx = Cx {
            origin,
            base,
            cwd,
            from_env: HashMap::new(),
        };
        let mut table = table;
        cx.apply_env(&mut table, env)?;
        cx.build(table)
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The name of the API token `token`, if it is one (constant-time
    /// comparison, so response timing does not reveal a prefix).
    pub fn token_name(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (name, t) in &self.api_tokens {
            let (a, b) = (t.as_bytes(), token.as_bytes());
            let diff = a.len() ^ b.len()
                | a.iter()
                    .zip(b.iter().cycle())
                    .fold(0usize, |acc, (x, y)| acc | usize::from(x ^ y));
            if diff == 0 && !b.is_empty() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("data_dir", &self.data_dir)
            .field("plugins_dir", &self.plugins_dir)
            .field("listen", &self.listen)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("match_workers", &self.match_workers)
            .field("transaction_cache_mb", &self.transaction_cache_mb)
            .field("sources", &self.sources)
            .field("api_tokens", &self.api_tokens.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn serialize_redacted<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    url.as_deref().map(redact_url).serialize(s)
}

/// The URL with its password replaced, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Source {
    /// Whether the HTTP channel takes a body of this `Content-Type`
    /// (parameters such as `; charset=` are ignored).
    pub fn accepts_content_type(&self, content_type: Option<&str>) -> bool {
        if self.content_types.is_empty() {
            return true;
        }
        let Some(ct) = content_type else {
            return false;
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let major = essence.split('/').next().unwrap_or("");
        self.content_types
            .iter()
            .any(|allowed| match allowed.strip_suffix("/*") {
                Some(allowed_major) => allowed_major == major,
                None => *allowed == essence,
            })
    }
}

impl Inbox {
    /// Whether a file name (not a path) matches the glob.
    pub fn matches(&self, file_name: &str) -> bool {
        glob_match(self.glob.as_bytes(), file_name.as_bytes())
    }
}

/// `*` and `?` wildcard match (iterative, no backtracking blow-up).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Loading context: where values came from, to resolve paths and name
/// origins in errors.
struct Cx {
    /// The config file as given, or "configuration" without one.
    origin: String,
    /// Directory relative paths in the file are resolved against.
    base: PathBuf,
    cwd: PathBuf,
    /// Key path → environment variable that set it.
    from_env: HashMap<String, String>,
}

impl Cx {
    fn err(&self, key: &str, reason: impl fmt::Display) -> ConfigError {
        let origin = self
            .from_env
            .get(key)
            .cloned()
            .unwrap_or_else(|| self.origin.clone());
        ConfigError::Invalid {
            origin,
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }

    fn resolve(&self, key: &str, path: PathBuf) -> PathBuf {
        let base = if self.from_env.contains_key(key) {
            &self.cwd
        } else {
            &self.base
        };
        let joined = if path.is_absolute() {
            path
        } else {
            base.join(path)
        };
        lexically_normal(&joined)
    }

    fn apply_env(
        &mut self,
        table: &mut toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<()> {
        // Sorted, so sources created from the environment come in a stable order.
        let env: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        for (var, value) in env {
            if let Some(rest) = var.strip_prefix(ENV_SOURCES) {
                self.apply_source_env(table, &var, rest, value)?;
                continue;
            }
            if let Some(name) = var.strip_prefix(ENV_API_TOKENS) {
                let name = name.to_ascii_lowercase().replace('_', "-");
                let tokens = table
                    .entry("api_tokens")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(tokens) = tokens.as_table_mut() {
                    tokens.insert(name.clone(), toml::Value::String(value));
                    self.from_env.insert(format!("api_tokens.{name}"), var);
                }
                continue;
            }
            let key = match &var[ENV_PREFIX.len()..] {
                "DATABASE_URL" => "database_url",
                "DATA_DIR" => "data_dir",
                "PLUGINS_DIR" => "plugins_dir",
                "LISTEN" => "listen",
                "MAX_BODY_BYTES" => "max_body_bytes",
                "MATCH_WORKERS" => "match_workers",
                "TRANSACTION_CACHE_MB" => "transaction_cache_mb",
                _ => continue,
            };
            let value = match key {
                "max_body_bytes" | "match_workers" | "transaction_cache_mb" => value
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .unwrap_or(toml::Value::String(value)),
                _ => toml::Value::String(value),
            };
            table.insert(key.to_owned(), value);
            self.from_env.insert(key.to_owned(), var);
        }
        Ok(())
    }

    fn apply_source_env(
        &mut self,
        table: &mut toml::Table,
        var: &str,
        rest: &str,
        value: String,
    ) -> Result<()> {
        let bad = |reason: &str| ConfigError::Invalid {
            origin: var.to_owned(),
            key: "sources".to_owned(),
            reason: reason.to_owned(),
        };
        let Some((env_name, key)) = rest.split_once("__") else {
            return Err(bad("expected ACCORD_SOURCES__<NAME>__<KEY>"));
        };
        if env_name.is_empty() {
            return Err(bad("empty source name in ACCORD_SOURCES__<NAME>__<KEY>"));
        }
        let sources = table
            .entry("sources")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        let Some(sources) = sources.as_array_mut() else {
            // Reported properly (as a type error on `sources`) by build().
            return Ok(());
        };
        let index = sources.iter().position(|s| {
            s.get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.to_ascii_uppercase().replace('-', "_") == env_name)
        });
        let index = index.unwrap_or_else(|| {
            let mut new = toml::Table::new();
            new.insert(
                "name".into(),
                toml::Value::String(env_name.to_ascii_lowercase()),
            );
            sources.push(toml::Value::Table(new));
            sources.len() - 1
        });
        let Some(source) = sources[index].as_table_mut() else {
            return Ok(());
        };
        let prefix = format!("sources[{index}]");
        let (path, value): (Vec<String>, toml::Value) = match key {
            "PARSER" => (vec!["parser".into()], toml::Value::String(value)),
            "SIDE" => (vec!["side".into()], toml::Value::String(value)),
            "HTTP" => (
                vec!["http".into()],
                match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => toml::Value::Boolean(true),
                    "false" | "0" | "no" => toml::Value::Boolean(false),
                    _ => toml::Value::String(value),
                },
            ),
            "CONTENT_TYPES" => (
                vec!["content_types".into()],
                toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                ),
            ),
            "INBOX__PATH" => (
                vec!["inbox".into(), "path".into()],
                toml::Value::String(value),
            ),
            "INBOX__GLOB" => (
                vec!["inbox".into(), "glob".into()],
                toml::Value::String(value),
            ),
            _ => match key.strip_prefix("CONFIG__") {
                Some(k) if !k.is_empty() => (
                    vec!["config".into(), k.to_ascii_lowercase()],
                    toml_literal(value),
                ),
                _ => {
                    return Err(ConfigError::Invalid {
                        origin: var.to_owned(),
                        key: prefix,
                        reason: format!(
                            "unknown key `{key}`, expected one of PARSER, SIDE, HTTP, \
                             CONTENT_TYPES, INBOX__PATH, INBOX__GLOB, CONFIG__<KEY>"
                        ),
                    });
                }
            },
        };
        let mut at = source;
        for part in &path[..path.len() - 1] {
            let entry = at
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(t) = entry.as_table_mut() else {
                return Err(ConfigError::Invalid {
                    origin: var.to_owned(),
                    key: format!("{prefix}.{part}"),
                    reason:
                        "is not a table in the config file, so it cannot be overridden key by key"
                            .into(),
                });
            };
            at = t;
        }
        at.insert(path[path.len() - 1].clone(), value);
        self.from_env
            .insert(format!("{prefix}.{}", path.join(".")), var.to_owned());
        Ok(())
    }

    fn build(&self, table: toml::Table) -> Result<Config> {
        let mut top = Fields::new(self, "", table);
        top.known(&[
            "database_url",
            "data_dir",
            "plugins_dir",
            "listen",
            "max_body_bytes",
            "match_workers",
            "transaction_cache_mb",
            "sources",
            "api_tokens",
        ])?;

        let database_url = top
            .take::<String>("database_url")?
            .filter(|u| !u.trim().is_empty());
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            // Never echo the value: it may hold a password.
            return Err(self.err(
                "database_url",
                "expected a postgres:// or postgresql:// URL",
            ));
        }

        let data_dir = match top.take::<PathBuf>("data_dir")? {
            Some(p) => self.resolve("data_dir", p),
            None => self.base.join(DEFAULT_DATA_DIR),
        };
        let plugins_dir = match top.take::<PathBuf>("plugins_dir")? {
            Some(p) => self.resolve("plugins_dir", p),
            None => data_dir.join("plugins"),
        };
        let listen = match top.take::<String>("listen")? {
            Some(s) => s.trim().parse::<SocketAddr>().map_err(|_| {
                self.err(
                    "listen",
                    format!("`{s}` is not an address:port such as 127.0.0.1:8080"),
                )
            })?,
            None => DEFAULT_LISTEN.parse().expect("valid default"),
        };
        let max_body_bytes = top
            .take::<u64>("max_body_bytes")?
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            return Err(self.err("max_body_bytes", "must be greater than 0"));
        }
        let match_workers = top
            .take::<u64>("match_workers")?
            .unwrap_or(DEFAULT_MATCH_WORKERS as u64);
        if !(1..=64).contains(&match_workers) {
            return Err(self.err("match_workers", "must be between 1 and 64"));
        }
        let match_workers = match_workers as usize;
        let transaction_cache_mb = top
            .take::<u64>("transaction_cache_mb")?
            .unwrap_or(DEFAULT_TRANSACTION_CACHE_MB);
        if transaction_cache_mb > 1 << 20 {
            return Err(self.err("transaction_cache_mb", "must be at most 1048576 (1 TiB)"));
        }

        let mut sources: Vec<Source> = Vec::new();
        for (i, value) in top
            .take::<Vec<toml::Value>>("sources")?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("sources[{i}]");
            let toml::Value::Table(table) = value else {
                return Err(self.err(
                    &key,
                    format!("expected a table, found {}", value.type_str()),
                ));
            };
            let source = self.source(&key, table)?;
            if let Some(j) = sources.iter().position(|s| s.name == source.name) {
                return Err(self.err(
                    &format!("{key}.name"),
                    format!(
                        "duplicate source name `{}` (also sources[{j}])",
                        source.name
                    ),
                ));
            }
            if let Some(inbox) = &source.inbox
                && let Some(j) = sources.iter().position(|s| s.inbox.as_ref() == Some(inbox))
            {
                return Err(self.err(
                    &format!("{key}.inbox"),
                    format!(
                        "same inbox path and glob as sources[{j}]; every file would be imported twice"
                    ),
                ));
            }
            sources.push(source);
        }
        let api_tokens = top
            .take::<BTreeMap<String, String>>("api_tokens")?
            .unwrap_or_default();
        for (name, token) in &api_tokens {
            if !valid_name(name) {
                return Err(self.err(
                    &format!("api_tokens.{name}"),
                    "a token name is 1 to 64 of [a-z0-9_-]",
                ));
            }
            if token.trim().len() < 16 {
                // Never echo the value.
                return Err(self.err(
                    &format!("api_tokens.{name}"),
                    "a token must be at least 16 characters",
                ));
            }
        }
        Ok(Config {
            database_url,
            data_dir,
            plugins_dir,
            listen,
            max_body_bytes,
            match_workers,
            transaction_cache_mb,
            sources,
            api_tokens,
        })
    }

    fn source(&self, key: &str, table: toml::Table) -> Result<Source> {
        let mut f = Fields::new(self, key, table);
        f.known(&[
            "name",
            "side",
            "parser",
            "merchant",
            "config",
            "inbox",
            "http",
            "content_types",
        ])?;
        let name: String = f.require("name")?;
        if !valid_name(&name) {
            return Err(f.err(
                "name",
                format!("`{name}` is not a valid source name: use 1 to 64 of [a-z0-9_-]"),
            ));
        }
        let side: Side = f.require("side")?;
        let parser: String = f.require("parser")?;
        if parser.trim().is_empty() {
            return Err(f.err("parser", "must name a parser plugin"));
        }
        let merchant = f.take::<String>("merchant")?;
        if let Some(m) = &merchant
            && !crate::store::valid_slug(m)
        {
            return Err(f.err("merchant", format!("`{m}` is not a merchant slug")));
        }
        let parser_config = match f.take::<toml::Value>("config")? {
            None => serde_json::Value::Object(Default::default()),
            Some(toml::Value::Table(t)) => {
                toml_to_json(&toml::Value::Table(t)).map_err(|reason| f.err("config", reason))?
            }
            Some(other) => {
                return Err(f.err(
                    "config",
                    format!("expected a table, found {}", other.type_str()),
                ));
            }
        };
        let inbox = match f.take::<toml::Value>("inbox")? {
            None => None,
            Some(toml::Value::Table(t)) => {
                let inbox_key = f.key("inbox");
                let mut g = Fields::new(self, &inbox_key, t);
                g.known(&["path", "glob"])?;
                let path: PathBuf = g.require("path")?;
                if path.as_os_str().is_empty() {
                    return Err(g.err("path", "must not be empty"));
                }
                let path = self.resolve(&g.key("path"), path);
                let glob = g.take::<String>("glob")?.unwrap_or_else(|| "*".to_owned());
                if glob.is_empty() || glob.contains('/') {
                    return Err(g.err("glob", "must be a non-empty file-name pattern without `/`"));
                }
                Some(Inbox { path, glob })
            }
            Some(other) => {
                return Err(f.err(
                    "inbox",
                    format!("expected a table, found {}", other.type_str()),
                ));
            }
        };
        let http = f.take::<bool>("http")?.unwrap_or(true);
        let mut content_types = f.take::<Vec<String>>("content_types")?.unwrap_or_default();
        for (i, ct) in content_types.iter_mut().enumerate() {
            let lower = ct.trim().to_ascii_lowercase();
            let valid = matches!(lower.split_once('/'), Some((t, s)) if !t.is_empty() && !s.is_empty() && t != "*")
                && !lower.contains([' ', ';', ',']);
            if !valid {
                return Err(f.err(
                    &format!("content_types[{i}]"),
                    format!("`{ct}` is not a media type such as text/csv or text/*"),
                ));
            }
            *ct = lower;
        }
        if inbox.is_none() && !http {
            return Err(self.err(
                key,
                "has no channel: add [sources.inbox] or set http = true",
            ));
        }
        Ok(Source {
            name,
            side,
            parser,
            merchant,
            parser_config,
            inbox,
            http,
            content_types,
        })
    }
}

/// Source and token names: 1 to 64 of `[a-z0-9_-]`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// One table being taken apart key by key, so errors carry the key path.
struct Fields<'a> {
    cx: &'a Cx,
    prefix: String,
    table: toml::Table,
}

impl<'a> Fields<'a> {
    fn new(cx: &'a Cx, prefix: &str, table: toml::Table) -> Self {
        Fields {
            cx,
            prefix: prefix.to_owned(),
            table,
        }
    }

    fn key(&self, k: &str) -> String {
        if self.prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{}.{k}", self.prefix)
        }
    }

    fn err(&self, k: &str, reason: impl fmt::Display) -> ConfigError {
        self.cx.err(&self.key(k), reason)
    }

    /// Unknown keys are errors: a typo must not silently mean "default".
    fn known(&self, keys: &[&str]) -> Result<()> {
        match self.table.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => Err(self.err(
                k,
                format!("unknown key, expected one of {}", keys.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn take<T: DeserializeOwned>(&mut self, k: &str) -> Result<Option<T>> {
        match self.table.remove(k) {
            None => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| self.err(k, e.to_string().trim_end())),
        }
    }

    fn require<T: DeserializeOwned>(&mut self, k: &str) -> Result<T> {
        self.take(k)?
            .ok_or_else(|| self.err(k, "missing (required)"))
    }
}

/// An environment value as TOML if it parses as one, else a plain string.
fn toml_literal(value: String) -> toml::Value {
    #[derive(serde::Deserialize)]
    struct Probe {
        v: toml::Value,
    }
    match toml::from_str::<Probe>(&format!("v = {value}")) {
        Ok(p) => p.v,
        Err(_) => toml::Value::String(value),
    }
}

fn toml_to_json(v: &toml::Value) -> std::result::Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("{f} cannot be represented in JSON"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        // Plugins get RFC 3339 text, which is what TOML wrote.
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("accord.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn merchant_sources_and_api_tokens() {
        let text = r#"
[api_tokens]
ops = "0123456789abcdef0123"

[[sources]]
name = "iceland"
side = "merchant"
parser = "merchant-feeds"
merchant = "iceland-bonus-card"
"#;
        let (_dir, config) = load(
            text,
            &[("ACCORD_API_TOKENS__NIGHT_SHIFT", "fedcba9876543210fedcba")],
        );
        let config = config.unwrap();
        assert_eq!(
            config.source("iceland").unwrap().merchant.as_deref(),
            Some("iceland-bonus-card")
        );
        assert_eq!(config.token_name("0123456789abcdef0123"), Some("ops"));
        assert_eq!(
            config.token_name("fedcba9876543210fedcba"),
            Some("night-shift")
        );
        assert_eq!(
            config.token_name("0123456789abcdef012"),
            None,
            "a prefix is not the token"
        );
        assert_eq!(config.token_name(""), None);
        // Never printed.
        assert!(!format!("{config:?}").contains("0123456789abcdef0123"));

        let (key, msg) = invalid(
            "[[sources]]\nname = \"a\"\nside = \"merchant\"\nparser = \"csv\"\nmerchant = \"Iceland!\"\n",
            &[],
        );
        assert_eq!(key, "sources[0].merchant", "{msg}");
        let (key, msg) = invalid("[api_tokens]\nops = \"short\"\n", &[]);
        assert_eq!(key, "api_tokens.ops");
        assert!(
            msg.contains("at least 16") && !msg.contains("short\""),
            "{msg}"
        );
    }

    #[test]
    fn relative_paths_are_folded_lexically() {
        assert_eq!(
            lexically_normal(Path::new("/srv/examples/../accord-data/./inbox")),
            PathBuf::from("/srv/accord-data/inbox")
        );
        assert_eq!(
            lexically_normal(Path::new("/a/b/../../c")),
            PathBuf::from("/c")
        );
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> (tempfile::TempDir, Result<Config>) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), text);
        let config = Config::load(Some(&path), env(vars));
        (dir, config)
    }

    fn invalid(text: &str, vars: &[(&str, &str)]) -> (String, String) {
        let (_dir, result) = load(text, vars);
        let err = result.unwrap_err();
        let msg = err.to_string();
        match err {
            ConfigError::Invalid { key, .. } => (key, msg),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    const FULL: &str = r#"
database_url = "postgres://u:secret@db:5432/accord"
data_dir = "state"
listen = "0.0.0.0:9000"
max_body_bytes = 1000
match_workers = 3
transaction_cache_mb = 64

[[sources]]
name = "iceland"
side = "payment"
parser = "csv"
content_types = ["Text/CSV", "application/*"]
[sources.inbox]
path = "inbox/iceland"
glob = "*.csv"
[sources.config]
delimiter = ";"
columns = { id = 1, amount = 3 }
since = 2024-01-01

[[sources]]
name = "shop-1"
side = "merchant"
parser = "psp-xml"
"#;

    #[test]
    fn loads_a_full_file_and_resolves_paths_against_it() {
        let (dir, config) = load(FULL, &[]);
        let config = config.unwrap();
        let base = std::env::current_dir().unwrap().join(dir.path());
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://u:secret@db:5432/accord")
        );
        assert_eq!(config.data_dir, base.join("state"));
        assert_eq!(config.plugins_dir, base.join("state/plugins"));
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.max_body_bytes, 1000);
        assert_eq!(config.match_workers, 3);
        assert_eq!(config.transaction_cache_mb, 64);
        let iceland = config.source("iceland").unwrap();
        assert_eq!(iceland.side, Side::Payment);
        assert_eq!(iceland.parser, "csv");
        assert!(iceland.http);
        assert_eq!(iceland.content_types, ["text/csv", "application/*"]);
        assert_eq!(
            iceland.parser_config,
            serde_json::json!({"delimiter": ";", "columns": {"id": 1, "amount": 3}, "since": "2024-01-01"})
        );
        let inbox = iceland.inbox.as_ref().unwrap();
        assert_eq!(inbox.path, base.join("inbox/iceland"));
        assert!(inbox.matches("day-1.csv") && !inbox.matches("day-1.csv.part"));
        let shop = config.source("shop-1").unwrap();
        assert_eq!(shop.inbox, None);
        assert_eq!(shop.parser_config, serde_json::json!({}));
        assert!(shop.content_types.is_empty());
        // Secrets stay out of logs.
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("secret") && debug.contains("u:***@db"),
            "{debug}"
        );
        assert!(!serde_json::to_string(&config).unwrap().contains("secret"));
    }

    #[test]
    fn defaults_without_a_file() {
        let config = Config::load(None, env(&[])).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(config.database_url, None);
        assert_eq!(config.data_dir, cwd.join("accord-data"));
        assert_eq!(config.plugins_dir, cwd.join("accord-data/plugins"));
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.max_body_bytes, 1 << 30);
        assert_eq!(config.match_workers, DEFAULT_MATCH_WORKERS);
        assert_eq!(config.transaction_cache_mb, DEFAULT_TRANSACTION_CACHE_MB);
        assert!(config.sources.is_empty());
    }

    #[test]
    fn environment_overrides_every_key() {
        let (dir, config) = load(
            FULL,
            &[
                ("ACCORD_DATABASE_URL", ""),
                ("ACCORD_DATA_DIR", "/srv/accord"),
                ("ACCORD_PLUGINS_DIR", "wasm"),
                ("ACCORD_LISTEN", "127.0.0.1:7000"),
                ("ACCORD_MAX_BODY_BYTES", "5"),
                ("ACCORD_SOURCES__ICELAND__SIDE", "merchant"),
                ("ACCORD_SOURCES__ICELAND__PARSER", "csv2"),
                ("ACCORD_SOURCES__ICELAND__HTTP", "false"),
                (
                    "ACCORD_SOURCES__ICELAND__CONTENT_TYPES",
                    "text/plain, text/csv",
                ),
                ("ACCORD_SOURCES__ICELAND__INBOX__GLOB", "*.txt"),
                ("ACCORD_SOURCES__ICELAND__INBOX__PATH", "/in"),
                ("ACCORD_SOURCES__ICELAND__CONFIG__DELIMITER", ","),
                ("ACCORD_SOURCES__ICELAND__CONFIG__SKIP", "2"),
                ("ACCORD_SOURCES__ICELAND__CONFIG__CODE", "\"007\""),
                ("ACCORD_SOURCES__SHOP_1__INBOX__PATH", "drop"),
                ("ACCORD_SOURCES__NEW__PARSER", "visa-vop"),
                ("ACCORD_SOURCES__NEW__SIDE", "standalone"),
                ("ACCORD_CONFIG", "ignored: belongs to the CLI"),
                ("HOME", "/root"),
            ],
        );
        drop(dir);
        let config = config.unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(config.database_url, None);
        assert_eq!(config.data_dir, PathBuf::from("/srv/accord"));
        assert_eq!(
            config.plugins_dir,
            cwd.join("wasm"),
            "env paths are relative to the cwd"
        );
        assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.max_body_bytes, 5);
        let iceland = config.source("iceland").unwrap();
        assert_eq!(iceland.side, Side::Merchant);
        assert_eq!(iceland.parser, "csv2");
        assert!(!iceland.http);
        assert_eq!(iceland.content_types, ["text/plain", "text/csv"]);
        assert_eq!(
            iceland.inbox,
            Some(Inbox {
                path: "/in".into(),
                glob: "*.txt".into()
            })
        );
        assert_eq!(iceland.parser_config["delimiter"], ",");
        assert_eq!(iceland.parser_config["skip"], 2);
        assert_eq!(iceland.parser_config["code"], "007");
        assert_eq!(
            iceland.parser_config["columns"]["id"], 1,
            "untouched keys stay"
        );
        let shop = config.source("shop-1").unwrap();
        assert_eq!(shop.inbox.as_ref().unwrap().path, cwd.join("drop"));
        assert_eq!(shop.inbox.as_ref().unwrap().glob, "*");
        let new = config.source("new").unwrap();
        assert_eq!(
            (new.side, new.parser.as_str()),
            (Side::Standalone, "visa-vop")
        );
    }

    #[test]
    fn bad_variant_names_file_key_and_choices() {
        let (key, msg) = invalid(
            "[[sources]]\nname='a'\nside='payment'\nparser='csv'\n\
             [[sources]]\nname='b'\nside='merchnt'\nparser='csv'\n",
            &[],
        );
        assert_eq!(key, "sources[1].side");
        assert!(
            msg.contains("accord.toml: sources[1].side: unknown variant `merchnt`"),
            "{msg}"
        );
        assert!(
            msg.contains("payment") && msg.contains("standalone"),
            "{msg}"
        );
    }

    #[test]
    fn errors_from_the_environment_name_the_variable() {
        let (key, msg) = invalid(
            "[[sources]]\nname='a'\nside='payment'\nparser='csv'\n",
            &[("ACCORD_SOURCES__A__SIDE", "sideways")],
        );
        assert_eq!(key, "sources[0].side");
        assert!(
            msg.starts_with("ACCORD_SOURCES__A__SIDE: sources[0].side: unknown variant"),
            "{msg}"
        );

        let (key, msg) = invalid("", &[("ACCORD_SOURCES__A__PARSR", "csv")]);
        assert_eq!(key, "sources[0]");
        assert!(msg.contains("unknown key `PARSR`"), "{msg}");

        let (key, _) = invalid("", &[("ACCORD_MAX_BODY_BYTES", "lots")]);
        assert_eq!(key, "max_body_bytes");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_eq!(invalid("listn = '1.2.3.4:5'\n", &[]).0, "listn");
        assert_eq!(
            invalid(
                "[[sources]]\nname='a'\nside='payment'\nparser='csv'\nhttps=true\n",
                &[]
            )
            .0,
            "sources[0].https"
        );
        assert_eq!(
            invalid("[[sources]]\nname='a'\nside='payment'\nparser='csv'\n[sources.inbox]\npath='x'\nglobs='*'\n", &[]).0,
            "sources[0].inbox.globs"
        );
    }

    #[test]
    fn type_errors_and_missing_keys() {
        assert_eq!(invalid("max_body_bytes = 'big'\n", &[]).0, "max_body_bytes");
        assert_eq!(invalid("max_body_bytes = 0\n", &[]).0, "max_body_bytes");
        assert_eq!(invalid("max_body_bytes = -1\n", &[]).0, "max_body_bytes");
        assert_eq!(invalid("match_workers = 0\n", &[]).0, "match_workers");
        assert_eq!(invalid("match_workers = 65\n", &[]).0, "match_workers");
        assert_eq!(
            invalid("", &[("ACCORD_MATCH_WORKERS", "many")]).0,
            "match_workers"
        );
        assert_eq!(
            invalid("transaction_cache_mb = -1\n", &[]).0,
            "transaction_cache_mb"
        );
        assert_eq!(
            invalid("", &[("ACCORD_TRANSACTION_CACHE_MB", "lots")]).0,
            "transaction_cache_mb"
        );
        let (key, msg) = invalid("listen = 'localhost'\n", &[]);
        assert_eq!(key, "listen");
        assert!(msg.contains("address:port"), "{msg}");
        let (key, msg) = invalid("[[sources]]\nname='a'\nside='payment'\n", &[]);
        assert_eq!(key, "sources[0].parser");
        assert!(msg.contains("missing"), "{msg}");
        assert_eq!(invalid("sources = 3\n", &[]).0, "sources");
        assert_eq!(invalid("sources = [3]\n", &[]).0, "sources[0]");
        assert_eq!(
            invalid(
                "[[sources]]\nname='a'\nside='payment'\nparser='csv'\nconfig=1\n",
                &[]
            )
            .0,
            "sources[0].config"
        );
        assert_eq!(
            invalid(
                "[[sources]]\nname='a'\nside='payment'\nparser='csv'\ncontent_types=['csv']\n",
                &[]
            )
            .0,
            "sources[0].content_types[0]"
        );
    }

    #[test]
    fn database_url_is_checked_without_echoing_it() {
        let (key, msg) = invalid("database_url = 'mysql://u:hunter2@x/y'\n", &[]);
        assert_eq!(key, "database_url");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn source_names_must_be_valid_and_unique() {
        let (key, msg) = invalid(
            "[[sources]]\nname='Iceland'\nside='payment'\nparser='csv'\n",
            &[],
        );
        assert_eq!(key, "sources[0].name");
        assert!(msg.contains("[a-z0-9_-]"), "{msg}");
        assert_eq!(
            invalid("[[sources]]\nname=''\nside='payment'\nparser='csv'\n", &[]).0,
            "sources[0].name"
        );
        let (key, msg) = invalid(
            "[[sources]]\nname='a'\nside='payment'\nparser='csv'\n\
             [[sources]]\nname='a'\nside='merchant'\nparser='csv'\n",
            &[],
        );
        assert_eq!(key, "sources[1].name");
        assert!(
            msg.contains("duplicate source name `a` (also sources[0])"),
            "{msg}"
        );
    }

    #[test]
    fn channels_are_checked() {
        let (key, msg) = invalid(
            "[[sources]]\nname='a'\nside='payment'\nparser='csv'\nhttp=false\n",
            &[],
        );
        assert_eq!(key, "sources[0]");
        assert!(msg.contains("no channel"), "{msg}");
        let same_inbox = "[sources.inbox]\npath='in'\n";
        let (key, _) = invalid(
            &format!(
                "[[sources]]\nname='a'\nside='payment'\nparser='csv'\n{same_inbox}\
                 [[sources]]\nname='b'\nside='payment'\nparser='csv'\n{same_inbox}"
            ),
            &[],
        );
        assert_eq!(key, "sources[1].inbox");
        assert_eq!(
            invalid("[[sources]]\nname='a'\nside='payment'\nparser='csv'\n[sources.inbox]\npath='in'\nglob='a/*'\n", &[]).0,
            "sources[0].inbox.glob"
        );
        assert_eq!(
            invalid(
                "[[sources]]\nname='a'\nside='payment'\nparser='csv'\n[sources.inbox]\nglob='*'\n",
                &[]
            )
            .0,
            "sources[0].inbox.path"
        );
    }

    #[test]
    fn syntax_and_read_errors_name_the_file() {
        let (_dir, result) = load("listen = \n", &[]);
        let err = result.unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
        assert!(err.to_string().contains("accord.toml"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");

        let err = Config::load(Some(Path::new("/nonexistent/accord.toml")), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string().starts_with("/nonexistent/accord.toml: "),
            "{err}"
        );
    }

    #[test]
    fn content_type_matching() {
        let (_dir, config) = load(
            "[[sources]]\nname='a'\nside='payment'\nparser='csv'\ncontent_types=['text/csv','application/*']\n",
            &[],
        );
        let s = config.unwrap().sources.remove(0);
        assert!(s.accepts_content_type(Some("text/csv; charset=utf-8")));
        assert!(s.accepts_content_type(Some("TEXT/CSV")));
        assert!(s.accepts_content_type(Some("application/xml")));
        assert!(!s.accepts_content_type(Some("text/plain")));
        assert!(!s.accepts_content_type(None));
    }

    #[test]
    fn glob_matching() {
        let g = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(g("*", "anything.csv"));
        assert!(g("*.csv", ".csv"));
        assert!(g("day-??.csv", "day-01.csv"));
        assert!(!g("day-??.csv", "day-1.csv"));
        assert!(g("a*b*c", "aXXbYYbZc"));
        assert!(!g("*.csv", "x.csv.part"));
        assert!(g("**", ""));
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:p@h/db?x=1"),
            "postgres://u:***@h/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://postgres@localhost:5432/accord?host=/x/run"),
            "postgres://postgres@localhost:5432/accord?host=/x/run"
        );
    }
}
