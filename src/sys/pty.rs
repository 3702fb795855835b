//! Pseudo-terminals for `--pty`: opening one, window sizes, and putting the
//! user's terminal into raw mode with a guard that restores it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{
    cfmakeraw, tcgetattr, tcsetattr, LocalFlags, SetArg, SpecialCharacterIndices, Termios,
};

use crate::error::{Error, ErrorKind, Result};

/// Both ends of a new pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// keywarden's end.
    pub master: OwnedFd,
    /// The child's terminal.
    pub slave: OwnedFd,
}

/// Whether keywarden has a controlling terminal (`/dev/tty` opens).
pub fn has_controlling_tty() -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty")
        .is_ok()
}

/// Open a pseudo-terminal with the given window size.
pub fn open_pty(size: Option<Winsize>) -> Result<Pty> {
    let pty = openpty(size.as_ref(), None)
        .map_err(|e| Error::new(ErrorKind::Os, format!("cannot open a pseudo-terminal: {e}")))?;
    for fd in [&pty.master, &pty.slave] {
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
    })
}

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer,
    // which points at a live, properly aligned Winsize.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut Winsize) };
    (rc == 0).then_some(ws)
}

/// Set the window size of the terminal on `fd` (the kernel then sends
/// SIGWINCH to its foreground process group).
pub fn set_window_size(fd: BorrowedFd<'_>, ws: &Winsize) {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer,
    // which points at a live Winsize.
    let _ = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws as *const Winsize) };
}

/// The user's terminal in raw mode; the saved mode is restored on drop (and
/// around a suspension with [`RawMode::restore`] / [`RawMode::enter`]).
#[derive(Debug)]
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
    active: bool,
    /// Input completed in the saved (line) mode before the switch: see
    /// [`RawMode::take_pending`].
    pending: Vec<u8>,
}

/// At most this many reads of input completed before the switch to raw
/// mode (a hung-up terminal reads as end-of-file forever).
const MAX_PENDING_READS: usize = 64;

impl RawMode {
    /// Save the mode of the terminal on `fd` and switch it to raw.
    pub fn new(fd: BorrowedFd<'_>) -> Result<RawMode> {
        let fd = fd.try_clone_to_owned().map_err(|e| {
            Error::new(ErrorKind::Os, format!("cannot duplicate the terminal: {e}"))
        })?;
        let saved = tcgetattr(&fd).map_err(|e| {
            Error::new(ErrorKind::Os, format!("cannot read the terminal mode: {e}"))
        })?;
        let mut raw = RawMode {
            fd,
            saved,
            active: false,
            pending: Vec::new(),
        };
        raw.enter();
        Ok(raw)
    }

    /// Switch to raw mode (again).
    ///
    /// In line mode the terminal keeps an end-of-file (the EOF character,
    /// as `script` sends when its own input ends) as a NUL byte that ends a
    /// line; a switch to raw mode would hand that NUL over as input. So the
    /// EOF character is first turned off, which leaves any later one as a
    /// plain byte, and the lines and end-of-files already complete are read
    /// in line mode: see [`RawMode::take_pending`].
    pub fn enter(&mut self) {
        let eof = self.saved.control_chars[SpecialCharacterIndices::VEOF as usize];
        if self.saved.local_flags.contains(LocalFlags::ICANON) && eof != 0 {
            let mut no_eof = self.saved.clone();
            no_eof.control_chars[SpecialCharacterIndices::VEOF as usize] = 0;
            // Raw mode will not echo either: an EOF character arriving in
            // this window must reach the child, not be echoed as `^D`.
            no_eof.local_flags.remove(
                LocalFlags::ECHO
                    | LocalFlags::ECHOE
                    | LocalFlags::ECHOK
                    | LocalFlags::ECHONL
                    | LocalFlags::ECHOCTL,
            );
            if tcsetattr(&self.fd, SetArg::TCSANOW, &no_eof).is_ok() {
                self.read_complete_lines(eof);
            }
        }
        let mut t = self.saved.clone();
        cfmakeraw(&mut t);
        self.active = tcsetattr(&self.fd, SetArg::TCSADRAIN, &t).is_ok();
    }

    /// Read what line mode has completed (lines, and end-of-files, kept as
    /// the EOF character `eof`, as raw mode would have passed it on),
    /// without waiting for more.
    fn read_complete_lines(&mut self, eof: u8) {
        let mut buf = [0u8; 4096];
        for _ in 0..MAX_PENDING_READS {
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let ready = poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
                && fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLIN));
            if !ready {
                return;
            }
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) => self.pending.push(eof),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(_) => return,
            }
        }
    }

    /// The input read while switching to raw mode, for the child, in order
    /// before anything read later.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Put the saved mode back.
    pub fn restore(&mut self) {
        if self.active {
            let _ = tcsetattr(&self.fd, SetArg::TCSADRAIN, &self.saved);
            self.active = false;
        }
    }
}

impl AsFd for RawMode {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}
