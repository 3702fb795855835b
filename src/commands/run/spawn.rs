//! Stage 5 of `run`: start the child — find the program, open a pty when
//! wanted, spawn with the computed environment (wiped at once after), audit
//! the start, and start relaying its output through the redacting filter.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::audit::{Auditor, Event, EventKind};
use crate::config::LaunchPlan;
use crate::envfilter;
use crate::error::{Error, ErrorKind, Result};
use crate::redact::live::{MatcherCell, RedactFilter};
use crate::redact::Counts;
use crate::relay::{self, Filter, Relay, Source};
use crate::supervise::{self, SpawnSpec, Supervisor, TerminalLink};
use crate::sys;

use super::env::ChildEnv;
use super::{RunOptions, Terminals};

/// A child that runs, with its output relayed.
pub(super) struct Started {
    pub supervisor: Supervisor,
    pub relay: Relay,
    pub terminal: Option<TerminalLink>,
}

/// What one start needs besides the environment.
pub(super) struct Launch<'a> {
    pub opts: &'a RunOptions,
    pub cwd: &'a Path,
    pub user: Option<&'a sys::TargetUser>,
    pub terminals: Terminals,
    pub audit: &'a Auditor,
}

/// Spawn the child with `env` (wiped whatever happens) and audit it.
pub(super) fn spawn(
    launch: &Launch<'_>,
    plan: &LaunchPlan,
    mut env: ChildEnv,
) -> Result<(supervise::Spawned, Option<OwnedFd>)> {
    if let Err(problem) = envfilter::exec_limits(&env.vars, &launch.opts.command, sys::arg_max()) {
        env.wipe();
        return Err(Error::new(
            ErrorKind::Data,
            format!(
                "variable {}: {}; the command was not started",
                problem.variable(),
                problem.reason()
            ),
        ));
    }
    let path_var = env
        .vars
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let spawned = locate_and_spawn(launch, &env.vars, path_var);
    env.wipe();
    let (spawned, master) = spawned?;
    tracing::info!("started pid {}", spawned.pid);
    for (name, i) in &env.injected {
        let p = &plan.secrets[*i];
        launch.audit.note(
            Event::new(EventKind::Inject)
                .secret(&p.id, &p.reference, &p.scope)
                .reason(format!("as {name}")),
        );
    }
    launch
        .audit
        .note(Event::new(EventKind::ChildStart).child_pid(spawned.pid.as_raw()));
    Ok((spawned, master))
}

fn locate_and_spawn(
    launch: &Launch<'_>,
    vars: &[(OsString, OsString)],
    path_var: Option<OsString>,
) -> Result<(supervise::Spawned, Option<OwnedFd>)> {
    let opts = launch.opts;
    let program = supervise::locate(&opts.command[0], path_var.as_deref(), launch.cwd)?;
    let pty = if opts.pty.wanted(launch.terminals.stdout) {
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
        env: vars,
        credentials: launch.user.map(|u| u.credentials.clone()),
        pty_slave: slave,
        // Keystrokes go through the pty only from a terminal; other
        // input (a pipe, a file) reaches the child as it is.
        pty_stdin: launch.terminals.stdin,
        own_group: launch.terminals.own_group,
        foreground: opts.signal_group,
    })?;
    Ok((spawned, master))
}

/// Start relaying the child's output (pipes, or the pty master) and, on a
/// pty, the user's keystrokes the other way, with the terminal in raw mode.
/// One redacting filter per output stream, or none with `--no-redact`. On
/// failure the child is killed and reaped.
pub(super) fn start_io(
    spawned: supervise::Spawned,
    master: Option<OwnedFd>,
    supervisor: Supervisor,
    signals: &sys::Signals,
    stdin_tty: bool,
    matcher: Option<&Arc<MatcherCell>>,
    counts: &Arc<Mutex<Counts>>,
) -> Result<Started> {
    let filter = || {
        matcher.map(|m| Box::new(RedactFilter::new(m.clone(), counts.clone())) as Box<dyn Filter>)
    };
    match relay_streams(spawned.outputs, master, stdin_tty, filter) {
        Ok((relay, terminal)) => Ok(Started {
            supervisor,
            relay,
            terminal,
        }),
        Err(e) => {
            let _ = nix::sys::signal::kill(spawned.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = supervisor.wait(signals, None, None, &mut []);
            Err(e)
        }
    }
}

fn relay_streams(
    pipes: Option<(OwnedFd, OwnedFd)>,
    master: Option<OwnedFd>,
    stdin_tty: bool,
    filter: impl Fn() -> Option<Box<dyn Filter>>,
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
        // Raw mode first: the relay then never reads the terminal in line
        // mode (where an end-of-file ends its reading).
        let raw = if stdin_tty {
            let mut raw = sys::RawMode::new(std::io::stdin().as_fd())?;
            relay::pump_stdin(dup(&master)?, raw.take_pending())
                .map_err(|e| os("cannot start the input relay", e))?;
            Some(raw)
        } else {
            None
        };
        terminal = Some(TerminalLink { master, raw });
    }
    let relay = Relay::new(sources).map_err(|e| os("cannot start the output relay", e))?;
    Ok((relay, terminal))
}
