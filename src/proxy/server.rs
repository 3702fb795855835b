//! The proxy's edge: the listener (loopback TCP or a unix socket), hyper's
//! HTTP/1.1 server on a current-thread tokio runtime on a thread of its
//! own, the rustls client to the upstreams (system roots plus
//! `--proxy-ca`), bodies streamed both ways, and the audit.
//!
//! Why one file of over 900 lines: the listener, the request path and the
//! streamed bodies (redacted responses, scanned requests) share one
//! connection's state and its audit record; the pure rules (routes, presets,
//! allow patterns, placeholders, header stripping) live in their own files.
//!
//! Each request goes through the pure checks of [`super::request`] in
//! SPEC's order — form (405/501), route (404), path, placeholder
//! (401/403), `allow` (403), rate (429), a secret in the request line or
//! headers (400), size (413), revocation (410) — then upstream with the
//! real value. The request body is scanned as it streams: a secret in it
//! aborts the upstream request before the secret's first byte is sent
//! (the redaction stream holds back any tail that could begin one) and
//! the child gets 400. The response body goes through the relay's
//! matcher chunk by chunk: whatever the stream releases is sent at once,
//! so server-sent events arrive as the upstream sends them.
//!
//! A revocation reaches the route's calls in flight at once (the keyring
//! wakes them): one still waiting for the upstream is dropped and answered
//! 410; a response body breaks off, its upstream connection closed, even
//! while the upstream is silent. Connections follow the socket API's
//! limits ([`crate::api::conn`]): 10 s for a request head, 60 s idle
//! between requests, the oldest idle one evicted when too many are open.
//! A call is never evicted, so its request body has the head's 10 s too,
//! timed between pieces rather than over the whole (a 32 MiB upload on a
//! slow link must pass): a body that pauses longer drops the upstream
//! request and is answered 408, the connection closed.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE,
};
use hyper::{Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::limit::RateLimit;
use super::request::{self, Placeholder, Refusal};
use super::route::{Inject, Route};
use super::{Listen, MAX_BODY};
use crate::api::conn::{self, ConnLimits};
use crate::api::{KeyAnswer, Keyring};
use crate::audit::{Actor, Auditor, Event, EventKind, Outcome};
use crate::error::{Error, ErrorKind, Result};
use crate::redact::{Matcher, Stream};
use crate::secret::SecretBytes;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type UpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
type UpClient = Client<HttpsConnector<HttpConnector>, UpBody>;

/// Most connections held at once (per peer uid on a unix socket): a new
/// one over the cap evicts the oldest that is not in a call, as the socket
/// API does, so idle or slow clients never lock the child out.
const MAX_CONNECTIONS: usize = 512;
/// Connecting to an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay's matcher as it is now (it changes on rotation): `None`
/// before the child's first start.
pub type MatcherNow = Arc<dyn Fn() -> Option<Arc<Matcher>> + Send + Sync>;

/// What the proxy is built from.
pub struct ProxyOptions {
    /// Where to listen.
    pub listen: Listen,
    /// Extra roots for the upstreams' certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// The routes, one per proxied secret.
    pub routes: Vec<Route>,
    /// Values, TTLs and revocations, shared with the socket API.
    pub keyring: Keyring,
    /// The relay's matcher, for responses and for secrets in requests.
    pub matcher: MatcherNow,
    /// Masked ids that are no secret of an upstream's (the placeholders'
    /// variables, the child's token): not refused in a request.
    pub not_secrets: Vec<String>,
    /// Where events go.
    pub audit: Auditor,
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("listen", &self.listen)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// One route as served: its placeholder (a secret of this run) and its
/// rate limit.
struct Served {
    route: Route,
    phantom: SecretBytes,
    token_id: String,
    limit: Mutex<Option<RateLimit>>,
}

/// What the server thread starts from: [`Ctx`] but the client.
struct Setup {
    routes: Vec<Served>,
    keyring: Keyring,
    matcher: MatcherNow,
    not_secrets: Vec<String>,
    audit: Auditor,
    extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// What every connection shares.
struct Ctx {
    /// The socket API's connection limits; `head` is also the longest
    /// pause in a request body.
    limits: ConnLimits,
    routes: Vec<Served>,
    keyring: Keyring,
    matcher: MatcherNow,
    not_secrets: Vec<String>,
    audit: Auditor,
    client: UpClient,
}

enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

/// The proxy: bound (its address known, connections wait in the backlog)
/// and, once [`Proxy::serve`] ran, served by a thread of its own.
pub struct Proxy {
    address: Listen,
    idle: Option<(Listener, Setup)>,
    unix_path: Option<PathBuf>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    env: Vec<(String, SecretBytes, bool)>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Bind the listener and make each route's placeholder. Errors: a listen
/// address that cannot be bound (78), an unreadable CA file (78).
pub fn bind(opts: ProxyOptions) -> Result<Proxy> {
    // The file is read now (a bad one is 78 before the child starts); the
    // system's roots and the TLS client wait for the first connection, so
    // a child that never calls the proxy pays nothing for them.
    let extra_roots = match &opts.ca_file {
        Some(path) => read_ca(path)?,
        None => Vec::new(),
    };
    let (listener, address) = listen(&opts.listen)?;
    let mut routes = Vec::with_capacity(opts.routes.len());
    let mut env = Vec::new();
    for route in opts.routes {
        let mut random = [0u8; super::PHANTOM_BYTES];
        crate::sys::random::fill(&mut random)
            .map_err(|_| Error::new(ErrorKind::Os, "no randomness for the proxy's placeholders"))?;
        let phantom = zeroize::Zeroizing::new(super::phantom_of(&random));
        zeroize::Zeroize::zeroize(&mut random);
        let url = super::route_url(&address, &route.id);
        for t in &route.env {
            let text = zeroize::Zeroizing::new(t.render(&url, &phantom));
            env.push((
                t.name.clone(),
                SecretBytes::copy_from(text.as_bytes()),
                t.has_phantom(),
            ));
        }
        tracing::info!("credential proxy: {url} -> {}", route.upstream);
        routes.push(Served {
            token_id: super::phantom_id(phantom.as_bytes()),
            phantom: SecretBytes::copy_from(phantom.as_bytes()),
            limit: Mutex::new(
                route
                    .max_requests_per_minute
                    .map(|n| RateLimit::new(n, Instant::now())),
            ),
            route,
        });
    }
    let ctx = Setup {
        routes,
        keyring: opts.keyring,
        matcher: opts.matcher,
        not_secrets: opts.not_secrets,
        audit: opts.audit,
        extra_roots,
    };
    let unix_path = match &listener {
        Listener::Unix(_, p) => Some(p.clone()),
        Listener::Tcp(_) => None,
    };
    Ok(Proxy {
        address,
        idle: Some((listener, ctx)),
        unix_path,
        stop: None,
        thread: None,
        env,
    })
}

fn listen(addr: &Listen) -> Result<(Listener, Listen)> {
    let fail = |e: std::io::Error| {
        Error::config(format!(
            "--proxy-listen: cannot listen on {}: {e}",
            show(addr)
        ))
    };
    match addr {
        Listen::Tcp(a) => {
            let l = std::net::TcpListener::bind(a).map_err(fail)?;
            l.set_nonblocking(true).map_err(fail)?;
            let local = l.local_addr().map_err(fail)?;
            Ok((Listener::Tcp(l), Listen::Tcp(local)))
        }
        Listen::Unix(p) => {
            use std::os::unix::fs::PermissionsExt;
            let l = std::os::unix::net::UnixListener::bind(p).map_err(fail)?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
            l.set_nonblocking(true).map_err(fail)?;
            Ok((Listener::Unix(l, p.clone()), addr.clone()))
        }
    }
}

fn show(addr: &Listen) -> String {
    match addr {
        Listen::Tcp(a) => a.to_string(),
        Listen::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// The certificates of `--proxy-ca` (PEM); 78 naming the file when it
/// cannot be read or holds none.
fn read_ca(path: &std::path::Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let bad = |what: String| Error::config(format!("{}: --proxy-ca: {what}", path.display()));
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The upstream client: HTTP/1.1 over rustls, trusting the system's roots
/// and `extra`; never follows redirects (hyper's client does not).
fn client(extra: Vec<rustls_pki_types::CertificateDer<'static>>) -> std::io::Result<UpClient> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for cert in extra {
        roots.add(cert).map_err(std::io::Error::other)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

impl Proxy {
    /// The address it listens on (the port chosen when it was 0).
    pub fn address(&self) -> &Listen {
        &self.address
    }

    /// The child's variables: each route's `env`, rendered, and whether
    /// the value holds a placeholder (the relay masks those). Taken once.
    pub fn child_env(&mut self) -> Vec<(String, SecretBytes, bool)> {
        std::mem::take(&mut self.env)
    }

    /// The listener while nothing serves it: when it becomes readable (a
    /// connection waits), call [`Proxy::serve`].
    pub fn idle_listener(&self) -> Option<BorrowedFd<'_>> {
        self.idle.as_ref().map(|(l, _)| match l {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        })
    }

    /// Start the server thread (once). On failure the listener is closed,
    /// so the child's calls fail rather than hang.
    pub fn serve(&mut self) -> Result<()> {
        let Some((listener, ctx)) = self.idle.take() else {
            return Ok(());
        };
        let (tx, rx) = watch::channel(false);
        let thread = spawn(listener, ctx, rx).map_err(|e| {
            Error::new(
                ErrorKind::Os,
                format!("cannot start the credential proxy: {e}"),
            )
        })?;
        self.stop = Some(tx);
        self.thread = Some(thread);
        Ok(())
    }

    /// Stop serving, wait for the thread, remove a unix socket.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        self.idle = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = self.unix_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn spawn(
    listener: Listener,
    setup: Setup,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let ctx = Arc::new(Ctx {
        // The socket API's: 10 s for a request head (and between a
        // body's bytes), 60 s idle between requests.
        limits: ConnLimits::default(),
        client: client(setup.extra_roots)?,
        routes: setup.routes,
        keyring: setup.keyring,
        matcher: setup.matcher,
        not_secrets: setup.not_secrets,
        audit: setup.audit,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let listener = {
        let _in = runtime.enter();
        match listener {
            Listener::Tcp(l) => Accept::Tcp(tokio::net::TcpListener::from_std(l)?),
            Listener::Unix(l, _) => Accept::Unix(tokio::net::UnixListener::from_std(l)?),
        }
    };
    std::thread::Builder::new()
        .name("keywarden-proxy".into())
        .spawn(move || {
            runtime.block_on(accept_loop(listener, ctx, stop));
            runtime.shutdown_timeout(Duration::from_millis(200));
        })
}

enum Accept {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

async fn accept_loop(listener: Accept, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    let mut by_uid = conn::ByUid::default();
    let limits = ctx.limits;
    loop {
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok(io) => {
                let uid = match &io {
                    Conn::Tcp(_) => None,
                    Conn::Unix(s) => s.peer_cred().ok().map(|c| c.uid()),
                };
                let Some(watch) = by_uid.admit(uid, MAX_CONNECTIONS, limits) else {
                    continue; // every connection is mid-call: this one is closed
                };
                conns.spawn(serve_conn(io, ctx.clone(), watch, stop.clone()));
            }
            Err(e) => {
                tracing::debug!("credential proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        conns.abort_all();
    }
}

/// A client connection, TCP or unix.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Accept) -> std::io::Result<Conn> {
    match l {
        Accept::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(Conn::Tcp(s))
        }
        Accept::Unix(l) => Ok(Conn::Unix(l.accept().await?.0)),
    }
}

async fn serve_conn(io: Conn, ctx: Arc<Ctx>, watch: Arc<conn::Watch>, stop: watch::Receiver<bool>) {
    let _closed = conn::ClosedOnDrop(watch.clone());
    match io {
        Conn::Tcp(s) => serve_io(s, ctx, watch, stop).await,
        Conn::Unix(s) => serve_io(s, ctx, watch, stop).await,
    }
}

async fn serve_io<S>(
    stream: S,
    ctx: Arc<Ctx>,
    watch: Arc<conn::Watch>,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let in_service = watch.clone();
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        // In a call from its head until its response body is done (a
        // stream may last long): never closed as idle meanwhile.
        let call = conn::OwnedCall::start(in_service.clone());
        async move { Ok::<_, Infallible>(handle(ctx, req, call).await) }
    });
    let io = TokioIo::new(conn::Watched::new(stream, watch.clone()));
    // A client may shut its side down once its request is sent: the reply
    // is still written (without this, the end of input closes the
    // connection as soon as it is read, while the reply may still be in
    // the making, e.g. waiting for the matcher). Idle and head timeouts
    // still close it.
    let conn = hyper::server::conn::http1::Builder::new()
        .writev(true)
        .half_close(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // No complete head in time, idle too long, or evicted for a newer
        // connection: closed.
        _ = watch.expired() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// The audit record of one request, written when it ends (for a streamed
/// response: when its body is done or the child hangs up).
struct Record {
    ctx: Arc<Ctx>,
    id: Option<String>,
    method: String,
    path: String,
    token_id: Option<String>,
    status: u16,
    reason: Option<String>,
    start: Instant,
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
}

impl Record {
    fn write(&mut self) {
        if !self.ctx.audit.is_enabled() {
            return;
        }
        let outcome = match self.status {
            200..=399 => Outcome::Ok,
            400..=499 => Outcome::Denied,
            _ => Outcome::Error,
        };
        let mut ev = Event::new(EventKind::Proxy)
            .result(outcome)
            .status(i64::from(self.status))
            .proxied(
                &self.method,
                &self.path,
                self.bytes_in.load(Ordering::Relaxed),
                self.bytes_out,
                self.start.elapsed(),
            )
            .actor(Actor {
                token_id: self.token_id.clone(),
                ..Actor::default()
            });
        if let Some(id) = &self.id {
            ev = ev.secret_id(id);
        }
        if let Some(r) = self.reason.take() {
            ev = ev.reason(r);
        }
        self.ctx.audit.note(ev);
    }
}

/// A response body: a JSON refusal, or the upstream's body redacted as it
/// streams.
enum ProxyBody {
    /// A whole body.
    Full(Option<Bytes>),
    /// The upstream's body, redacted.
    Upstream(Box<Redacted>),
}

/// Ends when the route is revoked.
type Revoked = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The upstream's body through the redaction stream, cut when the route
/// is revoked.
struct Redacted {
    /// `None` once cut: dropping it closes the upstream connection.
    inner: Option<Incoming>,
    stream: Stream<Arc<Matcher>>,
    record: Record,
    revoked: Revoked,
    /// The connection is in a call until the body is done.
    call: Option<conn::OwnedCall>,
    /// Why the request body was cut, if it was ([`Scanned`]): it may be
    /// after this answer began, which then breaks off.
    body_cut: Arc<AtomicU8>,
    /// The longest pause in a request body.
    stall_after: Duration,
    done: bool,
}

impl Drop for Redacted {
    fn drop(&mut self) {
        self.record.write();
    }
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(r) => r.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(r) => r.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(_) => SizeHint::default(),
        }
    }
}

impl Redacted {
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            // Revoked: cut now, even while the upstream is silent; what it
            // sends from here on is never relayed.
            if self.revoked.as_mut().poll(cx).is_ready() {
                return self.cut();
            }
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not passed on
                    };
                    if let Some(id) = &self.record.id {
                        if self.record.ctx.keyring.is_revoked(id) {
                            return self.cut();
                        }
                    }
                    let mut out = Vec::with_capacity(data.len() + 64);
                    self.stream.push(&data, &mut out);
                    if !out.is_empty() {
                        self.record.bytes_out += out.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    let why = self.body_cut.load(Ordering::Acquire);
                    let id = self.record.id.as_deref().unwrap_or_default();
                    self.record.reason = Some(match body_refusal(why, id, self.stall_after) {
                        // The upstream connection went with the request.
                        Some(r) => format!("{} (after the answer began)", r.message),
                        None => "the upstream's body failed".into(),
                    });
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let mut out = Vec::new();
                    self.stream.finish(&mut out);
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    self.record.bytes_out += out.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            }
        }
    }
}

impl Redacted {
    /// End the response with an error (the client sees the stream break,
    /// not end cleanly) and close the upstream connection.
    fn cut(&mut self) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.inner = None;
        self.record.reason = Some("revoked while streaming; cut".into());
        Poll::Ready(Some(Err("the route was revoked".into())))
    }
}

/// Why a request body was cut.
const BODY_OK: u8 = 0;
const BODY_SECRET: u8 = 1;
const BODY_TOO_LARGE: u8 = 2;
const BODY_BROKEN: u8 = 3;
const BODY_STALLED: u8 = 4;

/// What the child is told when its request body was cut for `why`
/// (`None`: it was not).
fn body_refusal(why: u8, route: &str, stall: Duration) -> Option<Refusal> {
    let (status, message) = match why {
        BODY_SECRET => (
            400,
            "the request body carries a secret's value; refused (keywarden adds the key itself)"
                .to_string(),
        ),
        BODY_TOO_LARGE => (413, format!("request body larger than {MAX_BODY} bytes")),
        BODY_BROKEN => (
            400,
            "the request body could not be read (it ended before its length, or its chunked encoding is broken)"
                .to_string(),
        ),
        BODY_STALLED => (
            408,
            format!(
                "route '{route}': no request body bytes for {} s; the upstream call was dropped",
                stall.as_secs()
            ),
        ),
        _ => return None,
    };
    Some(Refusal::new(status, message))
}

/// The child's request body on its way upstream: counted (413 past
/// [`MAX_BODY`]), scanned for secrets (400), the redaction stream
/// holding back any tail that could begin one, and cut when the client
/// pauses too long (408).
struct Scanned {
    inner: Incoming,
    stream: Stream<Arc<Matcher>>,
    not_secrets: Arc<Vec<String>>,
    seen: Arc<AtomicU64>,
    cut: Arc<AtomicU8>,
    done: bool,
    /// The longest pause allowed between two pieces of the body: the
    /// pause is timed, not the whole body, so a large upload is never cut
    /// while its bytes keep coming.
    stall_after: Duration,
    /// Runs while the client has sent nothing new: started when the
    /// upstream side first asks for more and none has arrived (time spent
    /// waiting for the upstream to take bytes is not the client's), reset
    /// by each piece.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Scanned {
    fn secrets_masked(&self) -> u64 {
        self.stream
            .counts()
            .iter()
            .filter(|(id, _)| !self.not_secrets.iter().any(|n| n == id))
            .map(|(_, n)| n)
            .sum()
    }

    fn fail(&mut self, why: u8) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.cut.store(why, Ordering::Release);
        Poll::Ready(Some(Err("request body refused".into())))
    }
}

impl http_body::Body for Scanned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let me = self.get_mut();
        loop {
            if me.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut me.inner).poll_frame(cx) {
                Poll::Pending => {
                    let stall = me
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(me.stall_after)));
                    if std::future::Future::poll(stall.as_mut(), cx).is_ready() {
                        // An error from the body makes hyper drop the
                        // upstream connection: the call holds nothing more.
                        return me.fail(BODY_STALLED);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    me.stall = None;
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let total =
                        me.seen.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                    if total > MAX_BODY {
                        return me.fail(BODY_TOO_LARGE);
                    }
                    let before = me.secrets_masked();
                    let mut out = Vec::with_capacity(data.len());
                    me.stream.push(&data, &mut out);
                    if me.secrets_masked() != before {
                        return me.fail(BODY_SECRET);
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // The client's body broke (ended before its length,
                    // bad chunked encoding): the client's fault, not the
                    // upstream's.
                    me.done = true;
                    me.cut.store(BODY_BROKEN, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {
                    me.done = true;
                    let before = me.secrets_masked();
                    let mut out = Vec::new();
                    me.stream.finish(&mut out);
                    if me.secrets_masked() != before {
                        return me.fail(BODY_SECRET);
                    }
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            }
        }
    }
}

fn json_response(status: u16, message: &str, retry_after: Option<u64>) -> Response<ProxyBody> {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    let mut r = Response::new(ProxyBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(s) = retry_after {
        h.insert(hyper::header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// Redact `text` with `m` (a string from the request, for the audit log).
fn redacted(m: Option<&Matcher>, text: &str) -> String {
    match m {
        Some(m) => {
            let mut out = Vec::with_capacity(text.len());
            m.redact_all(text.as_bytes(), &mut out, &mut Default::default());
            String::from_utf8_lossy(&out).into_owned()
        }
        None => String::from("[path withheld]"),
    }
}

async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    call: conn::OwnedCall,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let matcher = (ctx.matcher)();
    let mut record = Record {
        ctx: ctx.clone(),
        id: None,
        method: req.method().as_str().to_string(),
        path: redacted(matcher.as_deref(), req.uri().path()),
        token_id: None,
        status: 0,
        reason: None,
        start,
        bytes_in: Arc::new(AtomicU64::new(0)),
        bytes_out: 0,
    };
    match forward(&ctx, req, matcher, &mut record).await {
        Ok(mut response) => {
            if let ProxyBody::Upstream(r) = response.body_mut() {
                r.call = Some(call);
            }
            response
        }
        Err((refusal, retry_after)) => {
            let mut response = json_response(refusal.status, &refusal.message, retry_after);
            if refusal.status == 408 {
                // The rest of a stalled body may still come: never read
                // it as the next request.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            record.status = refusal.status;
            record.reason = Some(refusal.message);
            if let ProxyBody::Full(Some(b)) = response.body() {
                record.bytes_out = b.len() as u64;
            }
            record.write();
            response
        }
    }
}

type Refused = (Refusal, Option<u64>);

fn refuse(status: u16, message: impl Into<String>) -> Refused {
    (Refusal::new(status, message), None)
}

/// The checks, then the upstream call. `Err` is a refusal answered by
/// keywarden itself.
async fn forward(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    matcher: Option<Arc<Matcher>>,
    record: &mut Record,
) -> std::result::Result<Response<ProxyBody>, Refused> {
    let (mut parts, body) = req.into_parts();
    let absolute = parts.uri.scheme().is_some() || parts.uri.authority().is_some();
    if let Some(r) = request::refuse_form(parts.method.as_str(), absolute, &parts.headers) {
        return Err((r, None));
    }
    let path = parts.uri.path().to_string();
    let Some((id, rest)) = request::split_path(&path) else {
        return Err(refuse(404, "no route: call {url}/PATH of a proxied secret"));
    };
    let Some(idx) = ctx.routes.iter().position(|s| s.route.id == id) else {
        return Err(refuse(404, "no proxied route by that name"));
    };
    let served = &ctx.routes[idx];
    let route = &served.route;
    record.id = Some(route.id.clone());
    if request::has_dot_segments(rest) {
        return Err(refuse(400, "a path with '.' or '..' segments is refused"));
    }
    let query = parts.uri.query().map(str::to_string);
    let presented = request::presented_on(route, &parts.headers, query.as_deref());
    let phantoms: Vec<&[u8]> = ctx.routes.iter().map(|s| s.phantom.expose()).collect();
    let verdict = {
        let mut elsewhere: Vec<&[u8]> = parts.headers.values().map(|v| v.as_bytes()).collect();
        if let Some(q) = &query {
            elsewhere.push(q.as_bytes());
        }
        request::check_placeholder(idx, &phantoms, presented.as_deref(), &elsewhere)
    };
    match verdict {
        Placeholder::Valid => record.token_id = Some(served.token_id.clone()),
        Placeholder::Invalid => {
            return Err(refuse(
                401,
                format!(
                    "missing or wrong placeholder for route '{}' (use the key keywarden gave this command)",
                    route.id
                ),
            ))
        }
        Placeholder::OtherRoute => {
            return Err(refuse(
                403,
                format!("another route's placeholder was sent to route '{}'", route.id),
            ))
        }
    }
    request::check_allowed(route, parts.method.as_str(), rest).map_err(|r| (r, None))?;
    if let Some(limit) = served
        .limit
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
    {
        if let Err(wait) = limit.take(Instant::now()) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err((
                Refusal::new(
                    429,
                    format!(
                        "route '{}': over max_requests_per_minute; retry in {secs}s",
                        route.id
                    ),
                ),
                Some(secs),
            ));
        }
    }
    let Some(matcher) = matcher else {
        return Err(refuse(503, "the proxy is starting"));
    };
    // The client's placeholder goes; what is left must carry no secret.
    request::strip_request_headers(&mut parts.headers, route);
    let query = match (&route.inject, &query) {
        (Inject::Query(name), Some(q)) => Some(request::query_without(q, name)),
        _ => query,
    };
    let line = match &query {
        Some(q) => format!("{} {rest}?{q}", parts.method),
        None => format!("{} {rest}", parts.method),
    };
    let in_line = request::secret_in(&matcher, line.as_bytes(), &ctx.not_secrets);
    let in_headers = parts.headers.iter().find_map(|(name, v)| {
        request::secret_in(&matcher, v.as_bytes(), &ctx.not_secrets)
            .or_else(|| request::secret_in(&matcher, name.as_str().as_bytes(), &ctx.not_secrets))
    });
    if let Some(found) = in_line.or(in_headers) {
        return Err(refuse(
            400,
            format!(
                "the request carries the value of secret '{found}'; refused (keywarden adds the key itself)"
            ),
        ));
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(refuse(
            413,
            format!("request body larger than {MAX_BODY} bytes"),
        ));
    }
    let value = match ctx.keyring.current(&route.id).await {
        KeyAnswer::Value(v) => v,
        KeyAnswer::Revoked => return Err(refuse(410, format!("secret '{}' is revoked", route.id))),
        KeyAnswer::Unknown => {
            return Err(refuse(
                404,
                format!("secret '{}' is no longer in the registry", route.id),
            ))
        }
        KeyAnswer::Failed(why) => {
            return Err(refuse(
                503,
                redacted(Some(&matcher), &format!("route '{}': {why}", route.id)),
            ))
        }
    };
    let url = route.upstream.url(rest, query.as_deref());
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| refuse(400, "the request's path is not a valid URL path"))?;
    let mut upstream_query = None;
    match &route.inject {
        Inject::Header {
            name,
            prefix,
            suffix,
        } => {
            let mut text = zeroize::Zeroizing::new(Vec::with_capacity(
                prefix.len() + value.expose().len() + suffix.len(),
            ));
            text.extend_from_slice(prefix.as_bytes());
            text.extend_from_slice(value.expose());
            text.extend_from_slice(suffix.as_bytes());
            let mut hv = HeaderValue::from_maybe_shared(Bytes::from_owner(text)).map_err(|_| {
                refuse(
                    500,
                    format!("secret '{}' cannot be sent in a header", route.id),
                )
            })?;
            hv.set_sensitive(true);
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| refuse(500, "bad inject header"))?;
            parts.headers.insert(name, hv);
        }
        Inject::Query(name) => upstream_query = Some(name.clone()),
    }
    let uri = match upstream_query {
        None => uri,
        Some(name) => with_query_key(&uri, &name, value.expose())
            .ok_or_else(|| refuse(500, "bad upstream URL"))?,
    };
    drop(value);
    parts.uri = uri;
    parts.version = hyper::Version::HTTP_11;
    let cut = Arc::new(AtomicU8::new(BODY_OK));
    let scanned = Scanned {
        inner: body,
        stream: Stream::new(matcher.clone()),
        not_secrets: Arc::new(ctx.not_secrets.clone()),
        seen: record.bytes_in.clone(),
        cut: cut.clone(),
        done: false,
        stall_after: ctx.limits.head,
        stall: None,
    };
    let upstream_req = Request::from_parts(parts, UpBody::new(scanned));
    // A revocation while the upstream has not answered yet drops the call
    // (and its connection) and answers 410; after that it cuts the body.
    let mut revoked: Revoked = {
        let keyring = ctx.keyring.clone();
        let id = route.id.clone();
        Box::pin(async move { keyring.revoked(&id).await })
    };
    let answer = tokio::select! {
        biased;
        _ = &mut revoked => {
            return Err(refuse(410, format!("secret '{}' is revoked", route.id)));
        }
        answer = ctx.client.request(upstream_req) => answer,
    };
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            let why = cut.load(Ordering::Acquire);
            if let Some(r) = body_refusal(why, &route.id, ctx.limits.head) {
                return Err((r, None));
            }
            return Err(refuse(
                502,
                redacted(
                    Some(&matcher),
                    &format!(
                        "route '{}': upstream {} unreachable: {}",
                        route.id,
                        route.upstream,
                        transport(&e)
                    ),
                ),
            ));
        }
    };
    let (mut rparts, rbody) = response.into_parts();
    request::strip_response_headers(&mut rparts.headers);
    redact_headers(&matcher, &mut rparts.headers);
    record.status = rparts.status.as_u16();
    let out = Redacted {
        inner: Some(rbody),
        revoked,
        call: None,
        body_cut: cut,
        stall_after: ctx.limits.head,
        stream: Stream::new(matcher),
        record: Record {
            ctx: ctx.clone(),
            id: record.id.take(),
            method: std::mem::take(&mut record.method),
            path: std::mem::take(&mut record.path),
            token_id: record.token_id.take(),
            status: record.status,
            reason: None,
            start: record.start,
            bytes_in: record.bytes_in.clone(),
            bytes_out: 0,
        },
        done: false,
    };
    Ok(Response::from_parts(
        rparts,
        ProxyBody::Upstream(Box::new(out)),
    ))
}

/// `uri` with `name=value` (percent-encoded) added to its query.
fn with_query_key(uri: &hyper::Uri, name: &str, value: &[u8]) -> Option<hyper::Uri> {
    let mut text = zeroize::Zeroizing::new(uri.to_string());
    text.push(if uri.query().is_some() { '&' } else { '?' });
    text.push_str(name);
    text.push('=');
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            text.push(b as char);
        } else {
            text.push_str(&format!("%{b:02X}"));
        }
    }
    text.parse().ok()
}

/// Mask secrets in response header values (a `Location` that echoes a key).
fn redact_headers(m: &Matcher, headers: &mut HeaderMap) {
    for v in headers.values_mut() {
        if m.find_spans(v.as_bytes()).is_empty() {
            continue;
        }
        let mut out = Vec::new();
        m.redact_all(v.as_bytes(), &mut out, &mut Default::default());
        if let Ok(nv) = HeaderValue::from_bytes(&out) {
            *v = nv;
        }
    }
}

/// A transport error's innermost cause, worded for the child (never a
/// URL: the query of a `query:` route holds the key).
fn transport(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    if text.contains("://") {
        "connection failed".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_request_body_maps_to_its_refusal() {
        let stall = Duration::from_secs(10);
        let table = [
            (BODY_OK, None),
            (BODY_SECRET, Some(400)),
            (BODY_TOO_LARGE, Some(413)),
            (BODY_BROKEN, Some(400)),
            (BODY_STALLED, Some(408)),
        ];
        for (why, want) in table {
            let got = body_refusal(why, "openai", stall).map(|r| r.status);
            assert_eq!(got, want, "cut {why}");
        }
        let r = body_refusal(BODY_STALLED, "openai", stall).expect("stalled");
        assert!(
            r.message.contains("route 'openai'") && r.message.contains("10 s"),
            "{}",
            r.message
        );
    }
}
