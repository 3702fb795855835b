//! `keywarden run`: the main job, top to bottom — configuration → resolve
//! (fail closed) → environment → spawn → relay → supervise → exit code.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroize;

use crate::cli::Common;
use crate::config;
use crate::envfilter::{self, EnvSpec, EnvValue};
use crate::error::{Error, ErrorKind, Result};
use crate::redact::{Counts, Mask, Matcher};
use crate::redaction::{self, RedactFilter};
use crate::relay::{self, Filter, Relay, Source};
use crate::resolve::{require_all, resolve_plan};
use crate::secret::SecretBytes;
use crate::supervise::{self, SpawnSpec, Supervisor, TerminalLink};
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
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// `--pty`: when the child gets a pseudo-terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PtyMode {
    /// When stdin and stdout are both terminals.
    Auto,
    /// Always (window size from stdout when it is a terminal).
    Always,
    /// Never: pipes.
    Never,
}

impl PtyMode {
    /// Whether to use a pty, given whether stdin and stdout are terminals.
    pub fn wanted(self, stdin_tty: bool, stdout_tty: bool) -> bool {
        match self {
            PtyMode::Auto => stdin_tty && stdout_tty,
            PtyMode::Always => true,
            PtyMode::Never => false,
        }
    }
}

/// Start relaying the child's output (pipes, or the pty master) and, on a
/// pty, the user's keystrokes the other way, with the terminal in raw mode.
/// One redacting filter per output stream, or none with `--no-redact`.
fn filters(
    matcher: Option<&Arc<Matcher>>,
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
        relay::pump_stdin(dup(&master)?).map_err(|e| os("cannot start the input relay", e))?;
        let raw = if stdin_tty {
            Some(sys::RawMode::new(std::io::stdin().as_fd())?)
        } else {
            None
        };
        terminal = Some(TerminalLink { master, raw });
    }
    let relay = Relay::start(sources).map_err(|e| os("cannot start the output relay", e))?;
    Ok((relay, terminal))
}

/// Run the command; returns keywarden's exit code.
pub fn run(common: &Common, opts: &RunOptions) -> Result<u8> {
    // Before any thread exists, so every thread inherits the mask.
    let signals = sys::block_signals()?;
    let process_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));

    let config = config::load(common.registry.as_deref(), common.policy.as_deref())?;
    let plan = config::build_plan(&config, common.env, &process_env, &cwd)?;
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

    let outcomes = resolve_plan(
        &plan,
        &common.store,
        &process_env,
        common.timeout,
        Some(&signals),
    )?;
    let secrets: Vec<SecretBytes> = require_all(outcomes)
        .map_err(|e| Error::new(e.kind(), format!("{e}; the command was not started")))?;
    for s in &plan.secrets {
        tracing::info!("resolved {} ({})", s.id, s.reference);
    }

    for id in redaction::too_short(&plan, &secrets) {
        tracing::warn!("secret '{id}' is too short to mask safely; it is not redacted from output");
    }
    let matcher = if opts.no_redact {
        tracing::warn!(
            "--no-redact: the command's output is relayed unchanged and may show secrets"
        );
        None
    } else {
        let mask = Mask::new(&opts.mask);
        Some(Arc::new(redaction::matcher_for(
            &plan,
            &secrets,
            &process_env,
            &mask,
        )))
    };
    let counts = Arc::new(Mutex::new(Counts::default()));

    let mut keep = plan.policy.keep_env();
    keep.extend(opts.keep_env.iter().cloned());
    let mut extras = Vec::new();
    if let Some(u) = &user {
        extras.push(("HOME".to_string(), u.home.clone().into_os_string()));
        extras.push(("USER".to_string(), OsString::from(&u.name)));
        extras.push(("LOGNAME".to_string(), OsString::from(&u.name)));
    }
    let spec = EnvSpec {
        deny: plan.policy.deny_env.clone(),
        clean: opts.clean_env || plan.policy.clean_env,
        keep,
        env_sources: plan.env_sources(),
        inject: plan
            .secrets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.env_var.clone().map(|v| (v, i)))
            .collect(),
        extras,
    };
    let values: Vec<&[u8]> = secrets.iter().map(SecretBytes::expose).collect();
    let mut env: Vec<(OsString, OsString)> = envfilter::build(&process_env, &spec, &values)
        .into_iter()
        .map(|(k, v)| match v {
            EnvValue::Plain(v) => (k, v),
            EnvValue::Secret(i) => (k, OsString::from_vec(values[i].to_vec())),
        })
        .collect();

    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let program = supervise::locate(&opts.command[0], path_var.as_deref(), &cwd)?;
    let pid1 = std::process::id() == 1;
    if opts.subreaper && !pid1 {
        sys::set_child_subreaper()?;
    }
    let stdin_tty = std::io::stdin().is_terminal();
    let stdout_tty = std::io::stdout().is_terminal();
    let pty = if opts.pty.wanted(stdin_tty, stdout_tty) {
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
        credentials: user.map(|u| u.credentials),
        pty_slave: slave,
    });
    for (_, v) in env.iter_mut() {
        let mut bytes = std::mem::take(v).into_vec();
        bytes.zeroize();
    }
    let spawned = spawned?;
    tracing::info!("started pid {}", spawned.pid);

    let supervisor = Supervisor {
        child: spawned.pid,
        reap_all: opts.subreaper || pid1,
        grace: opts.grace,
    };
    let started = start_io(
        spawned.outputs,
        master,
        stdin_tty,
        filters(matcher.as_ref(), &counts),
    );
    let (relay, mut terminal) = match started {
        Ok(io) => io,
        Err(e) => {
            let _ = nix::sys::signal::kill(spawned.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = supervisor.wait(&signals, None);
            return Err(e);
        }
    };
    let exit = supervisor.wait(&signals, terminal.as_mut());
    relay.finish();
    drop(terminal); // restores the user's terminal mode
    if let Ok(counts) = counts.lock() {
        redaction::log_counts(&counts);
    }
    let exit = exit?;
    tracing::info!("{}", supervise::describe(exit));
    drop(secrets);
    Ok(exit.exit_code())
}
