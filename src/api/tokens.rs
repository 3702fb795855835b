//! Bearer tokens for the socket API. Pure: randomness and time come in as
//! values.
//!
//! A token is `kw_<id>_<secret>`: `id` is 8 random bytes in hex, public (it
//! names the token in the audit log and is the lookup key), `secret` is 32
//! random bytes in base64url. The token text is handed out once; only its
//! SHA-256 is kept, and a presented token's hash is compared with the stored
//! one in constant time. Tokens minted from another token are never wider
//! (scopes a subset of the caller's) nor longer-lived (TTL at most the
//! caller's remaining lifetime and the policy's ceiling).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

/// The prefix of every token (so scanners and humans can recognise one).
pub const TOKEN_PREFIX: &str = "kw_";
/// Random bytes a new token needs: 8 for the id, 32 for the secret.
pub const TOKEN_RANDOM_BYTES: usize = 40;
/// The TTL ceiling for minted tokens when the policy sets none.
pub const DEFAULT_MAX_TOKEN_TTL: u64 = 3600;
/// How many tokens may be alive at once (the child cannot exhaust memory).
pub const MAX_LIVE_TOKENS: usize = 1024;

const ID_HEX: usize = 16;
const SECRET_B64: usize = 43;

/// What a token may do, by its public attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Public id.
    pub id: String,
    /// Scope labels.
    pub scopes: Vec<String>,
    /// When it stops working; `None` for the per-run child token.
    pub expires: Option<Instant>,
    /// The token it was minted from.
    pub parent: Option<String>,
}

impl Grant {
    /// Whether the grant holds `scope`.
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether a secret with `scope` labels may be read: the two lists meet.
    pub fn allows(&self, secret_scope: &[String]) -> bool {
        secret_scope.iter().any(|s| self.has(s))
    }

    /// Time left, `None` when it never expires.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.expires.map(|e| e.saturating_duration_since(now))
    }
}

/// A token just made: its text (give it out once, then drop it) and grant.
#[derive(Debug)]
pub struct Issued {
    /// `kw_<id>_<secret>`.
    pub text: SecretBytes,
    /// What it may do.
    pub grant: Grant,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Not of the form `kw_<id>_<secret>`.
    Malformed,
    /// No such token, or the secret part does not match.
    Invalid,
    /// It was valid, and has expired.
    Expired,
}

impl AuthError {
    /// A message for the client and the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed token",
            AuthError::Invalid => "invalid token",
            AuthError::Expired => "token expired",
        }
    }
}

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintError {
    /// The request is malformed (no scopes, TTL 0).
    Invalid(String),
    /// A scope the caller does not hold: never wider.
    Wider(String),
    /// The caller has no lifetime left to share.
    CallerExpiring,
    /// Too many live tokens.
    TooMany,
}

impl MintError {
    /// A message for the client and the audit log.
    pub fn reason(&self) -> String {
        match self {
            MintError::Invalid(why) => why.clone(),
            MintError::Wider(scope) => {
                format!("scope '{scope}' is not held by the calling token; a minted token is never wider")
            }
            MintError::CallerExpiring => {
                "the calling token expires within a second; it cannot mint".to_string()
            }
            MintError::TooMany => format!("too many live tokens (at most {MAX_LIVE_TOKENS})"),
        }
    }
}

struct Stored {
    hash: [u8; 32],
    grant: Grant,
}

/// The live tokens, by id, as hashes.
#[derive(Default)]
pub struct TokenStore {
    by_id: HashMap<String, Stored>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("live", &self.by_id.len())
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn make(random: &[u8; TOKEN_RANDOM_BYTES]) -> (String, SecretBytes) {
    let id = crate::audit::hex(&random[..8]);
    let secret =
        Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[8..]));
    let mut text = Vec::with_capacity(TOKEN_PREFIX.len() + ID_HEX + 1 + SECRET_B64);
    text.extend_from_slice(TOKEN_PREFIX.as_bytes());
    text.extend_from_slice(id.as_bytes());
    text.push(b'_');
    text.extend_from_slice(secret.as_bytes());
    (id, SecretBytes::from_vec(text))
}

/// The public id inside a presented token, if it has the right shape.
pub fn token_id_of(presented: &[u8]) -> Option<&str> {
    let rest = presented.strip_prefix(TOKEN_PREFIX.as_bytes())?;
    if rest.len() != ID_HEX + 1 + SECRET_B64 || rest[ID_HEX] != b'_' {
        return None;
    }
    let id = std::str::from_utf8(&rest[..ID_HEX]).ok()?;
    let secret_ok = rest[ID_HEX + 1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_');
    (id.bytes().all(|c| c.is_ascii_hexdigit()) && secret_ok).then_some(id)
}

impl TokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tokens are stored (expired ones until [`Self::prune`]).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no token is stored.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn insert(&mut self, random: &[u8; TOKEN_RANDOM_BYTES], mut grant: Grant) -> Issued {
        let (id, text) = make(random);
        grant.id = id.clone();
        let hash = sha256(text.expose());
        self.by_id.insert(
            id,
            Stored {
                hash,
                grant: grant.clone(),
            },
        );
        Issued { text, grant }
    }

    /// The per-run token for the child: `scopes`, no expiry.
    pub fn issue_root(&mut self, scopes: Vec<String>, random: &[u8; TOKEN_RANDOM_BYTES]) -> Issued {
        self.insert(
            random,
            Grant {
                id: String::new(),
                scopes,
                expires: None,
                parent: None,
            },
        )
    }

    /// Check a presented token.
    pub fn authenticate(&self, presented: &[u8], now: Instant) -> Result<&Grant, AuthError> {
        let id = token_id_of(presented).ok_or(AuthError::Malformed)?;
        let hash = sha256(presented);
        // Compare against something even for an unknown id, so both cases
        // cost the same.
        let stored = self.by_id.get(id);
        let expected = stored.map(|s| &s.hash).unwrap_or(&[0u8; 32]);
        let matches: bool = hash.ct_eq(expected).into();
        match stored {
            Some(s) if matches => match s.grant.expires {
                Some(e) if e <= now => Err(AuthError::Expired),
                _ => Ok(&s.grant),
            },
            _ => Err(AuthError::Invalid),
        }
    }

    /// Mint a token for `caller` with `scopes` and up to `ttl_seconds`,
    /// clamped to the caller's remaining lifetime and `policy_max` (or
    /// [`DEFAULT_MAX_TOKEN_TTL`]). Scopes outside the caller's are refused.
    pub fn mint(
        &mut self,
        caller: &Grant,
        scopes: &[String],
        ttl_seconds: u64,
        policy_max: Option<u64>,
        now: Instant,
        random: &[u8; TOKEN_RANDOM_BYTES],
    ) -> Result<Issued, MintError> {
        if scopes.is_empty() {
            return Err(MintError::Invalid(
                "scopes: at least one scope is required".into(),
            ));
        }
        if ttl_seconds == 0 {
            return Err(MintError::Invalid("ttl_seconds: must be at least 1".into()));
        }
        if let Some(wider) = scopes.iter().find(|s| !caller.has(s)) {
            return Err(MintError::Wider(wider.clone()));
        }
        let mut ttl = ttl_seconds.min(policy_max.unwrap_or(DEFAULT_MAX_TOKEN_TTL));
        if let Some(left) = caller.remaining(now) {
            ttl = ttl.min(left.as_secs());
        }
        if ttl == 0 {
            return Err(MintError::CallerExpiring);
        }
        self.prune(now);
        if self.by_id.len() >= MAX_LIVE_TOKENS {
            return Err(MintError::TooMany);
        }
        let mut unique: Vec<String> = Vec::with_capacity(scopes.len());
        for s in scopes {
            if !unique.contains(s) {
                unique.push(s.clone());
            }
        }
        // A policy may allow any TTL: past a century it is a century (the
        // clock cannot count to some). Never outlive the caller, even by
        // the sub-second part.
        let expires = now + Duration::from_secs(ttl).min(crate::duration::CENTURY);
        let expires = match caller.expires {
            Some(e) => expires.min(e),
            None => expires,
        };
        Ok(self.insert(
            random,
            Grant {
                id: String::new(),
                scopes: unique,
                expires: Some(expires),
                parent: Some(caller.id.clone()),
            },
        ))
    }

    /// Whether a stored token holds `scope`.
    pub fn knows_scope(&self, scope: &str) -> bool {
        self.by_id.values().any(|s| s.grant.has(scope))
    }

    /// Whether a token with this public id is stored (a refused token's
    /// id is recorded only then: another string is what the request sent).
    pub fn knows_id(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Forget expired tokens.
    pub fn prune(&mut self, now: Instant) {
        self.by_id
            .retain(|_, s| s.grant.expires.is_none_or(|e| e > now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(seed: u8) -> [u8; TOKEN_RANDOM_BYTES] {
        let mut r = [0u8; TOKEN_RANDOM_BYTES];
        for (i, b) in r.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        r
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn issued_text_authenticates_and_is_not_stored() {
        let mut store = TokenStore::new();
        let now = Instant::now();
        let root = store.issue_root(scopes(&["pool", "llm:chat"]), &rnd(1));
        let text = root.text.expose().to_vec();
        assert!(text.starts_with(b"kw_"));
        assert_eq!(text.len(), 3 + ID_HEX + 1 + SECRET_B64);
        assert_eq!(token_id_of(&text), Some(root.grant.id.as_str()));
        let g = store.authenticate(&text, now).expect("valid");
        assert_eq!(g.scopes, scopes(&["pool", "llm:chat"]));
        assert!(!format!("{store:?}").contains(&String::from_utf8_lossy(&text[20..]).to_string()));

        let mut wrong = text.clone();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(store.authenticate(&wrong, now), Err(AuthError::Invalid));
        let mut other_id = text.clone();
        other_id[3] = if other_id[3] == b'0' { b'1' } else { b'0' };
        assert_eq!(store.authenticate(&other_id, now), Err(AuthError::Invalid));
        for bad in [
            &b""[..],
            b"Bearer",
            b"kw_",
            b"kw_zz",
            &text[..text.len() - 1],
        ] {
            assert_eq!(store.authenticate(bad, now), Err(AuthError::Malformed));
        }
    }

    #[test]
    fn minting_never_widens_nor_outlives() {
        let mut store = TokenStore::new();
        let now = Instant::now();
        let root = store
            .issue_root(scopes(&["pool", "llm:chat"]), &rnd(1))
            .grant;
        let pool = store
            .mint(
                &root,
                &scopes(&["pool", "pool"]),
                600,
                Some(300),
                now,
                &rnd(2),
            )
            .expect("mint");
        assert_eq!(pool.grant.scopes, scopes(&["pool"]));
        assert_eq!(pool.grant.parent.as_deref(), Some(root.id.as_str()));
        assert_eq!(pool.grant.expires, Some(now + Duration::from_secs(300)));
        assert!(!pool.grant.allows(&scopes(&["llm:chat"])));
        assert!(pool.grant.allows(&scopes(&["llm:chat", "pool"])));

        let wider = store.mint(&pool.grant, &scopes(&["llm:chat"]), 10, None, now, &rnd(3));
        assert_eq!(
            wider.expect_err("wider"),
            MintError::Wider("llm:chat".into())
        );
        let later = now + Duration::from_secs(200);
        let child = store
            .mint(&pool.grant, &scopes(&["pool"]), 3600, None, later, &rnd(4))
            .expect("mint");
        assert_eq!(
            child.grant.expires, pool.grant.expires,
            "clamped to the parent"
        );
        let at_end = now + Duration::from_millis(299_500);
        assert_eq!(
            store
                .mint(&pool.grant, &scopes(&["pool"]), 5, None, at_end, &rnd(5))
                .expect_err("expiring"),
            MintError::CallerExpiring
        );
        assert!(matches!(
            store.mint(&root, &[], 5, None, now, &rnd(6)),
            Err(MintError::Invalid(_))
        ));
        assert!(matches!(
            store.mint(&root, &scopes(&["pool"]), 0, None, now, &rnd(6)),
            Err(MintError::Invalid(_))
        ));
        let unlimited = store
            .mint(&root, &scopes(&["pool"]), 1 << 40, None, now, &rnd(7))
            .expect("mint");
        assert_eq!(
            unlimited.grant.expires,
            Some(now + Duration::from_secs(DEFAULT_MAX_TOKEN_TTL))
        );
    }

    #[test]
    fn a_ttl_the_clock_cannot_count_is_a_century() {
        let mut store = TokenStore::new();
        let now = Instant::now();
        let root = store.issue_root(scopes(&["pool"]), &rnd(1)).grant;
        for (i, ttl) in [u64::MAX, i64::MAX as u64, 1 << 62].into_iter().enumerate() {
            let t = store
                .mint(
                    &root,
                    &scopes(&["pool"]),
                    ttl,
                    Some(u64::MAX),
                    now,
                    &rnd(2 + i as u8),
                )
                .expect("mint");
            assert_eq!(
                t.grant.expires,
                Some(now + crate::duration::CENTURY),
                "ttl {ttl}"
            );
        }
    }

    #[test]
    fn expiry_and_pruning() {
        let mut store = TokenStore::new();
        let now = Instant::now();
        let root = store.issue_root(scopes(&["pool"]), &rnd(1)).grant;
        let t = store
            .mint(&root, &scopes(&["pool"]), 1, None, now, &rnd(2))
            .expect("mint");
        let text = t.text.expose().to_vec();
        assert!(store.authenticate(&text, now).is_ok());
        let after = now + Duration::from_secs(1);
        assert_eq!(store.authenticate(&text, after), Err(AuthError::Expired));
        assert_eq!(store.len(), 2);
        store.prune(after);
        assert_eq!(store.len(), 1);
        assert_eq!(store.authenticate(&text, after), Err(AuthError::Invalid));
    }

    #[test]
    fn live_tokens_are_bounded() {
        let mut store = TokenStore::new();
        let now = Instant::now();
        let root = store.issue_root(scopes(&["pool"]), &rnd(0)).grant;
        let mut n = 0u32;
        let err = loop {
            let mut r = [0u8; TOKEN_RANDOM_BYTES];
            r[..4].copy_from_slice(&n.to_be_bytes());
            r[4] = 1;
            match store.mint(&root, &scopes(&["pool"]), 60, None, now, &r) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, MintError::TooMany);
        assert_eq!(store.len(), MAX_LIVE_TOKENS);
    }
}
