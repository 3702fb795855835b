//! Stage 1 of `run`: the plan. Registry and policy for the environment,
//! the audit log, the user the child runs as, and the revocation list
//! (revoked secrets are neither resolved nor injected; the API answers 410).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::revocations::{self, RevocationList};
use crate::audit::{self, Auditor, Event, EventKind};
use crate::config::{self, Common, LaunchPlan, PlannedSecret};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

use super::{RunOptions, World, AUDIT_KEY_VAR};

/// What the later stages start from.
pub(super) struct Planned {
    /// The secrets to resolve (revoked ones left out); shared, never
    /// copied, by the stages and the rotation's sources.
    pub plan: Arc<LaunchPlan>,
    /// The revoked secrets: the API lists them and answers 410.
    pub revoked: Vec<PlannedSecret>,
    pub revocation_list: PathBuf,
    pub audit: Auditor,
    /// `--user`: whom the child runs as.
    pub user: Option<sys::TargetUser>,
}

/// Load the configuration and everything decided before a value is read.
pub(super) fn plan(common: &Common, opts: &RunOptions, world: &World) -> Result<Planned> {
    let config = config::load(common.registry.as_deref(), common.policy.as_deref())?;
    let mut plan = config::build_plan(&config, common.env, &world.env, &world.cwd)?;
    if let Some(w) = config::unprotected_warning(&config, &plan, &world.cwd) {
        tracing::warn!("{w}");
    }
    // The registry is read: its memory goes back before values are read.
    drop(config);
    let audit = open_audit(opts, common.env, &world.env)?;
    audit.note(
        Event::new(EventKind::RunStart).reason(format!("{} secrets planned", plan.secrets.len())),
    );
    for s in &plan.skipped {
        tracing::info!("secret '{}' skipped: {}", s.id, s.reason);
    }
    let user = target_user(opts)?;
    let revocation_list = revocation_path(opts, &world.env)?;
    let list = RevocationList::load(&revocation_list)?;
    let revoked = take_revoked(&mut plan.secrets, |s| {
        list.find(&s.id, s.reference.as_str()).is_some()
    });
    for s in &revoked {
        tracing::warn!("secret '{}' is revoked: not resolved, not injected", s.id);
    }
    Ok(Planned {
        plan: Arc::new(plan),
        revoked,
        revocation_list,
        audit,
        user,
    })
}

/// Move the secrets `revoked` picks out of `secrets` (order kept in both).
fn take_revoked(
    secrets: &mut Vec<PlannedSecret>,
    revoked: impl Fn(&PlannedSecret) -> bool,
) -> Vec<PlannedSecret> {
    if !secrets.iter().any(&revoked) {
        return Vec::new();
    }
    let (out, kept): (Vec<_>, Vec<_>) = std::mem::take(secrets).into_iter().partition(revoked);
    *secrets = kept;
    out
}

fn target_user(opts: &RunOptions) -> Result<Option<sys::TargetUser>> {
    let Some(spec) = &opts.user else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::new(
            ErrorKind::Permission,
            format!("--user {spec}: keywarden must run as root to switch users"),
        ));
    }
    sys::lookup_user(spec).map(Some)
}

fn open_audit(
    opts: &RunOptions,
    env: config::Environment,
    process_env: &[(OsString, OsString)],
) -> Result<Auditor> {
    let Some(path) = &opts.audit else {
        return Ok(Auditor::disabled());
    };
    let key = process_env
        .iter()
        .find(|(k, _)| k == AUDIT_KEY_VAR)
        .map(|(_, v)| audit::parse_audit_key(v.as_bytes()))
        .transpose()?;
    Auditor::open(path, env, key)
}

fn revocation_path(opts: &RunOptions, process_env: &[(OsString, OsString)]) -> Result<PathBuf> {
    if let Some(p) = &opts.revocation_list {
        return Ok(p.clone());
    }
    revocations::default_path(|k| super::var(process_env, k)).ok_or_else(|| {
        Error::config(
            "no place for the revocation list: set --revocation-list, KEYWARDEN_REVOCATION_LIST, XDG_STATE_HOME or HOME",
        )
    })
}
