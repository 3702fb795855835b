//! What runs in the child between `fork` and `exec`: drop privileges, arm
//! the parent-death signal, and make sure no descriptor of keywarden's but
//! stdin, stdout and stderr survives into the command.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{Gid, Pid, Uid};

/// The identity the child switches to (separate-uid mode).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user id.
    pub uid: Uid,
    /// The primary group id.
    pub gid: Gid,
    /// Supplementary groups (computed before fork: lookups allocate).
    pub groups: Vec<Gid>,
}

/// Everything the pre-exec hook needs, computed before `fork`.
#[derive(Debug, Clone)]
pub struct ChildSetup {
    /// Switch to these credentials, when set.
    pub credentials: Option<Credentials>,
    /// keywarden's pid: if the child's parent is no longer this by the time
    /// the death signal is armed, keywarden already died and the child quits.
    pub parent: Pid,
    /// Start a new session with stdin (a pty slave) as controlling terminal.
    pub controlling_tty: bool,
}

/// Register the pre-exec hook on `cmd`.
pub fn install_child_setup(cmd: &mut Command, setup: ChildSetup) {
    let hook = move || -> std::io::Result<()> {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        if let Some(c) = &setup.credentials {
            nix::unistd::setgroups(&c.groups)?;
            nix::unistd::setgid(c.gid)?;
            nix::unistd::setuid(c.uid)?;
        }
        if setup.controlling_tty {
            nix::unistd::setsid()?;
            set_controlling_tty()?;
        }
        // After the uid change: changing credentials clears the setting.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        if nix::unistd::getppid() != setup.parent {
            return Err(std::io::Error::other(
                "keywarden exited before the command started",
            ));
        }
        mark_fds_cloexec();
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec. It only calls
    // async-signal-safe functions (sigprocmask, setgroups, setgid, setuid,
    // prctl, getppid, close_range/fcntl) and allocates nothing: the group
    // list was built before fork and is only read.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Make stdin (a pty slave) the controlling terminal of the new session.
fn set_controlling_tty() -> std::io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument and only changes the
    // session's controlling terminal; fd 0 is the slave set up by std.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Mark every descriptor from 3 up close-on-exec.
fn mark_fds_cloexec() {
    // SAFETY: close_range and fcntl(F_SETFD) take plain integers and only
    // change descriptor flags in this (child) process; no memory is touched.
    unsafe {
        let rc = libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if rc != 0 {
            for fd in 3..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}
