//! Rate limiting of failed authentication, per peer uid. Pure: time comes
//! in as a value.
//!
//! The first few failures are free; each one after that locks the peer out
//! for twice as long as the last (from [`BASE_LOCK`] up to [`MAX_LOCK`]).
//! While locked, every call from that peer whose token is not valid gets
//! 429 with `Retry-After` (so parallel connections gain nothing); a valid
//! token still passes, so a noisy process of the same uid cannot lock the
//! child out. A success outside a lock, or [`FORGET_AFTER`] without a
//! failure, clears the record. Keyed by uid, not
//! pid: forking does not buy an attacker fresh attempts.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failures allowed before the first lock.
pub const FREE_FAILURES: u32 = 5;
/// The first lock.
pub const BASE_LOCK: Duration = Duration::from_millis(250);
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::from_secs(30);
/// A peer without failures for this long starts afresh.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct Peer {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
    /// Whether the refusal of the current lock was audited already.
    lock_reported: bool,
}

/// What to do with a call from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check its token.
    Open,
    /// Refuse without checking; `first` is true for the first refusal of
    /// this lock (audit that one; count the rest).
    Locked {
        /// Until the lock ends.
        retry_after: Duration,
        /// First refusal under this lock.
        first: bool,
    },
}

/// Failure records by peer uid.
#[derive(Debug, Default)]
pub struct AuthLimiter {
    peers: HashMap<u32, Peer>,
}

impl AuthLimiter {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    /// May a call from `uid` have its token checked now?
    pub fn gate(&mut self, uid: u32, now: Instant) -> Gate {
        let Some(p) = self.peers.get_mut(&uid) else {
            return Gate::Open;
        };
        match p.locked_until {
            Some(until) if until > now => {
                let first = !p.lock_reported;
                p.lock_reported = true;
                Gate::Locked {
                    retry_after: until - now,
                    first,
                }
            }
            _ => Gate::Open,
        }
    }

    /// A token from `uid` was refused; returns the lock imposed, if any.
    pub fn failure(&mut self, uid: u32, now: Instant) -> Option<Duration> {
        let p = self.peers.entry(uid).or_insert(Peer {
            failures: 0,
            last_failure: now,
            locked_until: None,
            lock_reported: false,
        });
        if now.saturating_duration_since(p.last_failure) > FORGET_AFTER {
            p.failures = 0;
        }
        p.failures = p.failures.saturating_add(1);
        p.last_failure = now;
        if p.failures <= FREE_FAILURES {
            return None;
        }
        let doublings = (p.failures - FREE_FAILURES - 1).min(16);
        let lock = BASE_LOCK.saturating_mul(1 << doublings).min(MAX_LOCK);
        p.locked_until = Some(now + lock);
        p.lock_reported = false;
        Some(lock)
    }

    /// Whether `uid` is locked out now (no side effect, unlike `gate`).
    pub fn is_locked(&self, uid: u32, now: Instant) -> bool {
        self.peers
            .get(&uid)
            .and_then(|p| p.locked_until)
            .is_some_and(|until| until > now)
    }

    /// A token from `uid` was accepted: clear its record (not during a lock).
    pub fn success(&mut self, uid: u32, now: Instant) {
        // A lock runs its course: a valid token passes it (see the server)
        // but does not lift it for the guesses that follow.
        if self
            .peers
            .get(&uid)
            .is_some_and(|p| p.locked_until.is_none_or(|u| u <= now))
        {
            self.peers.remove(&uid);
        }
    }

    /// Drop records that no longer matter.
    pub fn sweep(&mut self, now: Instant) {
        self.peers.retain(|_, p| {
            now.saturating_duration_since(p.last_failure) <= FORGET_AFTER
                || p.locked_until.is_some_and(|u| u > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_failures_then_doubling_locks() {
        let mut l = AuthLimiter::new();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(l.gate(7, t0), Gate::Open);
            assert_eq!(l.failure(7, t0), None);
        }
        assert_eq!(l.failure(7, t0), Some(BASE_LOCK));
        assert_eq!(
            l.gate(7, t0),
            Gate::Locked {
                retry_after: BASE_LOCK,
                first: true
            }
        );
        assert!(matches!(l.gate(7, t0), Gate::Locked { first: false, .. }));
        assert_eq!(l.gate(8, t0), Gate::Open, "other peers are not affected");
        let t1 = t0 + BASE_LOCK;
        assert_eq!(l.gate(7, t1), Gate::Open);
        assert_eq!(l.failure(7, t1), Some(BASE_LOCK * 2));
        let mut t = t1;
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            t += MAX_LOCK;
            last = l.failure(7, t).expect("locked");
        }
        assert_eq!(last, MAX_LOCK);
        // A success inside the lock does not lift it; after it, it clears.
        assert!(l.is_locked(7, t));
        l.success(7, t);
        assert!(matches!(l.gate(7, t), Gate::Locked { .. }));
        let after = t + MAX_LOCK;
        assert!(!l.is_locked(7, after));
        l.success(7, after);
        assert_eq!(l.gate(7, after), Gate::Open);
        assert_eq!(l.failure(7, after), None);
    }

    #[test]
    fn forgets_after_a_quiet_period() {
        let mut l = AuthLimiter::new();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            l.failure(1, t0);
        }
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(l.failure(1, later), None);
        l.sweep(later + FORGET_AFTER + Duration::from_secs(1));
        assert_eq!(l.gate(1, later), Gate::Open);
    }
}
