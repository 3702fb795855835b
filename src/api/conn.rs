//! Connection limits of the socket API (SPEC "Socket API"), shared by the
//! credential proxy's listener: a connection that sends no complete
//! request head within [`ConnLimits::head`] is closed, as is one idle for
//! [`ConnLimits::idle`] between requests; each peer uid holds at most
//! [`ConnLimits::per_uid`] connections.
//!
//! The cap never locks the child out, even when the flood comes from its
//! own uid: a new connection over the cap evicts that uid's oldest
//! connection that is not in the middle of a call (idle, or still sending
//! its head), so a fresh connection is always served. Only when every one
//! of them is mid-call is the new one refused; calls end on their own
//! (a request body gets [`ConnLimits::head`] too: the socket API's whole
//! body, the credential proxy's streamed one between two pieces).
//!
//! Each connection has a [`Watch`]: a few atomics the hyper service and
//! the socket wrapper ([`Watched`]) update, and a future
//! ([`Watch::expired`]) that ends when the connection must be closed.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Most connections a peer uid other than the child's (or root) holds:
/// such peers only ever get 403.
pub const STRANGER_CAP: usize = 4;

/// Timeouts and the per-uid cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time to send a complete request head (from connect, or from the
    /// first byte after an idle spell), and a request body (the proxy's:
    /// the longest pause in it).
    pub head: Duration,
    /// Time a connection may stay idle between requests.
    pub idle: Duration,
    /// Connections held per peer uid.
    pub per_uid: usize,
}

impl Default for ConnLimits {
    /// SPEC's: 10 s for a head, 60 s idle; 64 connections per uid.
    fn default() -> Self {
        ConnLimits {
            head: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            per_uid: 64,
        }
    }
}

/// Waiting for (the rest of) a request head: new, or after an idle spell.
const HEAD: u8 = 0;
/// A request is being handled (its head arrived).
const IN_CALL: u8 = 1;
/// Between requests, nothing sent yet.
const IDLE: u8 = 2;

/// The state of one connection.
#[derive(Debug)]
pub struct Watch {
    /// Time origin of `deadline_ns`.
    base: Instant,
    state: AtomicU8,
    /// When the connection is closed unless it is in a call.
    deadline_ns: AtomicU64,
    limits: ConnLimits,
    closed: AtomicBool,
    evicted: Notify,
}

impl Watch {
    fn new(limits: ConnLimits) -> Self {
        let w = Watch {
            base: Instant::now(),
            state: AtomicU8::new(HEAD),
            deadline_ns: AtomicU64::new(0),
            limits,
            closed: AtomicBool::new(false),
            evicted: Notify::new(),
        };
        w.set_deadline(w.base + limits.head);
        w
    }

    fn set_deadline(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.base).as_nanos();
        self.deadline_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.deadline_ns.load(Ordering::Relaxed))
    }

    fn in_call(&self) -> bool {
        self.state.load(Ordering::Relaxed) == IN_CALL
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Bytes arrived: after an idle spell they begin a head, which must
    /// be complete in time.
    fn on_read(&self) {
        if self
            .state
            .compare_exchange(IDLE, HEAD, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.set_deadline(Instant::now() + self.limits.head);
        }
    }

    /// Ends when the connection must be closed: its deadline passed while
    /// it was not in a call, or a newer connection evicted it.
    pub async fn expired(&self) {
        loop {
            let at = if self.in_call() {
                // Calls end on their own; look again later.
                Instant::now() + self.limits.head
            } else {
                self.deadline()
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = self.evicted.notified() => return,
            }
            if !self.in_call() && Instant::now() >= self.deadline() {
                return;
            }
        }
    }
}

/// Marks the connection closed when its task ends.
#[derive(Debug)]
pub struct ClosedOnDrop(pub Arc<Watch>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Relaxed);
    }
}

/// A call in progress on a connection: from its head to its response.
#[derive(Debug)]
pub struct InCall<'a>(&'a Watch);

impl<'a> InCall<'a> {
    /// The head of a request arrived.
    pub fn start(watch: &'a Watch) -> Self {
        watch.state.store(IN_CALL, Ordering::Relaxed);
        InCall(watch)
    }
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        self.0.end_call();
    }
}

/// [`InCall`] for a call that outlives the service's future: the
/// credential proxy's streamed response holds it until its body is done.
#[derive(Debug)]
pub struct OwnedCall(Arc<Watch>);

impl OwnedCall {
    /// The head of a request arrived.
    pub fn start(watch: Arc<Watch>) -> Self {
        watch.state.store(IN_CALL, Ordering::Relaxed);
        OwnedCall(watch)
    }
}

impl Drop for OwnedCall {
    fn drop(&mut self) {
        self.0.end_call();
    }
}

impl Watch {
    /// A call ended: the connection idles from now.
    fn end_call(&self) {
        self.set_deadline(Instant::now() + self.limits.idle);
        self.state.store(IDLE, Ordering::Relaxed);
    }
}

/// The connections of each peer uid, oldest first.
#[derive(Debug, Default)]
pub struct ByUid {
    conns: HashMap<Option<u32>, Vec<Arc<Watch>>>,
}

impl ByUid {
    /// Admit a new connection of `uid`, evicting its oldest connection
    /// not in a call when it holds `cap` already; `None` when all of them
    /// are in a call (refuse the new one).
    pub fn admit(
        &mut self,
        uid: Option<u32>,
        cap: usize,
        limits: ConnLimits,
    ) -> Option<Arc<Watch>> {
        let list = self.conns.entry(uid).or_default();
        list.retain(|w| !w.is_closed());
        if list.len() >= cap.max(1) {
            let oldest = list.iter().position(|w| !w.in_call())?;
            let evicted = list.remove(oldest);
            evicted.evicted.notify_one();
        }
        let w = Arc::new(Watch::new(limits));
        list.push(w.clone());
        Some(w)
    }

    /// How many connections `uid` holds (closed ones until its next
    /// admission).
    pub fn count(&self, uid: Option<u32>) -> usize {
        self.conns.get(&uid).map_or(0, Vec::len)
    }
}

/// A socket that tells its [`Watch`] when bytes arrive.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S> Watched<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, watch: Arc<Watch>) -> Self {
        Watched { inner, watch }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_evicts_the_oldest_connection_not_in_a_call() {
        let limits = ConnLimits {
            per_uid: 3,
            ..ConnLimits::default()
        };
        let mut by = ByUid::default();
        let a = by.admit(Some(7), 3, limits).expect("a");
        let b = by.admit(Some(7), 3, limits).expect("b");
        let c = by.admit(Some(7), 3, limits).expect("c");
        let _other = by
            .admit(Some(8), 3, limits)
            .expect("another uid has its own cap");
        let _in_a = InCall::start(&a);
        // a is mid-call: b, the oldest idle one, goes.
        let d = by.admit(Some(7), 3, limits).expect("d");
        assert_eq!(by.count(Some(7)), 3);
        assert!(!by.conns[&Some(7)].iter().any(|w| Arc::ptr_eq(w, &b)));
        let _in_c = InCall::start(&c);
        let _in_d = InCall::start(&d);
        assert!(by.admit(Some(7), 3, limits).is_none(), "all mid-call");
        drop(ClosedOnDrop(c.clone()));
        assert!(by.admit(Some(7), 3, limits).is_some(), "a slot freed");
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let limits = ConnLimits::default();
        let w = Watch::new(limits);
        let head = w.deadline() - w.base;
        assert_eq!(head, Duration::from_secs(10));
        {
            let _call = InCall::start(&w);
            assert!(w.in_call());
        }
        assert_eq!(w.state.load(Ordering::Relaxed), IDLE);
        let idle = w.deadline().saturating_duration_since(Instant::now());
        assert!(idle > Duration::from_secs(50) && idle <= Duration::from_secs(60));
        w.on_read();
        assert_eq!(w.state.load(Ordering::Relaxed), HEAD);
        let head = w.deadline().saturating_duration_since(Instant::now());
        assert!(head <= Duration::from_secs(10) && head > Duration::from_secs(5));
    }
}
