//! The secret registry (`secrets-registry.yaml`): secret id → environment →
//! `secret_ref`, `scope`, `max_ttl_seconds`, `env`, `approval`,
//! `rotate_every_days`. Refs only, never values.
//!
//! Parsed strictly from a YAML tree that keeps line numbers (see
//! [`super::yaml`] for the two trees it is read from): unknown keys,
//! wrong types and values that are not refs are errors naming the file, the
//! line, the secret id and the key — the offending value is never echoed,
//! since it may be a key pasted by mistake.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar};

use super::yaml::{self, Flat, Node};
use super::Environment;
use crate::error::{Error, Result};
use crate::proxy::ProxySpec;
use crate::secret::SecretRef;

/// Whether using a secret needs a human's approval first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// No approval.
    None,
    /// A human-in-the-loop challenge must be answered first.
    Required,
}

/// One secret in one environment.
#[derive(Debug, Clone)]
pub struct EnvEntry {
    /// The environment.
    pub env: Environment,
    /// Line of the environment's key in the file.
    pub line: usize,
    /// Where the value lives.
    pub secret_ref: SecretRef,
    /// Scope labels (`pool`, `llm:chat`, `skill:NAME`, ...).
    pub scope: Vec<String>,
    /// Upper bound on how long a served value lives.
    pub max_ttl_seconds: Option<u64>,
    /// Inject into the child's environment under this name.
    pub env_var: Option<String>,
    /// Whether a human must approve use.
    pub approval: Approval,
    /// Rotation cadence, for `check`.
    pub rotate_every_days: Option<u64>,
    /// Served through the credential proxy, never given to the child.
    pub proxy: Option<ProxySpec>,
}

/// One secret id with its per-environment entries.
#[derive(Debug, Clone)]
pub struct RegistryEntry {
    /// The secret id.
    pub id: String,
    /// Line of the id in the file.
    pub line: usize,
    /// Entries by environment, in file order.
    pub envs: Vec<EnvEntry>,
}

impl RegistryEntry {
    /// The entry for `env`, if the registry has one.
    pub fn for_env(&self, env: Environment) -> Option<&EnvEntry> {
        self.envs.iter().find(|e| e.env == env)
    }
}

/// The whole registry.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The file it was read from.
    pub path: PathBuf,
    /// Secrets in file order.
    pub entries: Vec<RegistryEntry>,
}

const FIELDS: &str = "secret_ref, scope, max_ttl_seconds, env, approval, rotate_every_days, proxy";
const PROXY_FIELDS: &str = "preset, upstream, inject, allow, env, max_requests_per_minute";

struct Ctx<'p> {
    path: &'p Path,
}

impl Ctx<'_> {
    fn err(&self, line: usize, what: impl std::fmt::Display) -> Error {
        Error::config(format!("{}:{line}: {what}", self.path.display()))
    }
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A positive integer scalar.
fn positive<'t>(node: impl Node<'t>) -> Option<u64> {
    match node.scalar()? {
        Scalar::Integer(n) if *n > 0 => Some(*n as u64),
        _ => None,
    }
}

impl Registry {
    /// Parse registry YAML read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Registry> {
        let ctx = Ctx { path };
        // The flat tree when it can be built and read; every error, and
        // every document it does not take, from the marked tree.
        let halves = if text.len() >= SPLIT_FROM {
            yaml::split_point(text, text.len() / 2)
        } else {
            None
        };
        let flat = match halves {
            Some(at) => parse_halves(&ctx, text, at),
            None => parse_flat(&ctx, text, 1),
        };
        match flat {
            Some(registry) => Ok(registry),
            None => Self::parse_marked(&ctx, text),
        }
    }

    /// Parse from saphyr's marked tree (see [`super::yaml`]).
    fn parse_marked(ctx: &Ctx<'_>, text: &str) -> Result<Registry> {
        let docs = MarkedYaml::load_from_str(text).map_err(|e| {
            // Scanner messages describe syntax, never content.
            ctx.err(e.marker().line(), format!("invalid YAML: {}", e.info()))
        })?;
        if docs.len() > 1 {
            return Err(ctx.err(docs[1].line(), "expected one YAML document"));
        }
        from_root(ctx, docs.first())
    }

    /// The folder relative `file://` refs are taken from.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// Registries from this size (about 2,500 secrets) are read in two halves
/// on two threads: reading 50,000 secrets takes ~0.2 s on one.
const SPLIT_FROM: usize = 128 << 10;

/// The registry `text` holds, from the flat tree (`None`: the marked tree
/// must read it); `text` starts on line `first_line` of the file.
fn parse_flat(ctx: &Ctx<'_>, text: &str, first_line: usize) -> Option<Registry> {
    let flat = Flat::parse_from_line(text, first_line)?;
    from_root(ctx, flat.root()).ok()
}

/// [`parse_flat`] of `text` cut at `at` (see [`yaml::split_point`]), the
/// second half on a thread of its own; `None` if either half is not read
/// flat or an id is in both (the marked tree reports it).
fn parse_halves(ctx: &Ctx<'_>, text: &str, at: usize) -> Option<Registry> {
    let (first, second) = text.split_at(at);
    let second_line = 1 + first.bytes().filter(|&b| b == b'\n').count();
    let (first, second) = std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name("keywarden-read".into())
            .spawn_scoped(scope, || parse_flat(ctx, second, second_line));
        let first = parse_flat(ctx, first, 1);
        let second = match other {
            Ok(thread) => thread.join().ok().flatten(),
            Err(_) => parse_flat(ctx, second, second_line),
        };
        (first, second)
    });
    let (mut registry, second) = (first?, second?);
    let ids: HashSet<&str> = registry.entries.iter().map(|e| e.id.as_str()).collect();
    if second.entries.iter().any(|e| ids.contains(e.id.as_str())) {
        return None;
    }
    drop(ids);
    registry.entries.extend(second.entries);
    Some(registry)
}

/// The registry of a document whose root is `root` (`None`: no document).
fn from_root<'t>(ctx: &Ctx<'_>, root: Option<impl Node<'t>>) -> Result<Registry> {
    let empty = || Registry {
        path: ctx.path.to_path_buf(),
        entries: Vec::new(),
    };
    let Some(root) = root else {
        return Ok(empty());
    };
    if matches!(root.scalar(), Some(Scalar::Null)) {
        return Ok(empty());
    }
    let Some(map) = root.entries() else {
        return Err(ctx.err(
            root.line(),
            format!(
                "expected a mapping of secret ids, found {}",
                root.type_name()
            ),
        ));
    };
    let mut entries = Vec::new();
    for (key, value) in map {
        let line = key.line();
        let id = key
            .as_str()
            .filter(|id| is_valid_id(id))
            .ok_or_else(|| {
                ctx.err(
                    line,
                    "secret ids must be names of letters, digits, '_', '-' or '.'",
                )
            })?
            .to_string();
        let envs = parse_envs(ctx, &id, value)?;
        entries.push(RegistryEntry { id, line, envs });
    }
    Ok(Registry {
        path: ctx.path.to_path_buf(),
        entries,
    })
}

fn parse_envs<'t>(ctx: &Ctx<'_>, id: &str, node: impl Node<'t>) -> Result<Vec<EnvEntry>> {
    let Some(map) = node.entries() else {
        return Err(ctx.err(
            node.line(),
            format!(
                "secret '{id}': expected a mapping of environments (dev, ci, prod), found {}",
                node.type_name()
            ),
        ));
    };
    let mut envs = Vec::with_capacity(1);
    for (key, value) in map {
        let line = key.line();
        let env = key
            .as_str()
            .and_then(Environment::from_name)
            .ok_or_else(|| {
                let shown = key.as_str().map(|k| format!(" '{k}'")).unwrap_or_default();
                ctx.err(
                    line,
                    format!("secret '{id}': unknown environment{shown} (expected dev, ci or prod)"),
                )
            })?;
        envs.push(parse_entry(ctx, id, env, line, value)?);
    }
    Ok(envs)
}

fn parse_entry<'t>(
    ctx: &Ctx<'_>,
    id: &str,
    env: Environment,
    line: usize,
    node: impl Node<'t>,
) -> Result<EnvEntry> {
    let at = |what: String| format!("secret '{id}' env '{}': {what}", env.as_str());
    let Some(map) = node.entries() else {
        return Err(ctx.err(
            node.line(),
            at(format!(
                "expected a mapping of {FIELDS}, found {}",
                node.type_name()
            )),
        ));
    };
    let mut secret_ref = None;
    let mut scope = Vec::new();
    let mut max_ttl_seconds = None;
    let mut env_var = None;
    let mut approval = Approval::None;
    let mut rotate_every_days = None;
    let mut proxy = None;
    for (key, value) in map {
        let kline = value.line().max(key.line());
        let Some(name) = key.as_str() else {
            return Err(ctx.err(key.line(), at("keys must be strings".to_string())));
        };
        let expect = |what: &str| {
            ctx.err(
                kline,
                at(format!(
                    "{name}: expected {what}, found {}",
                    value.type_name()
                )),
            )
        };
        match name {
            "secret_ref" => {
                let text = value.as_str().ok_or_else(|| expect("a reference string"))?;
                let r = SecretRef::parse(text)
                    .map_err(|e| ctx.err(kline, at(format!("secret_ref: {e}"))))?;
                secret_ref = Some(r);
            }
            "scope" => {
                let Some(items) = value.items() else {
                    return Err(expect("a list of scope labels"));
                };
                for item in items {
                    let label = item
                        .as_str()
                        .filter(|s| !s.is_empty() && !s.chars().any(char::is_whitespace))
                        .ok_or_else(|| {
                            ctx.err(
                                item.line(),
                                at("scope: labels must be non-empty strings without spaces"
                                    .to_string()),
                            )
                        })?;
                    scope.push(label.to_string());
                }
            }
            "max_ttl_seconds" | "rotate_every_days" => {
                let n = positive(value).ok_or_else(|| expect("a positive integer"))?;
                if name == "max_ttl_seconds" {
                    max_ttl_seconds = Some(n);
                } else {
                    rotate_every_days = Some(n);
                }
            }
            "env" => {
                let var = value.as_str().ok_or_else(|| expect("a variable name"))?;
                if !is_valid_env_name(var) {
                    return Err(ctx.err(kline, at("env: not a valid variable name".to_string())));
                }
                env_var = Some(var.to_string());
            }
            "approval" => {
                approval = match value.as_str() {
                    Some("none") => Approval::None,
                    Some("required") => Approval::Required,
                    _ => {
                        return Err(ctx.err(
                            kline,
                            at("approval: expected 'none' or 'required'".to_string()),
                        ))
                    }
                };
            }
            "proxy" => {
                proxy =
                    Some(parse_proxy(value).map_err(|(l, e)| {
                        ctx.err(l.unwrap_or(kline), at(format!("proxy: {e}")))
                    })?);
            }
            other => {
                return Err(ctx.err(
                    key.line(),
                    at(format!(
                        "unknown field '{other}' (expected one of {FIELDS})"
                    )),
                ));
            }
        }
    }
    let secret_ref =
        secret_ref.ok_or_else(|| ctx.err(line, at("missing field 'secret_ref'".to_string())))?;
    Ok(EnvEntry {
        env,
        line,
        secret_ref,
        scope,
        max_ttl_seconds,
        env_var,
        approval,
        rotate_every_days,
        proxy,
    })
}

/// `proxy:` as a preset name or a block. Errors carry the line of the
/// offending key when known, and never a value.
fn parse_proxy<'t>(node: impl Node<'t>) -> std::result::Result<ProxySpec, (Option<usize>, String)> {
    if let Some(name) = node.as_str() {
        return Ok(ProxySpec {
            preset: Some(name.to_string()),
            ..ProxySpec::default()
        });
    }
    let Some(map) = node.entries() else {
        return Err((
            None,
            format!(
                "expected a preset name or a mapping, found {}",
                node.type_name()
            ),
        ));
    };
    let mut spec = ProxySpec::default();
    for (key, value) in map {
        let l = Some(value.line().max(key.line()));
        let name = key
            .as_str()
            .ok_or((l, "keys must be strings".to_string()))?;
        let expect = |what: &str| {
            (
                l,
                format!("{name}: expected {what}, found {}", value.type_name()),
            )
        };
        match name {
            "preset" | "upstream" | "inject" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| expect("a string"))?
                    .to_string();
                match name {
                    "preset" => spec.preset = Some(text),
                    "upstream" => spec.upstream = Some(text),
                    _ => spec.inject = Some(text),
                }
            }
            "allow" => {
                let Some(items) = value.items() else {
                    return Err(expect("a list of \"METHOD /path\" patterns"));
                };
                let mut allow = Vec::new();
                for item in items {
                    let text = item.as_str().ok_or((
                        Some(item.line()),
                        "allow: patterns must be strings".to_string(),
                    ))?;
                    allow.push(text.to_string());
                }
                spec.allow = Some(allow);
            }
            "env" => {
                let Some(vars) = value.entries() else {
                    return Err(expect("a mapping of variable names to templates"));
                };
                let mut env = Vec::new();
                for (k, v) in vars {
                    let (Some(name), Some(template)) = (k.as_str(), v.as_str()) else {
                        return Err((
                            Some(k.line()),
                            "env: names and templates must be strings".to_string(),
                        ));
                    };
                    env.push((name.to_string(), template.to_string()));
                }
                spec.env = Some(env);
            }
            "max_requests_per_minute" => {
                spec.max_requests_per_minute =
                    Some(positive(value).ok_or_else(|| expect("a positive integer"))?);
            }
            other => {
                return Err((
                    Some(key.line()),
                    format!("unknown field '{other}' (expected one of {PROXY_FIELDS})"),
                ))
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Registry> {
        Registry::parse(text, Path::new("reg.yaml"))
    }

    #[test]
    fn parses_the_seed_format() {
        let text = "openai:\n  dev:\n    secret_ref: \"kv://openai/dev/api_key\"\n    scope: [\"llm:chat\"]\n    max_ttl_seconds: 3600\n    env: OPENAI_API_KEY\n    approval: none\n    rotate_every_days: 30\n  prod:\n    secret_ref: kv://openai/prod/api_key\nbilling:\n  dev:\n    secret_ref: file://billing.key\n    approval: required\n";
        let reg = parse(text).expect("parses");
        assert_eq!(reg.entries.len(), 2);
        let openai = &reg.entries[0];
        assert_eq!(openai.id, "openai");
        let dev = openai.for_env(Environment::Dev).expect("dev");
        assert_eq!(dev.secret_ref.as_str(), "kv://openai/dev/api_key");
        assert_eq!(dev.scope, vec!["llm:chat"]);
        assert_eq!(dev.max_ttl_seconds, Some(3600));
        assert_eq!(dev.env_var.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(dev.rotate_every_days, Some(30));
        assert_eq!(dev.line, 2);
        assert!(openai.for_env(Environment::Ci).is_none());
        assert_eq!(reg.entries[1].envs[0].approval, Approval::Required);
    }

    #[test]
    fn empty_files_are_empty_registries() {
        assert!(parse("").expect("empty").entries.is_empty());
        assert!(parse("# nothing\n").expect("comment").entries.is_empty());
    }

    #[test]
    fn errors_name_file_line_id_and_key_but_never_the_value() {
        let raw = format!("sk-{}", "Q".repeat(24));
        let table: Vec<(String, &str, usize)> = vec![
            (
                format!("a:\n  dev:\n    secret_ref: {raw}\n"),
                "secret 'a' env 'dev': secret_ref: not a secret reference",
                3,
            ),
            (
                format!("a:\n  dev:\n    secret_ref: kv://x\n    scpe: [{raw}]\n"),
                "unknown field 'scpe'",
                4,
            ),
            (
                "a:\n  dev:\n    scope: [x]\n".to_string(),
                "missing field 'secret_ref'",
                2,
            ),
            (
                "a:\n  staging:\n    secret_ref: kv://x\n".to_string(),
                "unknown environment 'staging'",
                2,
            ),
            (
                "a:\n  dev:\n    secret_ref: gopher://x\n".to_string(),
                "unknown scheme 'gopher'",
                3,
            ),
            (
                format!("a:\n  dev:\n    secret_ref: kv://x\n    max_ttl_seconds: \"{raw}\"\n"),
                "max_ttl_seconds: expected a positive integer, found a string",
                4,
            ),
            (
                format!("a:\n  dev:\n    secret_ref: kv://x\n    scope: {raw}\n"),
                "scope: expected a list",
                4,
            ),
            (
                "a:\n  dev:\n    secret_ref: kv://x\n    env: 1BAD\n".to_string(),
                "env: not a valid variable name",
                4,
            ),
            (
                "a:\n  dev:\n    secret_ref: kv://x\n    approval: maybe\n".to_string(),
                "approval: expected 'none' or 'required'",
                4,
            ),
            (
                "a:\n  dev:\n    secret_ref: kv://x\n  dev:\n    secret_ref: kv://y\n".to_string(),
                "duplicated key",
                4,
            ),
            ("a: [\n".to_string(), "invalid YAML", 2),
            (
                "- a\n- b\n".to_string(),
                "expected a mapping of secret ids",
                1,
            ),
            (
                "a:\n  dev:\n    secret_ref: 12345678901234567\n".to_string(),
                "secret_ref: expected a reference string, found an integer",
                3,
            ),
        ];
        for (text, want, line) in table {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(
                err.starts_with(&format!("reg.yaml:{line}:")),
                "{err:?} line {line}"
            );
            assert!(!err.contains(&raw), "{err:?} echoes the value");
            assert!(
                !err.contains("12345678901234567"),
                "{err:?} echoes the value"
            );
        }
    }

    /// Cuts `text` at every place [`yaml::split_point`] offers: read in
    /// two halves, it must give what the marked tree gives, or nothing
    /// (never a registry where the marked tree finds an error). Returns
    /// how many cuts gave a registry.
    fn halves_agree(text: &str) -> usize {
        let ctx = Ctx {
            path: Path::new("reg.yaml"),
        };
        let marked = Registry::parse_marked(&ctx, text);
        let cuts: std::collections::BTreeSet<usize> = (0..=text.len())
            .filter_map(|from| yaml::split_point(text, from))
            .collect();
        let mut read = 0;
        for at in cuts {
            let Some(halves) = parse_halves(&ctx, text, at) else {
                continue;
            };
            match &marked {
                Ok(m) => assert_eq!(
                    format!("{halves:?}"),
                    format!("{m:?}"),
                    "{text:?} cut at {at}"
                ),
                Err(e) => panic!("{text:?} cut at {at}: read in halves, the marked tree says {e}"),
            }
            read += 1;
        }
        read
    }

    /// Reads `text` both ways: the flat tree must give what the marked
    /// tree gives (the registry, or the same error), or not be built.
    /// Returns whether it was built. Every cut in two halves is tried too.
    fn flat_agrees(text: &str) -> bool {
        halves_agree(text);
        let ctx = Ctx {
            path: Path::new("reg.yaml"),
        };
        let marked = Registry::parse_marked(&ctx, text);
        let Some(flat) = Flat::parse(text) else {
            return false;
        };
        match (from_root(&ctx, flat.root()), marked) {
            (Ok(f), Ok(m)) => assert_eq!(format!("{f:?}"), format!("{m:?}"), "{text:?}"),
            (Err(f), Err(m)) => assert_eq!(f.to_string(), m.to_string(), "{text:?}"),
            (f, m) => panic!("{text:?}: flat tree {f:?}, marked tree {m:?}"),
        }
        true
    }

    #[test]
    fn the_flat_tree_reads_plain_registries_as_the_marked_tree_does() {
        let plain = [
            "",
            "# nothing\n",
            "---\n",
            "~\n",
            "---\nopenai:\n  dev:\n    secret_ref: kv://a\n...\n",
            "openai:\n  dev:\n    secret_ref: \"kv://openai/dev/api_key\"\n    scope: [\"llm:chat\"]\n    max_ttl_seconds: 3600\n    env: OPENAI_API_KEY\n    approval: none\n    rotate_every_days: 30\n  prod:\n    secret_ref: kv://openai/prod/api_key\nbilling:\n  dev:\n    secret_ref: file://billing.key\n    approval: required\n",
            "s0: {dev: {secret_ref: file://secrets/s0}}\ns1: {dev: {secret_ref: file://secrets/s1}, ci: {secret_ref: 'env://S1'}}\n",
            "{a: {dev: {secret_ref: kv://a, scope: [x, y]}}}",
            "a:\n  dev:\n    secret_ref: >-\n      kv://folded\n    scope:\n      - one\n      - \"two\"\n",
            "a:\r\n  dev:\r\n    secret_ref: kv://crlf\r\n",
            "\u{feff}a:\n  dev:\n    secret_ref: kv://bom\n",
            "a:\n  dev:\n    secret_ref: kv://a # a comment\n    max_ttl_seconds: 0x10\n    rotate_every_days: 0o7\n",
            "a:\n  dev:\n    secret_ref: kv://a\n    max_ttl_seconds: +12\n",
            "\"quoted id\":\n  dev:\n    secret_ref: kv://a\n",
            "'a.b-c_d':\n  dev:\n    secret_ref: kv://a\n",
            "a:\n  dev:\n    secret_ref: kv://a\n    proxy: openai\nb:\n  dev:\n    secret_ref: kv://b\n    proxy:\n      preset: anthropic\n      upstream: https://example.com/v1\n      inject: \"Authorization: Bearer {secret}\"\n      allow: [\"GET /models\", \"POST /chat\"]\n      env: {B_URL: \"{url}\", B_KEY: \"{phantom}\"}\n      max_requests_per_minute: 60\n",
            "é:\n  dev:\n    secret_ref: kv://a\n",
            // Errors the walk finds in a plain document.
            "a:\n  dev:\n    scope: [x]\n",
            "a:\n  staging:\n    secret_ref: kv://x\n",
            "a:\n  dev:\n    secret_ref: gopher://x\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    max_ttl_seconds: \"12\"\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    max_ttl_seconds: 0\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    max_ttl_seconds: 1.5\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    scope: plain\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    scope: [\"has space\"]\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    env: 1BAD\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    approval: maybe\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    proxy: [x]\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    proxy: {allow: GET}\n",
            "a:\n  dev:\n    secret_ref: true\n",
            "a:\n  dev:\n    secret_ref:\n",
            "a:\n  dev: kv://x\n",
            "a: [dev]\n",
            "a:\n",
            "- a\n- b\n",
            "just text\n",
            "bad id!:\n  dev:\n    secret_ref: kv://x\n",
            "a:\n  dev:\n    secret_ref: kv://x\n    scpe: [y]\n",
        ];
        for text in plain {
            assert!(flat_agrees(text), "not read flat: {text:?}");
        }
        // What the flat tree leaves to the marked tree (and what that says).
        let marked_only = [
            (
                "a:\n  dev:\n    secret_ref: kv://x\n  dev:\n    secret_ref: kv://y\n",
                true,
            ),
            (
                "a:\n  dev:\n    secret_ref: kv://x\na:\n  dev:\n    secret_ref: kv://y\n",
                true,
            ),
            (
                "a:\n  dev:\n    secret_ref: kv://x\n    env: A\n    env: B\n",
                true,
            ),
            ("a: [\n", true),
            ("a:\n  dev:\n    secret_ref: kv://x\n---\nb: 1\n", true),
            ("base: &b {secret_ref: kv://x}\na:\n  dev: *b\n", true),
            ("a: &a\n  dev:\n    secret_ref: kv://x\n", false),
            ("a:\n  dev: !custom {secret_ref: kv://x}\n", true),
            ("a:\n  dev:\n    secret_ref: !!str kv://x\n", false),
            ("1:\n  dev:\n    secret_ref: kv://x\n", true),
            ("? [a]\n: {dev: {secret_ref: kv://x}}\n", true),
            (
                "a:\n  dev:\n    secret_ref: kv://x\n    max_ttl_seconds: !!int x\n",
                true,
            ),
        ];
        for (text, fails) in marked_only {
            assert!(!flat_agrees(text), "read flat: {text:?}");
            assert_eq!(parse(text).is_err(), fails, "{text:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Registries pieced together from valid and invalid parts, in
        /// block and flow style.
        #[test]
        fn the_flat_tree_agrees_on_generated_registries(
            entries in proptest::collection::vec(
                (0..6usize, 0..5usize, proptest::collection::vec((0..12usize, 0..14usize), 0..5), proptest::bool::ANY),
                0..6,
            ),
        ) {
            let ids = ["a", "b", "s1", "\"quoted\"", "bad id", "1"];
            let envs = ["dev", "ci", "prod", "staging", "'dev'"];
            let keys = [
                "secret_ref", "scope", "max_ttl_seconds", "env", "approval",
                "rotate_every_days", "proxy", "nope", "\"secret_ref\"", "~", "1", "[x]",
            ];
            let values = [
                "kv://x", "file://s/a", "\"env://A\"", "gopher://x", "[a, b]", "[\"a b\"]",
                "12", "0", "-3", "1.5", "true", "~", "{preset: openai}", "OPENAI_API_KEY",
            ];
            let mut text = String::new();
            for (id, env, fields, flow) in &entries {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}: {}", keys[*k], values[*v]))
                    .collect();
                if *flow {
                    text += &format!("{}: {{{}: {{{}}}}}\n", ids[*id], envs[*env], fields.join(", "));
                } else {
                    text += &format!("{}:\n  {}:\n", ids[*id], envs[*env]);
                    for f in &fields {
                        text += &format!("    {f}\n");
                    }
                }
            }
            flat_agrees(&text);
        }
    }

    #[test]
    fn a_registry_cut_in_two_reads_as_the_whole() {
        let seed = "openai:\n  dev:\n    secret_ref: kv://openai/dev/api_key\n    env: OPENAI_API_KEY\n# a comment\nbilling:\n  dev:\n    secret_ref: file://billing.key\n    approval: required\nslack: {dev: {secret_ref: 'env://SLACK'}}\n";
        assert_eq!(halves_agree(seed), 2, "cut before billing and before slack");
        // Block scalars, comments, blank lines and explicit keys end where
        // the next top-level key starts: each cut reads as the whole.
        for (text, cuts) in [
            ("a:\n  dev:\n    secret_ref: >-\n      kv://folded\n\n# note\nb:   \n  dev:\n    secret_ref: kv://y\n", 1),
            ("? a\n: {dev: {secret_ref: kv://x}}\nb:\n  dev:\n    secret_ref: kv://y\n", 1),
            ("a:\n  dev:\n    secret_ref: |-\n      kv://x\nb: {dev: {secret_ref: kv://y}}\nc: {dev: {secret_ref: kv://z}}\n", 2),
        ] {
            assert_eq!(halves_agree(text), cuts, "{text:?}");
        }
        // What a cut must not read as two documents.
        for text in [
            "a:\n  dev:\n    secret_ref: kv://x\nb:\n  dev:\n    secret_ref: kv://x\na:\n  dev:\n    secret_ref: kv://y\n",
            "a: {dev: {secret_ref: kv://x},\nb: 1}\n",
            "a: \"kv://x\nb: 1\"\n",
            "a: 'kv://x\nb: 1'\n",
            "a: [x,\nb: 1]\n",
            "a:\n  dev:\n    secret_ref: kv://x\n...\nb:\n  dev:\n    secret_ref: kv://y\n",
            "a:\n  dev:\n    secret_ref: kv://x\n---\nb:\n  dev:\n    secret_ref: kv://y\n",
            "a:\r  dev:\r    secret_ref: kv://x\rb:\r  dev:\r    secret_ref: kv://y\r",
            "a: |\n  text\nb:\n  dev:\n    secret_ref: kv://y\n",
            "a:\n  dev:\n    secret_ref: kv://x\nb: &b\n  dev:\n    secret_ref: kv://y\nc: *b\n",
        ] {
            assert_eq!(halves_agree(text), 0, "{text:?}");
        }
    }

    #[test]
    fn a_large_registry_is_read_in_halves_with_its_lines() {
        let mut text = String::new();
        let mut i = 0;
        while text.len() < 2 * SPLIT_FROM {
            text +=
                &format!("s{i}:\n  dev:\n    secret_ref: file://secrets/s{i}\n    env: S_{i}\n");
            i += 1;
        }
        assert!(yaml::split_point(&text, text.len() / 2).is_some());
        let whole = parse(&text).expect("a valid registry");
        let ctx = Ctx {
            path: Path::new("reg.yaml"),
        };
        let marked = Registry::parse_marked(&ctx, &text).expect("a valid registry");
        assert_eq!(format!("{whole:?}"), format!("{marked:?}"));
        assert_eq!(whole.entries.len(), i);
        assert_eq!(whole.entries[i - 1].line, 4 * (i - 1) + 1);
        // The same id in both halves: the marked tree's error.
        let twice = format!("{text}s0:\n  dev:\n    secret_ref: kv://x\n");
        let err = parse(&twice).expect_err("an id twice").to_string();
        assert_eq!(
            err,
            Registry::parse_marked(&ctx, &twice)
                .expect_err("an id twice")
                .to_string()
        );
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_x", "OPENAI_API_KEY", "a1"] {
            assert!(is_valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B"] {
            assert!(!is_valid_env_name(bad), "{bad}");
        }
    }
}
