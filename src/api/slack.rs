//! Slack request verification (signing secret, "v0" scheme): the signature
//! is `v0=` + hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + body)), and
//! the timestamp must be within five minutes of now. Pure; the comparison
//! is constant-time (`Mac::verify_slice`).

#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far the timestamp may be from now, either way, in seconds.
pub const WINDOW_SECONDS: i64 = 300;

/// Why a request does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The timestamp is not a number of seconds.
    BadTimestamp,
    /// The timestamp is more than five minutes from now.
    Stale,
    /// Not `v0=` followed by 64 hex digits.
    BadSignature,
    /// The signature does not match the timestamp and body.
    Mismatch,
}

impl Invalid {
    /// The `reason` given to the client.
    pub fn reason(self) -> &'static str {
        match self {
            Invalid::BadTimestamp => "timestamp is not a number of seconds",
            Invalid::Stale => "timestamp is outside the 5-minute window",
            Invalid::BadSignature => "signature is not v0= followed by 64 hex digits",
            Invalid::Mismatch => "signature does not match",
        }
    }
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Check a Slack request signed with `secret`, at unix time `now`.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), Invalid> {
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::BadTimestamp);
    }
    let ts: i64 = timestamp.parse().map_err(|_| Invalid::BadTimestamp)?;
    if (now - ts).abs() > WINDOW_SECONDS {
        return Err(Invalid::Stale);
    }
    let given = signature
        .strip_prefix("v0=")
        .filter(|h| h.len() == 64)
        .and_then(|h| unhex(h.as_bytes()))
        .ok_or(Invalid::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Invalid::Mismatch)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| Invalid::Mismatch)
}

/// Sign like Slack does (for tests and for clients of keywarden's tests).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", crate::audit::hex(&mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac() {
        // openssl computes the same tag from a key and body made here.
        let key = format!("k{}-{}", std::process::id(), line!());
        let ts = "1531420618";
        let body = "team_id=T1&command=%2Fdeploy&text=a+b";
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", &key, "-r"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                let mut stdin = c.stdin.take().expect("stdin");
                stdin.write_all(format!("v0:{ts}:{body}").as_bytes())?;
                drop(stdin);
                c.wait_with_output()
            });
        let Ok(out) = out else {
            return; // no openssl on this machine
        };
        let hex = String::from_utf8_lossy(&out.stdout);
        let want = format!("v0={}", hex.split_whitespace().next().unwrap_or(""));
        assert_eq!(sign(key.as_bytes(), ts, body.as_bytes()), want);
        assert_eq!(
            verify(key.as_bytes(), ts, &want, body.as_bytes(), 1_531_420_700),
            Ok(())
        );
    }

    #[test]
    fn refusals() {
        let secret = format!("s{}", std::process::id());
        let s = secret.as_bytes();
        let now = 1_700_000_000;
        let ts = now.to_string();
        let sig = sign(s, &ts, b"a=1");
        assert_eq!(verify(s, &ts, &sig, b"a=1", now), Ok(()));
        assert_eq!(verify(s, &ts, &sig, b"a=2", now), Err(Invalid::Mismatch));
        let old = (now - 301).to_string();
        let old_sig = sign(s, &old, b"a=1");
        assert_eq!(verify(s, &old, &old_sig, b"a=1", now), Err(Invalid::Stale));
        assert_eq!(verify(s, &old, &old_sig, b"a=1", now - 1), Ok(()));
        assert_eq!(
            verify(s, "12x", &sig, b"a=1", now),
            Err(Invalid::BadTimestamp)
        );
        assert_eq!(verify(s, "", &sig, b"a=1", now), Err(Invalid::BadTimestamp));
        assert_eq!(
            verify(s, "-5", &sig, b"a=1", now),
            Err(Invalid::BadTimestamp)
        );
        assert_eq!(
            verify(s, &ts, &sig[3..], b"a=1", now),
            Err(Invalid::BadSignature)
        );
        assert_eq!(
            verify(s, &ts, &format!("{}zz", &sig[..sig.len() - 2]), b"a=1", now),
            Err(Invalid::BadSignature)
        );
        assert_eq!(
            verify(b"other", &ts, &sig, b"a=1", now),
            Err(Invalid::Mismatch)
        );
    }
}
