//! Configuration: the registry (YAML, refs only), the policy (JSON) and the
//! validated [`LaunchPlan`] built from both for one environment. Pure: the
//! only I/O is reading the two files in [`load`].

#![forbid(unsafe_code)]

mod common;
mod plan;
mod policy;
mod registry;

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
    Ok(Config {
        registry,
        policy,
        policy_path,
    })
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
}
