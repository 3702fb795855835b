//! Stage 6 of `run`: supervise the running child — forward signals, reap,
//! poll the services and the relay, stop it for a restart — then record
//! how it ended.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use nix::poll::PollFlags;
use nix::sys::signal::Signal;

use crate::audit::{Auditor, Event, EventKind};
use crate::error::{Error, ErrorKind, Result};
use crate::supervise::{self, ChildExit, Watch};
use crate::sys;

use super::rotation::Sources;
use super::services::Service;
use super::spawn::Started;

/// `--on-rotate restart`: a rotation writes to a pipe; the supervisor,
/// polling its other end, stops the child.
pub(super) struct RestartWatch {
    reader: std::fs::File,
    asked: bool,
    /// keywarden itself is stopping: no restart.
    cancelled: bool,
}

impl RestartWatch {
    /// The watch, with its pipe's write end given to the rotation.
    pub fn new(sources: &Arc<Sources>) -> Result<RestartWatch> {
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::new(ErrorKind::Os, format!("cannot create a pipe: {e}")))?;
        sources.rotation().wake = Some(std::fs::File::from(writer));
        Ok(RestartWatch {
            reader: std::fs::File::from(reader),
            asked: false,
            cancelled: false,
        })
    }

    /// Whether a restart may still happen (keywarden is not stopping).
    pub fn allowed(&self) -> bool {
        !self.cancelled
    }
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

/// Wait for the child to end while polling the services, the relay and
/// the restart pipe; then drain the relay and give the terminal back.
pub(super) fn supervise(
    started: Started,
    signals: &sys::Signals,
    on_reload: Option<(Signal, &dyn Fn(Signal))>,
    services: &mut [Box<dyn Service>],
    restarts: Option<&mut RestartWatch>,
) -> Result<ChildExit> {
    let Started {
        supervisor,
        mut relay,
        mut terminal,
    } = started;
    let exit = {
        let mut watches: Vec<&mut dyn Watch> = services.iter_mut().map(|s| s.watch()).collect();
        watches.push(&mut relay);
        if let Some(w) = restarts {
            watches.push(w);
        }
        supervisor.wait(signals, terminal.as_mut(), on_reload, &mut watches)
    };
    relay.finish();
    drop(terminal); // restores the user's terminal mode
    exit
}

/// Log and audit how the child ended.
pub(super) fn record_exit(audit: &Auditor, pid: nix::unistd::Pid, exit: ChildExit) {
    tracing::info!("{}", supervise::describe(exit));
    let e = Event::new(EventKind::ChildExit).child_pid(pid.as_raw());
    audit.note(match exit {
        ChildExit::Exited(code) => e.status(i64::from(code)),
        ChildExit::Signaled(sig) => e
            .status(i64::from(exit.exit_code()))
            .signal(sys::signal_name(sig)),
    });
}
