//! Rotation: what the socket API's callbacks and the reload signal need to
//! resolve again (a value whose TTL ran out, a reload of registry and
//! policy), and what a rotation must update besides the API: the relay's
//! matcher (new values are masked too) and, per `--on-rotate`, the child.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::api::{self, ServedSecret};
use crate::config::{self, Common, LaunchPlan};
use crate::error::{Error, ErrorKind, Result};
use crate::redact::live::{self as redaction, MatcherCell};
use crate::redact::Mask;
use crate::resolve::{require_all, resolve_plan};
use crate::secret::providers::VaultSession;
use crate::secret::SecretBytes;

use super::{OnRotate, RunOptions};

/// A plan and its values, in plan order, shared (each value is held once
/// however many stages read it).
pub(super) type PlanValues = (Arc<LaunchPlan>, Arc<[SecretBytes]>);

/// What the API's callbacks need to resolve again, shared with its thread.
pub(super) struct Sources {
    common: Common,
    plan: Arc<LaunchPlan>,
    process_env: Vec<(OsString, OsString)>,
    rotation: Mutex<Rotation>,
    /// The run's Vault token (renewed in the background) and leases.
    vault: Arc<VaultSession>,
}

/// What a reload must update besides the API: the relay's matcher (new
/// values get masked too) and, per `--on-rotate`, the child.
pub(super) struct Rotation {
    /// The relay's matcher, unless `--no-redact`.
    pub cell: Option<Arc<MatcherCell>>,
    mask: Mask,
    /// The plan and values the run started with: masked for the whole run.
    first: PlanValues,
    /// Every other value seen in this run, by id (old values stay masked).
    seen: Vec<(String, SecretBytes)>,
    /// What the services give the child that the relay masks too (the
    /// child's token, the proxy's placeholders), by variable.
    pub masked: Vec<(String, SecretBytes)>,
    /// Tokens minted over the socket, masked like the child's token
    /// until they expire (then they open nothing).
    minted: Vec<(std::time::Instant, SecretBytes)>,
    /// Injected variable → value, as the child got them.
    pub injected: Vec<(String, SecretBytes)>,
    /// The running child.
    pub child: Option<nix::unistd::Pid>,
    on_rotate: OnRotate,
    /// `--on-rotate restart`: the plan and values to start the child with
    /// once it has stopped.
    pub restart: Option<PlanValues>,
    /// Wakes the supervisor for a restart.
    pub wake: Option<std::fs::File>,
    /// `--watch` only: the plan of the last reload, and a digest of each of
    /// its values (what a poll compares against; no further copy of a
    /// value).
    latest: Option<(Arc<LaunchPlan>, Vec<Digest>)>,
}

/// SHA-256 of a value, for `--watch`'s comparisons.
type Digest = [u8; 32];

fn digest(value: &SecretBytes) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(value.expose()).into()
}

fn digests(values: &[SecretBytes]) -> Vec<Digest> {
    values.iter().map(digest).collect()
}

impl Rotation {
    /// Every value seen in this run, with its id: the first ones, then
    /// the later ones.
    fn all_seen(&self) -> impl Iterator<Item = (&str, &SecretBytes)> {
        let (plan, values) = &self.first;
        let first = plan.secrets.iter().map(|p| &*p.id).zip(values.iter());
        first.chain(self.seen.iter().map(|(id, v)| (id.as_str(), v)))
    }

    /// Add `value` to the values the relay masks; whether it is new.
    fn remember(&mut self, id: &str, value: &SecretBytes) -> bool {
        if self.all_seen().any(|(_, s)| s.expose() == value.expose()) {
            return false;
        }
        self.seen.push((id.to_string(), value.duplicate()));
        true
    }
}

impl Sources {
    /// Give the relay a matcher for every value seen so far (and the
    /// child's token), under `plan`'s policy.
    fn rebuild_matcher(&self, r: &Rotation, plan: &LaunchPlan) {
        let Some(cell) = &r.cell else { return };
        let mut extra: Vec<(&str, &[u8])> = r.all_seen().map(|(id, v)| (id, v.expose())).collect();
        extra.extend(r.masked.iter().map(|(k, v)| (k.as_str(), v.expose())));
        extra.extend(r.minted.iter().map(|(_, t)| (api::TOKEN_VAR, t.expose())));
        let base = plan.without_secrets();
        cell.replace(redaction::matcher_for(
            &base,
            &[],
            &self.process_env,
            &extra,
            &r.mask,
        ));
    }

    /// Mask a token minted over the socket (before it is handed out).
    pub fn mask_token(&self, token: SecretBytes, expires: std::time::Instant) {
        let mut r = self.rotation();
        let now = std::time::Instant::now();
        r.minted.retain(|(until, _)| *until > now);
        r.minted.push((expires, token));
        self.rebuild_matcher(&r, &self.plan);
    }

    /// After a reload: mask the new values, and tell the child per
    /// `--on-rotate` when a value it was given has changed.
    fn rotated(&self, plan: &Arc<LaunchPlan>, values: &[SecretBytes]) {
        let mut r = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
        if r.latest.is_some() {
            r.latest = Some((Arc::clone(plan), digests(values)));
        }
        for (p, v) in plan.secrets.iter().zip(values) {
            r.remember(&p.id, v);
        }
        self.rebuild_matcher(&r, plan);
        let changed: Vec<&str> = r
            .injected
            .iter()
            .filter(|(var, old)| {
                let new = plan
                    .secrets
                    .iter()
                    .zip(values)
                    .find(|(p, _)| p.env_var.as_deref() == Some(var.as_str()));
                new.is_none_or(|(_, v)| v.expose() != old.expose())
            })
            .map(|(var, _)| var.as_str())
            .collect();
        if changed.is_empty() {
            return;
        }
        match (r.on_rotate, r.child) {
            (OnRotate::Restart, _) => {
                tracing::info!(
                    "injected {} changed: restarting the command",
                    changed.join(", ")
                );
                r.restart = Some((Arc::clone(plan), values.iter().map(SecretBytes::duplicate).collect()));
                if let Some(w) = r.wake.as_mut() {
                    use std::io::Write;
                    let _ = w.write_all(b"r");
                }
            }
            (OnRotate::Signal(sig), Some(child)) => {
                tracing::info!("injected {} changed: sending {} to the command", changed.join(", "), sig.as_str());
                let _ = nix::sys::signal::kill(child, sig);
            }
            _ => tracing::info!(
                "injected {} changed; the command keeps its environment (--on-rotate none); the socket serves the new values",
                changed.join(", ")
            ),
        }
    }
}

impl Sources {
    /// Resolve one secret again (its TTL ran out). Runs on a thread of its
    /// own: the resolver starts its own runtime.
    pub fn resolve_one(self: &Arc<Self>, id: &str) -> Result<api::Fresh> {
        let me = self.clone();
        let id = id.to_string();
        std::thread::spawn(move || {
            let mut plan = me.plan.without_secrets();
            plan.secrets = me
                .plan
                .secrets
                .iter()
                .filter(|s| *s.id == *id)
                .cloned()
                .collect();
            if plan.secrets.is_empty() {
                return Err(Error::new(ErrorKind::Data, format!("no secret '{id}'")));
            }
            let outcomes = resolve_plan(
                &plan,
                &me.common.store,
                &me.process_env,
                me.common.timeout,
                None,
                &me.vault,
            )?;
            let lease = outcomes.first().and_then(|o| o.lease);
            let value = require_all(outcomes)
                .map_err(|e| me.scrub_error(e))?
                .pop()
                .ok_or_else(|| Error::new(ErrorKind::Software, "nothing resolved"))?;
            // A value that changed since it was last resolved (its TTL ran
            // out, the source was rotated): the relay masks it before the
            // socket hands it out.
            let mut r = me.rotation.lock().unwrap_or_else(|p| p.into_inner());
            if r.remember(&id, &value) {
                me.rebuild_matcher(&r, &me.plan);
            }
            drop(r);
            Ok(api::Fresh { value, lease })
        })
        .join()
        .map_err(|_| Error::new(ErrorKind::Software, "the resolver thread failed"))?
    }

    /// `e` with every form of every value seen in this run (and of the
    /// always-denied variables) masked: a re-resolution's error may quote a
    /// provider's stderr.
    fn scrub_error(&self, e: Error) -> Error {
        let r = self.rotation();
        let known: Vec<(&str, &[u8])> = r
            .all_seen()
            .map(|(id, v)| (id, v.expose()))
            .chain(r.masked.iter().map(|(k, v)| (k.as_str(), v.expose())))
            .collect();
        let text = redaction::Scrubber::new(&known, &self.process_env).scrub(e.message());
        Error::new(e.kind(), text)
    }

    /// `--watch`: resolve the last reload's refs again and compare; the
    /// ids whose value changed since (none: nothing to do). Cheap: the
    /// registry and policy are not re-read, the values are compared by
    /// digest and dropped at once, and nothing is logged but ids.
    pub fn changed(&self) -> Result<Vec<String>> {
        let Some((plan, known)) = self.rotation().latest.clone() else {
            return Ok(Vec::new());
        };
        let outcomes = resolve_plan(
            &plan,
            &self.common.store,
            &self.process_env,
            self.common.timeout,
            None,
            &self.vault,
        )?;
        let values = require_all(outcomes).map_err(|e| self.scrub_error(e))?;
        Ok(plan
            .secrets
            .iter()
            .zip(values.iter().map(digest))
            .zip(known)
            .filter(|((_, now), before)| now != before)
            .map(|((p, _), _)| p.id.to_string())
            .collect())
    }

    /// Re-read registry and policy and resolve everything again.
    pub fn reload(self: &Arc<Self>) -> Result<Vec<ServedSecret>> {
        let me = self.clone();
        std::thread::spawn(move || {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            let config = config::load(me.common.registry.as_deref(), me.common.policy.as_deref())?;
            let plan = Arc::new(config::build_plan(
                &config,
                me.common.env,
                &me.process_env,
                &cwd,
            )?);
            me.warn_route_changes(&plan);
            let outcomes = resolve_plan(
                &plan,
                &me.common.store,
                &me.process_env,
                me.common.timeout,
                None,
                &me.vault,
            )?;
            let leases: Vec<_> = outcomes.iter().map(|o| o.lease).collect();
            let values = require_all(outcomes).map_err(|e| me.scrub_error(e))?;
            me.rotated(&plan, &values);
            let now = SystemTime::now();
            Ok(plan
                .secrets
                .iter()
                .zip(values)
                .zip(leases)
                .map(|((p, v), lease)| ServedSecret {
                    lease,
                    ..ServedSecret::from_planned(p, Some(v), now)
                })
                .collect())
        })
        .join()
        .map_err(|_| Error::new(ErrorKind::Software, "the reload thread failed"))?
    }
}

impl Sources {
    /// The sources of a run whose plan resolved to `values`.
    pub fn new(
        common: &Common,
        opts: &RunOptions,
        process_env: &[(OsString, OsString)],
        (plan, values): &PlanValues,
        vault: Arc<VaultSession>,
    ) -> Arc<Sources> {
        Arc::new(Sources {
            common: common.clone(),
            plan: Arc::clone(plan),
            process_env: process_env.to_vec(),
            rotation: Mutex::new(Rotation {
                cell: None,
                mask: Mask::new(&opts.mask),
                first: (Arc::clone(plan), Arc::clone(values)),
                seen: Vec::new(),
                masked: Vec::new(),
                minted: Vec::new(),
                injected: Vec::new(),
                child: None,
                on_rotate: opts.on_rotate,
                restart: None,
                wake: None,
                latest: opts.watch.map(|_| (Arc::clone(plan), digests(values))),
            }),
            vault,
        })
    }

    /// The credential proxy serves the routes the run started with: say
    /// so when a reload's registry changes one (SPEC promises only the
    /// value swap).
    fn warn_route_changes(&self, plan: &LaunchPlan) {
        fn routes(p: &LaunchPlan) -> Vec<(&str, Option<&crate::proxy::Route>)> {
            p.secrets
                .iter()
                .map(|s| (&*s.id, s.proxy.as_deref()))
                .collect()
        }
        for w in crate::proxy::route::reload_warnings(&routes(&self.plan), &routes(plan)) {
            tracing::warn!("{w}");
        }
    }

    /// The rotation state, even if a thread panicked holding it.
    pub fn rotation(&self) -> std::sync::MutexGuard<'_, Rotation> {
        self.rotation.lock().unwrap_or_else(|p| p.into_inner())
    }
}
