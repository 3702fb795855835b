//! Providers turn a [`SecretRef`] into [`SecretBytes`].
//!
//! Each scheme has one provider behind the [`Provider`] trait; a
//! [`Resolver`] holds them, resolves many refs concurrently with a
//! per-provider timeout, and reports each outcome. Errors name the ref and
//! the reason, never a value. `kv://` goes through a [`KvBackend`], which is
//! absent until one is configured: the ref then fails closed.

mod awssm;
mod dotenv;
mod env;
mod exec;
mod file;
mod files;
mod https;
mod kv;
mod op;
mod pass;
mod tool;
mod vault;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{Scheme, SecretBytes, SecretRef};
use crate::error::{Error, ErrorKind};

pub use awssm::{AwsSmOptions, AwsSmProvider};
pub use dotenv::{dotenv_entries, parse_dotenv};
pub use kv::KvBackend;
pub use op::OpProvider;
pub use pass::PassProvider;
pub use vault::{
    start_renewer, Lease, LeaseBook, TokenLife, TokenSource, VaultOptions, VaultProvider,
    VaultSession,
};

/// The largest value a source may hold: a file, a `.env` file, a
/// credential, a provider program's output or a server's answer. A larger
/// one is bad input (65) and is read no further (`file:///dev/zero`).
pub const MAX_SOURCE: usize = 1 << 20;

/// The variable that bounds how many provider programs run at once.
pub const JOBS_VAR: &str = "KEYWARDEN_PROVIDER_JOBS";

/// Provider programs running at once, in the whole process: a run's first
/// resolution, the socket's re-resolutions and reloads share the bound.
static PROGRAM_SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();

/// The default bound: twice the CPUs.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Whether the provider for `scheme` starts a program.
fn starts_a_program(scheme: Scheme) -> bool {
    matches!(scheme, Scheme::Exec | Scheme::Pass | Scheme::Op)
}

/// The future a provider returns.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SecretBytes, ResolveError>> + Send + 'a>>;

/// A provider for one scheme.
pub trait Provider: Send + Sync {
    /// Fetch the value `req` points at.
    fn resolve<'a>(&'a self, req: &'a Request, ctx: &'a Context) -> ResolveFuture<'a>;
}

/// One ref to resolve, with what names it in messages.
#[derive(Debug, Clone)]
pub struct Request {
    /// The registry id, or the variable name for a ref found in the env.
    pub label: String,
    /// The ref.
    pub reference: SecretRef,
    /// Where relative paths are taken from.
    pub base_dir: Arc<Path>,
}

/// What providers may read of the world: keywarden's environment as it was
/// at start-up, and the part of it that the programs they start get.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// keywarden's own environment.
    pub env: HashMap<OsString, OsString>,
    /// The environment of provider programs (`exec://`, `pass`, `op`):
    /// `env` minus always-denied variables, `env://` sources and
    /// `KEYWARDEN_*` (see [`crate::envfilter::provider_env`]).
    pub tool_env: Vec<(OsString, OsString)>,
}

impl Context {
    /// The context for keywarden's environment `env`, whose variables
    /// `env_sources` are read through `env://` refs.
    pub fn new(env: HashMap<OsString, OsString>, env_sources: &[String]) -> Self {
        let pairs: Vec<(OsString, OsString)> =
            env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let tool_env = crate::envfilter::provider_env(&pairs, env_sources);
        Context { env, tool_env }
    }

    /// A variable of keywarden's environment.
    pub fn var(&self, name: &str) -> Option<&OsString> {
        self.env.get(std::ffi::OsStr::new(name))
    }
}

/// Why a ref could not be resolved. The reason never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    /// The exit-code class.
    pub kind: ErrorKind,
    /// What went wrong.
    pub reason: String,
}

impl ResolveError {
    /// The provider (or the thing behind it) could not deliver: exit 69.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        ResolveError {
            kind: ErrorKind::Unavailable,
            reason: reason.into(),
        }
    }

    /// The ref is malformed for its provider: exit 78.
    pub fn config(reason: impl Into<String>) -> Self {
        ResolveError {
            kind: ErrorKind::Config,
            reason: reason.into(),
        }
    }

    /// `what` holds more than [`MAX_SOURCE`] bytes: exit 65.
    pub fn too_large(what: &str) -> Self {
        ResolveError {
            kind: ErrorKind::Data,
            reason: format!(
                "{what} is larger than {} MiB: read no further",
                MAX_SOURCE >> 20
            ),
        }
    }

    /// From an I/O error while reading `what`.
    pub fn io(what: &str, e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            return ResolveError::too_large(what);
        }
        let kind = crate::error::io_kind(e);
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => format!("{what}: no such file"),
            std::io::ErrorKind::PermissionDenied => format!("{what}: permission denied"),
            _ => format!("{what}: {e}"),
        };
        ResolveError { kind, reason }
    }

    /// The error for `req`, naming its label and ref.
    pub fn for_request(&self, req: &Request) -> Error {
        Error::new(
            self.kind,
            format!(
                "cannot resolve {} ({}): {}",
                req.label, req.reference, self.reason
            ),
        )
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The result of resolving one request.
#[derive(Debug)]
pub struct Outcome {
    /// What was asked.
    pub request: Request,
    /// The value, or why not.
    pub result: Result<SecretBytes, ResolveError>,
    /// How long the provider took.
    pub elapsed: Duration,
    /// The lease the server gave the value (`vault://`), when it has one:
    /// a cached value must not outlive it.
    pub lease: Option<Duration>,
    /// When the source was last changed, where the read learnt it for free
    /// (a `file://` file's mtime, from the `fstat` that sized the read).
    pub modified: Option<std::time::SystemTime>,
}

/// The providers and how long each may take.
pub struct Resolver {
    providers: HashMap<Scheme, Box<dyn Provider>>,
    context: Context,
    timeout: Duration,
    jobs: usize,
    /// `file://` is the built-in provider: its refs are read in one batch
    /// (see `files`).
    batch_files: bool,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut schemes: Vec<_> = self.providers.keys().map(|s| s.as_str()).collect();
        schemes.sort_unstable();
        f.debug_struct("Resolver")
            .field("schemes", &schemes)
            .field("timeout", &self.timeout)
            .field("jobs", &self.jobs)
            .field("batch_files", &self.batch_files)
            .finish()
    }
}

impl Resolver {
    /// The built-in providers; `kv` is the KV backend, or why there is none.
    pub fn new(
        context: Context,
        timeout: Duration,
        kv: Result<Arc<dyn KvBackend>, String>,
    ) -> Self {
        let mut providers: HashMap<Scheme, Box<dyn Provider>> = HashMap::new();
        providers.insert(Scheme::Env, Box::new(env::EnvProvider));
        providers.insert(Scheme::File, Box::new(file::FileProvider));
        providers.insert(Scheme::Cred, Box::new(file::CredProvider));
        providers.insert(Scheme::Dotenv, Box::new(dotenv::DotenvProvider));
        providers.insert(Scheme::Exec, Box::new(exec::ExecProvider));
        providers.insert(Scheme::Kv, Box::new(kv::KvProvider::new(kv)));
        providers.insert(Scheme::Pass, Box::new(PassProvider));
        providers.insert(Scheme::Op, Box::new(OpProvider));
        providers.insert(Scheme::AwsSm, Box::new(AwsSmProvider::new()));
        providers.insert(
            Scheme::Vault,
            Box::new(VaultProvider::new(VaultOptions::from_env(&context))),
        );
        Resolver {
            providers,
            context,
            timeout,
            jobs: default_jobs(),
            batch_files: true,
        }
    }

    /// Run at most `jobs` provider programs at once. The bound is
    /// process-wide: the first resolver given one (or, failing that, the
    /// first to start a program) fixes it.
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        PROGRAM_SLOTS.get_or_init(|| tokio::sync::Semaphore::new(self.jobs));
        self
    }

    /// Replace the Vault provider with one using `options`; the lease book
    /// it fills as refs resolve.
    pub fn with_vault(self, options: VaultOptions) -> (Self, LeaseBook) {
        let vault = VaultProvider::new(options);
        let leases = vault.leases();
        (self.with_provider(Scheme::Vault, Box::new(vault)), leases)
    }

    /// Use `session` for `vault://` refs (the default options): a run shares
    /// one token, its renewals and the leases between resolutions.
    pub fn with_vault_session(self, session: Arc<VaultSession>) -> Self {
        self.with_provider(
            Scheme::Vault,
            Box::new(VaultProvider::with_session(
                VaultOptions::default(),
                session,
            )),
        )
    }

    /// Add or replace the provider for `scheme`.
    pub fn with_provider(mut self, scheme: Scheme, provider: Box<dyn Provider>) -> Self {
        if scheme == Scheme::File {
            self.batch_files = false;
        }
        self.providers.insert(scheme, provider);
        self
    }

    /// Resolve one request, bounded by the timeout. A provider that starts
    /// a program first waits for one of the process-wide slots; its
    /// timeout runs from then, not from when it was queued.
    pub async fn resolve(&self, req: &Request) -> Result<SecretBytes, ResolveError> {
        let scheme = req.reference.scheme();
        let Some(provider) = self.providers.get(&scheme) else {
            return Err(ResolveError::unavailable(format!(
                "no provider for '{scheme}://' in this build"
            )));
        };
        let _slot = if starts_a_program(scheme) {
            let slots = PROGRAM_SLOTS.get_or_init(|| tokio::sync::Semaphore::new(self.jobs));
            // The semaphore is never closed.
            slots.acquire().await.ok()
        } else {
            None
        };
        match tokio::time::timeout(self.timeout, provider.resolve(req, &self.context)).await {
            Ok(r) => r,
            Err(_) => Err(ResolveError::unavailable(format!(
                "timed out after {}",
                crate::duration::format(self.timeout)
            ))),
        }
    }

    /// Resolve every request concurrently; outcomes come back in order.
    /// `file://` refs are read as one batch, with the same timeout each
    /// (see `files`).
    pub async fn resolve_all(&self, requests: Vec<Request>) -> Vec<Outcome> {
        let batched = |r: &Request| self.batch_files && r.reference.scheme() == Scheme::File;
        let (files, others): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .enumerate()
            .partition(|(_, r)| batched(r));
        let paths = files
            .iter()
            .map(|(_, r)| files::join(&r.base_dir, r.reference.path()))
            .collect();
        let others = others.into_iter().map(|(i, request)| async move {
            let started = Instant::now();
            let result = self.resolve(&request).await;
            let outcome = Outcome {
                request,
                result,
                elapsed: started.elapsed(),
                lease: None,
                modified: None,
            };
            (i, outcome)
        });
        let (read, others) = tokio::join!(
            files::read_all(paths, self.timeout),
            join_all(others.collect())
        );
        let mut outcomes: Vec<Option<Outcome>> = Vec::new();
        outcomes.resize_with(read.len() + others.len(), || None);
        for ((i, request), (result, elapsed)) in files.into_iter().zip(read) {
            let (result, modified) = match result {
                Ok((value, modified)) => (Ok(value), modified),
                Err(e) => (Err(e), None),
            };
            outcomes[i] = Some(Outcome {
                request,
                result,
                elapsed,
                lease: None,
                modified,
            });
        }
        for (i, outcome) in others {
            outcomes[i] = Some(outcome);
        }
        outcomes.into_iter().flatten().collect()
    }
}

/// Poll every future concurrently on the current task; results in order.
/// Each future has its own waker, which queues its index: a wake-up polls
/// only the futures that asked for it, so n futures cost O(n) polls, where
/// polling every pending future on each wake-up cost O(n²) with thousands of
/// refs. Unconstrained by tokio's co-operative budget: once a task has
/// polled 128 join handles, every further one answers "not yet" and wakes
/// itself, which made each wake-up poll every pending future again.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    tokio::task::unconstrained(join_woken(futures)).await
}

/// [`join_all`] under tokio's co-operative budget.
async fn join_woken<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let n = futures.len();
    let mut slots: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let ready = Arc::new(ReadyQueue {
        queue: std::sync::Mutex::new((0..n).collect()),
        parent: std::sync::Mutex::new(None),
    });
    let wakers: Vec<std::task::Waker> = (0..n)
        .map(|index| {
            std::task::Waker::from(Arc::new(FutureWaker {
                index,
                ready: Arc::clone(&ready),
            }))
        })
        .collect();
    let mut left = n;
    std::future::poll_fn(|cx| {
        // Registered before the queue is taken: a wake-up from here on
        // polls this task again.
        *lock(&ready.parent) = Some(cx.waker().clone());
        let batch = std::mem::take(&mut *lock(&ready.queue));
        for i in batch {
            let Some(future) = pending[i].as_mut() else {
                continue;
            };
            let mut own = std::task::Context::from_waker(&wakers[i]);
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut own) {
                slots[i] = Some(out);
                pending[i] = None;
                left -= 1;
            }
        }
        if left == 0 {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    slots.into_iter().flatten().collect()
}

/// Indices of the futures of a [`join_all`] that were woken, and the waker
/// of the task polling them.
struct ReadyQueue {
    queue: std::sync::Mutex<Vec<usize>>,
    parent: std::sync::Mutex<Option<std::task::Waker>>,
}

/// The waker of one future of a [`join_all`].
struct FutureWaker {
    index: usize,
    ready: Arc<ReadyQueue>,
}

impl std::task::Wake for FutureWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.ready.queue).push(self.index);
        if let Some(parent) = lock(&self.ready.parent).as_ref() {
            parent.wake_by_ref();
        }
    }
}

/// A mutex's guard; a panic elsewhere leaves plain data that is still valid.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Replace every occurrence of each value in `text` with `[REDACTED]`, for
/// messages that quote what a provider printed (its stderr).
pub fn scrub(text: &str, values: &[&[u8]]) -> String {
    let mut out = text.as_bytes().to_vec();
    for v in values.iter().filter(|v| v.len() >= 4) {
        let mut i = 0;
        let mut next = Vec::with_capacity(out.len());
        while i < out.len() {
            if out[i..].starts_with(v) {
                next.extend_from_slice(b"[REDACTED]");
                i += v.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Trim one trailing newline (`\n` or `\r\n`) in place.
pub(crate) fn trim_newline(bytes: &mut Vec<u8>) {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
}

/// Wrap `bytes` as a secret, refusing an empty value.
pub(crate) fn non_empty(bytes: Vec<u8>, what: &str) -> Result<SecretBytes, ResolveError> {
    let secret = SecretBytes::from_vec(bytes);
    if secret.is_empty() {
        return Err(empty(what));
    }
    Ok(secret)
}

/// `what` held nothing (after its trailing newline).
pub(crate) fn empty(what: &str) -> ResolveError {
    ResolveError {
        kind: ErrorKind::Data,
        reason: format!("{what} is empty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Futures that finish one at a time, each woken by the one before it
    /// (as refs resolved by a bounded pool are): every wake-up must poll
    /// only the future it names. Polling all pending futures on each wake
    /// made this 20,100 polls for 200 futures.
    #[test]
    fn review_perf_join_all_polls_only_woken_futures() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        use std::task::{Poll, Waker};
        const N: usize = 200;
        let polls = AtomicUsize::new(0);
        // Future i finishes at turn N - 1 - i, then wakes future i - 1.
        let turn = AtomicUsize::new(0);
        let wakers: Mutex<Vec<Option<Waker>>> = Mutex::new(vec![None; N]);
        let futures: Vec<_> = (0..N)
            .map(|i| {
                let (polls, turn, wakers) = (&polls, &turn, &wakers);
                std::future::poll_fn(move |cx| {
                    polls.fetch_add(1, Ordering::Relaxed);
                    if turn.load(Ordering::Relaxed) != N - 1 - i {
                        lock(wakers)[i] = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    turn.fetch_add(1, Ordering::Relaxed);
                    if let Some(w) = i.checked_sub(1).and_then(|k| lock(wakers)[k].take()) {
                        w.wake();
                    }
                    Poll::Ready(i)
                })
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let out = runtime.block_on(join_all(futures));
        assert_eq!(out, (0..N).collect::<Vec<_>>(), "results in order");
        let polls = polls.load(Ordering::Relaxed);
        assert!(polls < 3 * N, "{polls} polls for {N} futures");
    }

    /// Thousands of reads on the blocking pool in one task (file:// refs):
    /// tokio's co-operative budget must not make each wake-up poll every
    /// pending read again (about 15,000 polls for 2,000 reads under it).
    #[test]
    fn review_perf_join_all_of_blocking_reads_is_linear() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const N: usize = 2000;
        let polls = AtomicUsize::new(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(2)
            .build()
            .expect("a runtime");
        let out = runtime.block_on(async {
            let futures: Vec<_> = (0..N)
                .map(|i| {
                    let polls = &polls;
                    let mut read = Box::pin(tokio::task::spawn_blocking(move || i));
                    std::future::poll_fn(move |cx| {
                        polls.fetch_add(1, Ordering::Relaxed);
                        read.as_mut().poll(cx).map(|r| r.expect("the read runs"))
                    })
                })
                .collect();
            join_all(futures).await
        });
        assert_eq!(out, (0..N).collect::<Vec<_>>());
        let polls = polls.load(Ordering::Relaxed);
        assert!(polls < 3 * N, "{polls} polls for {N} futures");
    }

    #[test]
    fn scrub_replaces_every_value() {
        let a = format!("v{}aaaa", std::process::id());
        let text = format!("error: {a} and again {a}!");
        let out = scrub(&text, &[a.as_bytes()]);
        assert_eq!(out, "error: [REDACTED] and again [REDACTED]!");
    }

    #[test]
    fn trims_exactly_one_newline() {
        for (input, want) in [
            (&b"v\n"[..], &b"v"[..]),
            (b"v\r\n", b"v"),
            (b"v\n\n", b"v\n"),
            (b"v", b"v"),
        ] {
            let mut v = input.to_vec();
            trim_newline(&mut v);
            assert_eq!(v, want);
        }
    }

    #[tokio::test]
    async fn join_all_keeps_order() {
        let futs: Vec<_> = (0..5u64)
            .map(|i| async move {
                tokio::time::sleep(Duration::from_millis(10 * (5 - i))).await;
                i
            })
            .collect();
        assert_eq!(join_all(futs).await, vec![0, 1, 2, 3, 4]);
    }
}
