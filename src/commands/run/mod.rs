//! `keywarden run`: the main job, as a pipeline that [`run`] reads top to
//! bottom, one stage a file:
//!
//! 1. [`plan`]: registry and policy, the audit log, `--user`, revocations;
//! 2. [`resolve`](mod@resolve): every ref, concurrently, failing closed;
//! 3. [`env`]: the child's environment, a pure function;
//! 4. [`services`]: what the child is offered besides its environment (the
//!    socket API; the [`services::Service`] seam);
//! 5. [`spawn`]: the child, its pty and its relayed output;
//! 6. [`supervise`](mod@supervise): signals, reaping, restarts;
//! 7. [`teardown`]: counts, services stopped, the end recorded.
//!
//! [`rotation`] is what reloads and TTL expiry share with the API's thread.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::{Common, LaunchPlan};
use crate::error::Result;
use crate::redact::live::{self as redaction, MatcherCell};
use crate::redact::{Counts, Mask};
use crate::secret::SecretBytes;
use crate::supervise::Supervisor;
use crate::sys;

mod env;
mod env_file;
mod plan;
mod resolve;
mod rotation;
mod services;
mod spawn;
mod supervise;
mod teardown;
mod watch;

use rotation::{PlanValues, Sources};
use services::Masked;
use spawn::Launch;
use supervise::RestartWatch;

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
    /// Poll every source this often; reload when a value changed.
    pub watch: Option<Duration>,
    /// `KEY=value` files added to the environment (before filtering).
    pub env_files: Vec<PathBuf>,
    /// Forward signals to the child's whole process group.
    pub signal_group: bool,
    /// `--proxy-listen`: where the credential proxy listens (default
    /// `127.0.0.1:0`).
    pub proxy_listen: Option<String>,
    /// `--proxy-ca`: extra roots for the proxy's upstreams (PEM).
    pub proxy_ca: Option<PathBuf>,
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
                Some(sig) => crate::config::parse_signal(sig).map(OnRotate::Signal),
                None => Err(format!("'{text}': expected none, restart or signal:SIG")),
            },
        }
    }
}

/// From this many secrets on, the heap's free memory is given back once the
/// first start is done (see docs/PERFORMANCE.md, "Start-up outside the
/// matcher").
const TRIM_FROM_SECRETS: usize = 2048;

/// From this many secrets on, the matcher's build hands back free memory
/// as it goes (its settle hook): 1.2 MiB (11 %) off the peak at 1,000
/// secrets; at 100 nothing, for ~0.1 ms (docs/PERFORMANCE.md, "The eighth
/// pass").
const SETTLE_FROM_SECRETS: usize = 512;

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

/// The process's environment and folder, read once.
struct World {
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
}

impl World {
    /// The process's environment with the `--env-file` lines added (a
    /// file's value wins over the process's, a later file's over an
    /// earlier one's).
    fn capture(env_files: &[PathBuf]) -> Result<World> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for path in env_files {
            for (k, v) in env_file::read(path)? {
                env.retain(|(name, _)| *name != k);
                env.push((k, v));
            }
        }
        Ok(World {
            env,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        })
    }
}

/// The value of `name` in `env`.
fn var(env: &[(OsString, OsString)], name: &str) -> Option<OsString> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// What keywarden's own stdio are, read once.
#[derive(Debug, Clone, Copy)]
struct Terminals {
    stdin: bool,
    stdout: bool,
    /// The child gets a process group of its own. Without a controlling
    /// terminal (a service, a container, a test harness) there is no job
    /// control to keep, so a signal sent to keywarden's whole group (`kill
    /// -- -PGID`, `timeout`) reaches it once, through keywarden. With one,
    /// the child shares keywarden's group, which the terminal's signals
    /// reach directly (and keywarden does not forward them again).
    /// With `--signal-group` it always gets one (taking the terminal's
    /// foreground, if keywarden has it).
    own_group: bool,
}

/// Run the command; returns keywarden's exit code.
pub fn run(common: &Common, opts: &RunOptions) -> Result<u8> {
    // Before any thread exists, so every thread inherits the mask.
    let signals = sys::block_signals(opts.reload_signal)?;
    sys::map_large_allocations();
    let world = World::capture(&opts.env_files)?;
    let planned = plan::plan(common, opts, &world)?;
    let resolved = resolve::resolve(common, &planned, &world, &signals)?;
    let first: PlanValues = (Arc::clone(&planned.plan), Arc::clone(&resolved.values));
    let sources = Sources::new(common, opts, &world.env, &first, resolved.vault.clone());
    // The relay's matcher starts on the plan's values now, while the
    // services are set up; their masked variables join it after.
    let settle: fn() = if planned.plan.secrets.len() >= SETTLE_FROM_SECRETS {
        sys::release_free_memory
    } else {
        || {}
    };
    let (matcher, rest) = MatcherCell::build_in_parts(
        redaction::owned_plan_secrets(&planned.plan, &resolved.values),
        Mask::new(&opts.mask),
        settle,
    );
    let mut services = services::start(common, opts, &world.env, &planned, &resolved, &sources)?;
    let offered = Offered::collect(&mut services);
    rest.send(relay_matcher_rest(&planned.plan, &world, &offered.masked));
    sources.rotation().masked = offered
        .masked
        .iter()
        .map(|(k, v)| (k.clone(), v.duplicate()))
        .collect();
    warn_unmasked(opts, &planned, &resolved.values);
    if opts.subreaper && std::process::id() != 1 {
        sys::set_child_subreaper()?;
    }
    let counts = Arc::new(Mutex::new(Counts::default()));
    let session = Session {
        // Orphans are re-parented here as PID 1, with --subreaper, and when
        // the attribute was inherited across exec (as tini checks): reap
        // them all.
        reap_all: std::process::id() == 1 || opts.subreaper || sys::is_child_subreaper(),
        opts,
        world: &world,
        planned: &planned,
        sources: &sources,
        offered: &offered,
        signals: &signals,
        counts: &counts,
        matcher,
    };
    drop(resolved);
    let exit = session.launch(&mut services, first)?;
    Ok(teardown::teardown(&planned.audit, &counts, services, exit))
}

/// What the services add to the child's environment, kept (values as
/// secrets) for restarts; and which of those values the relay masks.
struct Offered {
    env: Vec<(String, SecretBytes)>,
    masked: Vec<(String, SecretBytes)>,
}

impl Offered {
    fn collect(services: &mut [Box<dyn services::Service>]) -> Offered {
        let mut offered = Offered {
            env: Vec::new(),
            masked: Vec::new(),
        };
        for s in services.iter_mut() {
            for (k, v, m) in s.child_env() {
                if m == Masked::Yes {
                    offered.masked.push((k.clone(), v.duplicate()));
                }
                offered.env.push((k, v));
            }
        }
        offered
    }
}

/// What every start of the child shares.
struct Session<'a> {
    /// Reap every zombie, not only the child's.
    reap_all: bool,
    opts: &'a RunOptions,
    world: &'a World,
    planned: &'a plan::Planned,
    sources: &'a Arc<Sources>,
    offered: &'a Offered,
    signals: &'a sys::Signals,
    counts: &'a Arc<Mutex<Counts>>,
    /// The relay's first matcher (maybe still building).
    matcher: Arc<MatcherCell>,
}

impl Session<'_> {
    /// Stages 3, 5 and 6 for each start of the child: the first with the
    /// values resolved at start-up, then again after a rotation with
    /// `--on-rotate restart`. Returns how the last child ended.
    fn launch(
        &self,
        services: &mut [Box<dyn services::Service>],
        mut current: PlanValues,
    ) -> Result<crate::supervise::ChildExit> {
        let terminals = Terminals {
            stdin: std::io::stdin().is_terminal(),
            stdout: std::io::stdout().is_terminal(),
            own_group: self.opts.signal_group || !sys::has_controlling_tty(),
        };
        let mut restarts = match self.opts.on_rotate {
            OnRotate::Restart => Some(RestartWatch::new(self.sources)?),
            _ => None,
        };
        let reloader = services.iter().find_map(|s| s.reloader());
        let reload = |_: Signal| {
            let done = match &reloader {
                Some(r) => r(),
                None => self.sources.reload().map(drop),
            };
            match done {
                Ok(()) => tracing::info!("reloaded the registry and policy"),
                Err(e) => tracing::error!("reload failed: {e}"),
            }
        };
        let mut matcher: Option<Arc<MatcherCell>> = None;
        let mut first = true;
        loop {
            let started = self.start(&current, terminals, &mut matcher, first)?;
            let pid = started.supervisor.child;
            for s in services.iter_mut() {
                s.started(first);
            }
            first = false;
            let on_reload: Option<(Signal, &dyn Fn(Signal))> = self
                .opts
                .reload_signal
                .map(|s| (s, &reload as &dyn Fn(Signal)));
            let exit = supervise::supervise(
                started,
                self.signals,
                on_reload,
                services,
                restarts.as_mut(),
            );
            self.sources.rotation().child = None;
            let exit = exit?;
            supervise::record_exit(&self.planned.audit, pid, exit);
            let next = self.sources.rotation().restart.take();
            match next {
                Some(next) if restarts.as_ref().is_some_and(RestartWatch::allowed) => {
                    tracing::info!("starting the command again with the rotated values");
                    current = next;
                }
                _ => return Ok(exit),
            }
        }
    }

    /// One start: the environment (stage 3), the spawn and its relay
    /// (stage 5); on the first, the relay's matcher (building on a thread
    /// of its own since the values were resolved) is handed to the relay,
    /// the reloads and the records (nothing is relayed, proxied or
    /// recorded through it before it exists; a reload that installs one
    /// first wins).
    fn start(
        &self,
        (plan, values): &PlanValues,
        terminals: Terminals,
        matcher: &mut Option<Arc<MatcherCell>>,
        first: bool,
    ) -> Result<spawn::Started> {
        let (opts, user) = (self.opts, self.planned.user.as_ref());
        let child_env =
            env::child_env(plan, values, &self.world.env, opts, user, &self.offered.env);
        let injected: Vec<(String, SecretBytes)> = child_env
            .injected
            .iter()
            .map(|(var, i)| (var.clone(), values[*i].duplicate()))
            .collect();
        let launch = Launch {
            opts,
            cwd: &self.world.cwd,
            user,
            terminals,
            audit: &self.planned.audit,
        };
        let (spawned, master) = spawn::spawn(&launch, plan, child_env)?;
        let supervisor = Supervisor {
            child: spawned.pid,
            reap_all: self.reap_all,
            grace: opts.grace,
            own_group: terminals.own_group && master.is_none(),
            group: opts.signal_group,
        };
        // Built even with --no-redact: the credential proxy redacts its
        // responses with it whatever the relay does, and keywarden's own
        // records (audit, log lines, the API's error replies) go through it.
        if first {
            let cell = self.matcher.clone();
            redaction::scrub_records_with(cell.clone());
            self.sources.rotation().cell = Some(cell.clone());
            *matcher = Some(cell);
            // What start-up built and dropped (the registry, the requests,
            // the matcher's build tables) need not stay resident: 6.5 MB
            // of 42 at 10,000 secrets. Below a few thousand it is a few
            // hundred KiB, not worth the system calls.
            if plan.secrets.len() >= TRIM_FROM_SECRETS {
                sys::release_free_memory();
            }
        }
        let pid = spawned.pid;
        let started = spawn::start_io(
            spawned,
            master,
            supervisor,
            self.signals,
            terminals.stdin,
            matcher.as_ref().filter(|_| !opts.no_redact),
            self.counts,
        )?;
        let mut r = self.sources.rotation();
        r.child = Some(pid);
        r.injected = injected;
        Ok(started)
    }
}

/// Warn about what the relay will not mask.
fn warn_unmasked(opts: &RunOptions, planned: &plan::Planned, values: &[SecretBytes]) {
    for id in redaction::too_short(&planned.plan, values) {
        tracing::warn!("secret '{id}' is too short to mask safely; it is not redacted from output");
    }
    if opts.no_redact {
        tracing::warn!(
            "--no-redact: the command's output is relayed unchanged and may show secrets"
        );
    }
}

/// What the relay's matcher masks besides the plan's values: the services'
/// masked variables and the always-denied values of keywarden's
/// environment.
fn relay_matcher_rest(
    plan: &LaunchPlan,
    world: &World,
    masked: &[(String, SecretBytes)],
) -> redaction::OwnedSecrets {
    let extra: Vec<(&str, &[u8])> = masked
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    redaction::owned_other_secrets(plan, &world.env, &extra)
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
