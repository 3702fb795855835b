//! Resolving a plan's refs: one current-thread runtime, every ref at once,
//! each bounded by the provider timeout. `run` also listens for a stop
//! signal meanwhile, so Ctrl-C during a slow provider aborts at once.

use std::ffi::OsString;
use std::time::Duration;

use std::sync::Arc;

use crate::config::{KvBackendConfig, LaunchPlan};
use crate::error::{Error, ErrorKind, Result};
use crate::redact::live::Scrubber;
use crate::secret::providers::KvBackend;
use crate::secret::providers::{
    default_jobs, scrub, Context, Outcome, Resolver, VaultSession, JOBS_VAR,
};
use crate::secret::Scheme;
use crate::secret::SecretBytes;
use crate::store::StoreOptions;
use crate::sys::{Signals, STOP_SIGNALS};

/// The KV backend for `kv://` refs: opened only when the plan has some, so
/// a missing key does not matter to a run that uses none.
fn kv_backend(
    plan: &LaunchPlan,
    store: &StoreOptions,
    process_env: &[(OsString, OsString)],
) -> Result<std::result::Result<Arc<dyn KvBackend>, String>> {
    if !plan
        .secrets
        .iter()
        .any(|s| s.reference.scheme() == Scheme::Kv)
    {
        return Ok(Err("no kv:// refs".into()));
    }
    if let Some(KvBackendConfig::Vault { .. }) = plan.policy.kv_backend {
        // kv:// refs are rewritten to vault:// by `request_for`.
        return Ok(Err("kv:// is served by Vault under this policy".into()));
    }
    match crate::store::open_backend(store, process_env)? {
        Some(backend) => Ok(Ok(backend)),
        None => {
            let path = crate::store::store_path(store, process_env)?;
            Ok(Err(format!(
                "the embedded store {} does not exist yet: create it with `keywarden store init`",
                path.display()
            )))
        }
    }
}

/// The provider request for `secret`: with policy `kv_backend: vault`,
/// `kv://path` is read as `vault://MOUNT/path` (the secret's only field), so
/// one registry works on a laptop (embedded store) and in production.
pub fn request_for(
    plan: &LaunchPlan,
    secret: &crate::config::PlannedSecret,
) -> crate::secret::providers::Request {
    let mut request = secret.request();
    if let (Scheme::Kv, Some(KvBackendConfig::Vault { mount })) =
        (secret.reference.scheme(), &plan.policy.kv_backend)
    {
        let text = format!(
            "vault://{}/{}",
            mount.trim_matches('/'),
            secret.reference.path()
        );
        if let Ok(r) = crate::secret::SecretRef::parse(&text) {
            request.reference = r;
        }
    }
    request
}

/// Which backend answers `secret`: the scheme, or `store`/`vault` for kv://.
pub fn backend_of(plan: &LaunchPlan, secret: &crate::config::PlannedSecret) -> &'static str {
    match (secret.reference.scheme(), &plan.policy.kv_backend) {
        (Scheme::Kv, Some(KvBackendConfig::Vault { .. })) => "vault",
        (Scheme::Kv, _) => "store",
        (scheme, _) => scheme.as_str(),
    }
}

/// How many provider programs may run at once: `KEYWARDEN_PROVIDER_JOBS`,
/// else twice the CPUs.
pub fn provider_jobs(process_env: &[(OsString, OsString)]) -> Result<usize> {
    let Some((_, value)) = process_env.iter().find(|(k, _)| k == JOBS_VAR) else {
        return Ok(default_jobs());
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Error::config(format!(
                "{JOBS_VAR}: expected a positive number of provider programs run at once"
            ))
        })
}

/// Mask, in every error reason (which may quote a provider's stderr or a
/// server's message), every form of the values resolved and of the
/// always-denied variables.
fn scrub_reasons(
    plan: &LaunchPlan,
    outcomes: &mut [Outcome],
    process_env: &[(OsString, OsString)],
) {
    if outcomes.iter().all(|o| o.result.is_ok()) {
        return;
    }
    let scrubbed: Vec<Option<String>> = {
        let known: Vec<(&str, &[u8])> = plan
            .secrets
            .iter()
            .zip(outcomes.iter())
            .filter_map(|(p, o)| o.result.as_ref().ok().map(|v| (&*p.id, v.expose())))
            .collect();
        let scrubber = Scrubber::new(&known, process_env);
        outcomes
            .iter()
            .map(|o| o.result.as_ref().err().map(|e| scrubber.scrub(&e.reason)))
            .collect()
    };
    for (o, text) in outcomes.iter_mut().zip(scrubbed) {
        if let (Err(e), Some(text)) = (&mut o.result, text) {
            e.reason = text;
        }
    }
}

/// Resolve every secret of `plan`; outcomes in plan order.
pub fn resolve_plan(
    plan: &LaunchPlan,
    store: &StoreOptions,
    process_env: &[(OsString, OsString)],
    timeout: Duration,
    signals: Option<&Signals>,
    vault: &Arc<VaultSession>,
) -> Result<Vec<Outcome>> {
    if plan.secrets.is_empty() {
        return Ok(Vec::new());
    }
    // File reads go to the blocking pool: a few threads are as fast as
    // hundreds for local files, and much cheaper to start.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(8)
        .build()
        .map_err(|e| Error::new(ErrorKind::Os, format!("cannot start the resolver: {e}")))?;
    let kv = kv_backend(plan, store, process_env)?;
    let jobs = provider_jobs(process_env)?;
    let context = Context::new(process_env.iter().cloned().collect(), &plan.env_sources);
    let resolver = Resolver::new(context, timeout, kv)
        .with_vault_session(Arc::clone(vault))
        .with_jobs(jobs);
    let requests = plan.secrets.iter().map(|s| request_for(plan, s)).collect();
    let outcome = runtime.block_on(async {
        match signals {
            None => Ok(resolver.resolve_all(requests).await),
            Some(signals) => tokio::select! {
                all = resolver.resolve_all(requests) => Ok(all),
                sig = signals.wait_for(&STOP_SIGNALS) => Err(sig.map(|s| s as i32)),
            },
        }
    });
    runtime.shutdown_background();
    match outcome {
        Ok(mut outcomes) => {
            for o in outcomes.iter_mut() {
                o.lease = vault
                    .lease_of(o.request.reference.as_str())
                    .map(|l| l.duration)
                    .filter(|d| !d.is_zero());
            }
            scrub_reasons(plan, &mut outcomes, process_env);
            Ok(outcomes)
        }
        Err(Ok(sig)) => Err(Error::new(
            ErrorKind::Interrupted(sig as u8),
            format!(
                "stopped by {} while resolving secrets; the command was not started",
                crate::sys::signal_name(sig)
            ),
        )),
        Err(Err(e)) => Err(e),
    }
}

/// What `check`, `redact` and `scan` start from.
#[derive(Debug)]
pub struct Resolved {
    /// keywarden's environment.
    pub process_env: Vec<(OsString, OsString)>,
    /// The registry and policy as loaded.
    pub config: crate::config::Config,
    /// The plan for `--env`.
    pub plan: LaunchPlan,
    /// Every ref's outcome, in plan order.
    pub outcomes: Vec<Outcome>,
}

/// Load the configuration, plan `--env` and resolve every ref once (no
/// signals watched, no token renewal): what `check`, `redact` and `scan`
/// start from. Warns when nothing is protected.
pub fn load_and_resolve(common: &crate::config::Common) -> Result<Resolved> {
    let process_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/"));
    let config = crate::config::load(common.registry.as_deref(), common.policy.as_deref())?;
    let plan = crate::config::build_plan(&config, common.env, &process_env, &cwd)?;
    if let Some(w) = crate::config::unprotected_warning(&config, &plan, &cwd) {
        tracing::warn!("{w}");
    }
    let outcomes = resolve_plan(
        &plan,
        &common.store,
        &process_env,
        common.timeout,
        None,
        &VaultSession::once(),
    )?;
    Ok(Resolved {
        process_env,
        config,
        plan,
        outcomes,
    })
}

/// Fail closed: every value, or the error of the first ref that failed
/// (the others are logged). Messages are scrubbed of every resolved value.
pub fn require_all(outcomes: Vec<Outcome>) -> Result<Vec<SecretBytes>> {
    let mut values = Vec::with_capacity(outcomes.len());
    let mut errors = Vec::new();
    for o in outcomes {
        match o.result {
            Ok(v) => values.push(v),
            Err(e) => errors.push(e.for_request(&o.request)),
        }
    }
    if errors.is_empty() {
        return Ok(values);
    }
    let exposed: Vec<&[u8]> = values.iter().map(SecretBytes::expose).collect();
    let mut errors: Vec<Error> = errors
        .into_iter()
        .map(|e| Error::new(e.kind(), scrub(e.message(), &exposed)))
        .collect();
    // A malformed ref is the more useful report: it will not fix itself.
    errors.sort_by_key(|e| e.kind() != ErrorKind::Config);
    let first = errors.remove(0);
    for e in &errors {
        tracing::error!("{e}");
    }
    Err(first)
}

/// Creation and rotation dates of the secrets of `plan` that `wanted`
/// selects, where the backend knows them: the store's dates for `kv://`, a
/// file's mtime (as the rotation date) for `file://`. Unknown otherwise;
/// never an error (resolution reports the real problems).
pub fn secret_dates(
    plan: &LaunchPlan,
    store: &StoreOptions,
    env: &[(OsString, OsString)],
    wanted: impl Fn(&crate::config::PlannedSecret) -> bool,
) -> std::collections::HashMap<String, crate::api::SecretDates> {
    dates_of(plan, store, env, wanted, None)
        .into_iter()
        .map(|(i, d)| (plan.secrets[i].id.to_string(), d))
        .collect()
}

/// The dates [`secret_dates`] finds, of every secret of `plan`, in plan
/// order; the `file://` files' mtimes taken from `modified` (the outcomes'
/// [`Outcome::modified`], in plan order) rather than from a `stat` each.
pub fn secret_dates_read(
    plan: &LaunchPlan,
    store: &StoreOptions,
    env: &[(OsString, OsString)],
    modified: &[Option<std::time::SystemTime>],
) -> Vec<Option<crate::api::SecretDates>> {
    let mut out = vec![None; plan.secrets.len()];
    for (i, d) in dates_of(plan, store, env, |_| true, Some(modified)) {
        out[i] = Some(d);
    }
    out
}

/// The known dates of the secrets `wanted` picks, by index in the plan.
fn dates_of(
    plan: &LaunchPlan,
    store: &StoreOptions,
    env: &[(OsString, OsString)],
    wanted: impl Fn(&crate::config::PlannedSecret) -> bool,
    modified: Option<&[Option<std::time::SystemTime>]>,
) -> Vec<(usize, crate::api::SecretDates)> {
    let mut out = Vec::new();
    let chosen: Vec<_> = plan
        .secrets
        .iter()
        .enumerate()
        .filter(|(_, s)| wanted(s))
        .collect();
    let kv_meta = if chosen
        .iter()
        .any(|(_, s)| s.reference.scheme() == Scheme::Kv)
    {
        crate::store::store_path(store, env)
            .and_then(|path| Ok((path, crate::store::load_keys(store, env)?)))
            .and_then(|(path, keys)| crate::store::Store::open(path, keys))
            .map(|st| st.list())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    for (i, s) in chosen {
        let dates = match s.reference.scheme() {
            Scheme::Kv => kv_meta
                .iter()
                .find(|m| m.reference == s.reference.as_str())
                .map(|m| crate::api::SecretDates {
                    created: Some(m.created),
                    rotated: Some(m.updated),
                    rotate_every_days: s.rotate_every_days(),
                }),
            Scheme::File => match modified {
                Some(read) => read.get(i).copied().flatten(),
                None => std::fs::metadata(s.base_dir.join(s.reference.path()))
                    .and_then(|m| m.modified())
                    .ok(),
            }
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| crate::api::SecretDates {
                created: None,
                rotated: Some(d.as_secs() as i64),
                rotate_every_days: s.rotate_every_days(),
            }),
            _ => None,
        };
        if let Some(d) = dates {
            out.push((i, d));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_jobs_from_the_environment() {
        let env = |v: &str| vec![(OsString::from(JOBS_VAR), OsString::from(v))];
        assert_eq!(provider_jobs(&[]).expect("default"), default_jobs());
        assert_eq!(provider_jobs(&env("3")).expect("three"), 3);
        assert_eq!(provider_jobs(&env(" 12 ")).expect("spaces"), 12);
        for bad in ["0", "-1", "many", ""] {
            let err = provider_jobs(&env(bad)).expect_err(bad);
            assert_eq!(err.exit_code(), 78);
            assert!(err.to_string().starts_with(JOBS_VAR), "{err}");
        }
    }
}
