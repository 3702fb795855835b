//! The launch plan: registry and policy validated for one environment,
//! plus the refs found in environment values. Pure: the process
//! environment comes in as a value.

use std::collections::HashMap;
use std::ffi::OsString;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Approval, Config, Environment, Policy};
use crate::duration::Seconds;
use crate::envfilter;
use crate::error::{Error, Result};
use crate::secret::providers::Request;
use crate::secret::{looks_like_ref, SecretRef};

/// Where a planned secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A registry entry at this line.
    Registry {
        /// Line of the environment key in the registry file.
        line: u32,
    },
    /// The value of this variable in keywarden's environment was a ref.
    EnvVar,
}

/// One secret to resolve.
#[derive(Debug, Clone)]
pub struct PlannedSecret {
    /// Registry id, or the variable name for refs found in the environment
    /// (shared with the socket API's entry for it).
    pub id: Arc<str>,
    /// Where the value lives.
    pub reference: SecretRef,
    /// Where relative paths are taken from (shared by the secrets of one
    /// registry).
    pub base_dir: Arc<Path>,
    /// Scope labels.
    pub scope: Box<[String]>,
    /// Effective TTL: min(entry, policy for the env) (8 bytes: see
    /// [`PlannedSecret::ttl_seconds`]).
    ttl: Seconds,
    /// Inject into the child's environment under this name.
    pub env_var: Option<Box<str>>,
    /// Whether a human must approve use.
    pub approval: Approval,
    /// Rotation cadence (positive: the registry takes nothing else).
    rotate_every_days: Option<NonZeroU64>,
    /// Registry entry or environment variable.
    pub origin: Origin,
    /// The credential proxy's route: the value is never given to the
    /// child (not injected, not served by the socket).
    pub proxy: Option<Box<crate::proxy::Route>>,
}

impl PlannedSecret {
    /// Effective TTL: min(entry, policy for the env).
    pub fn ttl_seconds(&self) -> Option<u64> {
        self.ttl.secs()
    }

    /// Rotation cadence, in days.
    pub fn rotate_every_days(&self) -> Option<u64> {
        self.rotate_every_days.map(NonZeroU64::get)
    }

    /// The provider request for this secret.
    pub fn request(&self) -> Request {
        // (Built by hand: `format!` cost more than the rest of the request
        // with thousands of refs.)
        let (before, after) = match self.origin {
            Origin::Registry { .. } => ("secret '", "'"),
            Origin::EnvVar => ("variable ", ""),
        };
        let mut label = String::with_capacity(before.len() + self.id.len() + after.len());
        label.push_str(before);
        label.push_str(&self.id);
        label.push_str(after);
        Request {
            label,
            reference: self.reference.clone(),
            base_dir: Arc::clone(&self.base_dir),
        }
    }
}

/// A registry secret left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The secret id.
    pub id: String,
    /// Why it is not used.
    pub reason: String,
}

/// Everything `run`, `check` and `redact` need to know about secrets.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// The environment.
    pub env: Environment,
    /// Secrets to resolve, registry entries first, then env refs.
    pub secrets: Vec<PlannedSecret>,
    /// Registry secrets left out by policy.
    pub skipped: Vec<Skipped>,
    /// The policy.
    pub policy: Policy,
    /// The registry file, if any.
    pub registry_path: Option<PathBuf>,
    /// Variables read through `env://` refs, kept apart from `secrets`
    /// (which a revocation or a re-resolution narrows): every one of them
    /// is stripped from the child and from providers, skipped entries' too.
    pub env_sources: Vec<String>,
}

impl LaunchPlan {
    /// Names of variables read through `env://` refs (stripped from the
    /// child and from the providers keywarden starts).
    pub fn env_sources(&self) -> Vec<String> {
        self.env_sources.clone()
    }

    /// This plan with no secret to resolve (everything else kept): what a
    /// plan of some of its secrets, or of none, starts from, without
    /// copying all of them.
    pub fn without_secrets(&self) -> LaunchPlan {
        LaunchPlan {
            env: self.env,
            secrets: Vec::new(),
            skipped: self.skipped.clone(),
            policy: self.policy.clone(),
            registry_path: self.registry_path.clone(),
            env_sources: self.env_sources.clone(),
        }
    }
}

/// The name an `env://` ref reads, when `reference` is one.
fn env_source(reference: &SecretRef) -> Option<&str> {
    (reference.scheme() == crate::secret::Scheme::Env).then(|| reference.path())
}

/// An `env://` ref must not read an always-denied variable: that would
/// pass the master key on under another name.
fn check_env_source(reference: &SecretRef) -> std::result::Result<(), String> {
    match env_source(reference) {
        Some(name) if envfilter::is_always_denied(name) => Err(format!(
            "{reference} reads {name}, an always-denied variable, which is never passed on"
        )),
        _ => Ok(()),
    }
}

/// Validate `config` for `env` and find refs in `process_env`.
pub fn build_plan(
    config: &Config,
    env: Environment,
    process_env: &[(OsString, OsString)],
    cwd: &Path,
) -> Result<LaunchPlan> {
    let policy = &config.policy;
    let policy_name = config
        .policy_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "policy".to_string());
    let deny = envfilter::DenyList::new(&policy.deny_env);
    let mut secrets: Vec<PlannedSecret> = Vec::new();
    let mut skipped = Vec::new();
    let mut env_sources: Vec<String> = Vec::new();
    // Variables given to the child so far, by name: the secret that
    // injects each, or the proxied secret whose route sets it.
    let mut given: HashMap<String, usize> = HashMap::new();
    if let Some(reg) = &config.registry {
        let file = reg.path.display();
        let base: Arc<Path> = reg.base_dir().into();
        secrets.reserve_exact(reg.entries.len());
        for entry in &reg.entries {
            let Some(e) = entry.for_env(env) else {
                continue;
            };
            let at = |what: String| {
                Error::config(format!(
                    "{file}:{}: secret '{}' env '{}': {what}",
                    e.line,
                    entry.id,
                    env.as_str()
                ))
            };
            env_sources.extend(env_source(&e.secret_ref).map(str::to_string));
            if !policy.allows_secret(&entry.id) {
                skipped.push(Skipped {
                    id: entry.id.clone(),
                    reason: format!("not in allowed_secrets of {policy_name}"),
                });
                continue;
            }
            let scheme = e.secret_ref.scheme();
            if !policy.allows_scheme(scheme) {
                return Err(at(format!(
                    "scheme '{scheme}' is not allowed by {policy_name}"
                )));
            }
            check_env_source(&e.secret_ref).map_err(|why| at(format!("secret_ref: {why}")))?;
            if let Some(var) = &e.env_var {
                if envfilter::is_own(var) {
                    return Err(at(format!(
                        "env: {var} is keywarden's own variable and is never injected"
                    )));
                }
                if deny.is_denied(var) {
                    return Err(at(format!(
                        "env: {var} is a denied variable and is never injected"
                    )));
                }
                if e.approval == Approval::Required {
                    return Err(at(
                        "env: a secret that requires approval cannot be injected".to_string(),
                    ));
                }
                if let Some(&other) = given.get(var.as_str()) {
                    return Err(at(format!(
                        "env: {var} is already injected by secret '{}'",
                        secrets[other].id
                    )));
                }
            }
            let proxy = match &e.proxy {
                Some(spec) => Some(Box::new(
                    proxy_route(&entry.id, e, spec, &deny, &secrets, &given).map_err(at)?,
                )),
                None => None,
            };
            let entry_ttl = e.max_ttl_seconds;
            let ttl = match (entry_ttl, policy.max_ttl_for(env)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            give(
                &mut given,
                e.env_var.as_deref(),
                proxy.as_deref(),
                secrets.len(),
            );
            secrets.push(PlannedSecret {
                id: entry.id.as_str().into(),
                // A copy of its own: the registry's was made between the
                // YAML parser's nodes, and sharing it would keep a ~300-byte
                // hole by each ref for the whole run once they are freed
                // (11 MiB at 50,000 secrets).
                reference: e.secret_ref.detached(),
                base_dir: Arc::clone(&base),
                scope: e.scope.as_slice().into(),
                ttl: Seconds::of_secs(ttl),
                // A proxied value is never injected (its `env:` is ignored;
                // the route's own `env` gives the child the placeholder).
                env_var: e
                    .env_var
                    .as_deref()
                    .filter(|_| proxy.is_none())
                    .map(Into::into),
                approval: e.approval,
                rotate_every_days: e.rotate_every_days.and_then(NonZeroU64::new),
                origin: Origin::Registry {
                    line: u32::try_from(e.line).unwrap_or(u32::MAX),
                },
                proxy,
            });
        }
    }
    let cwd: Arc<Path> = cwd.into();
    for (name, value) in process_env {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if !looks_like_ref(value) || deny.is_denied(name) || envfilter::is_own(name) {
            continue;
        }
        if given.contains_key(name) {
            continue; // the registry injects this name; its value wins
        }
        let reference =
            SecretRef::parse(value).map_err(|e| Error::config(format!("variable {name}: {e}")))?;
        let scheme = reference.scheme();
        if !policy.allows_scheme(scheme) {
            return Err(Error::config(format!(
                "variable {name}: scheme '{scheme}' is not allowed by {policy_name}"
            )));
        }
        check_env_source(&reference)
            .map_err(|why| Error::config(format!("variable {name}: {why}")))?;
        env_sources.extend(env_source(&reference).map(str::to_string));
        give(&mut given, Some(name), None, secrets.len());
        secrets.push(PlannedSecret {
            id: name.into(),
            reference,
            base_dir: Arc::clone(&cwd),
            scope: Box::default(),
            ttl: Seconds::of_secs(policy.max_ttl_for(env)),
            env_var: Some(name.into()),
            approval: Approval::None,
            rotate_every_days: None,
            origin: Origin::EnvVar,
            proxy: None,
        });
    }
    Ok(LaunchPlan {
        env,
        secrets,
        skipped,
        policy: policy.clone(),
        registry_path: config.registry.as_ref().map(|r| r.path.clone()),
        env_sources,
    })
}

/// Record the variables secret number `index` gives the child: the one it
/// is injected as, or its proxy route's. The first to give a name keeps it
/// (the plan refuses a second anyway).
fn give(
    given: &mut HashMap<String, usize>,
    env_var: Option<&str>,
    proxy: Option<&crate::proxy::Route>,
    index: usize,
) {
    // A proxied value is never injected: its route's variables count.
    let names: Vec<&str> = match proxy {
        Some(route) => route.env.iter().map(|t| t.name.as_str()).collect(),
        None => env_var.into_iter().collect(),
    };
    for name in names {
        given.entry(name.to_string()).or_insert(index);
    }
}

/// The proxy route of registry secret `id`: its fields validated, its
/// variables neither denied nor given by another secret (`given`: the
/// variables of the secrets `before` it, by name).
fn proxy_route(
    id: &str,
    e: &super::EnvEntry,
    spec: &crate::proxy::ProxySpec,
    deny: &envfilter::DenyList,
    before: &[PlannedSecret],
    given: &HashMap<String, usize>,
) -> std::result::Result<crate::proxy::Route, String> {
    if e.approval == Approval::Required {
        return Err("proxy: a secret that requires approval cannot be proxied".into());
    }
    let route = crate::proxy::Route::build(id, spec)?;
    for t in &route.env {
        if deny.is_denied(&t.name) {
            return Err(format!("proxy: env: {} is a denied variable", t.name));
        }
        if let Some(&other) = given.get(t.name.as_str()) {
            return Err(format!(
                "proxy: env: {} is already given by secret '{}'",
                t.name, before[other].id
            ));
        }
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Registry;

    fn config(reg: &str, policy: &str) -> Config {
        Config {
            registry: Some(Registry::parse(reg, Path::new("/etc/kw/reg.yaml")).expect("registry")),
            policy: Policy::parse(policy, Path::new("pol.json")).expect("policy"),
            policy_path: Some(PathBuf::from("pol.json")),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    const REG: &str = "openai:\n  dev:\n    secret_ref: file://keys/openai\n    env: OPENAI_API_KEY\n    max_ttl_seconds: 7200\n  ci:\n    secret_ref: kv://openai/ci\nbilling:\n  dev:\n    secret_ref: kv://billing/master\n";

    #[test]
    fn registry_entries_for_the_env_with_ttl_and_base_dir() {
        let plan = build_plan(
            &config(REG, r#"{"max_ttl_seconds": {"dev": 3600}}"#),
            Environment::Dev,
            &[],
            Path::new("/cwd"),
        )
        .expect("plan");
        assert_eq!(plan.secrets.len(), 2);
        let openai = &plan.secrets[0];
        assert_eq!(openai.ttl_seconds(), Some(3600));
        assert_eq!(*openai.base_dir, *Path::new("/etc/kw"));
        assert_eq!(openai.env_var.as_deref(), Some("OPENAI_API_KEY"));
        let ci =
            build_plan(&config(REG, "{}"), Environment::Ci, &[], Path::new("/cwd")).expect("plan");
        assert_eq!(ci.secrets.len(), 1);
        assert_eq!(ci.secrets[0].ttl_seconds(), None);
        assert_eq!(ci.secrets[0].rotate_every_days(), None);
    }

    /// One per secret, kept for the whole run: 50,000 secrets make every 8
    /// bytes 400 KB.
    #[test]
    fn a_planned_secret_stays_small() {
        assert!(std::mem::size_of::<PlannedSecret>() <= 128);
    }

    #[test]
    fn allowed_secrets_skips_and_allowed_schemes_refuses() {
        let plan = build_plan(
            &config(REG, r#"{"allowed_secrets": ["openai"]}"#),
            Environment::Dev,
            &[],
            Path::new("/"),
        )
        .expect("plan");
        assert_eq!(plan.secrets.len(), 1);
        assert_eq!(plan.skipped[0].id, "billing");
        let err = build_plan(
            &config(REG, r#"{"allowed_schemes": ["kv"]}"#),
            Environment::Dev,
            &[],
            Path::new("/"),
        )
        .expect_err("file not allowed");
        assert_eq!(err.exit_code(), 78);
        assert!(err.to_string().contains("/etc/kw/reg.yaml:2: secret 'openai' env 'dev': scheme 'file' is not allowed by pol.json"), "{err}");
    }

    #[test]
    fn injecting_denied_or_duplicate_names_is_refused() {
        let reg = "a:\n  dev:\n    secret_ref: kv://a\n    env: PAYMENTS_MASTER_KEY\n";
        let err = build_plan(&config(reg, "{}"), Environment::Dev, &[], Path::new("/"))
            .expect_err("denied");
        assert!(
            err.to_string()
                .contains("PAYMENTS_MASTER_KEY is a denied variable"),
            "{err}"
        );
        let reg = "a:\n  dev:\n    secret_ref: kv://a\n    env: X\nb:\n  dev:\n    secret_ref: kv://b\n    env: X\n";
        let err =
            build_plan(&config(reg, "{}"), Environment::Dev, &[], Path::new("/")).expect_err("dup");
        assert!(
            err.to_string().contains("already injected by secret 'a'"),
            "{err}"
        );
        let reg = "a:\n  dev:\n    secret_ref: kv://a\n    env: X\n    approval: required\n";
        assert!(build_plan(&config(reg, "{}"), Environment::Dev, &[], Path::new("/")).is_err());
    }

    #[test]
    fn env_values_that_are_refs_become_secrets() {
        let vars = env(&[
            ("TOKEN", "file:///run/t"),
            ("PROXY", "http://proxy:3128"),
            ("INTERNAL_API_TOKEN", "file:///run/internal"),
            ("KEYWARDEN_REGISTRY", "file:///x"),
            ("OPENAI_API_KEY", "env://SHADOWED"),
        ]);
        let plan = build_plan(
            &config(REG, "{}"),
            Environment::Dev,
            &vars,
            Path::new("/cwd"),
        )
        .expect("plan");
        let ids: Vec<_> = plan.secrets.iter().map(|s| &*s.id).collect();
        assert_eq!(ids, vec!["openai", "billing", "TOKEN"]);
        assert_eq!(plan.secrets[2].origin, Origin::EnvVar);
        assert_eq!(*plan.secrets[2].base_dir, *Path::new("/cwd"));
        let labels: Vec<String> = plan.secrets.iter().map(|s| s.request().label).collect();
        assert_eq!(
            labels,
            ["secret 'openai'", "secret 'billing'", "variable TOKEN"]
        );
        let bad = env(&[("TOKEN", "dotenv://x")]);
        let err = build_plan(&Config::default(), Environment::Dev, &bad, Path::new("/"))
            .expect_err("malformed");
        assert_eq!(err.exit_code(), 78);
        assert!(err.to_string().starts_with("variable TOKEN:"), "{err}");
        let err = build_plan(
            &config("", r#"{"allowed_schemes": ["kv"]}"#),
            Environment::Dev,
            &env(&[("T", "env://X")]),
            Path::new("/"),
        )
        .expect_err("scheme");
        assert!(
            err.to_string()
                .contains("variable T: scheme 'env' is not allowed"),
            "{err}"
        );
    }

    #[test]
    fn review_05_env_refs_to_always_denied_variables_are_refused() {
        for value in [
            "env://ENCRYPTION_KEY",
            "env://internal_api_token",
            "env://MASTER_KEY",
        ] {
            let err = build_plan(
                &Config::default(),
                Environment::Dev,
                &env(&[("APP_KEY", value)]),
                Path::new("/"),
            )
            .expect_err(value);
            assert_eq!(err.exit_code(), 78);
            assert!(err.to_string().starts_with("variable APP_KEY: "), "{err}");
            assert!(err.to_string().contains("always-denied"), "{err}");
        }
        let reg = "a:\n  dev:\n    secret_ref: env://HITL_CHALLENGE_HMAC_KEY\n    env: A\n";
        let err = build_plan(&config(reg, "{}"), Environment::Dev, &[], Path::new("/"))
            .expect_err("registry");
        assert_eq!(err.exit_code(), 78);
        assert!(
            err.to_string()
                .contains("secret 'a' env 'dev': secret_ref: env://HITL_CHALLENGE_HMAC_KEY reads"),
            "{err}"
        );
        let ok = build_plan(
            &config("a:\n  dev:\n    secret_ref: env://SRC\n", "{}"),
            Environment::Dev,
            &env(&[("B", "env://OTHER")]),
            Path::new("/"),
        )
        .expect("ordinary sources");
        assert_eq!(ok.env_sources, vec!["SRC", "OTHER"]);
    }

    #[test]
    fn review_14_injecting_a_keywarden_variable_is_refused() {
        for var in ["KEYWARDEN_TOKEN", "KEYWARDEN_SOCKET", "KEYWARDEN_ANYTHING"] {
            let reg = format!("a:\n  dev:\n    secret_ref: kv://a\n    env: {var}\n");
            let err = build_plan(&config(&reg, "{}"), Environment::Dev, &[], Path::new("/"))
                .expect_err(var);
            assert_eq!(err.exit_code(), 78);
            assert!(
                err.to_string()
                    .contains(&format!("env: {var} is keywarden's own variable")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_proxied_secret_is_never_injected_and_its_variables_are_its_own() {
        let reg = "openai:\n  dev:\n    secret_ref: kv://openai\n    env: OPENAI_API_KEY\n    proxy: openai\nother:\n  dev:\n    secret_ref: kv://other\n    env: OPENAI_BASE_URL\n";
        let e = build_plan(&config(reg, "{}"), Environment::Dev, &[], Path::new("/cwd"))
            .expect_err("OPENAI_BASE_URL given twice");
        assert_eq!(e.exit_code(), 78);
        let reg = "openai:\n  dev:\n    secret_ref: kv://openai\n    env: OPENAI_API_KEY\n    proxy: openai\n";
        let process = env(&[("OPENAI_BASE_URL", "kv://elsewhere")]);
        let plan = build_plan(
            &config(reg, "{}"),
            Environment::Dev,
            &process,
            Path::new("/cwd"),
        )
        .expect("plan");
        assert_eq!(
            plan.secrets.len(),
            1,
            "a ref in a variable the route sets is not resolved"
        );
        assert_eq!(plan.secrets[0].env_var, None);
        let route = plan.secrets[0].proxy.as_ref().expect("route");
        assert_eq!(route.upstream.to_string(), "https://api.openai.com/v1");
        let denied = "openai:\n  dev:\n    secret_ref: kv://openai\n    proxy:\n      preset: openai\n      env: {INTERNAL_API_TOKEN: \"{phantom}\"}\n";
        let e = build_plan(
            &config(denied, "{}"),
            Environment::Dev,
            &[],
            Path::new("/cwd"),
        )
        .expect_err("denied");
        assert_eq!(e.exit_code(), 78);
    }
}
