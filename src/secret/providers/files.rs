//! The `file://` refs of one resolution, read as one batch: up to
//! [`MAX_READERS`] blocking threads take the paths in order from a shared
//! counter, and one timer bounds them all.
//!
//! The same as a blocking task and a timeout per ref (what each ref cost
//! before: a task, a timer entry, a future and its waker, ~8 k
//! instructions), for what a ref sees: every ref starts when the
//! resolution does, so all share one deadline; at most [`MAX_READERS`]
//! reads run at once, the next path going to the first free thread (as
//! a blocking pool of that size gave them out); a read that
//! hangs (a FIFO, a dead network mount) holds its thread and times out
//! alone, while the others read on; a read past the deadline is reported
//! as timed out, and its value, if it comes later, is wiped. The 1 MiB cap
//! is [`read_dated`]'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use zeroize::Zeroize;

use super::file::read_dated;
use super::{empty, lock, trim_newline, ResolveError};
use crate::secret::SecretBytes;

/// Reads at once: half the resolver's blocking pool, so that the refs
/// read in that pool one by one (`cred://`, `dotenv://`) never wait, their
/// own timeouts running, behind a batch of files on a slow mount.
pub(crate) const MAX_READERS: usize = 4;

/// One read's result (the bytes and the file's mtime), and when it ended.
type Read = (
    Result<(Vec<u8>, Option<SystemTime>), std::io::Error>,
    Instant,
);

/// What one path gave: the value and the file's mtime, or why not; and how
/// long it took.
pub(super) type FileOutcome = (
    Result<(SecretBytes, Option<SystemTime>), ResolveError>,
    Duration,
);

/// What the readers share.
struct Batch {
    paths: Vec<PathBuf>,
    /// The next path to read.
    next: AtomicUsize,
    /// Reads not finished yet.
    left: AtomicUsize,
    /// Set at the deadline, or when the resolution is abandoned: take no
    /// further path.
    stop: AtomicBool,
    /// Results by path; taken (emptied) when the batch is collected, so a
    /// read finishing later drops (and wipes) its bytes.
    results: Mutex<Vec<Option<Read>>>,
    done: tokio::sync::Notify,
}

impl Batch {
    /// A reader's loop, on a blocking thread.
    fn read(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = self.paths.get(i) else {
                return;
            };
            let read = read_dated(path).map(|(mut bytes, modified)| {
                trim_newline(&mut bytes);
                (bytes, modified)
            });
            match lock(&self.results).get_mut(i) {
                Some(slot) => *slot = Some((read, Instant::now())),
                // Collected already (the deadline passed): nobody takes
                // the value, wipe it.
                None => {
                    if let Ok((mut bytes, _)) = read {
                        bytes.zeroize();
                    }
                }
            }
            if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.done.notify_one();
            }
        }
    }
}

/// Values read but never collected (the resolution was abandoned, by a
/// stop signal) are wiped with the batch.
impl Drop for Batch {
    fn drop(&mut self) {
        let results = self.results.get_mut().unwrap_or_else(|p| p.into_inner());
        for (read, _) in results.iter_mut().flatten() {
            if let Ok((bytes, _)) = read {
                bytes.zeroize();
            }
        }
    }
}

/// `base.join(path)`, allocated once (`join` grows the buffer it copied
/// `base` into).
pub(super) fn join(base: &Path, path: &str) -> PathBuf {
    let mut joined = PathBuf::with_capacity(base.as_os_str().len() + 1 + path.len());
    joined.push(base);
    joined.push(path);
    joined
}

/// Stops the readers when the batch's future ends or is dropped.
struct StopOnDrop(Arc<Batch>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Read `paths` (contents, one trailing newline trimmed), each within
/// `timeout` from now; results in order, with how long each took. Must run
/// inside a tokio runtime (the readers are its blocking tasks).
pub(super) async fn read_all(paths: Vec<PathBuf>, timeout: Duration) -> Vec<FileOutcome> {
    let started = Instant::now();
    let n = paths.len();
    if n == 0 {
        return Vec::new();
    }
    let batch = Arc::new(Batch {
        paths,
        next: AtomicUsize::new(0),
        left: AtomicUsize::new(n),
        stop: AtomicBool::new(false),
        results: Mutex::new((0..n).map(|_| None).collect()),
        done: tokio::sync::Notify::new(),
    });
    let guard = StopOnDrop(Arc::clone(&batch));
    for _ in 0..n.min(MAX_READERS) {
        let batch = Arc::clone(&batch);
        // A reader that cannot start leaves its paths to the others, or
        // to the deadline.
        drop(tokio::task::spawn_blocking(move || batch.read()));
    }
    // `notify_one` keeps its permit when nobody waits yet.
    let finished = tokio::time::timeout(timeout, batch.done.notified())
        .await
        .is_ok();
    drop(guard);
    let results = std::mem::take(&mut *lock(&batch.results));
    let timed_out = || {
        ResolveError::unavailable(format!(
            "timed out after {}",
            crate::duration::format(timeout)
        ))
    };
    results
        .into_iter()
        .zip(&batch.paths)
        .map(|(slot, path)| match slot {
            Some((read, at)) => {
                let value = read
                    .map_err(|e| ResolveError::io(&path.display().to_string(), &e))
                    .map(|(bytes, modified)| (SecretBytes::from_vec(bytes), modified))
                    .and_then(|(v, modified)| match v.is_empty() {
                        true => Err(empty(&path.display().to_string())),
                        false => Ok((v, modified)),
                    });
                (value, at.saturating_duration_since(started))
            }
            None => {
                debug_assert!(!finished, "a read finished without its result");
                (Err(timed_out()), started.elapsed())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_is_paths_join() {
        for (base, path) in [
            ("/etc/kw", "keys/a"),
            ("/etc/kw/", "keys/a"),
            (".", "a"),
            ("rel", "/abs/a"),
            ("", "a"),
        ] {
            assert_eq!(join(Path::new(base), path), Path::new(base).join(path));
        }
    }

    /// Each path gets its own outcome, in order: a value, its error, or
    /// (a FIFO nobody writes, whose open never returns) the timeout,
    /// while the reads after it go on.
    #[test]
    fn each_read_has_its_outcome_and_a_hung_one_times_out_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let value = format!("v-{}", std::process::id());
        let write = |name: &str, text: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let mut paths = vec![
            write("a", format!("{value}\n").as_bytes()),
            fifo.clone(),
            dir.path().join("missing"),
            write("empty", b"\n"),
            write("big", &vec![b'x'; super::super::MAX_SOURCE + 1]),
        ];
        // More paths than readers, all after the hung one.
        for i in 0..3 * MAX_READERS {
            paths.push(write(&format!("n{i}"), format!("{value}-{i}").as_bytes()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .max_blocking_threads(MAX_READERS)
            .build()
            .expect("runtime");
        // Generous: the other reads must end before it on a loaded machine.
        let timeout = Duration::from_secs(2);
        let started = Instant::now();
        let out = runtime.block_on(read_all(paths.clone(), timeout));
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(out.len(), paths.len());
        let ok = |i: usize| match &out[i].0 {
            Ok((v, modified)) => {
                assert!(modified.is_some());
                v.expose().to_vec()
            }
            Err(e) => panic!("{i}: {e}"),
        };
        let err = |i: usize| out[i].0.as_ref().err().map(|e| (e.kind, e.reason.clone()));
        assert_eq!(ok(0), value.as_bytes());
        let (kind, reason) = err(1).expect("the FIFO");
        assert_eq!(kind, crate::error::ErrorKind::Unavailable);
        assert_eq!(reason, "timed out after 2s");
        assert!(out[1].1 >= timeout, "{:?}", out[1].1);
        let (_, reason) = err(2).expect("missing");
        assert!(reason.ends_with("missing: no such file"), "{reason}");
        let (kind, reason) = err(3).expect("empty");
        assert_eq!(kind, crate::error::ErrorKind::Data);
        assert!(reason.ends_with("empty is empty"), "{reason}");
        let (kind, reason) = err(4).expect("too large");
        assert_eq!(kind, crate::error::ErrorKind::Data);
        assert!(reason.contains("larger than 1 MiB"), "{reason}");
        for i in 0..3 * MAX_READERS {
            assert_eq!(ok(5 + i), format!("{value}-{i}").as_bytes());
        }
        // Let the hung reader go (its late result is dropped), and leave
        // without waiting for it.
        use std::os::unix::fs::OpenOptionsExt;
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo),
        );
        runtime.shutdown_background();
    }
}
