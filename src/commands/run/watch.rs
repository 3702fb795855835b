//! `--watch DURATION`: like `doppler run --watch`, a thread of its own
//! polls every source at that interval and, when a value changed, reloads
//! through the same path as the reload signal and `keywarden reload`: the
//! socket serves the new value, the relay masks it, `--on-rotate` applies.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use crate::supervise::Watch;

use super::rotation::Sources;
use super::services::{Masked, Reloader, Service};
use crate::secret::SecretBytes;

/// The polling thread, as a service of `run`: started with the child,
/// stopped at teardown.
pub(super) struct SourceWatch {
    every: Duration,
    sources: Arc<Sources>,
    reload: Reloader,
    /// Dropped to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SourceWatch {
    /// A watch polling every `every`, reloading with `reload`.
    pub fn new(every: Duration, sources: Arc<Sources>, reload: Reloader) -> SourceWatch {
        SourceWatch {
            every,
            sources,
            reload,
            stop: None,
            thread: None,
        }
    }

    fn spawn(&mut self) {
        let (tx, rx) = mpsc::channel::<()>();
        let (every, sources, reload) = (self.every, self.sources.clone(), self.reload.clone());
        let spawned = std::thread::Builder::new()
            .name("keywarden-watch".into())
            .spawn(move || poll_loop(every, &sources, &reload, &rx));
        match spawned {
            Ok(t) => {
                self.stop = Some(tx);
                self.thread = Some(t);
            }
            Err(e) => tracing::error!("--watch: cannot start the polling thread: {e}"),
        }
    }
}

/// Poll until `stop` is dropped.
fn poll_loop(every: Duration, sources: &Sources, reload: &Reloader, stop: &mpsc::Receiver<()>) {
    let mut last_error: Option<String> = None;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        match sources.changed() {
            Ok(ids) if ids.is_empty() => last_error = None,
            Ok(ids) => {
                last_error = None;
                tracing::info!("--watch: {} changed; reloading", ids.join(", "));
                if let Err(e) = reload() {
                    tracing::error!("reload failed: {e}");
                }
            }
            // A source that fails now and then (a file being rewritten)
            // is reported once, not at every poll.
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!("--watch: {text}; the current values stay");
                    last_error = Some(text);
                }
            }
        }
    }
}

impl Service for SourceWatch {
    fn child_env(&mut self) -> Vec<(String, SecretBytes, Masked)> {
        Vec::new()
    }

    fn started(&mut self, first: bool) {
        if first {
            self.spawn();
        }
    }

    fn watch(&mut self) -> &mut dyn Watch {
        self
    }

    fn stop(mut self: Box<Self>) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Nothing for the supervisor to poll: the thread works on its own.
impl Watch for SourceWatch {
    fn fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        Vec::new()
    }

    fn ready(&mut self, _: &[nix::poll::PollFlags]) {}
}
