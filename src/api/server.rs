//! The server: HTTP/1.1 (hyper) on two unix sockets, on its own thread with
//! a current-thread tokio runtime. The child's socket answers the routes of
//! [`super::routes::handle`] to peers whose uid (`SO_PEERCRED`) is the
//! child's or root's; the admin socket answers
//! [`super::routes::handle_admin`] to keywarden's own uid or root.
//!
//! Why one file of over 900 lines: the lifecycle (bind, serve, shut down)
//! and the request handling share the server's private state (`Shared`,
//! `Peer`, the wiped reply body) and its invariants (who may call what, when
//! values are swept); the pure parts (routes, state, tokens, limits,
//! connection deadlines) already live in files of their own.
//!
//! Around the pure routes this adds what needs the world: peer credentials
//! and executable, rate limiting of failed tokens ([`AuthLimiter`]),
//! resolving expired values again through the `resolve` callback (one
//! resolution per id at a time, on a blocking thread), reloads, writing the
//! revocation list, the audit log, and a sweep that wipes expired values
//! even when nobody asks for them.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::conn::{self, ConnLimits};
use super::json::Body;
use super::limit::{AuthLimiter, Gate};
use super::revocations::RevocationList;
use super::routes::{self, AdminHandled, Auth, Call, Handled, Reply};
use super::socket::{self, SocketGuard};
use super::state::{Now, Settings, State};
use super::tokens::{token_id_of, TOKEN_RANDOM_BYTES};
use super::{ApiOptions, Callbacks, ServedSecret, SOCKET_VAR, TOKEN_VAR};
use crate::audit::{Actor, Auditor, Event, EventKind, Minted, Outcome};
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretBytes;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often expired values are wiped when nobody asks for them.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Child,
    Admin,
}

/// The peer of a connection, as the kernel reported it at accept.
#[derive(Debug)]
struct Peer {
    uid: Option<u32>,
    pid: Option<i32>,
    exe: Option<String>,
    allowed: bool,
}

impl Peer {
    fn of(stream: &UnixStream, allowed_uid: u32, audit: &Auditor) -> Peer {
        let cred = stream.peer_cred().ok();
        let uid = cred.map(|c| c.uid());
        let pid = cred.and_then(|c| c.pid());
        let exe = match pid {
            // Only worth a syscall when someone reads it.
            Some(pid) if audit.is_enabled() => std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            _ => None,
        };
        let allowed = uid.is_some_and(|u| u == allowed_uid || u == 0);
        Peer {
            uid,
            pid,
            exe,
            allowed,
        }
    }

    fn actor(&self, token_id: Option<String>) -> Actor {
        Actor {
            pid: self.pid,
            uid: self.uid,
            exe: self.exe.clone(),
            token_id,
        }
    }
}

/// What every connection shares.
struct Shared {
    state: Mutex<State>,
    limiter: Mutex<AuthLimiter>,
    audit: Auditor,
    callbacks: Callbacks,
    revocation_list: PathBuf,
    refresh_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    child_uid: u32,
    admin_uid: u32,
    limits: ConnLimits,
    /// Bumped whenever a secret may have been revoked (a revoke, a
    /// reload): the credential proxy cuts the streams of a revoked route
    /// at once rather than at the upstream's next chunk.
    revocations: watch::Sender<u64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, AuthLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tell the proxy's streams to look again whether their route is
    /// revoked.
    fn revocations_changed(&self) {
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn refresh_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.refresh_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }
}

/// A response body that wipes itself once hyper is done with it.
#[derive(Debug)]
pub struct OutBody {
    data: Option<Body>,
}

impl OutBody {
    /// A body of `data`.
    pub fn new(data: Body) -> Self {
        OutBody { data: Some(data) }
    }
}

/// The bytes of an [`OutBody`], written straight from this buffer (hyper
/// queues it for `writev` rather than copying it) and wiped on drop.
#[derive(Debug)]
pub struct WipedBuf {
    buf: Body,
    pos: usize,
}

impl Buf for WipedBuf {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn chunk(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn advance(&mut self, cnt: usize) {
        self.pos = (self.pos + cnt).min(self.buf.len());
    }
}

impl http_body::Body for OutBody {
    type Data = WipedBuf;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<WipedBuf>, Infallible>>> {
        let frame = self
            .data
            .take()
            .filter(|d| !d.is_empty())
            .map(|buf| Ok(Frame::data(WipedBuf { buf, pos: 0 })));
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(|d| d.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// The API: both sockets bound and listening, served by a thread of its
/// own once [`RunningApi::serve`] ran. Dropping it shuts it down, like
/// [`RunningApi::shutdown`].
#[derive(Debug)]
pub struct RunningApi {
    /// What the server knows, also read by the credential proxy.
    shared: Arc<Shared>,
    socket: SocketGuard,
    admin: SocketGuard,
    /// A link to an admin socket at a chosen path, where the operator's
    /// commands look for sidecars.
    announced: Option<SocketGuard>,
    child_token: Option<SecretBytes>,
    stop: Option<watch::Sender<bool>>,
    /// Before [`RunningApi::serve`]: the listeners (connections wait in
    /// their backlog) and what the server thread will need.
    idle: Option<Idle>,
    /// Values expire, so the sweep must run: serve at once.
    expiring: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the server thread gets when it starts.
struct Idle {
    child: std::os::unix::net::UnixListener,
    admin: std::os::unix::net::UnixListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("child", &self.child)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl RunningApi {
    /// The child's socket (`KEYWARDEN_SOCKET`).
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// The admin socket (never told to the child).
    pub fn admin_path(&self) -> &Path {
        self.admin.path()
    }

    /// The secrets this API serves, for the credential proxy: it sees the
    /// same values, TTLs, revocations and reloads.
    pub fn keyring(&self) -> Keyring {
        Keyring {
            shared: self.shared.clone(),
        }
    }

    /// The child's token, given out once (only its hash stays here).
    pub fn take_child_token(&mut self) -> Option<SecretBytes> {
        self.child_token.take()
    }

    /// `KEYWARDEN_SOCKET` and `KEYWARDEN_TOKEN` for the child's environment
    /// (takes the token: a second call has only the socket). Both are kept
    /// as secrets (the path only to keep one type: small allocations share
    /// a locked page).
    pub fn child_env(&mut self) -> Vec<(String, SecretBytes)> {
        let mut env = vec![(
            SOCKET_VAR.to_string(),
            SecretBytes::copy_from(self.socket_path().as_os_str().as_bytes()),
        )];
        if let Some(token) = self.take_child_token() {
            env.push((TOKEN_VAR.to_string(), token));
        }
        env
    }

    /// Reload as the admin socket's `POST /v1/admin/reload` does (for
    /// `--reload-signal`): same path, same audit events. Blocks until done;
    /// the API must be serving ([`RunningApi::serve`]).
    pub fn reload(&self) -> Result<()> {
        if self.idle.is_some() {
            return Err(Error::new(
                ErrorKind::Software,
                "reload: the socket API is not serving yet",
            ));
        }
        reload_at(self.admin_path())
    }

    /// Whether the server thread must start right away rather than on the
    /// first connection: held values expire, and the sweep that wipes them
    /// runs on that thread.
    pub fn must_serve_now(&self) -> bool {
        self.expiring && self.idle.is_some()
    }

    /// The listening sockets while nothing serves them: when one of them
    /// becomes readable (a connection waits), call [`RunningApi::serve`].
    /// Empty once serving.
    pub fn idle_listeners(&self) -> Vec<BorrowedFd<'_>> {
        match &self.idle {
            Some(i) => vec![i.child.as_fd(), i.admin.as_fd()],
            None => Vec::new(),
        }
    }

    /// Start the server thread (once; later calls do nothing). Until then
    /// connections wait in the listen backlog. On failure the listeners
    /// are closed, so clients are refused rather than left waiting.
    pub fn serve(&mut self) -> Result<()> {
        let Some(idle) = self.idle.take() else {
            return Ok(());
        };
        let thread = spawn_server(idle)
            .map_err(|e| Error::new(ErrorKind::Os, format!("cannot start the socket API: {e}")))?;
        self.thread = Some(thread);
        Ok(())
    }

    /// Stop serving, wait for the server thread, remove both sockets.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        self.idle = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.socket.remove();
        self.admin.remove();
        if let Some(link) = self.announced.as_mut() {
            link.remove();
        }
    }
}

/// `POST /v1/admin/reload` on the admin socket at `admin`, as
/// [`RunningApi::reload`] does.
pub fn reload_at(admin: &Path) -> Result<()> {
    let answer = crate::client::call(admin, hyper::Method::POST, "/v1/admin/reload", None, None)
        .map_err(|e| Error::new(ErrorKind::Software, format!("reload: {e}")))?;
    match answer.status {
        200 => Ok(()),
        _ => Err(Error::new(
            ErrorKind::Unavailable,
            answer
                .error()
                .unwrap_or_else(|| format!("reload: HTTP {}", answer.status)),
        )),
    }
}

/// The server thread: a current-thread runtime accepting on both sockets,
/// and the sweep.
fn spawn_server(idle: Idle) -> std::io::Result<std::thread::JoinHandle<()>> {
    let Idle {
        child,
        admin,
        shared,
        stop,
    } = idle;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let (child_l, admin_l) = {
        let _in_runtime = runtime.enter();
        (
            tokio::net::UnixListener::from_std(child)?,
            tokio::net::UnixListener::from_std(admin)?,
        )
    };
    std::thread::Builder::new()
        .name("keywarden-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                let sweeper = tokio::spawn(sweep(shared.clone(), stop.clone()));
                tokio::join!(
                    accept_loop(child_l, Kind::Child, shared.clone(), stop.clone()),
                    accept_loop(admin_l, Kind::Admin, shared.clone(), stop.clone()),
                );
                sweeper.abort();
            });
            runtime.shutdown_timeout(Duration::from_millis(200));
        })
}

impl Drop for RunningApi {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn random_token_bytes() -> Option<[u8; TOKEN_RANDOM_BYTES]> {
    let mut b = [0u8; TOKEN_RANDOM_BYTES];
    crate::sys::random::fill(&mut b).ok()?;
    Some(b)
}

/// Bind both sockets, mint the child's token and start serving on a new
/// thread. Both sockets accept connections when this returns.
pub fn start(
    opts: ApiOptions,
    secrets: Vec<ServedSecret>,
    callbacks: Callbacks,
) -> Result<RunningApi> {
    let mut api = bind(opts, secrets, callbacks)?;
    api.serve()?;
    Ok(api)
}

/// Where the child's socket folder goes when the child runs as another
/// user: the runtime folder if that user can pass through it, else the temp
/// folder (the folder made there is still 0700 and the child's). A socket
/// path the user chose must be reachable as it is. Neither: 78, saying why.
fn child_socket_base(
    chosen: Option<&Path>,
    runtime_dir: &Path,
    who: &socket::Owner,
) -> Result<PathBuf> {
    if let Some(path) = chosen {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return match socket::first_closed(parent, who) {
            None => Ok(runtime_dir.to_path_buf()),
            Some(closed) => Err(Error::config(format!(
                "--socket {}: uid {} (the --user child) cannot pass through {}, so it \
                 could not open its socket: choose a folder it can reach",
                path.display(),
                who.uid,
                closed.display()
            ))),
        };
    }
    let Some(closed) = socket::first_closed(runtime_dir, who) else {
        return Ok(runtime_dir.to_path_buf());
    };
    let mut fallbacks = vec![std::env::temp_dir()];
    if fallbacks[0] != Path::new("/tmp") {
        fallbacks.push(PathBuf::from("/tmp"));
    }
    match fallbacks
        .into_iter()
        .find(|d| socket::first_closed(d, who).is_none())
    {
        Some(base) => {
            tracing::info!(
                "uid {} (the --user child) cannot pass through {}: its socket folder goes \
                 under {} instead",
                who.uid,
                closed.display(),
                base.display()
            );
            Ok(base)
        }
        None => Err(Error::config(format!(
            "XDG_RUNTIME_DIR: uid {} (the --user child) cannot pass through {}, nor \
             through the temp folder, so it could not open its socket: set \
             XDG_RUNTIME_DIR to a folder it can reach, or pass --socket PATH",
            who.uid,
            closed.display()
        ))),
    }
}

/// Bind both sockets (listening: a client's `connect` succeeds and waits
/// in the backlog) and mint the child's token, without starting the server
/// thread yet: [`RunningApi::serve`] does, e.g. once the child runs, or on
/// the first connection ([`RunningApi::idle_listeners`]).
pub fn bind(
    opts: ApiOptions,
    secrets: Vec<ServedSecret>,
    callbacks: Callbacks,
) -> Result<RunningApi> {
    let euid = nix::unistd::geteuid().as_raw();
    let owner = (opts.child_uid != euid).then(|| socket::Owner {
        uid: opts.child_uid,
        gid: opts.child_gid,
        groups: opts.child_groups.clone(),
    });
    let child_base = match &owner {
        Some(o) => child_socket_base(opts.socket.as_deref(), &opts.runtime_dir, o)?,
        None => opts.runtime_dir.clone(),
    };
    let (child_listener, socket) = socket::bind(
        opts.socket.as_deref(),
        &child_base,
        "keywarden",
        "api.sock",
        owner.as_ref(),
    )?;
    // A folder of its own, even when the child has keywarden's uid: the
    // child is never told about the admin socket, and a listing of its own
    // socket's folder does not show it either.
    let (admin_listener, admin) = socket::bind(
        opts.admin_socket.as_deref(),
        &opts.runtime_dir,
        "keywarden-admin",
        "admin.sock",
        None,
    )?;
    let mut state = state_of(&opts, secrets)?;
    let expiring = state.holds_expiring_values();
    let bytes = random_token_bytes().ok_or_else(|| {
        Error::new(
            ErrorKind::Os,
            "no randomness available for the child's token",
        )
    })?;
    let root = state.tokens.issue_root(opts.child_scopes.clone(), &bytes);
    opts.audit.note(
        Event::new(EventKind::TokenMint)
            .result(Outcome::Ok)
            .reason("the child's token")
            .minted(Minted {
                token_id: root.grant.id.clone(),
                parent: None,
                scopes: root.grant.scopes.clone(),
                expires_at: None,
            }),
    );
    let shared = shared_of(&opts, state, callbacks);
    for l in [&child_listener, &admin_listener] {
        l.set_nonblocking(true)
            .map_err(|e| Error::new(ErrorKind::Os, format!("cannot set up the socket: {e}")))?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // A chosen admin socket is linked from the runtime folder, so that the
    // operator's commands find it without being told.
    let announced = match opts.admin_socket.as_deref() {
        Some(path) => socket::announce(path, &opts.runtime_dir)
            .map_err(|e| {
                tracing::warn!("{e}; `keywarden revoke` and the others need --admin-socket to find this sidecar")
            })
            .ok(),
        None => None,
    };
    let api = RunningApi {
        shared: shared.clone(),
        socket,
        admin,
        announced,
        child_token: Some(root.text),
        stop: Some(stop_tx),
        idle: Some(Idle {
            child: child_listener,
            admin: admin_listener,
            shared,
            stop: stop_rx,
        }),
        expiring,
        thread: None,
    };
    tracing::info!(
        "socket API on {} (admin: {})",
        api.socket_path().display(),
        api.admin_path().display()
    );
    Ok(api)
}

/// The served state for `secrets`: revocations of the list applied, and
/// challenges set up.
fn state_of(opts: &ApiOptions, secrets: Vec<ServedSecret>) -> Result<State> {
    let revoked = RevocationList::load(&opts.revocation_list)?;
    let now = Now::system();
    let mut state = State::new(
        Settings {
            env: opts.env,
            max_ttl_seconds: opts.max_ttl_seconds,
            slack_secret_id: opts.slack_secret_id.clone(),
        },
        secrets,
        now,
    );
    state.apply_revocations(&revoked);
    // Without HITL_CHALLENGE_HMAC_KEY, a random key is made for the first
    // challenge.
    state.approvals = Some(super::approvals::Approvals::new(
        opts.approval_key.as_ref().map(|k| k.duplicate()),
    ));
    Ok(state)
}

fn shared_of(opts: &ApiOptions, state: State, callbacks: Callbacks) -> Arc<Shared> {
    Arc::new(Shared {
        state: Mutex::new(state),
        limiter: Mutex::new(AuthLimiter::new()),
        audit: opts.audit.clone(),
        callbacks,
        revocation_list: opts.revocation_list.clone(),
        refresh_locks: Mutex::new(HashMap::new()),
        child_uid: opts.child_uid,
        admin_uid: nix::unistd::geteuid().as_raw(),
        limits: opts.limits,
        revocations: watch::channel(0).0,
    })
}

/// The secrets the API serves, seen from the credential proxy: the same
/// cached values, TTLs (an expired value is resolved again, once at a
/// time), revocations and reloads. Cloning shares it.
#[derive(Clone)]
pub struct Keyring {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring")
    }
}

/// What the keyring says about a secret.
#[derive(Debug)]
pub enum KeyAnswer {
    /// Its current value.
    Value(SecretBytes),
    /// Revoked: 410.
    Revoked,
    /// No such secret (any more, after a reload).
    Unknown,
    /// It could not be resolved again (the reason names the ref, never a
    /// value).
    Failed(String),
}

/// A keyring without sockets (`--no-socket`): the proxy alone reads it,
/// and [`Keyring::reload`] carries out reloads.
pub fn keyring(
    opts: &ApiOptions,
    secrets: Vec<ServedSecret>,
    callbacks: Callbacks,
) -> Result<Keyring> {
    let state = state_of(opts, secrets)?;
    Ok(Keyring {
        shared: shared_of(opts, state, callbacks),
    })
}

impl Keyring {
    /// The current value of `id`, resolved again first when its TTL ran out.
    pub async fn current(&self, id: &str) -> KeyAnswer {
        for _ in 0..3 {
            {
                let mut st = self.shared.state();
                let Some(e) = st.secrets.get_mut(id) else {
                    return KeyAnswer::Unknown;
                };
                if e.revoked.is_some() {
                    return KeyAnswer::Revoked;
                }
                if let Some(v) = e.fresh_value(Now::system()) {
                    return KeyAnswer::Value(v.duplicate());
                }
            }
            if let Err(r) = refresh(&self.shared, &[id.to_string()]).await {
                return KeyAnswer::Failed(r.reason.unwrap_or_default());
            }
        }
        KeyAnswer::Failed(format!(
            "the value of '{id}' expired before it could be used"
        ))
    }

    /// Whether `id` is revoked now.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.shared
            .state()
            .secrets
            .get(id)
            .is_some_and(|e| e.revoked.is_some())
    }

    /// Ends once `id` is revoked (at once if it is): a revoke or a reload
    /// wakes it, from whichever thread carries it out.
    pub async fn revoked(&self, id: &str) {
        let mut changes = self.shared.revocations.subscribe();
        loop {
            // Marked seen before the look, so a revocation between the
            // two still wakes the wait below.
            changes.borrow_and_update();
            if self.is_revoked(id) {
                return;
            }
            if changes.changed().await.is_err() {
                // Cannot happen while `self` holds the sender.
                return std::future::pending().await;
            }
        }
    }

    /// Reload as the admin socket does (blocking; for `--no-socket`, where
    /// no admin socket carries it out).
    pub fn reload(&self) -> Result<()> {
        let result = (self.shared.callbacks.reload)();
        let failed = result.as_ref().err().map(|e| e.to_string());
        let list = RevocationList::load(&self.shared.revocation_list);
        let mut st = self.shared.state();
        let reply = routes::reloaded(&mut st, result, Now::system());
        match list {
            Ok(list) => st.apply_revocations(&list),
            Err(e) => tracing::warn!("{e}"),
        }
        drop(st);
        self.shared.revocations_changed();
        for ev in reply.events {
            self.shared.audit.note(ev);
        }
        match failed {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("reload failed: {why}"),
            )),
        }
    }
}

async fn sweep(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Now::system();
        shared.state().sweep(now);
        shared.limiter().sweep(now.mono);
    }
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    kind: Kind,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut by_uid = conn::ByUid::default();
    let limits = shared.limits;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    let allowed = uid.is_some_and(|u| u == allowed_uid(&shared, kind) || u == 0);
                    let cap = if allowed { limits.per_uid } else { conn::STRANGER_CAP };
                    let Some(watch) = by_uid.admit(uid, cap, limits) else {
                        drop(stream); // every connection of this uid is mid-call
                        continue;
                    };
                    conns.spawn(serve(stream, kind, shared.clone(), watch, stop.clone()));
                }
                Err(e) => {
                    tracing::debug!("socket API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        conns.abort_all();
    }
}

fn allowed_uid(shared: &Shared, kind: Kind) -> u32 {
    match kind {
        Kind::Child => shared.child_uid,
        Kind::Admin => shared.admin_uid,
    }
}

async fn serve(
    stream: UnixStream,
    kind: Kind,
    shared: Arc<Shared>,
    watch: Arc<conn::Watch>,
    mut stop: watch::Receiver<bool>,
) {
    let _closed = conn::ClosedOnDrop(watch.clone());
    let peer = Arc::new(Peer::of(&stream, allowed_uid(&shared, kind), &shared.audit));
    let in_service = watch.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let peer = peer.clone();
        let watch = in_service.clone();
        async move {
            let _call = conn::InCall::start(&watch);
            Ok::<_, Infallible>(respond(&shared, &peer, kind, req).await)
        }
    });
    let io = TokioIo::new(conn::Watched::new(stream, watch.clone()));
    // A client may shut its side down once its request is sent (`nc -N`,
    // `socat`): the reply is still written. Idle and head timeouts still
    // close the connection.
    let conn = hyper::server::conn::http1::Builder::new()
        .writev(true)
        .half_close(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // No complete head in time, idle too long, or evicted for a newer
        // connection of the same uid: closed.
        _ = watch.expired() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn response(status: u16, body: Body, retry_after: Option<u64>) -> Response<OutBody> {
    // An error never quotes what the request sent; its text still goes
    // through the records' matcher, as a defence in depth (a reply that
    // deliberately returns a value is left alone).
    let body = match status {
        400.. => match crate::redact::live::scrub_record(&String::from_utf8_lossy(&body)) {
            Some(clean) => Body::new(clean.into_bytes()),
            None => body,
        },
        _ => body,
    };
    let mut r = Response::new(OutBody::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// The token of `Authorization: Bearer <token>`: `None` without the
/// header, empty when it is not a bearer token.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let token = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
        .map(|t| t.trim_ascii())
        .unwrap_or(b"");
    Some(token)
}

async fn respond(
    shared: &Shared,
    peer: &Peer,
    kind: Kind,
    req: Request<Incoming>,
) -> Response<OutBody> {
    let now = Now::system();
    let call_name = || {
        routes::call_label(
            &shared.state(),
            kind == Kind::Admin,
            req.method(),
            req.uri().path(),
        )
    };
    if !peer.allowed {
        let reason = match peer.uid {
            Some(uid) => format!("peer uid {uid} may not use this socket"),
            None => "the peer's credentials are unknown".to_string(),
        };
        shared.audit.note(
            Event::new(EventKind::AuthFailure)
                .call(call_name())
                .actor(peer.actor(None))
                .result(Outcome::Denied)
                .status(403)
                .reason(reason.clone()),
        );
        return response(403, super::json::error(&reason), None);
    }
    let call_name = shared.audit.is_enabled().then(call_name);
    let (parts, body) = req.into_parts();
    let body = if http_body::Body::is_end_stream(&body) {
        Ok(bytes::Bytes::new()) // most calls are GETs without a body
    } else {
        let read = http_body_util::Limited::new(body, MAX_BODY).collect();
        match tokio::time::timeout(shared.limits.head, read).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(_)) => Err((413, format!("request body larger than {MAX_BODY} bytes"))),
            Err(_) => Err((
                408,
                format!(
                    "request body not received within {} s",
                    shared.limits.head.as_secs()
                ),
            )),
        }
    };
    let body = match body {
        Ok(b) => b,
        Err((status, why)) => {
            let reply = finish(
                shared,
                peer,
                None,
                Reply::error(status, why, Auth::Open),
                call_name,
            );
            return response(reply.status, reply.body, None);
        }
    };
    let call = Call {
        method: &parts.method,
        path: parts.uri.path(),
        bearer: bearer(&parts.headers),
        body: &body,
    };
    let (reply, retry_after) = match kind {
        Kind::Child => match child_call(shared, peer, &call, now, call_name.as_deref()).await {
            Ok(reply) => (reply, None),
            // Refused by the rate limiter: audited once per lock already,
            // so a flood of guesses cannot flood the log.
            Err((reply, secs)) => return response(reply.status, reply.body, Some(secs)),
        },
        Kind::Admin => (admin_call(shared, &call, now).await, None),
    };
    let reply = finish(shared, peer, call.bearer, reply, call_name);
    response(reply.status, reply.body, retry_after)
}

/// Show `line` to the operator only: on keywarden's controlling terminal
/// when it has one (not captured by any log; `\r\n` in case a pty child
/// holds it in raw mode), else on keywarden's own stderr — never through
/// the log (its format and destination may be a file or a collector) or
/// the audit log.
fn show_operator(line: &str) {
    use std::io::Write;
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        if tty
            .write_all(line.as_bytes())
            .and_then(|_| tty.write_all(b"\r\n"))
            .is_ok()
        {
            return;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.write_all(b"\n");
}

/// A call on the child's socket. `Err` is a refusal by the rate limiter,
/// with its `Retry-After`.
async fn child_call(
    shared: &Shared,
    peer: &Peer,
    call: &Call<'_>,
    now: Now,
    call_name: Option<&str>,
) -> std::result::Result<Reply, (Reply, u64)> {
    let uid = peer.uid.unwrap_or(u32::MAX);
    // A valid token always passes: the lock answers guesses, and must not
    // shut the child out when another process of its uid sends bad tokens
    // (SPEC: failed auth is rate-limited). The token is checked here only
    // while the peer is locked out; otherwise the route checks it once.
    let locked_out = call.path != "/v1/health"
        && call.bearer.is_some_and(|b| {
            shared.limiter().is_locked(uid, now.mono)
                && shared.state().tokens.authenticate(b, now.mono).is_err()
        });
    if locked_out {
        if let Gate::Locked { retry_after, first } = shared.limiter().gate(uid, now.mono) {
            let secs = retry_after.as_secs_f64().ceil() as u64;
            let why = format!("too many failed attempts; retry in {secs}s");
            if first {
                let mut ev = Event::new(EventKind::AuthFailure)
                    .actor(peer.actor(presented_id(shared, call.bearer)))
                    .result(Outcome::Denied)
                    .status(429)
                    .reason(format!(
                        "{why} (further refusals under this lock are not logged)"
                    ));
                if let Some(c) = call_name {
                    ev = ev.call(c);
                }
                shared.audit.note(ev);
            }
            return Err((Reply::error(429, why, Auth::Open), secs.max(1)));
        }
    }
    let mut random = random_token_bytes;
    let mut rounds = 0;
    let mut reply = loop {
        let handled = routes::handle(&mut shared.state(), call, now, &mut random);
        match handled {
            Handled::Reply(r) => break r,
            Handled::Refresh(ids) if rounds < 2 => {
                rounds += 1;
                if let Err(r) = refresh(shared, &ids).await {
                    break r;
                }
            }
            Handled::Refresh(_) => {
                break Reply::error(
                    503,
                    "the value expired before it could be served",
                    Auth::Open,
                )
            }
        }
    };
    if let Some((token, expires)) = reply.minted.take() {
        // The relay masks the new token before the child can print it.
        let mask = shared.callbacks.mask_token.clone();
        let masked = tokio::task::spawn_blocking(move || mask(token, expires)).await;
        if masked.is_err() {
            tracing::error!("cannot add a minted token to the relay's masks");
        }
    }
    if let Some(opened) = &reply.challenge {
        let who = match (peer.pid, peer.uid) {
            (Some(pid), Some(uid)) => format!(" by pid {pid} (uid {uid})"),
            _ => String::new(),
        };
        let secret = reply.subject.as_ref().map(|s| s.id.as_str()).unwrap_or("?");
        show_operator(&zeroize::Zeroizing::new(format!(
            "keywarden: approval needed: secret '{secret}' requested{who}; challenge {id}, code {code} (valid until {until}); answer with: keywarden approve {id}",
            id = opened.id,
            code = opened.code.as_str(),
            until = opened.expires_at,
        )));
    }
    match &reply.auth {
        Auth::Failed(e) => {
            let lock = shared.limiter().failure(uid, now.mono);
            let mut why = e.reason().to_string();
            if let Some(l) = lock {
                why.push_str(&format!("; peer locked out for {} ms", l.as_millis()));
            }
            let mut ev = Event::new(EventKind::AuthFailure)
                .actor(peer.actor(presented_id(shared, call.bearer)))
                .result(Outcome::Denied)
                .status(401)
                .reason(why);
            if let Some(c) = call_name {
                ev = ev.call(c);
            }
            shared.audit.note(ev);
        }
        Auth::Granted(_) => shared.limiter().success(uid, now.mono),
        Auth::Missing | Auth::Open => {}
    }
    Ok(reply)
}

/// Resolve `ids` again (each at most once at a time) and cache the values.
async fn refresh(shared: &Shared, ids: &[String]) -> std::result::Result<(), Reply> {
    for id in ids {
        let lock = shared.refresh_lock(id);
        let _held = lock.lock().await;
        if !shared.state().needs_value(id, Now::system()) {
            continue; // another call resolved it meanwhile
        }
        let resolve = shared.callbacks.resolve.clone();
        let owned = id.clone();
        let result = tokio::task::spawn_blocking(move || resolve(&owned))
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Software, "the resolver panicked")));
        let mut st = shared.state();
        let Some(e) = st.secrets.get(id.as_str()) else {
            continue;
        };
        let ev = Event::new(EventKind::Resolve).secret(&e.id, &e.reference, &e.scope);
        match result {
            Ok(fresh) => {
                let fp = shared.audit.fingerprint(fresh.value.expose());
                st.install_leased(id, fresh.value, fresh.lease, Now::system());
                drop(st);
                shared.audit.note(
                    ev.result(Outcome::Ok)
                        .fingerprint(fp)
                        .reason("expired; resolved again"),
                );
            }
            Err(err) => {
                drop(st);
                shared
                    .audit
                    .note(ev.result(Outcome::Error).reason(err.to_string()));
                return Err(Reply::error(
                    503,
                    format!("cannot resolve '{id}' again: {err}"),
                    Auth::Open,
                ));
            }
        }
    }
    Ok(())
}

async fn admin_call(shared: &Shared, call: &Call<'_>, now: Now) -> Reply {
    let handled = routes::handle_admin(&mut shared.state(), call, now);
    match handled {
        AdminHandled::Reply(r) => r,
        AdminHandled::Reload => {
            let reload = shared.callbacks.reload.clone();
            let result = tokio::task::spawn_blocking(move || reload())
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Software, "the reload panicked")));
            let list = RevocationList::load(&shared.revocation_list);
            let mut st = shared.state();
            let reply = routes::reloaded(&mut st, result, Now::system());
            match list {
                Ok(list) => st.apply_revocations(&list),
                Err(e) => tracing::warn!("{e}"),
            }
            drop(st);
            shared.revocations_changed();
            reply
        }
        AdminHandled::Revoked { reply, record } => {
            // Revoked in the state already: the proxy's streams go now,
            // not once the list is written.
            shared.revocations_changed();
            let path = shared.revocation_list.clone();
            let written = tokio::task::spawn_blocking(move || RevocationList::add(&path, record))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(ErrorKind::Software, "writing the list panicked"))
                });
            match written {
                Ok(_) => reply,
                Err(e) => {
                    let mut failed = Reply::error(
                        500,
                        format!("revoked in this run, but not recorded for later runs: {e}"),
                        Auth::Open,
                    );
                    failed.subject = reply.subject;
                    failed.events = reply.events;
                    failed
                }
            }
        }
    }
}

/// The public id of a presented token, when it names a token of this run
/// (expired or refused for its secret part); any other string is what the
/// request sent, and is not recorded.
fn presented_id(shared: &Shared, presented: Option<&[u8]>) -> Option<String> {
    let id = presented.and_then(token_id_of)?;
    shared.state().tokens.knows_id(id).then(|| id.to_string())
}

/// Write the call's audit events; a reply that carries a secret is only
/// sent if its call is on record.
fn finish(
    shared: &Shared,
    peer: &Peer,
    presented: Option<&[u8]>,
    mut reply: Reply,
    call_name: Option<String>,
) -> Reply {
    let audit = &shared.audit;
    let Some(call_name) = call_name else {
        return reply; // auditing is off
    };
    let token_id = match &reply.auth {
        Auth::Granted(id) => Some(id.clone()),
        Auth::Failed(_) => presented_id(shared, presented),
        _ => None,
    };
    for ev in std::mem::take(&mut reply.events) {
        audit.note(ev.actor(peer.actor(token_id.clone())));
    }
    let mut ev = Event::new(EventKind::ApiCall)
        .call(call_name)
        .actor(peer.actor(token_id))
        .result(reply.outcome())
        .status(i64::from(reply.status));
    if let Some(s) = &reply.subject {
        ev = match &s.reference {
            Some(r) => ev.secret(&s.id, r, &s.scope),
            None => ev.unknown_secret_id(&s.id),
        };
    }
    if let Some(served) = reply.served.take() {
        ev = ev.served(served);
    }
    if let Some(why) = &reply.reason {
        ev = ev.reason(why.clone());
    }
    if let Err(e) = audit.record(ev) {
        if reply.carries_secret {
            tracing::error!("{e}");
            return Reply::error(
                503,
                "the audit log cannot be written; refusing to serve",
                Auth::Open,
            );
        }
        audit.note(Event::new(EventKind::ApiCall)); // warns once
    }
    reply
}
