//! Starting the command and watching over it, in the manner of tini: one
//! loop reads signals from a signalfd, forwards them to the child exactly
//! once, reaps zombies with a single `waitpid` owner that recognises the
//! main child by pid, and escalates to SIGKILL when a stop outlasts the
//! grace period.

mod spawn;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub use spawn::{locate, spawn, SpawnSpec, Spawned};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::{
    set_window_size, signal_name, window_size, RawMode, Signals, FORWARDED_SIGNALS, STOP_SIGNALS,
};

/// How the main child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ChildExit {
    /// keywarden's exit code: the child's, or 128+N when killed by signal N.
    pub fn exit_code(self) -> u8 {
        match self {
            ChildExit::Exited(code) => (code & 0xff) as u8,
            ChildExit::Signaled(sig) => (128 + sig).clamp(0, 255) as u8,
        }
    }
}

/// Whether a signal delivery should be passed on to the child.
///
/// Not when the child sent it (no echo), and not when the kernel generated
/// it for the terminal's foreground group (Ctrl-C, window change, hangup)
/// while the child shares keywarden's process group: it received it
/// already. On a pty the child has its own session, so those are forwarded
/// (except SIGWINCH, which becomes a resize of the pty); in a process group
/// of its own (no terminal) everything is.
pub fn should_forward(
    signal: Signal,
    sender: i32,
    from_kernel: bool,
    child: Pid,
    on_pty: bool,
    own_group: bool,
) -> bool {
    if !FORWARDED_SIGNALS.contains(&signal) || sender == child.as_raw() {
        return false;
    }
    if on_pty {
        signal != Signal::SIGWINCH
    } else {
        own_group || !from_kernel
    }
}

/// The link between the user's terminal and the child's pty.
#[derive(Debug)]
pub struct TerminalLink {
    /// keywarden's end of the child's pty.
    pub master: OwnedFd,
    /// The user's terminal in raw mode, when stdin is a terminal.
    pub raw: Option<RawMode>,
}

impl TerminalLink {
    /// Copy the user's window size to the child's pty.
    pub fn sync_size(&self) {
        if let Some(ws) = self.raw.as_ref().and_then(|r| window_size(r.as_fd())) {
            set_window_size(self.master.as_fd(), &ws);
        }
    }

    /// The child stopped (Ctrl-Z on its pty): give the terminal back, stop
    /// keywarden too so the shell regains control, and pick up on resume.
    fn suspend(&mut self) {
        if let Some(r) = self.raw.as_mut() {
            r.restore();
        }
        if std::process::id() != 1 {
            let _ = kill(nix::unistd::getpid(), Signal::SIGSTOP);
        }
        if let Some(r) = self.raw.as_mut() {
            r.enter();
            crate::relay::write_all_fd(&self.master, &r.take_pending());
        }
        self.sync_size();
    }
}

/// Work the supervisor's loop waits on besides signals, so it needs no
/// thread of its own until there is something to do: descriptors to poll
/// for input, and what to do when they are ready.
pub trait Watch {
    /// The descriptors to poll (for input) now; none when done.
    fn fds(&self) -> Vec<BorrowedFd<'_>>;
    /// The events of the last poll, one per descriptor [`Watch::fds`]
    /// returned, in that order (some are ready). Must consume what made
    /// them ready (read, close or hand off), as the poll is level-triggered.
    fn ready(&mut self, events: &[PollFlags]);
    /// Checked after each poll: whether the watch asks for the child to be
    /// stopped (SIGTERM now, SIGKILL after the grace period).
    fn wants_stop(&mut self) -> bool {
        false
    }
    /// Told when keywarden itself is being stopped (a stop signal was
    /// forwarded to the child).
    fn stopping(&mut self) {}
}

/// Supervision settings.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor {
    /// The main child.
    pub child: Pid,
    /// Reap every child (PID 1, `--subreaper` or an inherited subreaper
    /// attribute), not just the main one.
    pub reap_all: bool,
    /// How long a stopping child gets before SIGKILL.
    pub grace: Duration,
    /// The child has a process group of its own.
    pub own_group: bool,
    /// Signals go to the child's whole process group (`--signal-group`).
    pub group: bool,
}

/// When a child told to stop at `now` gets SIGKILL. A grace period past
/// what the clock counts (`--grace` takes up to 2^63 seconds) is a
/// century: it used to panic keywarden as it stopped, leaving the child.
fn kill_deadline(now: Instant, grace: Duration) -> Instant {
    now.checked_add(grace)
        .unwrap_or(now + crate::duration::CENTURY)
}

impl Supervisor {
    /// Forward signals and reap until the main child is gone.
    ///
    /// `on_reload` is the reload signal and what to do on it: that signal is
    /// handled here, not forwarded. `watches` are polled alongside the
    /// signals.
    pub fn wait(
        &self,
        signals: &Signals,
        mut terminal: Option<&mut TerminalLink>,
        on_reload: Option<(Signal, &dyn Fn(Signal))>,
        watches: &mut [&mut dyn Watch],
    ) -> Result<ChildExit> {
        let mut deadline: Option<Instant> = None;
        loop {
            match self.reap(terminal.is_some())? {
                Reaped::Exit(exit) => return Ok(exit),
                Reaped::Stopped => {
                    if let Some(t) = terminal.as_deref_mut() {
                        t.suspend();
                    }
                }
                Reaped::Running => {}
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Rounded up to the next millisecond, at most poll's
                    // longest (a deadline weeks away is woken for again).
                    let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128);
                    PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            let mut counts = Vec::with_capacity(watches.len());
            for w in watches.iter() {
                let theirs = w.fds();
                counts.push(theirs.len());
                fds.extend(
                    theirs
                        .into_iter()
                        .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
                );
            }
            let polled = poll(&mut fds, timeout);
            // Flags nix does not know count as ready: the watch reads and
            // finds out.
            let events: Vec<PollFlags> = fds[1..]
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::POLLERR))
                .collect();
            drop(fds);
            match polled {
                Ok(_) => {
                    let mut rest = &events[..];
                    for (w, n) in watches.iter_mut().zip(counts) {
                        let (mine, others) = rest.split_at(n);
                        rest = others;
                        if mine.iter().any(|e| !e.is_empty()) {
                            w.ready(mine);
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::new(ErrorKind::Os, format!("poll: {e}"))),
            }
            let mut stop = false;
            for w in watches.iter_mut() {
                stop |= w.wants_stop();
            }
            if stop && deadline.is_none() {
                tracing::debug!("stopping pid {} (SIGTERM)", self.child);
                self.signal(Signal::SIGTERM);
                deadline = Some(kill_deadline(Instant::now(), self.grace));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    "the command did not exit within the {} grace period; sending SIGKILL",
                    crate::duration::format(self.grace)
                );
                self.signal(Signal::SIGKILL);
                deadline = None;
            }
            while let Some(d) = signals.next()? {
                if d.signal == Signal::SIGCHLD {
                    continue; // reaped at the top of the loop
                }
                if let Some((sig, reload)) = on_reload {
                    if d.signal == sig {
                        reload(sig);
                        continue;
                    }
                }
                if d.signal == Signal::SIGWINCH {
                    if let Some(t) = terminal.as_deref() {
                        t.sync_size();
                    }
                }
                if should_forward(
                    d.signal,
                    d.sender,
                    d.from_kernel,
                    self.child,
                    terminal.is_some(),
                    self.own_group,
                ) {
                    tracing::debug!("forwarding {} to pid {}", d.signal.as_str(), self.child);
                    self.signal(d.signal);
                }
                if STOP_SIGNALS.contains(&d.signal) && d.sender != self.child.as_raw() {
                    for w in watches.iter_mut() {
                        w.stopping();
                    }
                    if deadline.is_none() {
                        deadline = Some(kill_deadline(Instant::now(), self.grace));
                    }
                }
            }
        }
    }

    /// Send `sig` to the child, or to its process group with `group`.
    fn signal(&self, sig: Signal) {
        let target = if self.group {
            Pid::from_raw(-self.child.as_raw())
        } else {
            self.child
        };
        let _ = kill(target, sig);
    }

    /// Collect exited children without blocking; the main child's status
    /// when it is among them. On a pty, also notice the child stopping.
    fn reap(&self, untraced: bool) -> Result<Reaped> {
        let target = if self.reap_all {
            None
        } else {
            Some(self.child)
        };
        let mut flags = WaitPidFlag::WNOHANG;
        if untraced {
            flags |= WaitPidFlag::WUNTRACED;
        }
        let mut result = Reaped::Running;
        loop {
            let status = match waitpid(target, Some(flags)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(result),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::new(ErrorKind::Os, format!("waitpid: {e}"))),
                Ok(status) => status,
            };
            match status {
                WaitStatus::Exited(pid, code) if pid == self.child => {
                    result = Reaped::Exit(ChildExit::Exited(code))
                }
                WaitStatus::Signaled(pid, sig, _) if pid == self.child => {
                    result = Reaped::Exit(ChildExit::Signaled(sig as i32))
                }
                WaitStatus::Stopped(pid, _) if pid == self.child => {
                    if !matches!(result, Reaped::Exit(_)) {
                        result = Reaped::Stopped;
                    }
                }
                other => tracing::debug!("reaped {:?}", other.pid()),
            }
        }
    }
}

enum Reaped {
    Running,
    Stopped,
    Exit(ChildExit),
}

/// Describe how the child ended, for the log.
pub fn describe(exit: ChildExit) -> String {
    match exit {
        ChildExit::Exited(code) => format!("the command exited with status {code}"),
        ChildExit::Signaled(sig) => format!("the command was killed by {}", signal_name(sig)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(ChildExit::Exited(0).exit_code(), 0);
        assert_eq!(ChildExit::Exited(3).exit_code(), 3);
        assert_eq!(ChildExit::Signaled(15).exit_code(), 143);
        assert_eq!(ChildExit::Signaled(9).exit_code(), 137);
    }

    #[test]
    fn a_grace_past_what_the_clock_counts_is_a_century() {
        let now = Instant::now();
        for (grace, want) in [
            (Duration::from_secs(10), now + Duration::from_secs(10)),
            (Duration::ZERO, now),
            (
                Duration::from_secs(i64::MAX as u64),
                now + crate::duration::CENTURY,
            ),
            (Duration::MAX, now + crate::duration::CENTURY),
        ] {
            assert_eq!(kill_deadline(now, grace), want, "{grace:?}");
        }
    }

    #[test]
    fn forwarding_rules() {
        let child = Pid::from_raw(4242);
        let table = [
            (
                Signal::SIGTERM,
                1,
                false,
                false,
                true,
                "kill(1) from a user",
            ),
            (Signal::SIGUSR1, 0, false, false, true, "kill from pid 0"),
            (
                Signal::SIGINT,
                0,
                true,
                false,
                false,
                "terminal Ctrl-C reached the child already",
            ),
            (
                Signal::SIGTERM,
                4242,
                false,
                false,
                false,
                "no echo to the sender",
            ),
            (
                Signal::SIGCHLD,
                1,
                false,
                false,
                false,
                "not a forwarded signal",
            ),
            (
                Signal::SIGHUP,
                0,
                true,
                true,
                true,
                "a pty child has its own session",
            ),
            (
                Signal::SIGWINCH,
                1,
                false,
                true,
                false,
                "a resize of the pty instead",
            ),
        ];
        for (sig, sender, kernel, pty, want, why) in table {
            assert_eq!(
                should_forward(sig, sender, kernel, child, pty, false),
                want,
                "{why}"
            );
        }
        // In a process group of its own the child got nothing directly.
        assert!(should_forward(Signal::SIGINT, 0, true, child, false, true));
        assert!(!should_forward(
            Signal::SIGTERM,
            child.as_raw(),
            false,
            child,
            false,
            true
        ));
    }
}
