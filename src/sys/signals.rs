//! Signal plumbing in the style of tini: every signal keywarden cares about
//! is blocked in the main thread before any other thread exists (threads
//! inherit the mask) and read synchronously from a `signalfd`. No
//! asynchronous handlers run, so nothing races with the reaper.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::{Error, ErrorKind, Result};

/// The signals forwarded to the child, each exactly once per delivery.
pub const FORWARDED_SIGNALS: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// The forwarded signals that also mean "stop": they start the grace timer.
pub const STOP_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
];

/// One signal as read from the signalfd.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// The signal number.
    pub signal: Signal,
    /// The sender's pid (0 for the kernel).
    pub sender: i32,
    /// True when the kernel generated it (e.g. a terminal's Ctrl-C or
    /// window change), which also reaches the terminal's foreground group.
    pub from_kernel: bool,
}

/// The blocked signal set and the signalfd that reads it.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Read one pending signal, if any (the fd is non-blocking).
    pub fn next(&self) -> Result<Option<Delivery>> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    return Ok(Some(Delivery {
                        signal,
                        sender: info.ssi_pid as i32,
                        from_kernel: info.ssi_code == libc::SI_KERNEL,
                    }));
                }
                Ok(None) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Os,
                        format!("cannot read signals: {e}"),
                    ))
                }
            }
        }
    }
}

struct Raw(RawFd);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Signals {
    /// Wait (in a tokio runtime with I/O enabled) until one of `wanted`
    /// arrives; other signals read meanwhile are dropped.
    pub async fn wait_for(&self, wanted: &[Signal]) -> Result<Signal> {
        let os =
            |e: std::io::Error| Error::new(ErrorKind::Os, format!("cannot watch signals: {e}"));
        // SAFETY: the signalfd is owned by `self`, which is borrowed for the
        // whole life of this AsyncFd (dropped when this function returns), so
        // the descriptor is neither closed nor reused while registered.
        let fd =
            unsafe { AsyncFd::register_with_interest(Raw(self.as_raw_fd()), Interest::READABLE) }
                .map_err(|e| os(e.into()))?;
        loop {
            let mut guard = fd.readable().await.map_err(os)?;
            while let Some(d) = self.next()? {
                if wanted.contains(&d.signal) {
                    return Ok(d.signal);
                }
            }
            guard.clear_ready();
        }
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }
}

/// Block the forwarded signals, SIGCHLD and `extra` (the reload signal) in
/// the calling thread and open a signalfd for them. Call before any other
/// thread starts.
pub fn block_signals(extra: Option<Signal>) -> Result<Signals> {
    let mut set = SigSet::empty();
    for s in FORWARDED_SIGNALS {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    if let Some(s) = extra {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Error::new(ErrorKind::Os, format!("cannot block signals: {e}")))?;
    let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::new(ErrorKind::Os, format!("cannot open a signalfd: {e}")))?;
    Ok(Signals { fd })
}

/// The conventional name of a signal, e.g. `SIGTERM`.
pub fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}
