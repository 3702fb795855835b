//! The policy (`secrets-policy.json`): which secrets and schemes this
//! workload may use, how its environment is filtered, TTL ceilings, the
//! child's socket scopes and the KV backend. Every field is optional;
//! unknown fields are errors.

use std::path::Path;

use serde::Deserialize;

use super::Environment;
use crate::error::{Error, Result};
use crate::secret::Scheme;

/// Policy flags.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    /// Never log secret material (always true in keywarden; recorded).
    #[serde(default)]
    pub no_logging: Option<bool>,
    /// Never persist resolved values (always true in keywarden; recorded).
    #[serde(default)]
    pub no_persistence: Option<bool>,
}

/// Which KV backend `kv://` refs use.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum KvBackendConfig {
    /// The embedded encrypted store.
    Store,
    /// Vault / OpenBao KV v2 at `mount`.
    Vault {
        /// The KV mount, e.g. `secret`.
        mount: String,
    },
}

/// TTL ceilings per environment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TtlByEnv {
    dev: Option<u64>,
    ci: Option<u64>,
    prod: Option<u64>,
}

/// The parsed policy.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Secret ids this workload may use (all, when absent).
    #[serde(default)]
    pub allowed_secrets: Option<Vec<String>>,
    /// Schemes refs may use (all, when absent).
    #[serde(default)]
    pub allowed_schemes: Option<Vec<String>>,
    /// Flags.
    #[serde(default)]
    pub flags: Flags,
    /// Extra variable-name globs to strip from the child's environment.
    #[serde(default)]
    pub deny_env: Vec<String>,
    /// Variables kept with `clean_env` / `--clean-env`.
    #[serde(default)]
    pub keep_env: Option<Vec<String>>,
    /// Start the child with only `keep_env` plus injected variables.
    #[serde(default)]
    pub clean_env: bool,
    /// TTL ceilings per environment.
    #[serde(default)]
    pub max_ttl_seconds: TtlByEnv,
    /// Scopes granted to the child's socket token.
    #[serde(default)]
    pub child_scopes: Option<Vec<String>>,
    /// Which backend serves `kv://`.
    #[serde(default)]
    pub kv_backend: Option<KvBackendConfig>,
    /// The registry id of the Slack signing secret.
    #[serde(default)]
    pub slack_signing_secret: Option<String>,
}

/// Variables kept by `--clean-env` when the policy names none.
pub const DEFAULT_KEEP_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "TERM", "TZ", "USER"];

/// Remove double-quoted runs from a serde message: they quote input values.
fn strip_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quoted = false;
    for c in msg.chars() {
        match (c, quoted) {
            ('"', false) => {
                quoted = true;
                out.push_str("(value not shown)");
            }
            ('"', true) => quoted = false,
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

impl Policy {
    /// Parse policy JSON read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Policy> {
        let policy: Policy = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg);
            Error::config(format!(
                "{}:{}: {}",
                path.display(),
                e.line(),
                strip_quoted(msg).replace('`', "'")
            ))
        })?;
        if let Some(schemes) = &policy.allowed_schemes {
            for s in schemes {
                if Scheme::from_name(s).is_none() {
                    return Err(Error::config(format!(
                        "{}: allowed_schemes: unknown scheme '{s}'",
                        path.display()
                    )));
                }
            }
        }
        Ok(policy)
    }

    /// The TTL ceiling for `env`.
    pub fn max_ttl_for(&self, env: Environment) -> Option<u64> {
        match env {
            Environment::Dev => self.max_ttl_seconds.dev,
            Environment::Ci => self.max_ttl_seconds.ci,
            Environment::Prod => self.max_ttl_seconds.prod,
        }
    }

    /// Whether refs of `scheme` are allowed.
    pub fn allows_scheme(&self, scheme: Scheme) -> bool {
        self.allowed_schemes
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == scheme.as_str()))
    }

    /// Whether the secret `id` is allowed.
    pub fn allows_secret(&self, id: &str) -> bool {
        self.allowed_secrets
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == id))
    }

    /// The variables `--clean-env` keeps.
    pub fn keep_env(&self) -> Vec<String> {
        match &self.keep_env {
            Some(list) => list.clone(),
            None => DEFAULT_KEEP_ENV.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy> {
        Policy::parse(text, Path::new("pol.json"))
    }

    #[test]
    fn parses_the_seed_policy() {
        let text = r#"{
          "allowed_secrets": ["openai", "anthropic", "slack_bot"],
          "allowed_schemes": ["kv", "vault", "cred"],
          "flags": {"no_logging": true, "no_persistence": true},
          "deny_env": ["INTERNAL_API_TOKEN", "ENCRYPTION_KEY*"],
          "keep_env": ["PATH", "HOME"],
          "clean_env": false,
          "max_ttl_seconds": {"dev": 3600, "ci": 900, "prod": 300},
          "child_scopes": ["pool", "llm:chat"],
          "kv_backend": {"type": "store"},
          "slack_signing_secret": "slack_signing"
        }"#;
        let p = parse(text).expect("parses");
        assert!(p.allows_secret("openai") && !p.allows_secret("billing"));
        assert!(p.allows_scheme(Scheme::Kv) && !p.allows_scheme(Scheme::File));
        assert_eq!(p.max_ttl_for(Environment::Ci), Some(900));
        assert_eq!(p.kv_backend, Some(KvBackendConfig::Store));
        assert_eq!(p.keep_env(), vec!["PATH", "HOME"]);
        let vault =
            parse(r#"{"kv_backend": {"type": "vault", "mount": "secret"}}"#).expect("vault");
        assert_eq!(
            vault.kv_backend,
            Some(KvBackendConfig::Vault {
                mount: "secret".into()
            })
        );
    }

    #[test]
    fn empty_object_allows_everything() {
        let p = parse("{}").expect("parses");
        assert!(p.allows_secret("x") && p.allows_scheme(Scheme::Exec));
        assert_eq!(p.keep_env().len(), DEFAULT_KEEP_ENV.len());
    }

    #[test]
    fn errors_name_file_line_and_field_but_not_values() {
        let raw = format!("sk-{}", "Z".repeat(24));
        let table = [
            (
                "{\n  \"allowed_secret\": []\n}".to_string(),
                "pol.json:2: unknown field 'allowed_secret'",
            ),
            (
                format!("{{\n \"clean_env\": \"{raw}\"\n}}"),
                "pol.json:2: invalid type: string (value not shown), expected a boolean",
            ),
            (
                "{\"flags\": {\"loud\": true}}".to_string(),
                "unknown field 'loud'",
            ),
            (
                "{\"allowed_schemes\": [\"gopher\"]}".to_string(),
                "allowed_schemes: unknown scheme 'gopher'",
            ),
            (
                "{\"kv_backend\": {\"type\": \"etcd\"}}".to_string(),
                "unknown variant 'etcd'",
            ),
            (
                "{\"max_ttl_seconds\": {\"staging\": 1}}".to_string(),
                "unknown field 'staging'",
            ),
            ("{".to_string(), "pol.json:1: EOF"),
        ];
        for (text, want) in table {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(!err.contains(&raw), "{err:?}");
        }
    }
}
