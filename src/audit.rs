//! The audit log: one JSON object per line, appended to a 0600 file, one
//! `write(2)` per event on an `O_APPEND` descriptor with no user-space
//! buffer, so a recorded event is in the file when [`Auditor::record`]
//! returns (a crash of keywarden loses none; a crash of the machine may
//! lose the last ones, as no event is fsynced: that would cost a disk round
//! trip on every socket call).
//!
//! Every line has the fields of the contract — `ts`, `event`, `secret_id`,
//! `ref`, `scope`, `env`, `actor` (`pid`, `uid`, `exe`, `token_id`),
//! `result`, `reason` — `null` where they do not apply, plus a few fields
//! particular to some events (`status`, `signal`, `call`, `served`,
//! `minted`, `counts`, `fingerprint`). No field can hold a secret: values
//! are only ever represented by a keyed fingerprint,
//! `hex(hmac-sha256(audit_key, value))[..16]`, and only when an audit key is
//! configured (`KEYWARDEN_AUDIT_KEY`, hex). Tokens appear by their public id.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::{SecretBytes, SecretRef};

/// The variable the audit key is read from (hex; at least 16 bytes).
pub const AUDIT_KEY_VAR: &str = "KEYWARDEN_AUDIT_KEY";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// keywarden started a run.
    RunStart,
    /// keywarden is about to exit.
    RunStop,
    /// A ref was resolved (or failed to).
    Resolve,
    /// A secret was injected into the child's environment.
    Inject,
    /// The child was started.
    ChildStart,
    /// The child ended.
    ChildExit,
    /// A call on the socket API (child or admin).
    ApiCall,
    /// A narrower token was minted.
    TokenMint,
    /// A call was refused for its peer or its token.
    AuthFailure,
    /// A secret was revoked.
    Revoke,
    /// Registry and policy were re-read and secrets re-resolved.
    Reload,
    /// How many replacements the redactor made, per secret id.
    RedactionCounts,
    /// A human-in-the-loop challenge was opened (never its code).
    Challenge,
    /// The operator answered a challenge (never the code).
    Approve,
    /// A request through the credential proxy (never a header or a body).
    Proxy,
}

impl EventKind {
    /// The name written in the `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunStart => "run_start",
            EventKind::RunStop => "run_stop",
            EventKind::Resolve => "resolve",
            EventKind::Inject => "inject",
            EventKind::ChildStart => "child_start",
            EventKind::ChildExit => "child_exit",
            EventKind::ApiCall => "api_call",
            EventKind::TokenMint => "token_mint",
            EventKind::AuthFailure => "auth_failure",
            EventKind::Revoke => "revoke",
            EventKind::Reload => "reload",
            EventKind::RedactionCounts => "redaction_counts",
            EventKind::Challenge => "challenge",
            EventKind::Approve => "approve",
            EventKind::Proxy => "proxy",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It worked.
    Ok,
    /// It was refused (auth, scope, revocation, policy).
    Denied,
    /// It failed.
    Error,
}

/// Who asked: a socket peer, as the kernel reported it, and the token it
/// presented (by public id; never the token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The peer's pid (`SO_PEERCRED`).
    pub pid: Option<i32>,
    /// The peer's uid (`SO_PEERCRED`).
    pub uid: Option<u32>,
    /// The peer's executable (`/proc/<pid>/exe`), when readable.
    pub exe: Option<String>,
    /// The public id of the token presented.
    pub token_id: Option<String>,
}

/// A token given out, by its public attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Minted {
    /// Its public id.
    pub token_id: String,
    /// The id of the token that minted it.
    pub parent: Option<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it stops working (RFC 3339), if ever.
    pub expires_at: Option<String>,
}

/// One audit event. Built with the methods below; there is no way to put a
/// value in it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    ts: String,
    event: EventKind,
    secret_id: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    scope: Option<Vec<String>>,
    env: Option<String>,
    actor: Option<Actor>,
    result: Option<Outcome>,
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    served: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minted: Option<Minted>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counts: Option<BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    child_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    /// An id the request named that is no secret of this run: recorded
    /// only as a keyed fingerprint, under the key the field names.
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_id_hmac_audit_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_id_hmac_run_key: Option<String>,
    /// The unknown id itself, until [`Auditor::record`] fingerprints it.
    #[serde(skip)]
    unknown_id: Option<Unrecorded>,
}

/// A string from a request that is never written as it is (its `Debug`
/// shows nothing of it); wiped on drop.
#[derive(Clone)]
struct Unrecorded(zeroize::Zeroizing<String>);

impl std::fmt::Debug for Unrecorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unrecorded")
    }
}

impl Event {
    /// An event of `kind`; `ts` and `env` are filled in when recorded.
    pub fn new(kind: EventKind) -> Self {
        Event {
            ts: String::new(),
            event: kind,
            secret_id: None,
            reference: None,
            scope: None,
            env: None,
            actor: None,
            result: None,
            reason: None,
            fingerprint: None,
            status: None,
            signal: None,
            call: None,
            served: None,
            minted: None,
            counts: None,
            child_pid: None,
            unknown_id_hmac_audit_key: None,
            unknown_id_hmac_run_key: None,
            unknown_id: None,
            method: None,
            path: None,
            request_bytes: None,
            response_bytes: None,
            duration_ms: None,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> EventKind {
        self.event
    }

    /// The secret concerned: its id, ref and scope labels.
    pub fn secret(mut self, id: &str, reference: &SecretRef, scope: &[String]) -> Self {
        self.secret_id = Some(id.to_string());
        self.reference = Some(reference.to_string());
        self.scope = Some(scope.to_vec());
        self
    }

    /// Only the secret id (when the ref is unknown, e.g. an unknown id).
    pub fn secret_id(mut self, id: &str) -> Self {
        self.secret_id = Some(id.to_string());
        self
    }

    /// An id a request named that is no secret of this run (a typo, or a
    /// value sent by mistake): written only as a keyed fingerprint,
    /// `unknown_id_hmac_audit_key` (with `KEYWARDEN_AUDIT_KEY`) or else
    /// `unknown_id_hmac_run_key` (a random key of this run: equal ids match
    /// within one run, and nothing can be matched after it).
    pub fn unknown_secret_id(mut self, id: &str) -> Self {
        self.unknown_id = Some(Unrecorded(zeroize::Zeroizing::new(id.to_string())));
        self
    }

    /// Every string field through the records' matcher
    /// ([`crate::redact::live::scrub_record`]): a defence in depth behind
    /// the rule that no field quotes a value.
    fn scrub(&mut self) {
        use crate::redact::live::scrub_record_in as scrub;
        let opt = |s: &mut Option<String>| {
            if let Some(s) = s.as_mut() {
                scrub(s);
            }
        };
        let list = |l: &mut Option<Vec<String>>| {
            l.iter_mut().flatten().for_each(scrub);
        };
        opt(&mut self.secret_id);
        opt(&mut self.reference);
        list(&mut self.scope);
        opt(&mut self.reason);
        opt(&mut self.signal);
        opt(&mut self.call);
        list(&mut self.served);
        if let Some(a) = self.actor.as_mut() {
            opt(&mut a.exe);
            opt(&mut a.token_id);
        }
        if let Some(m) = self.minted.as_mut() {
            m.scopes.iter_mut().for_each(scrub);
        }
        if let Some(counts) = self.counts.take() {
            self.counts = Some(
                counts
                    .into_iter()
                    .map(|(mut k, v)| {
                        scrub(&mut k);
                        (k, v)
                    })
                    .collect(),
            );
        }
    }

    /// Who asked.
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// How it ended.
    pub fn result(mut self, outcome: Outcome) -> Self {
        self.result = Some(outcome);
        self
    }

    /// Why (must be free of values, like every error message).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// A keyed fingerprint of the value (from [`Auditor::fingerprint`]).
    pub fn fingerprint(mut self, fingerprint: Option<String>) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// A numeric status: the child's exit code, or an HTTP status.
    pub fn status(mut self, status: i64) -> Self {
        self.status = Some(status);
        self
    }

    /// The signal that killed the child.
    pub fn signal(mut self, name: impl Into<String>) -> Self {
        self.signal = Some(name.into());
        self
    }

    /// The socket call, e.g. `GET /v1/secrets/openai`.
    pub fn call(mut self, call: impl Into<String>) -> Self {
        self.call = Some(call.into());
        self
    }

    /// The ids of the secrets a call returned (for calls that return many).
    pub fn served(mut self, ids: Vec<String>) -> Self {
        self.served = Some(ids);
        self
    }

    /// The token minted.
    pub fn minted(mut self, minted: Minted) -> Self {
        self.minted = Some(minted);
        self
    }

    /// Redaction counts per secret id.
    pub fn counts(mut self, counts: BTreeMap<String, u64>) -> Self {
        self.counts = Some(counts);
        self
    }

    /// A proxied request: method, path (no query; redacted by the
    /// caller), body bytes each way (request: child to upstream;
    /// response: to the child) and how long it took.
    pub fn proxied(
        mut self,
        method: &str,
        path: &str,
        request_bytes: u64,
        response_bytes: u64,
        took: std::time::Duration,
    ) -> Self {
        self.method = Some(method.to_string());
        self.path = Some(path.to_string());
        self.request_bytes = Some(request_bytes);
        self.response_bytes = Some(response_bytes);
        self.duration_ms = Some((took.as_secs_f64() * 1e6).round() / 1e3);
        self
    }

    /// The child's pid.
    pub fn child_pid(mut self, pid: i32) -> Self {
        self.child_pid = Some(pid);
        self
    }

    /// This event as one JSON line (`ts` and `env` as given).
    fn to_line(&self) -> Vec<u8> {
        // Sized for a typical line, so serializing does not reallocate.
        let mut line = Vec::with_capacity(512);
        if serde_json::to_writer(&mut line, self).is_err() {
            line.clear();
            let fallback = format!(
                "{{\"event\":\"{}\",\"result\":\"error\"}}",
                self.event.as_str()
            );
            line.extend_from_slice(fallback.as_bytes());
        }
        line.push(b'\n');
        line
    }
}

/// The audit log file and the key for fingerprints.
struct AuditLog {
    file: Mutex<File>,
    path: PathBuf,
    env: &'static str,
    key: Option<SecretBytes>,
    /// A random key of this run, for fingerprints without `key`.
    run_key: std::sync::OnceLock<SecretBytes>,
    warned: AtomicBool,
}

/// A cheap handle on the audit log, or on nothing when auditing is off
/// (then every call is a no-op). Clone it freely.
#[derive(Clone, Default)]
pub struct Auditor {
    inner: Option<Arc<AuditLog>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Auditor(off)"),
            Some(log) => f
                .debug_struct("Auditor")
                .field("path", &log.path)
                .field("keyed", &log.key.is_some())
                .finish(),
        }
    }
}

impl Auditor {
    /// No audit log.
    pub fn disabled() -> Self {
        Auditor { inner: None }
    }

    /// Open (create, or append to) the audit log at `path`, mode 0600.
    /// `key` is the fingerprint key, see [`parse_audit_key`].
    pub fn open(path: &Path, env: Environment, key: Option<SecretBytes>) -> Result<Self> {
        let fail = |e: std::io::Error| {
            Error::new(
                crate::error::io_kind(&e),
                format!("{}: cannot open the audit log: {e}", path.display()),
            )
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)
            .map_err(fail)?;
        let meta = file.metadata().map_err(fail)?;
        if !meta.file_type().is_file() {
            return Err(Error::config(format!(
                "{}: the audit log must be a regular file",
                path.display()
            )));
        }
        // An existing file keeps its mode on open: narrow it.
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(fail)?;
        }
        Ok(Auditor {
            inner: Some(Arc::new(AuditLog {
                file: Mutex::new(file),
                path: path.to_path_buf(),
                env: env.as_str(),
                key,
                run_key: std::sync::OnceLock::new(),
                warned: AtomicBool::new(false),
            })),
        })
    }

    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `hex(hmac-sha256(audit_key, value))[..16]`, when auditing with a key.
    pub fn fingerprint(&self, value: &[u8]) -> Option<String> {
        let key = self.inner.as_ref()?.key.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose()).ok()?;
        mac.update(value);
        let tag = mac.finalize().into_bytes();
        Some(hex(&tag[..8]))
    }

    /// Replace the event's unknown id by its keyed fingerprint.
    fn fingerprint_unknown_id(log: &AuditLog, event: &mut Event) {
        let Some(id) = event.unknown_id.take() else {
            return;
        };
        let tag = |key: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
            mac.update(id.0.as_bytes());
            Some(hex(&mac.finalize().into_bytes()[..8]))
        };
        match &log.key {
            Some(k) => event.unknown_id_hmac_audit_key = tag(k.expose()),
            None => {
                let key = log.run_key.get_or_init(|| {
                    let mut b = [0u8; 32];
                    // Without randomness the fingerprint is still keyed by
                    // something no record holds: the time and the pid.
                    if crate::sys::random::fill(&mut b).is_err() {
                        let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
                        b[..].copy_from_slice(&Sha256::digest(seed.as_bytes()));
                    }
                    SecretBytes::copy_from(&b)
                });
                event.unknown_id_hmac_run_key = tag(key.expose());
            }
        }
    }

    /// Append `event`. Fails when the line cannot be written: callers that
    /// must not act unaudited (serving a value) refuse on error; others use
    /// [`Auditor::note`].
    pub fn record(&self, mut event: Event) -> Result<()> {
        let Some(log) = &self.inner else {
            return Ok(());
        };
        event.ts = rfc3339(SystemTime::now());
        Self::fingerprint_unknown_id(log, &mut event);
        event.scrub();
        if event.env.is_none() {
            event.env = Some(log.env.to_string());
        }
        let line = event.to_line();
        let mut file = log.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)
            .and_then(|_| file.flush())
            .map_err(|e| {
                Error::new(
                    ErrorKind::Os,
                    format!("{}: cannot write the audit log: {e}", log.path.display()),
                )
            })
    }

    /// Append `event`; on failure warn once and go on.
    pub fn note(&self, event: Event) {
        if let Err(e) = self.record(event) {
            if let Some(log) = &self.inner {
                if !log.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!("{e}");
                }
            }
        }
    }
}

/// Parse the audit key: hex, an even number of digits, at least 32 (16
/// bytes). The message never quotes the input.
pub fn parse_audit_key(text: &[u8]) -> Result<SecretBytes> {
    let text = text.trim_ascii();
    let bad = || {
        Error::config(format!(
            "{AUDIT_KEY_VAR}: expected at least 32 hex digits (an even number; value not shown)"
        ))
    };
    if text.len() < 32 || text.len() % 2 != 0 {
        return Err(bad());
    }
    let mut key = Vec::with_capacity(text.len() / 2);
    for pair in text.chunks_exact(2) {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(h), Some(l)) => key.push(h << 4 | l),
            _ => {
                zeroize::Zeroize::zeroize(&mut key);
                return Err(bad());
            }
        }
    }
    Ok(SecretBytes::from_vec(key))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// A system time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    crate::timefmt::rfc3339_millis(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_known_dates() {
        let at = |s: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn audit_key_parsing_never_echoes() {
        let good = hex(&[0xab; 16]);
        assert_eq!(
            parse_audit_key(good.as_bytes()).expect("key").expose(),
            &[0xab; 16]
        );
        for bad in [
            "abc".to_string(),
            "zz".repeat(16),
            format!("{good}0"),
            String::new(),
        ] {
            let e = parse_audit_key(bad.as_bytes()).expect_err(&bad);
            assert_eq!(e.exit_code(), 78);
            if !bad.is_empty() {
                assert!(!e.to_string().contains(&bad));
            }
        }
    }

    #[test]
    fn events_have_every_contract_field_and_no_value_slot() {
        let r = SecretRef::parse("kv://openai/dev").expect("ref");
        let e = Event::new(EventKind::Resolve)
            .secret("openai", &r, &["llm:chat".to_string()])
            .result(Outcome::Ok);
        let v: serde_json::Value = serde_json::from_slice(&e.to_line()).expect("json");
        for field in [
            "ts",
            "event",
            "secret_id",
            "ref",
            "scope",
            "env",
            "actor",
            "result",
            "reason",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
        assert_eq!(v["event"], "resolve");
        assert_eq!(v["ref"], "kv://openai/dev");
        assert!(v.get("fingerprint").is_none());
    }

    #[test]
    fn records_lines_0600_with_keyed_fingerprints() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let key = parse_audit_key(hex(&[7; 32]).as_bytes()).expect("key");
        let audit = Auditor::open(&path, Environment::Ci, Some(key)).expect("open");
        let value = format!("canary-{}", std::process::id());
        let fp = audit.fingerprint(value.as_bytes()).expect("fingerprint");
        assert_eq!(fp.len(), 16);
        assert_ne!(Some(fp.clone()), Auditor::disabled().fingerprint(b"x"));
        audit
            .record(
                Event::new(EventKind::ChildExit)
                    .status(143)
                    .signal("SIGTERM"),
            )
            .expect("record");
        audit.note(Event::new(EventKind::Inject).fingerprint(Some(fp.clone())));
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["env"], "ci");
        assert_eq!(lines[0]["status"], 143);
        assert_eq!(lines[1]["fingerprint"], fp.as_str());
        assert!(!text.contains(&value));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Auditor::disabled()
            .record(Event::new(EventKind::RunStop))
            .is_ok());
    }

    #[test]
    fn every_field_goes_through_the_records_matcher_and_unknown_ids_are_keyed() {
        use crate::redact::{Mask, Matcher, Secret};
        use base64::Engine;
        let value = format!("records-canary-{}-{}", std::process::id(), hex(&[0x5a; 6]));
        let matcher = Matcher::new(
            &[Secret {
                id: "canary",
                value: value.as_bytes(),
            }],
            &Mask::default(),
        );
        let cell = Arc::new(crate::redact::live::MatcherCell::new(matcher));
        crate::redact::live::scrub_records_with(cell);
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let audit = Auditor::open(&path, Environment::Dev, None).expect("open");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
        audit
            .record(
                Event::new(EventKind::ApiCall)
                    .reason(format!("why: {value}"))
                    .call(format!("GET /{b64}"))
                    .actor(Actor {
                        exe: Some(format!("/tmp/{value}")),
                        ..Actor::default()
                    })
                    .unknown_secret_id(&value),
            )
            .expect("record");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&value) && !text.contains(&b64), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["reason"], "why: [REDACTED:canary]");
        assert!(v["secret_id"].is_null());
        assert_eq!(
            v["unknown_id_hmac_run_key"].as_str().map(str::len),
            Some(16),
            "{v}"
        );
        assert!(!format!(
            "{:?}",
            Event::new(EventKind::ApiCall).unknown_secret_id(&value)
        )
        .contains(&value));
    }

    #[test]
    fn widens_no_existing_file_and_refuses_symlinks() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, "").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        Auditor::open(&path, Environment::Dev, None).expect("open");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(Auditor::open(&link, Environment::Dev, None).is_err());
    }
}
