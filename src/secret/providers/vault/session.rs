//! What one run keeps between resolutions: the Vault token it uses (with
//! its lifetime, so it can be renewed before it runs out) and the leases of
//! the answers. Pure bookkeeping: time comes in as an [`Instant`].
//!
//! `check`, `redact` and `scan` resolve once and use a fresh session each;
//! `run` keeps one for its whole life, so an AppRole login is reused (not
//! repeated on every re-resolve), renewed while the run lasts, and done
//! again when it can no longer be renewed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::secret::SecretBytes;

/// What the server said about the lifetime of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `lease_duration` (0 for KV v2: no lease, the value does not expire).
    pub duration: Duration,
    /// `renewable`.
    pub renewable: bool,
    /// The KV v2 version that answered.
    pub version: Option<u64>,
}

/// Leases by ref, filled as refs resolve.
pub type LeaseBook = Arc<Mutex<HashMap<String, Lease>>>;

/// Where the token came from: what can be done when it runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `VAULT_TOKEN`: renewed while it can be; never replaced.
    Env,
    /// An AppRole login: renewed, and logged in again when it cannot be.
    AppRole,
}

/// A token's lifetime as the server last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLife {
    /// Time to live as of `at`.
    pub ttl: Duration,
    /// Whether `renew-self` may extend it.
    pub renewable: bool,
    /// The TTL it was created with: what a renewal asks for again.
    pub normal: Duration,
    /// When `ttl` was read.
    pub at: Instant,
}

impl TokenLife {
    /// When it expires.
    pub fn expires(&self) -> Instant {
        self.at + self.ttl
    }

    /// When to act: two thirds into its current TTL.
    pub fn due(&self) -> Instant {
        self.at + self.ttl * 2 / 3
    }

    /// Whether it is (about to be) expired at `now`: less than a second or
    /// a tenth of its TTL left.
    pub fn spent(&self, now: Instant) -> bool {
        let margin = (self.ttl / 10).max(Duration::from_secs(1));
        self.expires() <= now + margin
    }
}

/// What the renewer should do when a token is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `POST auth/token/renew-self`.
    Renew,
    /// Log in again (AppRole only).
    Login,
    /// Nothing more can be done for this token.
    GiveUp,
}

/// The step for a token from `source` with `life`.
pub fn step(source: TokenSource, life: &TokenLife) -> Step {
    match (source, life.renewable) {
        (_, true) => Step::Renew,
        (TokenSource::AppRole, false) => Step::Login,
        (TokenSource::Env, false) => Step::GiveUp,
    }
}

/// After a renewal granted `granted`: whether the token reached its
/// maximum TTL (the server gave less than a normal TTL), so the next step
/// must be a login (AppRole) or the end of renewals (`VAULT_TOKEN`).
pub fn capped(life: &TokenLife, granted: Duration) -> bool {
    granted + Duration::from_secs(1) < life.normal
}

/// A token the session holds.
pub struct Held {
    /// Which server, namespace and identity it is for.
    pub key: String,
    /// The token.
    pub token: Arc<SecretBytes>,
    /// Where it came from.
    pub source: TokenSource,
    /// Its lifetime; `None` when it does not expire or is not known.
    pub life: Option<TokenLife>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("key", &self.key)
            .field("source", &self.source)
            .field("life", &self.life)
            .finish_non_exhaustive()
    }
}

/// A run's Vault state, shared by every resolver of the run.
#[derive(Debug, Default)]
pub struct VaultSession {
    /// Whether to learn token lifetimes (a `lookup-self` for
    /// `VAULT_TOKEN`) so they can be renewed: `run` only.
    pub(super) renew: bool,
    /// The token in use (one login at a time: concurrent refs wait).
    pub(super) held: tokio::sync::Mutex<Option<Held>>,
    pub(super) leases: LeaseBook,
    /// The index in `VAULT_ADDR` of the address that answered last.
    pub(super) preferred: std::sync::atomic::AtomicUsize,
}

impl VaultSession {
    /// A session for one resolution (no renewals).
    pub fn once() -> Arc<Self> {
        Arc::new(VaultSession::default())
    }

    /// A session for a run: tokens are looked up so they can be renewed.
    pub fn for_run() -> Arc<Self> {
        Arc::new(VaultSession {
            renew: true,
            ..VaultSession::default()
        })
    }

    /// The lease book.
    pub fn leases(&self) -> LeaseBook {
        Arc::clone(&self.leases)
    }

    /// The lease recorded for `reference`, if any.
    pub fn lease_of(&self, reference: &str) -> Option<Lease> {
        self.leases.lock().ok()?.get(reference).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(ttl: u64, normal: u64, renewable: bool, at: Instant) -> TokenLife {
        TokenLife {
            ttl: Duration::from_secs(ttl),
            renewable,
            normal: Duration::from_secs(normal),
            at,
        }
    }

    #[test]
    fn due_at_two_thirds_and_spent_near_the_end() {
        let t0 = Instant::now();
        let l = life(30, 30, true, t0);
        assert_eq!(l.due(), t0 + Duration::from_secs(20));
        assert_eq!(l.expires(), t0 + Duration::from_secs(30));
        assert!(!l.spent(t0 + Duration::from_secs(26)));
        assert!(l.spent(t0 + Duration::from_secs(27)));
        // Short TTLs keep a margin of one second.
        let s = life(2, 2, true, t0);
        assert!(!s.spent(t0 + Duration::from_millis(900)));
        assert!(s.spent(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn steps_by_source_and_renewability() {
        let t0 = Instant::now();
        assert_eq!(step(TokenSource::Env, &life(10, 10, true, t0)), Step::Renew);
        assert_eq!(
            step(TokenSource::AppRole, &life(10, 10, true, t0)),
            Step::Renew
        );
        assert_eq!(
            step(TokenSource::AppRole, &life(10, 10, false, t0)),
            Step::Login
        );
        assert_eq!(
            step(TokenSource::Env, &life(10, 10, false, t0)),
            Step::GiveUp
        );
    }

    #[test]
    fn a_short_grant_means_the_maximum_ttl_is_near() {
        let l = life(60, 60, true, Instant::now());
        assert!(!capped(&l, Duration::from_secs(60)));
        assert!(!capped(&l, Duration::from_millis(59_500)));
        assert!(capped(&l, Duration::from_secs(30)));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let h = Held {
            key: "k".into(),
            token: Arc::new(SecretBytes::copy_from(b"visible-if-leaked")),
            source: TokenSource::Env,
            life: None,
        };
        assert!(!format!("{h:?}").contains("visible-if-leaked"));
    }
}
