//! Configuration: the registry (YAML, refs only), the policy (JSON) and the
//! validated [`LaunchPlan`] built from both for one environment. Pure: the
//! only I/O is reading the two files in [`load`].

#![forbid(unsafe_code)]

mod common;
mod plan;
mod policy;
mod registry;
mod yaml;

use std::path::{Path, PathBuf};

pub use common::{parse_signal, Common};
pub use plan::{build_plan, LaunchPlan, Origin, PlannedSecret, Skipped};
pub use policy::{KvBackendConfig, Policy};
pub use registry::{is_valid_env_name, Approval, EnvEntry, Registry, RegistryEntry};

use crate::error::{Error, Result};

/// The environments a registry entry can be written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Environment {
    /// Development.
    Dev,
    /// Continuous integration.
    Ci,
    /// Production.
    Prod,
}

impl Environment {
    /// The name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Ci => "ci",
            Environment::Prod => "prod",
        }
    }

    /// Parse `dev`, `ci` or `prod`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "dev" => Some(Environment::Dev),
            "ci" => Some(Environment::Ci),
            "prod" => Some(Environment::Prod),
            _ => None,
        }
    }

    /// The default: `ci` when `CI` is true, else `dev`.
    pub fn default_for(ci_var: Option<&str>) -> Self {
        match ci_var.map(str::to_ascii_lowercase).as_deref() {
            Some("true") | Some("1") => Environment::Ci,
            _ => Environment::Dev,
        }
    }
}

/// The registry file to use: the one named, or the default if present.
pub const DEFAULT_REGISTRY: &str = "configs/secrets-registry.yaml";
/// The policy file to use: the one named, or the default if present.
pub const DEFAULT_POLICY: &str = "configs/secrets-policy.json";

/// Registry and policy as read from disk.
#[derive(Debug, Default)]
pub struct Config {
    /// The registry, if any.
    pub registry: Option<Registry>,
    /// The policy (all defaults when there is no file).
    pub policy: Policy,
    /// Where the policy came from.
    pub policy_path: Option<PathBuf>,
}

fn pick(named: Option<&Path>, default: &str) -> Option<PathBuf> {
    match named {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(default)).filter(|p| p.is_file()),
    }
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            std::io::ErrorKind::InvalidData => "not UTF-8 text".to_string(),
            _ => e.to_string(),
        };
        Error::config(format!("{}: cannot read the {what}: {why}", path.display()))
    })
}

/// The warning when nothing is protected: no registry, no policy and no
/// ref in the environment, so no secret is known and nothing is masked —
/// most often a command run from the wrong folder. It says where the
/// defaults were looked for. `None` when something is protected.
pub fn unprotected_warning(config: &Config, plan: &LaunchPlan, cwd: &Path) -> Option<String> {
    let protected = config.registry.is_some()
        || config.policy_path.is_some()
        || !plan.secrets.is_empty()
        || !plan.skipped.is_empty();
    (!protected).then(|| {
        format!(
            "nothing is protected: no registry, no policy and no secret ref in the environment \
             (looked for {DEFAULT_REGISTRY} and {DEFAULT_POLICY} in {}); \
             pass --registry and --policy, or run from the project's folder",
            cwd.display()
        )
    })
}

/// Read the registry and policy named (or the defaults when present).
pub fn load(registry: Option<&Path>, policy: Option<&Path>) -> Result<Config> {
    let registry = match pick(registry, DEFAULT_REGISTRY) {
        Some(path) => Some(Registry::parse(&read(&path, "registry")?, &path)?),
        None => None,
    };
    let policy_path = pick(policy, DEFAULT_POLICY);
    let policy = match &policy_path {
        Some(path) => Policy::parse(&read(path, "policy")?, path)?,
        None => Policy::default(),
    };
    check_slack_signing_secret(registry.as_ref(), &policy, policy_path.as_deref())?;
    Ok(Config {
        registry,
        policy,
        policy_path,
    })
}

/// Policy `slack_signing_secret` must name a registry id: anything else
/// (a raw signing secret pasted in, say) is 78, and is never echoed.
fn check_slack_signing_secret(
    registry: Option<&Registry>,
    policy: &Policy,
    policy_path: Option<&Path>,
) -> Result<()> {
    let Some(id) = &policy.slack_signing_secret else {
        return Ok(());
    };
    if registry.is_some_and(|r| r.entries.iter().any(|e| e.id == *id)) {
        return Ok(());
    }
    let file = policy_path.map_or_else(|| "policy".to_string(), |p| p.display().to_string());
    Err(Error::config(format!(
        "{file}: slack_signing_secret: must name a secret id of the registry, and names none (value not shown)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_default() {
        assert_eq!(Environment::default_for(Some("true")), Environment::Ci);
        assert_eq!(Environment::default_for(Some("TRUE")), Environment::Ci);
        assert_eq!(Environment::default_for(Some("false")), Environment::Dev);
        assert_eq!(Environment::default_for(None), Environment::Dev);
    }

    #[test]
    fn issue_14_4_nothing_protected_by_table() {
        let cwd = Path::new("/work/app");
        let os = |k: &str, v: &str| (std::ffi::OsString::from(k), std::ffi::OsString::from(v));
        let registry = Registry::parse(
            "openai:\n  dev:\n    secret_ref: \"kv://openai/dev/api_key\"\n",
            Path::new("reg.yaml"),
        )
        .expect("registry");
        let table = [
            ("nothing at all", None, None, vec![], true),
            ("a registry", Some(registry), None, vec![], false),
            (
                "a policy",
                None,
                Some(PathBuf::from("p.json")),
                vec![],
                false,
            ),
            (
                "a ref in the environment",
                None,
                None,
                vec![os("T", "file:///run/t")],
                false,
            ),
            (
                "plain variables only",
                None,
                None,
                vec![os("PATH", "/bin")],
                true,
            ),
        ];
        for (case, registry, policy_path, env, warns) in table {
            let config = Config {
                registry,
                policy: Policy::default(),
                policy_path,
            };
            let plan = build_plan(&config, Environment::Dev, &env, cwd).expect("plan");
            let w = unprotected_warning(&config, &plan, cwd);
            assert_eq!(w.is_some(), warns, "{case}");
            if let Some(w) = w {
                assert!(
                    w.contains(DEFAULT_REGISTRY) && w.contains("/work/app"),
                    "{w}"
                );
            }
        }
    }
}
