//! The child's environment, computed as a value (pure, table-tested).
//!
//! Child env = keywarden's env − always-denied names − policy `deny_env`
//! globs − `env://` sources − variables whose value equals a resolved secret
//! (− everything not in `keep_env` with `--clean-env`) + refs resolved in
//! place + registry injections + fixed extras (e.g. `HOME` for `--user`).

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Names never passed to the child, whatever the policy says (SPEC's list,
/// plus the audit fingerprint key).
pub const ALWAYS_DENIED: [&str; 7] = [
    "INTERNAL_API_TOKEN",
    "ENCRYPTION_KEY*",
    "*_MASTER_KEY",
    "*_MANAGEMENT_KEY",
    "HITL_CHALLENGE_HMAC_KEY",
    "KEYWARDEN_ADMIN_*",
    "KEYWARDEN_AUDIT_KEY",
];

/// `*` matches any run of characters (including none); everything else
/// matches itself. Case-sensitive, like variable names.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The always-denied names plus the policy's globs.
#[derive(Debug, Clone)]
pub struct DenyList {
    globs: Vec<String>,
}

impl DenyList {
    /// The fixed list plus `extra` globs.
    pub fn new(extra: &[String]) -> Self {
        let mut globs: Vec<String> = ALWAYS_DENIED.iter().map(|s| s.to_string()).collect();
        globs.extend(extra.iter().cloned());
        DenyList { globs }
    }

    /// Whether `name` must never reach the child.
    pub fn is_denied(&self, name: &str) -> bool {
        self.globs.iter().any(|g| glob_match(g, name))
    }
}

/// A value in the child's environment: inherited text, or the index of a
/// resolved secret (kept apart so the value is only materialised at spawn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// A value taken as it is.
    Plain(OsString),
    /// The resolved secret at this index.
    Secret(usize),
}

/// What shapes the child's environment besides keywarden's own.
#[derive(Debug, Clone, Default)]
pub struct EnvSpec {
    /// Policy `deny_env` globs (the fixed list is always applied).
    pub deny: Vec<String>,
    /// Keep only `keep` (plus injected and extras).
    pub clean: bool,
    /// Names kept with `clean`.
    pub keep: Vec<String>,
    /// Variables read through `env://`: removed.
    pub env_sources: Vec<String>,
    /// name → secret index: registry injections and refs resolved in place.
    pub inject: Vec<(String, usize)>,
    /// Set last, overriding everything (e.g. `HOME`/`USER`/`LOGNAME`).
    pub extras: Vec<(String, OsString)>,
}

/// Compute the child's environment. `secrets[i]` is the value of secret `i`;
/// any inherited variable whose value equals one of them is dropped.
pub fn build(
    current: &[(OsString, OsString)],
    spec: &EnvSpec,
    secrets: &[&[u8]],
) -> Vec<(OsString, EnvValue)> {
    let deny = DenyList::new(&spec.deny);
    let values: HashSet<&[u8]> = secrets.iter().copied().filter(|v| !v.is_empty()).collect();
    let injected = |name: &OsStr| spec.inject.iter().any(|(n, _)| OsStr::new(n) == name);
    let extra = |name: &OsStr| spec.extras.iter().any(|(n, _)| OsStr::new(n) == name);
    let mut out: Vec<(OsString, EnvValue)> = Vec::with_capacity(current.len() + spec.inject.len());
    for (name, value) in current {
        let text = name.to_string_lossy();
        if deny.is_denied(&text)
            || spec.env_sources.iter().any(|s| s.as_str() == text)
            || injected(name)
            || extra(name)
            || (spec.clean && !spec.keep.iter().any(|k| k.as_str() == text))
            || values.contains(value.as_bytes())
        {
            continue;
        }
        out.push((name.clone(), EnvValue::Plain(value.clone())));
    }
    for (name, index) in &spec.inject {
        if !deny.is_denied(name) {
            out.push((OsString::from(name), EnvValue::Secret(*index)));
        }
    }
    for (name, value) in &spec.extras {
        out.push((OsString::from(name), EnvValue::Plain(value.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn names(env: &[(OsString, EnvValue)]) -> Vec<String> {
        env.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn globs() {
        let table = [
            ("ENCRYPTION_KEY*", "ENCRYPTION_KEY", true),
            ("ENCRYPTION_KEY*", "ENCRYPTION_KEY_V2", true),
            ("ENCRYPTION_KEY*", "MY_ENCRYPTION_KEY", false),
            ("*_MASTER_KEY", "LITELLM_MASTER_KEY", true),
            ("*_MASTER_KEY", "_MASTER_KEY", true),
            ("*_MASTER_KEY", "MASTER_KEY", false),
            ("*_MASTER_KEY", "LITELLM_MASTER_KEY_2", false),
            ("A*B*C", "AxxBxxC", true),
            ("A*B*C", "AxxBxx", false),
            ("*", "", true),
            ("X", "x", false),
        ];
        for (p, n, want) in table {
            assert_eq!(glob_match(p, n), want, "{p} ~ {n}");
        }
    }

    #[test]
    fn always_denied_names_are_stripped_others_pass() {
        let current = vars(&[
            ("INTERNAL_API_TOKEN", "a"),
            ("ENCRYPTION_KEY", "b"),
            ("ENCRYPTION_KEY_V1", "b1"),
            ("LITELLM_MASTER_KEY", "c"),
            ("OPENROUTER_MANAGEMENT_KEY", "d"),
            ("HITL_CHALLENGE_HMAC_KEY", "e"),
            ("KEYWARDEN_ADMIN_TOKEN", "f"),
            ("PATH", "/usr/bin"),
            ("MASTER_KEY_HINT", "g"),
            ("KEYWARDEN_REGISTRY", "r.yaml"),
        ]);
        let env = build(&current, &EnvSpec::default(), &[]);
        assert_eq!(
            names(&env),
            vec!["PATH", "MASTER_KEY_HINT", "KEYWARDEN_REGISTRY"]
        );
    }

    #[test]
    fn policy_globs_env_sources_and_equal_values() {
        let current = vars(&[
            ("AWS_SECRET", "x"),
            ("SRC", "s3cr3t-value"),
            ("COPY", "s3cr3t-value"),
            ("KEEP", "k"),
        ]);
        let spec = EnvSpec {
            deny: vec!["AWS_*".into()],
            env_sources: vec!["SRC".into()],
            ..EnvSpec::default()
        };
        let env = build(&current, &spec, &[b"s3cr3t-value"]);
        assert_eq!(names(&env), vec!["KEEP"]);
    }

    #[test]
    fn clean_env_keeps_only_keep_plus_injected_and_extras() {
        let current = vars(&[
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("NOISE", "n"),
            ("TOKEN", "kv://t"),
        ]);
        let spec = EnvSpec {
            clean: true,
            keep: vec!["PATH".into(), "HOME".into()],
            inject: vec![("TOKEN".into(), 0), ("OPENAI_API_KEY".into(), 1)],
            extras: vec![("HOME".into(), OsString::from("/home/app"))],
            ..EnvSpec::default()
        };
        let env = build(&current, &spec, &[b"v0", b"v1"]);
        assert_eq!(
            env,
            vec![
                (OsString::from("PATH"), EnvValue::Plain("/bin".into())),
                (OsString::from("TOKEN"), EnvValue::Secret(0)),
                (OsString::from("OPENAI_API_KEY"), EnvValue::Secret(1)),
                (OsString::from("HOME"), EnvValue::Plain("/home/app".into())),
            ]
        );
    }

    #[test]
    fn injection_replaces_an_inherited_value_in_place_of_the_ref() {
        let current = vars(&[("OPENAI_API_KEY", "file:///run/k")]);
        let spec = EnvSpec {
            inject: vec![("OPENAI_API_KEY".into(), 0)],
            ..EnvSpec::default()
        };
        let env = build(&current, &spec, &[b"resolved"]);
        assert_eq!(
            env,
            vec![(OsString::from("OPENAI_API_KEY"), EnvValue::Secret(0))]
        );
    }
}
