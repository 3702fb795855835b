//! Human-in-the-loop approvals, as plain data (pure: time and randomness
//! come in as arguments).
//!
//! A call for a secret whose registry entry says `approval: required` gets
//! a challenge (202 `{"challenge_id","expires_at"}`); its code goes to the
//! operator only (keywarden's own stderr), never to the child, the log or
//! the audit log. The operator answers with `keywarden approve
//! CHALLENGE_ID` on the admin socket. The code is kept only as
//! HMAC-SHA256(key, challenge id ":" code); the key is
//! `HITL_CHALLENGE_HMAC_KEY` or random per run. A challenge lives 5
//! minutes, takes at most 3 wrong answers (then it is locked), and ends
//! when answered, expired, locked, or when its secret is revoked or
//! reloaded. A right answer approves *one* read of that secret by the
//! token that asked (within the challenge's 5 minutes).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::state::Now;
use crate::audit::rfc3339;
use crate::secret::SecretBytes;

/// How long a challenge (and the approval it gives) lives.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong answers before a challenge is locked.
pub const MAX_ATTEMPTS: u8 = 3;
/// Random bytes a new challenge needs.
pub const CHALLENGE_RANDOM_BYTES: usize = 32;
/// Digits of a code.
const CODE_DIGITS: u32 = 8;

type HmacSha256 = Hmac<Sha256>;

struct Challenge {
    secret_id: String,
    token_id: String,
    mac: [u8; 32],
    created: Now,
    attempts: u8,
}

impl Challenge {
    fn expires(&self) -> Instant {
        self.created.mono + CHALLENGE_TTL
    }
}

struct Approval {
    secret_id: String,
    token_id: String,
    expires: Instant,
}

/// A challenge just opened: what the child gets and what the operator
/// sees. The code is wiped on drop.
pub struct Opened {
    /// The challenge's id (given to the child).
    pub id: String,
    /// The code (shown to the operator only).
    pub code: Zeroizing<String>,
    /// When it expires, RFC 3339.
    pub expires_at: String,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The outcome of an operator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Right code: one read of `secret_id` by `token_id` is approved.
    Approved {
        /// The secret.
        secret_id: String,
        /// The token that asked.
        token_id: String,
    },
    /// Wrong code; `left` answers remain.
    Wrong {
        /// The secret.
        secret_id: String,
        /// Answers left.
        left: u8,
    },
    /// Wrong code, the last one allowed: the challenge is gone.
    Locked {
        /// The secret.
        secret_id: String,
    },
    /// No such challenge (never opened, answered, expired or locked).
    Unknown,
}

/// A pending challenge, as the admin socket lists it (never the code).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pending {
    /// The challenge's id.
    pub challenge_id: String,
    /// The secret it would release.
    pub secret_id: String,
    /// The token that asked (its public id).
    pub token_id: String,
    /// When it was opened.
    pub created_at: String,
    /// When it expires.
    pub expires_at: String,
    /// Answers left.
    pub attempts_left: u8,
}

/// Challenges and approvals of one run.
pub struct Approvals {
    /// `HITL_CHALLENGE_HMAC_KEY`, or a random key made for the first
    /// challenge (a run that never opens one makes none).
    key: Option<SecretBytes>,
    challenges: BTreeMap<String, Challenge>,
    approved: Vec<Approval>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("challenges", &self.challenges.len())
            .field("approved", &self.approved.len())
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// Challenges keyed with `key`; without one, [`Approvals::open`]
    /// needs [`Approvals::set_key`] first.
    pub fn new(key: Option<SecretBytes>) -> Self {
        Approvals {
            key,
            challenges: BTreeMap::new(),
            approved: Vec::new(),
        }
    }

    /// Whether a key must be set before a challenge can be opened.
    pub fn needs_key(&self) -> bool {
        self.key.is_none()
    }

    /// Set the key (once: a key in use is never replaced).
    pub fn set_key(&mut self, key: SecretBytes) {
        if self.key.is_none() {
            self.key = Some(key);
        }
    }

    fn mac(&self, challenge_id: &str, code: &[u8]) -> Option<HmacSha256> {
        let mut mac = match HmacSha256::new_from_slice(self.key.as_ref()?.expose()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(challenge_id.as_bytes());
        mac.update(b":");
        mac.update(code);
        Some(mac)
    }

    /// Forget what has expired.
    pub fn prune(&mut self, now: Now) {
        self.challenges.retain(|_, c| c.expires() > now.mono);
        self.approved.retain(|a| a.expires > now.mono);
    }

    /// Whether an approval for one read of `secret_id` by `token_id` is
    /// waiting (not used up).
    pub fn is_approved(&self, secret_id: &str, token_id: &str, now: Now) -> bool {
        self.approved
            .iter()
            .any(|a| a.secret_id == secret_id && a.token_id == token_id && a.expires > now.mono)
    }

    /// Use up the approval for one read; whether there was one.
    pub fn consume(&mut self, secret_id: &str, token_id: &str, now: Now) -> bool {
        match self.approved.iter().position(|a| {
            a.secret_id == secret_id && a.token_id == token_id && a.expires > now.mono
        }) {
            Some(i) => {
                self.approved.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// The open challenge for `secret_id` asked by `token_id`: its id and
    /// expiry (a repeated call gets the same challenge, not a new code).
    pub fn pending(&self, secret_id: &str, token_id: &str, now: Now) -> Option<(String, String)> {
        self.challenges
            .iter()
            .find(|(_, c)| {
                c.secret_id == secret_id && c.token_id == token_id && c.expires() > now.mono
            })
            .map(|(id, c)| (id.clone(), rfc3339(now.wall_of(c.expires()))))
    }

    /// Open a challenge for `secret_id` asked by `token_id`, from 32 random
    /// bytes: 16 make the id, 8 the code. `None` when no key is set.
    pub fn open(
        &mut self,
        secret_id: &str,
        token_id: &str,
        random: &[u8; CHALLENGE_RANDOM_BYTES],
        now: Now,
    ) -> Option<Opened> {
        self.key.as_ref()?;
        let id: String = random[..16].iter().map(|b| format!("{b:02x}")).collect();
        let mut n = [0u8; 8];
        n.copy_from_slice(&random[16..24]);
        let number = u64::from_le_bytes(n) % 10u64.pow(CODE_DIGITS);
        n.fill(0);
        let code = Zeroizing::new(format!("{:04}-{:04}", number / 10_000, number % 10_000));
        let digits = normalize(code.as_bytes());
        let mac: [u8; 32] = self.mac(&id, &digits)?.finalize().into_bytes().into();
        let challenge = Challenge {
            secret_id: secret_id.to_string(),
            token_id: token_id.to_string(),
            mac,
            created: now,
            attempts: 0,
        };
        let expires_at = rfc3339(now.wall_of(challenge.expires()));
        self.challenges.insert(id.clone(), challenge);
        Some(Opened {
            id,
            code,
            expires_at,
        })
    }

    /// The operator's answer `code` to `challenge_id`.
    pub fn answer(&mut self, challenge_id: &str, code: &[u8], now: Now) -> Answer {
        self.prune(now);
        let digits = normalize(code);
        let right = match self.challenges.get(challenge_id) {
            None => return Answer::Unknown,
            // Constant time: `verify_slice` compares with `subtle`.
            Some(c) => self
                .mac(challenge_id, &digits)
                .is_some_and(|m| m.verify_slice(&c.mac).is_ok()),
        };
        let Some(c) = self.challenges.get_mut(challenge_id) else {
            return Answer::Unknown;
        };
        if right {
            let c = match self.challenges.remove(challenge_id) {
                Some(c) => c,
                None => return Answer::Unknown,
            };
            self.approved.push(Approval {
                secret_id: c.secret_id.clone(),
                token_id: c.token_id.clone(),
                expires: c.expires(),
            });
            return Answer::Approved {
                secret_id: c.secret_id,
                token_id: c.token_id,
            };
        }
        c.attempts += 1;
        if c.attempts >= MAX_ATTEMPTS {
            let secret_id = c.secret_id.clone();
            self.challenges.remove(challenge_id);
            return Answer::Locked { secret_id };
        }
        Answer::Wrong {
            secret_id: c.secret_id.clone(),
            left: MAX_ATTEMPTS - c.attempts,
        }
    }

    /// End every challenge and approval for `secret_id` (revoked).
    pub fn forget_secret(&mut self, secret_id: &str) {
        self.challenges.retain(|_, c| c.secret_id != secret_id);
        self.approved.retain(|a| a.secret_id != secret_id);
    }

    /// End every challenge and approval (a reload).
    pub fn clear(&mut self) {
        self.challenges.clear();
        self.approved.clear();
    }

    /// The open challenges (never a code).
    pub fn list(&self, now: Now) -> Vec<Pending> {
        self.challenges
            .iter()
            .filter(|(_, c)| c.expires() > now.mono)
            .map(|(id, c)| Pending {
                challenge_id: id.clone(),
                secret_id: c.secret_id.clone(),
                token_id: c.token_id.clone(),
                created_at: rfc3339(c.created.wall),
                expires_at: rfc3339(now.wall_of(c.expires())),
                attempts_left: MAX_ATTEMPTS - c.attempts,
            })
            .collect()
    }
}

/// The digits of a typed code (`1234-5678`, `1234 5678` and `12345678`
/// are the same code).
fn normalize(code: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        code.iter()
            .copied()
            .filter(|b| !matches!(b, b'-' | b' ' | b'\t' | b'\r' | b'\n'))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approvals() -> Approvals {
        Approvals::new(Some(SecretBytes::copy_from(b"a key for the tests only")))
    }

    fn random(seed: u8) -> [u8; 32] {
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
    }

    #[test]
    fn a_right_code_approves_one_read_by_the_token_that_asked() {
        let now = Now::system();
        let mut a = approvals();
        let opened = a.open("billing", "t1", &random(1), now).expect("opened");
        assert_eq!(opened.id.len(), 32);
        assert_eq!(opened.code.len(), 9, "{}", opened.code.len());
        // The same token asking again gets the same challenge.
        assert_eq!(
            a.pending("billing", "t1", now).map(|p| p.0),
            Some(opened.id.clone())
        );
        assert_eq!(a.pending("billing", "t2", now), None);
        assert!(!a.is_approved("billing", "t1", now));
        let typed = opened.code.replace('-', " ");
        assert_eq!(
            a.answer(&opened.id, typed.as_bytes(), now),
            Answer::Approved {
                secret_id: "billing".into(),
                token_id: "t1".into()
            }
        );
        // Answered: the challenge is gone; one read is approved, once.
        assert_eq!(
            a.answer(&opened.id, opened.code.as_bytes(), now),
            Answer::Unknown
        );
        assert!(!a.is_approved("billing", "t2", now));
        assert!(a.is_approved("billing", "t1", now));
        assert!(a.consume("billing", "t1", now));
        assert!(!a.consume("billing", "t1", now));
    }

    #[test]
    fn three_wrong_answers_lock_the_challenge() {
        let now = Now::system();
        let mut a = approvals();
        let opened = a.open("billing", "t1", &random(2), now).expect("opened");
        let wrong = if opened.code.as_str() == "0000-0000" {
            "0000-0001"
        } else {
            "0000-0000"
        };
        assert_eq!(
            a.answer(&opened.id, wrong.as_bytes(), now),
            Answer::Wrong {
                secret_id: "billing".into(),
                left: 2
            }
        );
        assert!(matches!(
            a.answer(&opened.id, wrong.as_bytes(), now),
            Answer::Wrong { left: 1, .. }
        ));
        assert!(matches!(
            a.answer(&opened.id, wrong.as_bytes(), now),
            Answer::Locked { .. }
        ));
        // Even the right code is refused now.
        assert_eq!(
            a.answer(&opened.id, opened.code.as_bytes(), now),
            Answer::Unknown
        );
        assert!(!a.is_approved("billing", "t1", now));
    }

    #[test]
    fn challenges_and_approvals_expire_and_end_on_revocation() {
        let now = Now::system();
        let mut a = approvals();
        let opened = a.open("billing", "t1", &random(3), now).expect("opened");
        let later = now.plus(CHALLENGE_TTL);
        assert_eq!(a.pending("billing", "t1", later), None);
        assert_eq!(
            a.answer(&opened.id, opened.code.as_bytes(), later),
            Answer::Unknown
        );

        let opened = a.open("billing", "t1", &random(4), now).expect("opened");
        assert!(matches!(
            a.answer(&opened.id, opened.code.as_bytes(), now),
            Answer::Approved { .. }
        ));
        assert!(
            !a.is_approved("billing", "t1", later),
            "approvals expire too"
        );
        a.forget_secret("billing");
        assert!(
            !a.consume("billing", "t1", now),
            "revocation ends approvals"
        );

        let opened = a.open("billing", "t1", &random(5), now).expect("opened");
        a.forget_secret("billing");
        assert_eq!(
            a.answer(&opened.id, opened.code.as_bytes(), now),
            Answer::Unknown
        );
    }

    #[test]
    fn the_list_and_debug_never_show_a_code() {
        let now = Now::system();
        let mut a = approvals();
        let opened = a.open("billing", "t1", &random(6), now).expect("opened");
        let listed = serde_json::to_string(&a.list(now)).expect("json");
        assert!(listed.contains(&opened.id));
        let digits: String = opened.code.chars().filter(char::is_ascii_digit).collect();
        for text in [listed, format!("{a:?}"), format!("{opened:?}")] {
            assert!(
                !text.contains(opened.code.as_str()) && !text.contains(&digits),
                "{text}"
            );
        }
    }

    #[test]
    fn codes_are_eight_digits_from_the_random_bytes() {
        let now = Now::system();
        let mut a = approvals();
        let one = a.open("s", "t", &random(7), now).expect("opened");
        let two = a.open("s", "t", &random(8), now).expect("opened");
        assert_ne!(one.id, two.id);
        assert_ne!(one.code, two.code);
        for o in [&one, &two] {
            let digits: Vec<char> = o.code.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(digits.len(), 8);
            assert_eq!(o.code.as_bytes()[4], b'-');
        }
    }
}
