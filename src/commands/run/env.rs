//! Stage 3 of `run`: the child's environment, computed as a value from the
//! process's environment, the plan, the resolved values and what the
//! services add. No effects: [`child_env`] is tested with tables below.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use zeroize::Zeroize;

use crate::api;
use crate::config::{self, LaunchPlan};
use crate::envfilter::{self, EnvSpec, EnvValue};
use crate::secret::SecretBytes;
use crate::sys;

use super::RunOptions;

/// The child's environment, and what was injected into it.
pub(super) struct ChildEnv {
    /// The variables, values included (wiped by [`ChildEnv::wipe`]).
    pub vars: Vec<(OsString, OsString)>,
    /// The injected variables: (name, index in the plan).
    pub injected: Vec<(String, usize)>,
}

impl ChildEnv {
    /// Wipe every value (after the spawn: the child has its copy).
    pub fn wipe(&mut self) {
        for (_, v) in self.vars.iter_mut() {
            let mut bytes = std::mem::take(v).into_vec();
            bytes.zeroize();
        }
    }
}

/// The child's environment for `plan` with `values` (in plan order), plus
/// the services' variables (`service_env`) and, with `--user`, the user's
/// HOME, USER and LOGNAME.
pub(super) fn child_env(
    plan: &LaunchPlan,
    values: &[SecretBytes],
    process_env: &[(OsString, OsString)],
    opts: &RunOptions,
    user: Option<&sys::TargetUser>,
    service_env: &[(String, SecretBytes)],
) -> ChildEnv {
    let mut keep = plan.policy.keep_env();
    keep.extend(opts.keep_env.iter().cloned());
    let mut extras: Vec<(String, OsString)> = service_env
        .iter()
        .map(|(k, v)| (k.clone(), OsString::from_vec(v.expose().to_vec())))
        .collect();
    if let Some(u) = user {
        extras.push(("HOME".to_string(), u.home.clone().into_os_string()));
        extras.push(("USER".to_string(), OsString::from(&u.name)));
        extras.push(("LOGNAME".to_string(), OsString::from(&u.name)));
    }
    let mut spec = EnvSpec {
        deny: plan.policy.deny_env.clone(),
        clean: opts.clean_env || plan.policy.clean_env,
        keep,
        env_sources: plan.env_sources(),
        inject: plan
            .secrets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.approval == config::Approval::None)
            .filter_map(|(i, s)| s.env_var.as_deref().map(|v| (v.to_string(), i)))
            .collect(),
        extras,
    };
    let exposed: Vec<&[u8]> = values.iter().map(SecretBytes::expose).collect();
    let env = envfilter::build(process_env, &spec, &exposed)
        .into_iter()
        .map(|(k, v)| match v {
            EnvValue::Plain(v) => (k, v),
            EnvValue::Secret(i) => (k, OsString::from_vec(exposed[i].to_vec())),
        })
        .collect();
    for (k, v) in spec.extras.iter_mut() {
        if k == api::TOKEN_VAR {
            let mut bytes = std::mem::take(v).into_vec();
            bytes.zeroize();
        }
    }
    ChildEnv {
        vars: env,
        injected: std::mem::take(&mut spec.inject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{build_plan, Config, Environment, Policy, Registry};
    use std::path::Path;
    use std::time::Duration;

    fn options(clean_env: bool, keep_env: &[&str]) -> RunOptions {
        RunOptions {
            clean_env,
            keep_env: keep_env.iter().map(|s| s.to_string()).collect(),
            user: None,
            grace: Duration::from_secs(10),
            subreaper: false,
            pty: super::super::PtyMode::Never,
            no_redact: false,
            mask: crate::redact::Mask::DEFAULT_FORMAT.to_string(),
            no_socket: false,
            socket: None,
            admin_socket: None,
            audit: None,
            revocation_list: None,
            reload_signal: None,
            on_rotate: super::super::OnRotate::None,
            watch: None,
            env_files: Vec::new(),
            signal_group: false,
            proxy_listen: None,
            proxy_ca: None,
            command: vec![OsString::from("true")],
        }
    }

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    /// A plan with one secret `openai` injected as OPENAI_API_KEY.
    fn plan(policy: &str, env: &[(OsString, OsString)]) -> LaunchPlan {
        let registry = Registry::parse(
            "openai:\n  dev:\n    secret_ref: \"kv://openai/dev/api_key\"\n    env: OPENAI_API_KEY\n",
            Path::new("reg.yaml"),
        )
        .expect("registry");
        let config = Config {
            registry: Some(registry),
            policy: Policy::parse(policy, Path::new("policy.json")).expect("policy"),
            policy_path: None,
        };
        build_plan(&config, Environment::Dev, env, Path::new("/")).expect("plan")
    }

    #[test]
    fn the_childs_environment_by_table() {
        let value = "v".repeat(24);
        let token = "t".repeat(32);
        struct Case<'a> {
            case: &'a str,
            env: &'a [(&'a str, &'a str)],
            policy: &'a str,
            clean: bool,
            keep: &'a [&'a str],
            present: &'a [(&'a str, &'a str)],
            absent: &'a [&'a str],
        }
        let table = [
            Case {
                case: "inherits, injects, adds the service's variables",
                env: &[("PATH", "/bin"), ("LANG", "C")],
                policy: "{}",
                clean: false,
                keep: &[],
                present: &[
                    ("PATH", "/bin"),
                    ("LANG", "C"),
                    ("OPENAI_API_KEY", &value),
                    (api::TOKEN_VAR, &token),
                ],
                absent: &[],
            },
            Case {
                case: "always-denied and policy-denied names are stripped",
                env: &[
                    ("PATH", "/bin"),
                    ("ENCRYPTION_KEY", "x"),
                    ("APP_SECRET", "y"),
                ],
                policy: r#"{"deny_env": ["APP_*"]}"#,
                clean: false,
                keep: &[],
                present: &[("PATH", "/bin")],
                absent: &["ENCRYPTION_KEY", "APP_SECRET"],
            },
            Case {
                case: "--clean-env keeps only keep_env and --keep-env, plus injected",
                env: &[
                    ("PATH", "/bin"),
                    ("LANG", "C"),
                    ("EXTRA", "1"),
                    ("MINE", "2"),
                ],
                policy: r#"{"keep_env": ["PATH"]}"#,
                clean: true,
                keep: &["MINE"],
                present: &[("PATH", "/bin"), ("MINE", "2"), ("OPENAI_API_KEY", &value)],
                absent: &["LANG", "EXTRA"],
            },
        ];
        for Case {
            case,
            env,
            policy,
            clean,
            keep,
            present,
            absent,
        } in table
        {
            let env = os(env);
            let plan = plan(policy, &env);
            let values = [SecretBytes::copy_from(value.as_bytes())];
            let service = [(
                api::TOKEN_VAR.to_string(),
                SecretBytes::copy_from(token.as_bytes()),
            )];
            let mut got = child_env(&plan, &values, &env, &options(clean, keep), None, &service);
            for (k, v) in present {
                let found = got.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v);
                assert_eq!(found, Some(&OsString::from(v)), "{case}: {k}");
            }
            for k in absent {
                assert!(!got.vars.iter().any(|(n, _)| n == k), "{case}: {k} present");
            }
            assert_eq!(got.injected, [("OPENAI_API_KEY".to_string(), 0)], "{case}");
            got.wipe();
            assert!(got.vars.iter().all(|(_, v)| v.is_empty()), "{case}: wiped");
        }
    }
}
