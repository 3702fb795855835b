//! The child's environment, computed as a value (pure, table-tested).
//!
//! Child env = keywarden's env − always-denied names − policy `deny_env`
//! globs − `env://` sources − variables whose value equals or contains a
//! resolved secret or an always-denied variable's value (− everything not
//! in `keep_env` with `--clean-env`) + refs resolved in place + registry
//! injections + fixed extras (e.g. `HOME` for `--user`).
//!
//! Providers that keywarden starts get [`provider_env`]: keywarden's env
//! − always-denied names − `env://` sources − `KEYWARDEN_*`. And
//! [`exec_limits`] says, before `execve`, which variable cannot be passed.

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Names never passed to the child nor to a provider, whatever the policy
/// says (SPEC's list, plus the audit fingerprint key). Matched without
/// regard to case.
pub const ALWAYS_DENIED: [&str; 7] = [
    "INTERNAL_API_TOKEN",
    "ENCRYPTION_KEY*",
    "*MASTER_KEY",
    "*MANAGEMENT_KEY",
    "HITL_CHALLENGE_HMAC_KEY",
    "KEYWARDEN_ADMIN_*",
    "KEYWARDEN_AUDIT_KEY",
];

/// The prefix of keywarden's own variables: never passed to a provider,
/// never injected by the registry.
pub const OWN_PREFIX: &str = "KEYWARDEN_";

/// A value of this many bytes or more is stripped wherever it appears
/// inside another variable's value (a shorter one only when equal).
pub const MIN_CONTAINED_LEN: usize = 8;

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

/// Whether `name` is on the fixed list (`encryption_key` and
/// `Internal_Api_Token` too: a variable spelt in another case holds the
/// same key for the many programs that read names case-insensitively).
pub fn is_always_denied(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ALWAYS_DENIED.iter().any(|g| glob_match(g, &upper))
}

/// Whether `name` is one of keywarden's own variables (`KEYWARDEN_*`, in
/// any case).
pub fn is_own(name: &str) -> bool {
    name.len() >= OWN_PREFIX.len()
        && name.as_bytes()[..OWN_PREFIX.len()].eq_ignore_ascii_case(OWN_PREFIX.as_bytes())
}

/// The always-denied names plus the policy's globs (these match as
/// written: variable names are case-sensitive).
#[derive(Debug, Clone)]
pub struct DenyList {
    globs: Vec<String>,
}

impl DenyList {
    /// The fixed list plus `extra` globs.
    pub fn new(extra: &[String]) -> Self {
        DenyList {
            globs: extra.to_vec(),
        }
    }

    /// Whether `name` must never reach the child.
    pub fn is_denied(&self, name: &str) -> bool {
        is_always_denied(name) || self.globs.iter().any(|g| glob_match(g, name))
    }
}

/// The values of keywarden's always-denied variables (non-empty ones).
pub fn denied_values(current: &[(OsString, OsString)]) -> Vec<&[u8]> {
    current
        .iter()
        .filter(|(name, value)| !value.is_empty() && is_always_denied(&name.to_string_lossy()))
        .map(|(_, value)| value.as_bytes())
        .collect()
}

/// Values that must not reach the child inside another variable: a value
/// equal to one of them, or holding one of [`MIN_CONTAINED_LEN`] bytes or
/// more, is stripped. Kept sorted, so a lookup is a binary search and
/// building costs one sort: no hashing, no allocation per value (this runs
/// at every start, with up to tens of thousands of secrets).
struct Needles<'a> {
    sorted: Vec<&'a [u8]>,
}

impl<'a> Needles<'a> {
    /// `secrets` strip an equal value of any length; `denied` values only
    /// from [`MIN_CONTAINED_LEN`] bytes (`ENCRYPTION_KEY_VERSION=1` must not
    /// strip every variable that is `1`).
    fn new(secrets: &[&'a [u8]], denied: &[&'a [u8]]) -> Self {
        let mut sorted: Vec<&[u8]> = secrets
            .iter()
            .copied()
            .filter(|v| !v.is_empty())
            .chain(
                denied
                    .iter()
                    .copied()
                    .filter(|v| v.len() >= MIN_CONTAINED_LEN),
            )
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        Needles { sorted }
    }

    /// Whether `value` equals or contains a needle.
    fn found_in(&self, value: &[u8]) -> bool {
        if self.sorted.binary_search(&value).is_ok() {
            return true;
        }
        if value.len() < MIN_CONTAINED_LEN {
            return false;
        }
        (0..=value.len() - MIN_CONTAINED_LEN).any(|i| {
            let window = &value[i..i + MIN_CONTAINED_LEN];
            let first = self.sorted.partition_point(|v| *v < window);
            self.sorted[first..]
                .iter()
                .take_while(|v| v.starts_with(window))
                .any(|v| value[i..].starts_with(v))
        })
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

/// Compute the child's environment. `secrets[i]` is the value of secret
/// `i`; an inherited variable whose value equals or contains one of them,
/// or an always-denied variable's value, is dropped (an injected one is
/// replaced, never checked).
pub fn build(
    current: &[(OsString, OsString)],
    spec: &EnvSpec,
    secrets: &[&[u8]],
) -> Vec<(OsString, EnvValue)> {
    let deny = DenyList::new(&spec.deny);
    let needles = Needles::new(secrets, &denied_values(current));
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
            || needles.found_in(value.as_bytes())
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

/// The environment of a provider program keywarden starts (`exec://`,
/// `pass`, `op`): keywarden's own, minus every always-denied variable,
/// every `env://` source and every `KEYWARDEN_*` variable.
pub fn provider_env(
    current: &[(OsString, OsString)],
    env_sources: &[String],
) -> Vec<(OsString, OsString)> {
    current
        .iter()
        .filter(|(name, _)| {
            let text = name.to_string_lossy();
            !is_always_denied(&text)
                && !is_own(&text)
                && !env_sources.iter().any(|s| s.as_str() == text)
        })
        .cloned()
        .collect()
}

/// The kernel's cap on one argument or `NAME=value` string, its NUL
/// included (`MAX_ARG_STRLEN`: 32 pages of 4 KiB).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Why the environment cannot be passed to `execve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecProblem {
    /// This variable's value holds a NUL byte.
    Nul(String),
    /// This variable's `NAME=value` string is longer than `MAX_ARG_STRLEN`.
    TooLong(String),
    /// Arguments and environment together exceed `ARG_MAX`; this variable
    /// is the largest.
    TooMuch(String),
}

impl ExecProblem {
    /// The variable at fault.
    pub fn variable(&self) -> &str {
        match self {
            ExecProblem::Nul(v) | ExecProblem::TooLong(v) | ExecProblem::TooMuch(v) => v,
        }
    }

    /// What is wrong, for a message that names the variable.
    pub fn reason(&self) -> String {
        match self {
            ExecProblem::Nul(_) => "its value holds a NUL byte, which no environment can carry".into(),
            ExecProblem::TooLong(_) => format!(
                "its value is larger than the {} KiB the kernel passes in one variable",
                MAX_ARG_STRLEN / 1024
            ),
            ExecProblem::TooMuch(_) => {
                "the environment (this is its largest variable) is larger than the kernel passes to a command".into()
            }
        }
    }
}

/// Check `env` (with `argv`) against what `execve` accepts: no NUL in a
/// value, no `NAME=value` string longer than [`MAX_ARG_STRLEN`], and every
/// string plus its pointer within `arg_max` bytes (`sysconf(_SC_ARG_MAX)`).
pub fn exec_limits(
    env: &[(OsString, OsString)],
    argv: &[OsString],
    arg_max: usize,
) -> Result<(), ExecProblem> {
    let name = |n: &OsString| n.to_string_lossy().into_owned();
    let pointer = std::mem::size_of::<usize>();
    let mut total: usize = argv.iter().map(|a| a.len() + 1 + pointer).sum();
    let mut largest: Option<(&OsString, usize)> = None;
    for (k, v) in env {
        if v.as_bytes().contains(&0) {
            return Err(ExecProblem::Nul(name(k)));
        }
        let len = k.len() + 1 + v.len() + 1;
        if len > MAX_ARG_STRLEN {
            return Err(ExecProblem::TooLong(name(k)));
        }
        total += len + pointer;
        if largest.is_none_or(|(_, l)| len > l) {
            largest = Some((k, len));
        }
    }
    match largest {
        Some((k, _)) if total > arg_max => Err(ExecProblem::TooMuch(name(k))),
        _ => Ok(()),
    }
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

    #[test]
    fn review_21_always_denied_names_match_in_any_case_and_bare_master_key() {
        let table = [
            ("INTERNAL_API_TOKEN", true),
            ("Internal_Api_Token", true),
            ("encryption_key", true),
            ("Encryption_Key_V0", true),
            ("MASTER_KEY", true),
            ("master_key", true),
            ("LITELLM_MASTER_KEY", true),
            ("LITELLMMASTER_KEY", true),
            ("MANAGEMENT_KEY", true),
            ("openrouter_management_key", true),
            ("hitl_challenge_hmac_key", true),
            ("keywarden_admin_token", true),
            ("MASTER_KEY_HINT", false),
            ("MY_ENCRYPTION_KEY_FILE", false),
            ("KEYWARDEN_REGISTRY", false),
            ("PATH", false),
        ];
        for (name, want) in table {
            assert_eq!(is_always_denied(name), want, "{name}");
        }
        // Policy globs keep matching as written.
        let deny = DenyList::new(&["AWS_*".to_string()]);
        assert!(deny.is_denied("AWS_SECRET") && !deny.is_denied("aws_secret"));
        assert!(deny.is_denied("encryption_key"));
    }

    #[test]
    fn review_04_copies_and_holders_of_denied_values_and_secrets_are_stripped() {
        let master = "m4st3r-k3y-value";
        let secret = "r3solved-s3cret";
        let current = vars(&[
            ("ENCRYPTION_KEY", master),
            ("ENCRYPTION_KEY_VERSION", "1"),
            ("BACKUP_KEY", master),
            ("WRAPPED", &format!("url=https://x/?k={master}&y")),
            ("HOLDS_SECRET", &format!("Bearer {secret}")),
            ("HOLDS_PART", &secret[..7]),
            ("SHLVL", "1"),
            ("INJECTED", &format!("x{secret}")),
            ("PLAIN", "nothing here"),
        ]);
        let spec = EnvSpec {
            inject: vec![("INJECTED".into(), 0)],
            ..EnvSpec::default()
        };
        let env = build(&current, &spec, &[secret.as_bytes()]);
        assert_eq!(
            names(&env),
            vec!["HOLDS_PART", "SHLVL", "PLAIN", "INJECTED"]
        );
        // A short secret strips an equal value only.
        let env = build(
            &vars(&[("A", "abc"), ("B", "xabcx")]),
            &EnvSpec::default(),
            &[b"abc"],
        );
        assert_eq!(names(&env), vec!["B"]);
    }

    #[test]
    fn review_01_providers_get_no_denied_no_source_and_no_own_variable() {
        let current = vars(&[
            ("PATH", "/bin"),
            ("ENCRYPTION_KEY", "k"),
            ("internal_api_token", "t"),
            ("LITELLM_MASTER_KEY", "m"),
            ("SRC", "s"),
            ("KEYWARDEN_TOKEN", "kt"),
            ("keywarden_registry", "r"),
            ("GNUPGHOME", "/g"),
        ]);
        let env = provider_env(&current, &["SRC".to_string()]);
        let got: Vec<_> = env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, vec!["PATH", "GNUPGHOME"]);
    }

    #[test]
    fn review_20_exec_limits_name_the_variable() {
        let big = "x".repeat(MAX_ARG_STRLEN);
        let half = "y".repeat(MAX_ARG_STRLEN / 2);
        let argv = [OsString::from("env")];
        type Case = (Vec<(OsString, OsString)>, usize, Result<(), ExecProblem>);
        let table: Vec<Case> = vec![
            (vars(&[("A", "1"), ("B", "2")]), 4096, Ok(())),
            (
                vec![
                    (OsString::from("OK"), OsString::from("v")),
                    (
                        OsString::from("WITH_NUL"),
                        std::ffi::OsStr::from_bytes(b"a\0b").to_owned(),
                    ),
                ],
                1 << 21,
                Err(ExecProblem::Nul("WITH_NUL".into())),
            ),
            (
                vars(&[("HUGE", &big)]),
                1 << 30,
                Err(ExecProblem::TooLong("HUGE".into())),
            ),
            (vars(&[("H", &big[..MAX_ARG_STRLEN - 3])]), 1 << 21, Ok(())),
            (
                vars(&[
                    ("A", &half),
                    ("B", &half),
                    ("LARGEST", &format!("{half}z")),
                    ("C", "c"),
                ]),
                3 * MAX_ARG_STRLEN / 2,
                Err(ExecProblem::TooMuch("LARGEST".into())),
            ),
        ];
        for (env, max, want) in table {
            assert_eq!(exec_limits(&env, &argv, max), want);
        }
        assert!(ExecProblem::Nul("V".into()).reason().contains("NUL"));
    }
}
