//! Stage 2 of `run`: resolve every planned ref (concurrently, fail closed),
//! audit each outcome, and keep a Vault session alive for later
//! re-resolutions.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::audit::{Event, EventKind, Outcome as AuditOutcome};
use crate::config::Common;
use crate::error::{Error, Result};
use crate::resolve::{require_all, resolve_plan};
use crate::secret::providers::{start_renewer, Context, VaultOptions, VaultSession};
use crate::secret::SecretBytes;
use crate::sys;

use super::plan::Planned;
use super::World;

/// The plan's values, in plan order.
pub(super) struct Resolved {
    /// Shared with the rotation's sources and the first start (each value
    /// held once).
    pub values: Arc<[SecretBytes]>,
    /// The lease each backend gave its value (Vault), if any.
    pub leases: Vec<Option<Duration>>,
    /// When each source was last changed, where the read learnt it (a
    /// file's mtime): the API's rotation dates, without a `stat` each.
    pub modified: Vec<Option<SystemTime>>,
    /// The run's Vault session, shared with re-resolutions.
    pub vault: Arc<VaultSession>,
}

/// Resolve `planned`'s secrets; an error names every ref that failed and
/// says the command was not started.
pub(super) fn resolve(
    common: &Common,
    planned: &Planned,
    world: &World,
    signals: &sys::Signals,
) -> Result<Resolved> {
    let plan = &planned.plan;
    let vault = VaultSession::for_run();
    let outcomes = resolve_plan(
        plan,
        &common.store,
        &world.env,
        common.timeout,
        Some(signals),
        &vault,
    )?;
    let leases: Vec<_> = outcomes.iter().map(|o| o.lease).collect();
    let modified: Vec<_> = outcomes.iter().map(|o| o.modified).collect();
    // Outcomes come back in plan order.
    let audited = plan.secrets.iter().zip(&outcomes);
    for (p, o) in audited.filter(|_| planned.audit.is_enabled()) {
        let e = Event::new(EventKind::Resolve).secret(&p.id, &p.reference, &p.scope);
        planned.audit.note(match &o.result {
            Ok(v) => e
                .result(AuditOutcome::Ok)
                .fingerprint(planned.audit.fingerprint(v.expose())),
            Err(err) => e.result(AuditOutcome::Error).reason(err.reason.clone()),
        });
    }
    let values = require_all(outcomes)
        .map_err(|e| Error::new(e.kind(), format!("{e}; the command was not started")))?;
    for s in &plan.secrets {
        tracing::info!("resolved {} ({})", s.id, s.reference);
    }
    if plan
        .secrets
        .iter()
        .any(|s| crate::resolve::backend_of(plan, s) == "vault")
    {
        // Keeps the run's token alive for re-resolutions (a no-op thread
        // end when the token does not expire).
        let ctx = Context::new(world.env.iter().cloned().collect(), &plan.env_sources);
        let options = VaultOptions::from_env(&ctx);
        if let Err(e) = start_renewer(Arc::clone(&vault), options, ctx) {
            tracing::warn!("cannot start the Vault token renewer: {e}");
        }
    }
    Ok(Resolved {
        values: values.into(),
        leases,
        modified,
        vault,
    })
}
