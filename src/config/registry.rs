//! The secret registry (`secrets-registry.yaml`): secret id → environment →
//! `secret_ref`, `scope`, `max_ttl_seconds`, `env`, `approval`,
//! `rotate_every_days`. Refs only, never values.
//!
//! Parsed strictly from a YAML tree that keeps line numbers: unknown keys,
//! wrong types and values that are not refs are errors naming the file, the
//! line, the secret id and the key — the offending value is never echoed,
//! since it may be a key pasted by mistake.

use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

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

fn line_of(node: &MarkedYaml<'_>) -> usize {
    node.span.start.line()
}

fn as_str<'a>(node: &'a MarkedYaml<'_>) -> Option<&'a str> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.as_ref()),
        _ => None,
    }
}

fn type_name(node: &MarkedYaml<'_>) -> &'static str {
    match &node.data {
        YamlData::Value(Scalar::String(_)) => "a string",
        YamlData::Value(Scalar::Integer(_)) => "an integer",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Null) => "empty",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "a mapping",
        _ => "an unsupported value",
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

impl Registry {
    /// Parse registry YAML read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Registry> {
        let ctx = Ctx { path };
        let docs = MarkedYaml::load_from_str(text).map_err(|e| {
            // Scanner messages describe syntax, never content.
            ctx.err(e.marker().line(), format!("invalid YAML: {}", e.info()))
        })?;
        let mut entries = Vec::new();
        let Some(root) = docs.first() else {
            return Ok(Registry {
                path: path.to_path_buf(),
                entries,
            });
        };
        if docs.len() > 1 {
            return Err(ctx.err(line_of(&docs[1]), "expected one YAML document"));
        }
        let map = match &root.data {
            YamlData::Mapping(m) => m,
            YamlData::Value(Scalar::Null) => {
                return Ok(Registry {
                    path: path.to_path_buf(),
                    entries,
                })
            }
            _ => {
                return Err(ctx.err(
                    line_of(root),
                    format!(
                        "expected a mapping of secret ids, found {}",
                        type_name(root)
                    ),
                ))
            }
        };
        for (key, value) in map.iter() {
            let line = line_of(key);
            let id = as_str(key)
                .filter(|id| is_valid_id(id))
                .ok_or_else(|| {
                    ctx.err(
                        line,
                        "secret ids must be names of letters, digits, '_', '-' or '.'",
                    )
                })?
                .to_string();
            let envs = parse_envs(&ctx, &id, value)?;
            entries.push(RegistryEntry { id, line, envs });
        }
        Ok(Registry {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The folder relative `file://` refs are taken from.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

fn parse_envs(ctx: &Ctx<'_>, id: &str, node: &MarkedYaml<'_>) -> Result<Vec<EnvEntry>> {
    let YamlData::Mapping(map) = &node.data else {
        return Err(ctx.err(
            line_of(node),
            format!(
                "secret '{id}': expected a mapping of environments (dev, ci, prod), found {}",
                type_name(node)
            ),
        ));
    };
    let mut envs = Vec::new();
    for (key, value) in map.iter() {
        let line = line_of(key);
        let env = as_str(key)
            .and_then(Environment::from_name)
            .ok_or_else(|| {
                let shown = as_str(key).map(|k| format!(" '{k}'")).unwrap_or_default();
                ctx.err(
                    line,
                    format!("secret '{id}': unknown environment{shown} (expected dev, ci or prod)"),
                )
            })?;
        envs.push(parse_entry(ctx, id, env, line, value)?);
    }
    Ok(envs)
}

fn parse_entry(
    ctx: &Ctx<'_>,
    id: &str,
    env: Environment,
    line: usize,
    node: &MarkedYaml<'_>,
) -> Result<EnvEntry> {
    let at = |what: String| format!("secret '{id}' env '{}': {what}", env.as_str());
    let YamlData::Mapping(map) = &node.data else {
        return Err(ctx.err(
            line_of(node),
            at(format!(
                "expected a mapping of {FIELDS}, found {}",
                type_name(node)
            )),
        ));
    };
    let mut secret_ref = None;
    let mut entry = EnvEntry {
        env,
        line,
        secret_ref: SecretRef::parse("env://_").map_err(|_| ctx.err(line, "internal"))?,
        scope: Vec::new(),
        max_ttl_seconds: None,
        env_var: None,
        approval: Approval::None,
        rotate_every_days: None,
        proxy: None,
    };
    for (key, value) in map.iter() {
        let kline = line_of(value).max(line_of(key));
        let Some(name) = as_str(key) else {
            return Err(ctx.err(line_of(key), at("keys must be strings".to_string())));
        };
        let expect = |what: &str| {
            ctx.err(
                kline,
                at(format!(
                    "{name}: expected {what}, found {}",
                    type_name(value)
                )),
            )
        };
        match name {
            "secret_ref" => {
                let text = as_str(value).ok_or_else(|| expect("a reference string"))?;
                let r = SecretRef::parse(text)
                    .map_err(|e| ctx.err(kline, at(format!("secret_ref: {e}"))))?;
                secret_ref = Some(r);
            }
            "scope" => {
                let YamlData::Sequence(items) = &value.data else {
                    return Err(expect("a list of scope labels"));
                };
                for item in items {
                    let label = as_str(item)
                        .filter(|s| !s.is_empty() && !s.chars().any(char::is_whitespace))
                        .ok_or_else(|| {
                            ctx.err(
                                line_of(item),
                                at("scope: labels must be non-empty strings without spaces"
                                    .to_string()),
                            )
                        })?;
                    entry.scope.push(label.to_string());
                }
            }
            "max_ttl_seconds" | "rotate_every_days" => {
                let n = match &value.data {
                    YamlData::Value(Scalar::Integer(n)) if *n > 0 => *n as u64,
                    _ => return Err(expect("a positive integer")),
                };
                if name == "max_ttl_seconds" {
                    entry.max_ttl_seconds = Some(n);
                } else {
                    entry.rotate_every_days = Some(n);
                }
            }
            "env" => {
                let var = as_str(value).ok_or_else(|| expect("a variable name"))?;
                if !is_valid_env_name(var) {
                    return Err(ctx.err(kline, at("env: not a valid variable name".to_string())));
                }
                entry.env_var = Some(var.to_string());
            }
            "approval" => {
                entry.approval = match as_str(value) {
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
                entry.proxy =
                    Some(parse_proxy(value).map_err(|(l, e)| {
                        ctx.err(l.unwrap_or(kline), at(format!("proxy: {e}")))
                    })?);
            }
            other => {
                return Err(ctx.err(
                    line_of(key),
                    at(format!(
                        "unknown field '{other}' (expected one of {FIELDS})"
                    )),
                ));
            }
        }
    }
    entry.secret_ref =
        secret_ref.ok_or_else(|| ctx.err(line, at("missing field 'secret_ref'".to_string())))?;
    Ok(entry)
}

/// `proxy:` as a preset name or a block. Errors carry the line of the
/// offending key when known, and never a value.
fn parse_proxy(node: &MarkedYaml<'_>) -> std::result::Result<ProxySpec, (Option<usize>, String)> {
    if let Some(name) = as_str(node) {
        return Ok(ProxySpec {
            preset: Some(name.to_string()),
            ..ProxySpec::default()
        });
    }
    let YamlData::Mapping(map) = &node.data else {
        return Err((
            None,
            format!(
                "expected a preset name or a mapping, found {}",
                type_name(node)
            ),
        ));
    };
    let mut spec = ProxySpec::default();
    for (key, value) in map.iter() {
        let l = Some(line_of(value).max(line_of(key)));
        let name = as_str(key).ok_or((l, "keys must be strings".to_string()))?;
        let expect = |what: &str| {
            (
                l,
                format!("{name}: expected {what}, found {}", type_name(value)),
            )
        };
        match name {
            "preset" | "upstream" | "inject" => {
                let text = as_str(value).ok_or_else(|| expect("a string"))?.to_string();
                match name {
                    "preset" => spec.preset = Some(text),
                    "upstream" => spec.upstream = Some(text),
                    _ => spec.inject = Some(text),
                }
            }
            "allow" => {
                let YamlData::Sequence(items) = &value.data else {
                    return Err(expect("a list of \"METHOD /path\" patterns"));
                };
                let mut allow = Vec::new();
                for item in items {
                    let text = as_str(item).ok_or((
                        Some(line_of(item)),
                        "allow: patterns must be strings".to_string(),
                    ))?;
                    allow.push(text.to_string());
                }
                spec.allow = Some(allow);
            }
            "env" => {
                let YamlData::Mapping(vars) = &value.data else {
                    return Err(expect("a mapping of variable names to templates"));
                };
                let mut env = Vec::new();
                for (k, v) in vars.iter() {
                    let (Some(k), Some(v)) = (as_str(k), as_str(v)) else {
                        return Err((
                            Some(line_of(k)),
                            "env: names and templates must be strings".to_string(),
                        ));
                    };
                    env.push((k.to_string(), v.to_string()));
                }
                spec.env = Some(env);
            }
            "max_requests_per_minute" => {
                spec.max_requests_per_minute = match &value.data {
                    YamlData::Value(Scalar::Integer(n)) if *n > 0 => Some(*n as u64),
                    _ => return Err(expect("a positive integer")),
                };
            }
            other => {
                return Err((
                    Some(line_of(key)),
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
