//! `keywarden run`: the main job, top to bottom — configuration → resolve
//! (fail closed) → environment → spawn → relay → supervise → exit code.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::poll::PollFlags;
use nix::sys::signal::Signal;

use zeroize::Zeroize;

use crate::api::{
    self, revocations, revocations::RevocationList, ApiOptions, Callbacks, RunningApi, ServedSecret,
};
use crate::audit::{self, Auditor, Event, EventKind, Outcome as AuditOutcome};
use crate::cli::Common;
use crate::config::{self, LaunchPlan};
use crate::envfilter::{self, EnvSpec, EnvValue};
use crate::error::{Error, ErrorKind, Result};
use crate::redact::{Counts, Mask};
use crate::redaction::{self, MatcherCell, RedactFilter};
use crate::relay::{self, Filter, Relay, Source};
use crate::resolve::{require_all, resolve_plan};
use crate::secret::providers::{start_renewer, VaultOptions, VaultSession};
use crate::secret::SecretBytes;
use crate::supervise::{self, SpawnSpec, Supervisor, TerminalLink, Watch};
use crate::sys;

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Start from an empty environment plus `keep_env`.
    pub clean_env: bool,
    /// Extra names kept with `--clean-env`.
    pub keep_env: Vec<String>,
    /// `USER[:GROUP]` to run the child as.
    pub user: Option<String>,
    /// Grace period between the stop signal and SIGKILL.
    pub grace: Duration,
    /// Reap every descendant.
    pub subreaper: bool,
    /// When to run the command on a pseudo-terminal.
    pub pty: PtyMode,
    /// Relay output unchanged (a warning says so).
    pub no_redact: bool,
    /// The mask format, `{id}` replaced by the secret id.
    pub mask: String,
    /// Serve no socket API.
    pub no_socket: bool,
    /// The child's socket path (default: a fresh private folder).
    pub socket: Option<PathBuf>,
    /// The admin socket path (default: a fresh private folder).
    pub admin_socket: Option<PathBuf>,
    /// Append audit events to this file.
    pub audit: Option<PathBuf>,
    /// The revocation list file.
    pub revocation_list: Option<PathBuf>,
    /// Re-read registry and policy on this signal.
    pub reload_signal: Option<Signal>,
    /// What to do with the child when a value it was given changes.
    pub on_rotate: OnRotate,
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// `--on-rotate`: what happens to the child when a reload changes a value
/// injected into its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRotate {
    /// Nothing: the child keeps its environment (the socket serves the new
    /// value).
    None,
    /// Send this signal to the child.
    Signal(Signal),
    /// Stop the child (SIGTERM, SIGKILL after `--grace`) and start it again
    /// with the new values.
    Restart,
}

impl OnRotate {
    /// Parse `none`, `restart` or `signal:SIG`.
    pub fn parse(text: &str) -> std::result::Result<OnRotate, String> {
        match text {
            "none" => Ok(OnRotate::None),
            "restart" => Ok(OnRotate::Restart),
            _ => match text.strip_prefix("signal:") {
                Some(sig) => crate::cli::parse_signal(sig).map(OnRotate::Signal),
                None => Err(format!("'{text}': expected none, restart or signal:SIG")),
            },
        }
    }
}

/// The variable holding the audit fingerprint key (never passed on).
pub const AUDIT_KEY_VAR: &str = "KEYWARDEN_AUDIT_KEY";

/// `--pty`: when the child gets a pseudo-terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PtyMode {
    /// When stdout is a terminal.
    Auto,
    /// Always (window size from stdout when it is a terminal).
    Always,
    /// Never: pipes.
    Never,
}

impl PtyMode {
    /// Whether to use a pty, given whether stdout is a terminal.
    pub fn wanted(self, stdout_tty: bool) -> bool {
        match self {
            PtyMode::Auto => stdout_tty,
            PtyMode::Always => true,
            PtyMode::Never => false,
        }
    }
}

/// Start relaying the child's output (pipes, or the pty master) and, on a
/// pty, the user's keystrokes the other way, with the terminal in raw mode.
/// One redacting filter per output stream, or none with `--no-redact`.
fn filters(
    matcher: Option<&Arc<MatcherCell>>,
    counts: &Arc<Mutex<Counts>>,
) -> impl FnMut() -> Option<Box<dyn Filter>> {
    let matcher = matcher.cloned();
    let counts = counts.clone();
    move || {
        matcher
            .as_ref()
            .map(|m| Box::new(RedactFilter::new(m.clone(), counts.clone())) as Box<dyn Filter>)
    }
}

fn start_io(
    pipes: Option<(OwnedFd, OwnedFd)>,
    master: Option<OwnedFd>,
    stdin_tty: bool,
    mut filter: impl FnMut() -> Option<Box<dyn Filter>>,
) -> Result<(Relay, Option<TerminalLink>)> {
    let os = |what: &str, e: std::io::Error| Error::new(ErrorKind::Os, format!("{what}: {e}"));
    let mut sources = Vec::new();
    if let Some((out, err)) = pipes {
        sources.push(Source {
            src: out,
            to: 1,
            filter: filter(),
        });
        sources.push(Source {
            src: err,
            to: 2,
            filter: filter(),
        });
    }
    let mut terminal = None;
    if let Some(master) = master {
        let dup = |m: &OwnedFd| m.try_clone().map_err(|e| os("cannot duplicate the pty", e));
        sources.push(Source {
            src: dup(&master)?,
            to: 1,
            filter: filter(),
        });
        // The child's stdin is the pty only when keywarden's is a terminal.
        let raw = if stdin_tty {
            relay::pump_stdin(dup(&master)?).map_err(|e| os("cannot start the input relay", e))?;
            Some(sys::RawMode::new(std::io::stdin().as_fd())?)
        } else {
            None
        };
        terminal = Some(TerminalLink { master, raw });
    }
    let relay = Relay::new(sources).map_err(|e| os("cannot start the output relay", e))?;
    Ok((relay, terminal))
}

/// Start the API's server thread if it is not running; on failure its
/// listeners are closed (clients are refused) and the command runs on.
fn serve_api(api: &mut Option<RunningApi>) {
    if let Some(a) = api {
        if let Err(e) = a.serve() {
            tracing::error!("{e}; the socket API refuses connections");
        }
    }
}

/// The API's listening sockets, polled by the supervisor until a
/// connection starts the server thread.
struct ApiWatch<'a>(&'a mut Option<RunningApi>);

impl Watch for ApiWatch<'_> {
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.0
            .as_ref()
            .map(RunningApi::idle_listeners)
            .unwrap_or_default()
    }

    fn ready(&mut self, _: &[PollFlags]) {
        serve_api(self.0);
    }
}

/// `--on-rotate restart`: a rotation writes to a pipe; the supervisor,
/// polling its other end, stops the child.
struct RestartWatch {
    reader: std::fs::File,
    asked: bool,
    /// keywarden itself is stopping: no restart.
    cancelled: bool,
}

impl Watch for RestartWatch {
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.reader.as_fd()]
    }

    fn ready(&mut self, _: &[PollFlags]) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let _ = self.reader.read(&mut buf);
        self.asked = true;
    }

    fn wants_stop(&mut self) -> bool {
        std::mem::take(&mut self.asked) && !self.cancelled
    }

    fn stopping(&mut self) {
        self.cancelled = true;
    }
}

/// The child's environment, and what was injected into it.
struct ChildEnv {
    /// The variables, values included (wiped after the spawn).
    vars: Vec<(OsString, OsString)>,
    /// The injected variables: (name, index in the plan).
    injected: Vec<(String, usize)>,
}

/// The child's environment for `plan` with `values` (in plan order).
fn child_env(
    plan: &LaunchPlan,
    values: &[SecretBytes],
    process_env: &[(OsString, OsString)],
    opts: &RunOptions,
    user: Option<&sys::TargetUser>,
    api_env: &[(String, SecretBytes)],
) -> ChildEnv {
    let mut keep = plan.policy.keep_env();
    keep.extend(opts.keep_env.iter().cloned());
    let mut extras: Vec<(String, OsString)> = api_env
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
            .filter_map(|(i, s)| s.env_var.clone().map(|v| (v, i)))
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

/// What the API's callbacks need to resolve again, shared with its thread.
struct Sources {
    common: Common,
    plan: LaunchPlan,
    process_env: Vec<(OsString, OsString)>,
    rotation: Mutex<Rotation>,
    /// The run's Vault token (renewed in the background) and leases.
    vault: Arc<VaultSession>,
}

/// What a reload must update besides the API: the relay's matcher (new
/// values get masked too) and, per `--on-rotate`, the child.
struct Rotation {
    /// The relay's matcher, unless `--no-redact`.
    cell: Option<Arc<MatcherCell>>,
    mask: Mask,
    /// Every value seen in this run, by id (old values stay masked).
    seen: Vec<(String, SecretBytes)>,
    /// The child's token, masked too.
    token: Option<SecretBytes>,
    /// Tokens minted over the socket, masked like the child's token
    /// until they expire (then they open nothing).
    minted: Vec<(std::time::Instant, SecretBytes)>,
    /// Injected variable → value, as the child got them.
    injected: Vec<(String, SecretBytes)>,
    /// The running child.
    child: Option<nix::unistd::Pid>,
    on_rotate: OnRotate,
    /// `--on-rotate restart`: the plan and values to start the child with
    /// once it has stopped.
    restart: Option<(LaunchPlan, Vec<SecretBytes>)>,
    /// Wakes the supervisor for a restart.
    wake: Option<std::fs::File>,
}

impl Rotation {
    /// Add `value` to the values the relay masks; whether it is new.
    fn remember(&mut self, id: &str, value: &SecretBytes) -> bool {
        if self.seen.iter().any(|(_, s)| s.expose() == value.expose()) {
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
        let mut extra: Vec<(&str, &[u8])> = r
            .seen
            .iter()
            .map(|(id, v)| (id.as_str(), v.expose()))
            .collect();
        if let Some(t) = &r.token {
            extra.push((api::TOKEN_VAR, t.expose()));
        }
        extra.extend(r.minted.iter().map(|(_, t)| (api::TOKEN_VAR, t.expose())));
        let base = LaunchPlan {
            secrets: Vec::new(),
            ..plan.clone()
        };
        cell.replace(redaction::matcher_for(
            &base,
            &[],
            &self.process_env,
            &extra,
            &r.mask,
        ));
    }

    /// After a reload: mask the new values, and tell the child per
    /// `--on-rotate` when a value it was given has changed.
    fn rotated(&self, plan: &LaunchPlan, values: &[SecretBytes]) {
        let mut r = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
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
                r.restart = Some((plan.clone(), values.iter().map(SecretBytes::duplicate).collect()));
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
    /// Mask a token minted over the socket (before it is handed out).
    fn mask_token(&self, token: SecretBytes, expires: std::time::Instant) {
        let mut r = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        r.minted.retain(|(until, _)| *until > now);
        r.minted.push((expires, token));
        self.rebuild_matcher(&r, &self.plan);
    }

    /// Resolve one secret again (its TTL ran out). Runs on a thread of its
    /// own: the resolver starts its own runtime.
    fn resolve_one(self: &Arc<Self>, id: &str) -> Result<api::Fresh> {
        let me = self.clone();
        let id = id.to_string();
        std::thread::spawn(move || {
            let mut plan = me.plan.clone();
            plan.secrets.retain(|s| s.id == id);
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
            let value = require_all(outcomes)?
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

    /// Re-read registry and policy and resolve everything again.
    fn reload(self: &Arc<Self>) -> Result<Vec<ServedSecret>> {
        let me = self.clone();
        std::thread::spawn(move || {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            let config = config::load(me.common.registry.as_deref(), me.common.policy.as_deref())?;
            let plan = config::build_plan(&config, me.common.env, &me.process_env, &cwd)?;
            let outcomes = resolve_plan(
                &plan,
                &me.common.store,
                &me.process_env,
                me.common.timeout,
                None,
                &me.vault,
            )?;
            let leases: Vec<_> = outcomes.iter().map(|o| o.lease).collect();
            let values = require_all(outcomes)?;
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
    let var = |k: &str| {
        process_env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    revocations::default_path(var).ok_or_else(|| {
        Error::config(
            "no place for the revocation list: set --revocation-list, KEYWARDEN_REVOCATION_LIST, XDG_STATE_HOME or HOME",
        )
    })
}

/// Run the command; returns keywarden's exit code.
pub fn run(common: &Common, opts: &RunOptions) -> Result<u8> {
    // Before any thread exists, so every thread inherits the mask.
    let signals = sys::block_signals(opts.reload_signal)?;
    let process_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));

    let config = config::load(common.registry.as_deref(), common.policy.as_deref())?;
    let plan = config::build_plan(&config, common.env, &process_env, &cwd)?;
    let audit = open_audit(opts, common.env, &process_env)?;
    audit.note(
        Event::new(EventKind::RunStart).reason(format!("{} secrets planned", plan.secrets.len())),
    );
    for s in &plan.skipped {
        tracing::info!("secret '{}' skipped: {}", s.id, s.reason);
    }
    let user = match &opts.user {
        None => None,
        Some(spec) => {
            if !nix::unistd::geteuid().is_root() {
                return Err(Error::new(
                    ErrorKind::Permission,
                    format!("--user {spec}: keywarden must run as root to switch users"),
                ));
            }
            Some(sys::lookup_user(spec)?)
        }
    };

    // Revoked secrets are neither resolved nor injected; the API answers 410.
    let revocation_list = revocation_path(opts, &process_env)?;
    let revoked = RevocationList::load(&revocation_list)?;
    let (revoked_plan, active): (Vec<_>, Vec<_>) = plan
        .secrets
        .iter()
        .cloned()
        .partition(|s| revoked.find(&s.id, s.reference.as_str()).is_some());
    for s in &revoked_plan {
        tracing::warn!("secret '{}' is revoked: not resolved, not injected", s.id);
    }
    let plan = LaunchPlan {
        secrets: active,
        ..plan
    };

    let vault = VaultSession::for_run();
    let outcomes = resolve_plan(
        &plan,
        &common.store,
        &process_env,
        common.timeout,
        Some(&signals),
        &vault,
    )?;
    let leases: Vec<_> = outcomes.iter().map(|o| o.lease).collect();
    // Outcomes come back in plan order.
    for (p, o) in plan.secrets.iter().zip(&outcomes) {
        let e = Event::new(EventKind::Resolve).secret(&p.id, &p.reference, &p.scope);
        audit.note(match &o.result {
            Ok(v) => e
                .result(AuditOutcome::Ok)
                .fingerprint(audit.fingerprint(v.expose())),
            Err(err) => e.result(AuditOutcome::Error).reason(err.reason.clone()),
        });
    }
    let secrets: Vec<SecretBytes> = require_all(outcomes)
        .map_err(|e| Error::new(e.kind(), format!("{e}; the command was not started")))?;
    for s in &plan.secrets {
        tracing::info!("resolved {} ({})", s.id, s.reference);
    }
    if plan
        .secrets
        .iter()
        .any(|s| crate::resolve::backend_of(&plan, s) == "vault")
    {
        // Keeps the run's token alive for re-resolutions (a no-op thread
        // end when the token does not expire).
        let ctx = crate::secret::providers::Context {
            env: process_env.iter().cloned().collect(),
        };
        let options = VaultOptions::from_env(&ctx);
        if let Err(e) = start_renewer(Arc::clone(&vault), options, ctx.env) {
            tracing::warn!("cannot start the Vault token renewer: {e}");
        }
    }

    // The socket API's sockets are bound (and listen) before the child
    // starts, which gets their address and a token (never a secret) in its
    // environment; the server thread starts after the spawn (see below).
    let (child_uid, child_gid) = match &user {
        Some(u) => (u.credentials.uid.as_raw(), u.credentials.gid.as_raw()),
        None => (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ),
    };
    let sources = Arc::new(Sources {
        common: common.clone(),
        plan: plan.clone(),
        process_env: process_env.clone(),
        rotation: Mutex::new(Rotation {
            cell: None,
            mask: Mask::new(&opts.mask),
            seen: plan
                .secrets
                .iter()
                .zip(&secrets)
                .map(|(p, v)| (p.id.clone(), v.duplicate()))
                .collect(),
            token: None,
            minted: Vec::new(),
            injected: Vec::new(),
            child: None,
            on_rotate: opts.on_rotate,
            restart: None,
            wake: None,
        }),
        vault,
    });
    let mut api = if opts.no_socket {
        None
    } else {
        let now = SystemTime::now();
        let mut served: Vec<ServedSecret> = plan
            .secrets
            .iter()
            .zip(&secrets)
            .zip(&leases)
            .map(|((p, v), lease)| ServedSecret {
                lease: *lease,
                ..ServedSecret::from_planned(p, Some(v.duplicate()), now)
            })
            .collect();
        served.extend(
            revoked_plan
                .iter()
                .map(|p| ServedSecret::from_planned(p, None, now)),
        );
        let dates = crate::resolve::secret_dates(&plan, &common.store, &process_env, |_| true);
        for s in served.iter_mut() {
            if let Some(d) = dates.get(&s.id) {
                s.dates = *d;
            }
        }
        let (s1, s2, s3) = (sources.clone(), sources.clone(), sources.clone());
        let var = |k: &str| {
            process_env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        Some(api::bind(
            ApiOptions {
                socket: opts.socket.clone(),
                admin_socket: opts.admin_socket.clone(),
                runtime_dir: api::socket::runtime_dir(var),
                child_uid,
                child_gid,
                child_scopes: plan.policy.child_scopes.clone().unwrap_or_else(|| {
                    api::DEFAULT_CHILD_SCOPES
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
                env: common.env,
                max_ttl_seconds: plan.policy.max_ttl_for(common.env),
                slack_secret_id: plan.policy.slack_signing_secret.clone(),
                revocation_list: revocation_list.clone(),
                audit: audit.clone(),
                approval_key: var("HITL_CHALLENGE_HMAC_KEY")
                    .filter(|k| !k.is_empty())
                    .map(|k| Arc::new(SecretBytes::copy_from(k.as_bytes()))),
                limits: api::conn::ConnLimits::default(),
            },
            served,
            Callbacks {
                resolve: Arc::new(move |id: &str| s1.resolve_one(id)),
                reload: Arc::new(move || s2.reload()),
                mask_token: Arc::new(move |token, expires| s3.mask_token(token, expires)),
            },
        )?)
    };
    // The child's API variables, kept (the token as a secret) for restarts.
    let api_env: Vec<(String, SecretBytes)> =
        api.as_mut().map(RunningApi::child_env).unwrap_or_default();

    for id in redaction::too_short(&plan, &secrets) {
        tracing::warn!("secret '{id}' is too short to mask safely; it is not redacted from output");
    }
    if opts.no_redact {
        tracing::warn!(
            "--no-redact: the command's output is relayed unchanged and may show secrets"
        );
    }
    // The relay's matcher is built right after the first start, while the
    // command execs (nothing is relayed before it exists, and no reload can
    // come before the supervisor and the API's thread run).
    let mut matcher: Option<Arc<MatcherCell>> = None;
    {
        let mut r = sources.rotation.lock().unwrap_or_else(|p| p.into_inner());
        r.token = api_env
            .iter()
            .find(|(k, _)| k == api::TOKEN_VAR)
            .map(|(_, v)| v.duplicate());
    }
    let counts = Arc::new(Mutex::new(Counts::default()));
    let pid1 = std::process::id() == 1;
    if opts.subreaper && !pid1 {
        sys::set_child_subreaper()?;
    }
    let stdin_tty = std::io::stdin().is_terminal();
    let stdout_tty = std::io::stdout().is_terminal();
    // Without a controlling terminal (a service, a container, a test
    // harness) there is no job control to keep: the child gets a process
    // group of its own, so a signal sent to keywarden's whole group (`kill
    // -- -PGID`, `timeout`) reaches it once, through keywarden. With one,
    // the child shares keywarden's group, which the terminal's signals
    // reach directly (and keywarden does not forward them again).
    let own_group = !sys::has_controlling_tty();
    let mut restarts = match opts.on_rotate {
        OnRotate::Restart => {
            let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::new(ErrorKind::Os, format!("cannot create a pipe: {e}")))?;
            let (reader, writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
            if let Ok(mut r) = sources.rotation.lock() {
                r.wake = Some(writer);
            }
            Some(RestartWatch {
                reader,
                asked: false,
                cancelled: false,
            })
        }
        _ => None,
    };
    let admin_path = api.as_ref().map(|a| a.admin_path().to_path_buf());
    let reload = |_: Signal| {
        let done = match &admin_path {
            Some(path) => api::reload_at(path),
            None => sources.reload().map(drop),
        };
        match done {
            Ok(()) => tracing::info!("reloaded the registry and policy"),
            Err(e) => tracing::error!("reload failed: {e}"),
        }
    };
    let on_reload: Option<(Signal, &dyn Fn(Signal))> =
        opts.reload_signal.map(|s| (s, &reload as &dyn Fn(Signal)));

    // What the next child starts with: the plan and values resolved at
    // start-up, then those of a rotation (`--on-rotate restart`).
    let mut current = plan;
    let mut current_values = secrets;
    let mut first = true;
    let exit = loop {
        let ChildEnv {
            vars: mut env,
            injected: inject,
        } = child_env(
            &current,
            &current_values,
            &process_env,
            opts,
            user.as_ref(),
            &api_env,
        );
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let program = supervise::locate(&opts.command[0], path_var.as_deref(), &cwd)?;
        let pty = if opts.pty.wanted(stdout_tty) {
            let size = sys::window_size(std::io::stdout().as_fd())
                .or_else(|| sys::window_size(std::io::stdin().as_fd()));
            Some(sys::open_pty(size)?)
        } else {
            None
        };
        let (master, slave) = match pty {
            Some(p) => (Some(p.master), Some(p.slave)),
            None => (None, None),
        };
        let spawned = supervise::spawn(SpawnSpec {
            program,
            argv: &opts.command,
            env: &env,
            credentials: user.as_ref().map(|u| u.credentials.clone()),
            pty_slave: slave,
            // Keystrokes go through the pty only from a terminal; other
            // input (a pipe, a file) reaches the child as it is.
            pty_stdin: stdin_tty,
            own_group,
        });
        for (_, v) in env.iter_mut() {
            let mut bytes = std::mem::take(v).into_vec();
            bytes.zeroize();
        }
        let spawned = spawned?;
        tracing::info!("started pid {}", spawned.pid);
        for (name, i) in &inject {
            let p = &current.secrets[*i];
            audit.note(
                Event::new(EventKind::Inject)
                    .secret(&p.id, &p.reference, &p.scope)
                    .reason(format!("as {name}")),
            );
        }
        audit.note(Event::new(EventKind::ChildStart).child_pid(spawned.pid.as_raw()));

        let supervisor = Supervisor {
            child: spawned.pid,
            reap_all: opts.subreaper || pid1,
            grace: opts.grace,
            own_group: own_group && master.is_none(),
        };
        if first {
            let mask = Mask::new(&opts.mask);
            // The child's own token is masked too: it is a credential.
            let extra: Vec<(&str, &[u8])> = api_env
                .iter()
                .filter(|(k, _)| k == api::TOKEN_VAR)
                .map(|(k, v)| (k.as_str(), v.expose()))
                .collect();
            let cell = Arc::new(MatcherCell::new(redaction::matcher_for(
                &current,
                &current_values,
                &process_env,
                &extra,
                &mask,
            )));
            // keywarden's own records (audit, log lines, the API's error
            // replies) go through it too, even with --no-redact.
            redaction::scrub_records_with(cell.clone());
            sources
                .rotation
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .cell = Some(cell.clone());
            if !opts.no_redact {
                matcher = Some(cell);
            }
        }
        let started = start_io(
            spawned.outputs,
            master,
            stdin_tty,
            filters(matcher.as_ref(), &counts),
        );
        let (mut relay, mut terminal) = match started {
            Ok(io) => io,
            Err(e) => {
                let _ = nix::sys::signal::kill(spawned.pid, nix::sys::signal::Signal::SIGKILL);
                let _ = supervisor.wait(&signals, None, None, &mut []);
                return Err(e);
            }
        };
        if let Ok(mut r) = sources.rotation.lock() {
            r.child = Some(spawned.pid);
            r.injected = inject
                .iter()
                .map(|(var, i)| (var.clone(), current_values[*i].duplicate()))
                .collect();
        }
        // The server thread: at once when held values expire (its sweep
        // wipes them) or a reload signal may call the admin socket;
        // otherwise on the first connection, which waits in the listen
        // backlog meanwhile (a child that never calls the API costs no
        // thread and no runtime).
        if first
            && api
                .as_ref()
                .is_some_and(|a| a.must_serve_now() || opts.reload_signal.is_some())
        {
            serve_api(&mut api);
        }
        first = false;
        let exit = {
            let mut api_watch = ApiWatch(&mut api);
            let mut watches: Vec<&mut dyn Watch> = vec![&mut api_watch, &mut relay];
            if let Some(w) = restarts.as_mut() {
                watches.push(w);
            }
            supervisor.wait(&signals, terminal.as_mut(), on_reload, &mut watches)
        };
        relay.finish();
        drop(terminal); // restores the user's terminal mode
        if let Ok(mut r) = sources.rotation.lock() {
            r.child = None;
        }
        let exit = exit?;
        tracing::info!("{}", supervise::describe(exit));
        let mut e = Event::new(EventKind::ChildExit).child_pid(spawned.pid.as_raw());
        e = match exit {
            supervise::ChildExit::Exited(code) => e.status(i64::from(code)),
            supervise::ChildExit::Signaled(sig) => e
                .status(i64::from(exit.exit_code()))
                .signal(sys::signal_name(sig)),
        };
        audit.note(e);
        let next = sources
            .rotation
            .lock()
            .ok()
            .and_then(|mut r| r.restart.take());
        match next {
            Some((plan, values)) if restarts.as_ref().is_some_and(|w| !w.cancelled) => {
                tracing::info!("starting the command again with the rotated values");
                current = plan;
                current_values = values;
            }
            _ => break exit,
        }
    };
    let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
    redaction::log_counts(&counts);
    audit.note(
        Event::new(EventKind::RedactionCounts)
            .counts(counts.iter().map(|(k, v)| (k.to_string(), v)).collect()),
    );
    if let Some(a) = api.take() {
        a.shutdown();
    }
    audit.note(Event::new(EventKind::RunStop).status(i64::from(exit.exit_code())));
    drop(current_values);
    Ok(exit.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_modes_follow_stdout() {
        assert!(PtyMode::Auto.wanted(true));
        assert!(!PtyMode::Auto.wanted(false));
        assert!(PtyMode::Always.wanted(false));
        assert!(!PtyMode::Never.wanted(true));
        assert_eq!(
            OnRotate::parse("signal:HUP"),
            Ok(OnRotate::Signal(Signal::SIGHUP))
        );
        assert!(OnRotate::parse("sometimes").is_err());
    }
}
