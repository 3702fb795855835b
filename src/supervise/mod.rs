//! Starting the command and watching over it, in the manner of tini: one
//! loop reads signals from a signalfd, forwards them to the child exactly
//! once, reaps zombies with a single `waitpid` owner that recognises the
//! main child by pid, and escalates to SIGKILL when a stop outlasts the
//! grace period.

mod spawn;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub use spawn::{locate, spawn, SpawnSpec, Spawned};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::{signal_name, Signals, FORWARDED_SIGNALS, STOP_SIGNALS};

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
/// it for the terminal's foreground group (Ctrl-C, window change, hangup):
/// the child is in keywarden's process group and received it already.
pub fn should_forward(signal: Signal, sender: i32, from_kernel: bool, child: Pid) -> bool {
    FORWARDED_SIGNALS.contains(&signal) && sender != child.as_raw() && !from_kernel
}

/// Supervision settings.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor {
    /// The main child.
    pub child: Pid,
    /// Reap every child (`--subreaper`, or PID 1), not just the main one.
    pub reap_all: bool,
    /// How long a stopping child gets before SIGKILL.
    pub grace: Duration,
}

impl Supervisor {
    /// Forward signals and reap until the main child is gone.
    pub fn wait(&self, signals: &Signals) -> Result<ChildExit> {
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(exit) = self.reap()? {
                return Ok(exit);
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::new(ErrorKind::Os, format!("poll: {e}"))),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    "the command did not exit within the {} grace period; sending SIGKILL",
                    crate::duration::format(self.grace)
                );
                let _ = kill(self.child, Signal::SIGKILL);
                deadline = None;
            }
            while let Some(d) = signals.next()? {
                if d.signal == Signal::SIGCHLD {
                    continue; // reaped at the top of the loop
                }
                if should_forward(d.signal, d.sender, d.from_kernel, self.child) {
                    tracing::debug!("forwarding {} to pid {}", d.signal.as_str(), self.child);
                    let _ = kill(self.child, d.signal);
                }
                if STOP_SIGNALS.contains(&d.signal)
                    && d.sender != self.child.as_raw()
                    && deadline.is_none()
                {
                    deadline = Some(Instant::now() + self.grace);
                }
            }
        }
    }

    /// Collect exited children without blocking; the main child's status
    /// when it is among them.
    fn reap(&self) -> Result<Option<ChildExit>> {
        let target = if self.reap_all {
            None
        } else {
            Some(self.child)
        };
        let mut main = None;
        loop {
            let status = match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(main),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::new(ErrorKind::Os, format!("waitpid: {e}"))),
                Ok(status) => status,
            };
            match status {
                WaitStatus::Exited(pid, code) if pid == self.child => {
                    main = Some(ChildExit::Exited(code))
                }
                WaitStatus::Signaled(pid, sig, _) if pid == self.child => {
                    main = Some(ChildExit::Signaled(sig as i32))
                }
                other => tracing::debug!("reaped {:?}", other.pid()),
            }
        }
    }
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
    fn forwarding_rules() {
        let child = Pid::from_raw(4242);
        assert!(should_forward(Signal::SIGTERM, 1, false, child));
        assert!(should_forward(Signal::SIGUSR1, 0, false, child));
        assert!(
            !should_forward(Signal::SIGINT, 0, true, child),
            "terminal Ctrl-C reached the child already"
        );
        assert!(
            !should_forward(Signal::SIGTERM, 4242, false, child),
            "no echo to the sender"
        );
        assert!(!should_forward(Signal::SIGCHLD, 1, false, child));
    }
}
