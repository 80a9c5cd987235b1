//! Reading a component's imports, exports and contract section before any
//! compilation, and deciding whether the sandbox may run it.

use crate::domain::PluginKind;
use wasmparser::{Encoding, Parser, Payload};

/// The contract versions this host speaks, per kind. A plugin exporting an
/// interface of another major (for 0.x: another minor) is refused.
pub const SUPPORTED: &[(PluginKind, &str, Version)] = &[
    (
        PluginKind::Parser,
        "accord:parser/parser",
        Version {
            major: 0,
            minor: 1,
            patch: 0,
        },
    ),
    (
        PluginKind::Matcher,
        "accord:matcher/matcher",
        Version {
            major: 0,
            minor: 1,
            patch: 0,
        },
    ),
    (
        PluginKind::Router,
        "accord:router/router",
        Version {
            major: 0,
            minor: 1,
            patch: 0,
        },
    ),
];

/// Interfaces a plugin may import: the host's own, and the WASI that Rust's
/// std links into every wasm32-wasip2 component: stdio plumbing (stderr
/// carries panic messages), exit, randomness (HashMap seeds) and
/// `wasi:cli/environment`, which std reads for `RUST_BACKTRACE` on panic.
/// The environment is linked but empty: no variables, no arguments, no
/// working directory. Deliberately absent: filesystem, sockets and clocks.
/// Anything else is refused by name.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "accord:host/log",
    "accord:types/types",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:io/poll",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/stdin",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let core = s.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
        let v = Version {
            major: it.next()??,
            minor: it.next()??,
            patch: it.next()??,
        };
        it.next().is_none().then_some(v)
    }

    /// Semver compatibility as the component model applies it: same major,
    /// and for 0.x the same minor.
    pub fn compatible_with(self, other: Version) -> bool {
        self.major == other.major && (self.major != 0 || self.minor == other.minor)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What a component says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// The SDK's `accord-contract` custom section (`parser@0.1.0`), if any.
    pub contract_section: Option<String>,
}

/// The verdict on a component: which kind and contract version it
/// implements, or why it may not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: PluginKind,
    /// The exported interface, e.g. `accord:parser/parser@0.1.0`.
    pub export: String,
    pub version: Version,
}

/// Parse the component's top-level imports/exports and custom sections.
pub fn inspect(wasm: &[u8]) -> Result<Inspection, String> {
    let mut out = Inspection::default();
    let mut depth = 0usize;
    let mut is_component = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("not a valid WebAssembly binary: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 {
                    is_component = encoding == Encoding::Component;
                    if !is_component {
                        return Err(
                            "a core WebAssembly module, not a component (build for wasm32-wasip2)"
                                .into(),
                        );
                    }
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| format!("bad import section: {e}"))?;
                    out.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| format!("bad export section: {e}"))?;
                    out.exports.push(export.name.name.to_string());
                }
            }
            Payload::CustomSection(reader) if reader.name() == "accord-contract" => {
                out.contract_section = Some(String::from_utf8_lossy(reader.data()).into_owned());
            }
            _ => {}
        }
    }
    if !is_component {
        return Err("empty input".into());
    }
    Ok(out)
}

/// `name@version` split into its parts.
fn split_versioned(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    }
}

/// Check imports against the sandbox policy and exports against `expected`
/// (the manifest's kind, when there is one). `plugin` names the plugin in
/// every message.
pub fn verdict(
    plugin: &str,
    found: &Inspection,
    expected: Option<PluginKind>,
) -> Result<Verdict, String> {
    let denied: Vec<&str> = found
        .imports
        .iter()
        .filter(|i| !ALLOWED_IMPORTS.contains(&split_versioned(i).0))
        .map(String::as_str)
        .collect();
    if !denied.is_empty() {
        return Err(format!(
            "plugin `{plugin}` imports {}, which the sandbox does not grant \
             (plugins get no filesystem, sockets or clocks; allowed: accord:host/log, \
             wasi:io, wasi:cli stdio/exit/empty environment, wasi:random)",
            denied
                .iter()
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let mut implemented = Vec::new();
    let mut unknown_major = Vec::new();
    for export in &found.exports {
        let (name, version) = split_versioned(export);
        let Some((kind, _, supported)) = SUPPORTED.iter().find(|(_, n, _)| *n == name) else {
            continue;
        };
        match version.and_then(Version::parse) {
            Some(v) if v.compatible_with(*supported) => implemented.push(Verdict {
                kind: *kind,
                export: export.clone(),
                version: v,
            }),
            _ => unknown_major.push(export.clone()),
        }
    }

    let supported_list = || {
        SUPPORTED
            .iter()
            .map(|(_, n, v)| format!("{n}@{}.{}.x", v.major, v.minor))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match implemented.len() {
        1 => {}
        0 if !unknown_major.is_empty() => {
            return Err(format!(
                "plugin `{plugin}` exports {}, a contract version this host does not support \
                 (this host supports {})",
                unknown_major.join(", "),
                supported_list()
            ));
        }
        0 => {
            return Err(format!(
                "plugin `{plugin}` exports no accord plugin interface (exports: [{}]; this host supports {})",
                found.exports.join(", "),
                supported_list()
            ));
        }
        _ => {
            return Err(format!(
                "plugin `{plugin}` exports more than one plugin interface ({}); a plugin is exactly one kind",
                implemented
                    .iter()
                    .map(|v| v.export.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let verdict = implemented.remove(0);
    if let Some(expected) = expected
        && expected != verdict.kind
    {
        return Err(format!(
            "plugin `{plugin}` is declared a {expected} in its manifest but exports {}",
            verdict.export
        ));
    }
    if let Some(section) = &found.contract_section {
        let want = format!("{}@", verdict.kind);
        if !section.starts_with(&want) {
            return Err(format!(
                "plugin `{plugin}`: its SDK contract section says `{section}` but it exports {}",
                verdict.export
            ));
        }
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(imports: &[&str], exports: &[&str]) -> Inspection {
        Inspection {
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: exports.iter().map(|s| s.to_string()).collect(),
            contract_section: None,
        }
    }

    #[test]
    fn semver_rules_for_zero_majors() {
        let v010 = Version::parse("0.1.0").unwrap();
        assert!(Version::parse("0.1.7").unwrap().compatible_with(v010));
        assert!(!Version::parse("0.2.0").unwrap().compatible_with(v010));
        assert!(!Version::parse("1.0.0").unwrap().compatible_with(v010));
        assert!(
            Version::parse("1.2.0")
                .unwrap()
                .compatible_with(Version::parse("1.0.0").unwrap())
        );
        assert_eq!(Version::parse("0.1"), None);
    }

    #[test]
    fn refuses_filesystem_naming_the_import() {
        let f = found(
            &["wasi:io/streams@0.2.6", "wasi:filesystem/preopens@0.2.6"],
            &["accord:parser/parser@0.1.0"],
        );
        let err = verdict("sneaky", &f, None).unwrap_err();
        assert!(
            err.contains("`sneaky`") && err.contains("wasi:filesystem/preopens@0.2.6"),
            "{err}"
        );
    }

    #[test]
    fn unknown_major_names_plugin_export_and_supported() {
        let f = found(&[], &["accord:parser/parser@1.0.0"]);
        let err = verdict("future", &f, None).unwrap_err();
        assert!(err.contains("`future`"), "{err}");
        assert!(err.contains("accord:parser/parser@1.0.0"), "{err}");
        assert!(err.contains("accord:parser/parser@0.1.x"), "{err}");
    }

    #[test]
    fn kind_must_match_manifest() {
        let f = found(
            &["accord:host/log@0.1.0"],
            &["accord:matcher/matcher@0.1.0"],
        );
        assert_eq!(
            verdict("m", &f, Some(PluginKind::Matcher)).unwrap().kind,
            PluginKind::Matcher
        );
        assert!(
            verdict("m", &f, Some(PluginKind::Parser))
                .unwrap_err()
                .contains("declared a parser")
        );
    }
}
