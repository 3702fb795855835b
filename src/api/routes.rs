//! The socket API's calls, as a pure function of a request and the
//! [`State`]: status, JSON body, what to audit. Values that need resolving
//! again come back as [`Handled::Refresh`]; the server resolves them and
//! asks again. Order of checks for a secret: token (401) → id (404) → scope
//! (403) → revocation (410) → approval (202 with a challenge, until the
//! operator answers it) → value.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use hyper::Method;
use serde::Deserialize;

use super::approvals::{Answer, Approvals, CHALLENGE_RANDOM_BYTES};
use super::json::{self, Body, Part};
use super::revocations::Revocation;
use super::slack;
use super::state::{Entry, Now, Settings, State};
use super::tokens::{AuthError, MintError, TOKEN_RANDOM_BYTES};
use crate::audit::{rfc3339, Event, EventKind, Minted, Outcome};
use crate::config::Approval;
use crate::secret::SecretRef;

/// Random bytes for a new token, from the caller.
pub type Random<'a> = &'a mut dyn FnMut() -> Option<[u8; TOKEN_RANDOM_BYTES]>;

/// One HTTP call, as far as the routes care.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path (no query).
    pub path: &'a str,
    /// The bearer token: `None` without an `Authorization` header, empty
    /// when the header is not `Bearer <token>`.
    pub bearer: Option<&'a [u8]>,
    /// The request body.
    pub body: &'a [u8],
}

/// How the call authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The call needs no token.
    Open,
    /// No token was presented.
    Missing,
    /// A token was presented and refused.
    Failed(AuthError),
    /// The token with this id was accepted.
    Granted(String),
}

/// The secret a call was about (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Id.
    pub id: String,
    /// Ref, when the id is known.
    pub reference: Option<SecretRef>,
    /// Scope labels, when the id is known.
    pub scope: Vec<String>,
}

/// The answer to a call.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body (wiped on drop).
    pub body: Body,
    /// How the call authenticated.
    pub auth: Auth,
    /// The secret concerned.
    pub subject: Option<Box<Subject>>,
    /// Ids of the secrets returned by a call that returns several.
    pub served: Option<Vec<String>>,
    /// Why it was refused or failed.
    pub reason: Option<String>,
    /// Further events to record (token mint, revoke).
    pub events: Vec<Event>,
    /// Whether the body holds a value or a token: such a reply is only
    /// sent once its call is in the audit log.
    pub carries_secret: bool,
    /// A challenge just opened, for the operator's eyes only (the server
    /// shows its code on keywarden's stderr; it is never logged).
    pub challenge: Option<Box<super::approvals::Opened>>,
    /// A token just minted, and when it expires: the relay must mask it
    /// before the reply goes out (SPEC Redaction).
    pub minted: Option<(crate::secret::SecretBytes, std::time::Instant)>,
}

impl Reply {
    fn ok(status: u16, body: Body, auth: Auth) -> Self {
        Reply {
            status,
            body,
            auth,
            subject: None,
            served: None,
            reason: None,
            events: Vec::new(),
            carries_secret: false,
            challenge: None,
            minted: None,
        }
    }

    /// A JSON error `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>, auth: Auth) -> Self {
        let message = message.into();
        Reply {
            body: json::error(&message),
            reason: Some(message),
            ..Reply::ok(status, Body::default(), auth)
        }
    }

    /// About an id the request named that is no secret here (recorded
    /// only as a keyed fingerprint).
    fn about_unknown(self, id: &str) -> Self {
        self.about(Subject {
            id: id.to_string(),
            reference: None,
            scope: Vec::new(),
        })
    }

    /// 403 for a secret served only through the credential proxy:
    /// `{"error": ..., "reason": "proxied"}`.
    pub fn proxied(id: &str, auth: Auth) -> Self {
        let message = format!(
            "secret '{id}' is served only through the credential proxy (its {{url}} and placeholder)"
        );
        Reply {
            body: json::to_body(&serde_json::json!({"error": message, "reason": "proxied"})),
            reason: Some(message),
            ..Reply::ok(403, Body::default(), auth)
        }
    }

    fn about(mut self, subject: Subject) -> Self {
        self.subject = Some(Box::new(subject));
        self
    }

    /// The outcome for the audit log.
    pub fn outcome(&self) -> Outcome {
        match self.status {
            200..=299 => Outcome::Ok,
            401 | 403 | 404 | 410 | 429 => Outcome::Denied,
            _ => Outcome::Error,
        }
    }
}

/// What the server must do with a call.
#[derive(Debug)]
pub enum Handled {
    /// Answer.
    Reply(Reply),
    /// Resolve these ids again, then handle the call again.
    Refresh(Vec<String>),
}

/// What the server must do with an admin call.
#[derive(Debug)]
pub enum AdminHandled {
    /// Answer.
    Reply(Reply),
    /// Call the reload callback, then answer with [`reloaded`].
    Reload,
    /// Answer, after adding `record` to the revocation list file.
    Revoked {
        /// The answer.
        reply: Reply,
        /// What to add to the list.
        record: Revocation,
    },
}

enum Route<'a> {
    Health,
    Secret(&'a str),
    Skill(&'a str),
    Mint,
    SlackVerify,
}

fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, (u16, String)> {
    // At most four segments matter (a fifth makes no route): no allocation.
    let mut segments = [""; 4];
    let mut n = 0;
    if let Some(rest) = path.strip_prefix("/v1/") {
        for part in rest.split('/') {
            if n == segments.len() {
                n += 1;
                break;
            }
            segments[n] = part;
            n += 1;
        }
    }
    let (route, want) = match segments.get(..n).unwrap_or(&[]) {
        ["health"] => (Route::Health, Method::GET),
        ["secrets", id] if !id.is_empty() => (Route::Secret(id), Method::GET),
        ["skills", skill, "secrets"] if !skill.is_empty() => (Route::Skill(skill), Method::GET),
        ["tokens"] => (Route::Mint, Method::POST),
        ["slack", "verify"] => (Route::SlackVerify, Method::POST),
        _ => return Err((404, "no such endpoint".to_string())),
    };
    if *method != want {
        return Err((405, format!("method not allowed; use {want}")));
    }
    Ok(route)
}

/// How a call is named in the audit log: its method and route, spelling
/// out a path segment only when this run knows it (a secret id, a skill
/// of a scope label); any other is written as its placeholder, since it
/// is what the request sent (SPEC invariant 7).
pub fn call_label(state: &State, admin: bool, method: &Method, path: &str) -> String {
    let method = match *method {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD => method.as_str(),
        Method::PATCH | Method::OPTIONS | Method::CONNECT | Method::TRACE => method.as_str(),
        _ => "(other method)",
    };
    let segments: Vec<&str> = match path.strip_prefix("/v1/") {
        Some(rest) => rest.split('/').collect(),
        None => Vec::new(),
    };
    let route = match (admin, segments.as_slice()) {
        (_, ["health"]) => "/v1/health".to_string(),
        (false, ["secrets", id]) if state.secrets.contains_key(*id) => format!("/v1/secrets/{id}"),
        (false, ["secrets", _]) => "/v1/secrets/{id}".to_string(),
        (false, ["skills", skill, "secrets"]) if state.knows_label(&format!("skill:{skill}")) => {
            format!("/v1/skills/{skill}/secrets")
        }
        (false, ["skills", _, "secrets"]) => "/v1/skills/{skill}/secrets".to_string(),
        (false, ["tokens"]) => "/v1/tokens".to_string(),
        (false, ["slack", "verify"]) => "/v1/slack/verify".to_string(),
        (true, ["admin", "inventory" | "revoke" | "reload" | "approvals"]) => {
            format!("/v1/{}", segments.join("/"))
        }
        (true, ["admin", "approvals", _]) => "/v1/admin/approvals/{challenge_id}".to_string(),
        _ => "(no such endpoint)".to_string(),
    };
    format!("{method} {route}")
}

fn health() -> Reply {
    Reply::ok(
        200,
        json::build(&[Part::Raw("{\"status\":\"ok\"}")]),
        Auth::Open,
    )
}

/// Handle a call on the child's socket.
pub fn handle(state: &mut State, call: &Call<'_>, now: Now, random: Random<'_>) -> Handled {
    let route = match route(call.method, call.path) {
        Ok(r) => r,
        Err((status, why)) => return Handled::Reply(Reply::error(status, why, Auth::Open)),
    };
    if let Route::Health = route {
        return Handled::Reply(health());
    }
    let Some(presented) = call.bearer else {
        return Handled::Reply(Reply::error(
            401,
            "missing token: send Authorization: Bearer <token>",
            Auth::Missing,
        ));
    };
    let grant = match state.tokens.authenticate(presented, now.mono) {
        Ok(g) => g,
        Err(e) => return Handled::Reply(Reply::error(401, e.reason(), Auth::Failed(e))),
    };
    let auth = Auth::Granted(grant.id.clone());
    match route {
        Route::Health => Handled::Reply(health()),
        // Reads borrow the grant from the token store while changing only
        // the secrets; minting changes the store, so it takes a copy.
        Route::Secret(id) => get_secret(
            &mut state.secrets,
            state.approvals.as_mut(),
            id,
            grant,
            auth,
            now,
            random,
        ),
        Route::Skill(skill) => get_skill(&mut state.secrets, skill, grant, auth, now),
        Route::Mint => {
            let grant = grant.clone();
            Handled::Reply(mint(state, call.body, &grant, auth, now, random))
        }
        // Any valid token: the answer is only whether a signature holds.
        Route::SlackVerify => {
            slack_verify(&state.settings, &mut state.secrets, call.body, auth, now)
        }
    }
}

fn get_secret(
    secrets: &mut BTreeMap<String, Entry>,
    approvals: Option<&mut Approvals>,
    id: &str,
    grant: &super::tokens::Grant,
    auth: Auth,
    now: Now,
    random: Random<'_>,
) -> Handled {
    let Some(e) = secrets.get_mut(id) else {
        // The id is not quoted back: it may be a value sent by mistake.
        return Handled::Reply(Reply::error(404, "no such secret", auth).about_unknown(id));
    };
    let subject = Subject {
        id: e.id.clone(),
        reference: Some(e.reference.clone()),
        scope: e.scope.clone(),
    };
    let refuse = |status, why: String| {
        Handled::Reply(Reply::error(status, why, auth.clone()).about(subject.clone()))
    };
    if e.proxied {
        return Handled::Reply(Reply::proxied(id, auth.clone()).about(subject.clone()));
    }
    if !grant.allows(&e.scope) {
        return refuse(403, format!("secret '{id}' is out of the token's scope"));
    }
    if e.revoked.is_some() {
        return refuse(410, format!("secret '{id}' is revoked"));
    }
    let mut approvals = approvals;
    if e.approval == Approval::Required {
        let Some(a) = approvals.as_deref_mut() else {
            return refuse(
                403,
                format!("secret '{id}' requires approval, and approvals are not set up"),
            );
        };
        a.prune(now);
        if !a.is_approved(id, &grant.id, now) {
            return challenge(a, id, grant, auth, subject, now, random);
        }
    }
    let fragment = e.reply_fragment(now);
    let gated = e.approval == Approval::Required;
    let Some(value) = e.fresh_value(now) else {
        return Handled::Refresh(vec![id.to_string()]);
    };
    if gated {
        // One approved read, used up now that the value is at hand.
        if let Some(a) = approvals {
            a.consume(id, &grant.id, now);
        }
    }
    let Ok(text) = std::str::from_utf8(value.expose()) else {
        return refuse(
            500,
            format!("secret '{id}' is not UTF-8 text and cannot be served as JSON"),
        );
    };
    let body = json::build(&[
        Part::Raw("{\"id\":"),
        Part::Str(id),
        Part::Raw(",\"value\":"),
        Part::Str(text),
        Part::Raw(","),
        Part::Raw(&fragment),
        Part::Raw("}"),
    ]);
    let mut reply = Reply::ok(200, body, auth).about(subject);
    reply.carries_secret = true;
    Handled::Reply(reply)
}

/// 202 with the open challenge for (secret, token), or a new one.
fn challenge(
    approvals: &mut Approvals,
    id: &str,
    grant: &super::tokens::Grant,
    auth: Auth,
    subject: Subject,
    now: Now,
    random: Random<'_>,
) -> Handled {
    let (challenge_id, expires_at, opened) = match approvals.pending(id, &grant.id, now) {
        Some((cid, expires)) => (cid, expires, None),
        None => {
            let no_randomness = || {
                Handled::Reply(
                    Reply::error(500, "no randomness for a challenge", auth.clone())
                        .about(subject.clone()),
                )
            };
            if approvals.needs_key() {
                // The run's first challenge: make its HMAC key.
                let Some(mut key) = random() else {
                    return no_randomness();
                };
                approvals.set_key(crate::secret::SecretBytes::copy_from(&key));
                key.fill(0);
            }
            let Some(mut bytes) = random() else {
                return no_randomness();
            };
            let mut r = [0u8; CHALLENGE_RANDOM_BYTES];
            r.copy_from_slice(&bytes[..CHALLENGE_RANDOM_BYTES]);
            bytes.fill(0);
            let opened = approvals.open(id, &grant.id, &r, now);
            r.fill(0);
            let Some(opened) = opened else {
                return no_randomness();
            };
            (opened.id.clone(), opened.expires_at.clone(), Some(opened))
        }
    };
    let body = json::to_body(&serde_json::json!({
        "challenge_id": challenge_id,
        "expires_at": expires_at,
    }));
    let mut reply = Reply::ok(202, body, auth).about(subject.clone());
    reply.reason = Some(format!(
        "approval pending: challenge {challenge_id} expires at {expires_at}"
    ));
    if let Some(o) = opened {
        let mut ev = Event::new(EventKind::Challenge)
            .result(Outcome::Ok)
            .reason(format!(
                "challenge {challenge_id} opened, expires at {expires_at}"
            ));
        if let Some(r) = &subject.reference {
            ev = ev.secret(&subject.id, r, &subject.scope);
        }
        reply.events.push(ev);
        reply.challenge = Some(Box::new(o));
    }
    Handled::Reply(reply)
}

fn get_skill(
    secrets: &mut BTreeMap<String, Entry>,
    skill: &str,
    grant: &super::tokens::Grant,
    auth: Auth,
    now: Now,
) -> Handled {
    let label = format!("skill:{skill}");
    let mut refresh = Vec::new();
    let mut ids = Vec::new();
    for e in secrets.values() {
        let for_skill = e.scope.iter().any(|s| s == "pool" || *s == label);
        if for_skill && e.proxied {
            return Handled::Reply(Reply::proxied(&e.id, auth));
        }
        if !for_skill
            || !grant.allows(&e.scope)
            || e.revoked.is_some()
            || e.approval == Approval::Required
        {
            continue;
        }
        if !e.is_fresh(now) {
            refresh.push(e.id.clone());
        }
        ids.push(e.id.clone());
    }
    if !refresh.is_empty() {
        for id in &refresh {
            if let Some(e) = secrets.get_mut(id) {
                let _ = e.fresh_value(now); // wipes the expired value
            }
        }
        return Handled::Refresh(refresh);
    }
    let mut texts = Vec::with_capacity(ids.len());
    for id in &ids {
        let text = secrets[id]
            .fresh_value_ref(now)
            .and_then(|v| std::str::from_utf8(v.expose()).ok());
        match text {
            Some(t) => texts.push((id.as_str(), t)),
            None => {
                return Handled::Reply(Reply::error(
                    500,
                    format!("secret '{id}' is not UTF-8 text and cannot be served as JSON"),
                    auth,
                ))
            }
        }
    }
    let mut parts = Vec::with_capacity(texts.len() * 4 + 2);
    parts.push(Part::Raw("{\"secrets\":{"));
    for (i, (id, text)) in texts.iter().enumerate() {
        if i > 0 {
            parts.push(Part::Raw(","));
        }
        parts.push(Part::Str(id));
        parts.push(Part::Raw(":"));
        parts.push(Part::Str(text));
    }
    parts.push(Part::Raw("}}"));
    let mut reply = Reply::ok(200, json::build(&parts), auth);
    reply.carries_secret = !ids.is_empty();
    reply.served = Some(ids);
    Handled::Reply(reply)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    scopes: Vec<String>,
    ttl_seconds: u64,
}

fn mint(
    state: &mut State,
    body: &[u8],
    grant: &super::tokens::Grant,
    auth: Auth,
    now: Now,
    random: Random<'_>,
) -> Reply {
    let req: MintBody = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Reply::error(
                400,
                format!(
                    "expected {{\"scopes\": [...], \"ttl_seconds\": N}}; the body is {}",
                    json::error_class(&e)
                ),
                auth,
            )
        }
    };
    let max = state.settings.max_ttl_seconds;
    let Some(bytes) = random() else {
        return Reply::error(500, "no randomness available for a new token", auth);
    };
    let issued = match state
        .tokens
        .mint(grant, &req.scopes, req.ttl_seconds, max, now.mono, &bytes)
    {
        Ok(t) => t,
        Err(e) => {
            let status = match e {
                MintError::Invalid(_) => 400,
                MintError::Wider(_) | MintError::CallerExpiring => 403,
                MintError::TooMany => 429,
            };
            // A scope is named only when it is a label of this run; any
            // other string the request sent is not quoted back.
            let why = match &e {
                MintError::Wider(scope) if !state.knows_label(scope) => {
                    "a requested scope is not held by the calling token; a minted token is never wider".to_string()
                }
                _ => e.reason(),
            };
            return Reply::error(status, why, auth);
        }
    };
    let g = &issued.grant;
    let expires_at = g.expires.map(|e| rfc3339(now.wall_of(e)));
    let ttl = g.remaining(now.mono).map(|d| d.as_secs()).unwrap_or(0);
    let Ok(text) = std::str::from_utf8(issued.text.expose()) else {
        return Reply::error(500, "internal error: token is not text", auth);
    };
    let scopes = json::fragment(&g.scopes);
    let meta = format!(
        ",\"token_id\":{},\"scopes\":{scopes},\"expires_at\":{},\"ttl_seconds\":{ttl}}}",
        json::fragment(&g.id),
        json::fragment(&expires_at)
    );
    let body = json::build(&[Part::Raw("{\"token\":"), Part::Str(text), Part::Raw(&meta)]);
    // 200 like every other answer with a body (SPEC names no other code).
    let mut reply = Reply::ok(200, body, auth);
    reply.carries_secret = true;
    reply.minted = Some((issued.text.duplicate(), g.expires.unwrap_or(now.mono)));
    reply.events.push(
        Event::new(EventKind::TokenMint)
            .result(Outcome::Ok)
            .minted(Minted {
                token_id: g.id.clone(),
                parent: g.parent.clone(),
                scopes: g.scopes.clone(),
                expires_at,
            }),
    );
    reply
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackBody {
    timestamp: serde_json::Value,
    signature: String,
    body: String,
}

fn slack_verify(
    settings: &Settings,
    secrets: &mut BTreeMap<String, Entry>,
    body: &[u8],
    auth: Auth,
    now: Now,
) -> Handled {
    let req: SlackBody = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Handled::Reply(Reply::error(
                400,
                format!(
                    "expected {{\"timestamp\", \"signature\", \"body\"}}; the body is {}",
                    json::error_class(&e)
                ),
                auth,
            ))
        }
    };
    let timestamp = match &req.timestamp {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let Some(id) = settings.slack_secret_id.clone() else {
        return Handled::Reply(Reply::error(
            503,
            "no Slack signing secret is configured (policy slack_signing_secret)",
            auth,
        ));
    };
    let Some(e) = secrets.get_mut(&id) else {
        return Handled::Reply(Reply::error(
            503,
            format!("the Slack signing secret '{id}' is not in the registry for this environment"),
            auth,
        ));
    };
    let subject = Subject {
        id: id.clone(),
        reference: Some(e.reference.clone()),
        scope: e.scope.clone(),
    };
    if e.revoked.is_some() {
        return Handled::Reply(
            Reply::error(
                410,
                format!("the Slack signing secret '{id}' is revoked"),
                auth,
            )
            .about(subject),
        );
    }
    let Some(secret) = e.fresh_value(now) else {
        return Handled::Refresh(vec![id]);
    };
    let verdict = slack::verify(
        secret.expose(),
        &timestamp,
        &req.signature,
        req.body.as_bytes(),
        now.unix(),
    );
    let (valid, reason) = match verdict {
        Ok(()) => (true, None),
        Err(why) => (false, Some(why.reason())),
    };
    let body = json::to_body(&serde_json::json!({"valid": valid, "reason": reason}));
    let mut reply = Reply::ok(200, body, auth).about(subject);
    reply.reason = reason.map(str::to_string);
    Handled::Reply(reply)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    id: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Handle a call on the admin socket (its peers are checked by the server).
pub fn handle_admin(state: &mut State, call: &Call<'_>, now: Now) -> AdminHandled {
    let segments: Vec<&str> = call
        .path
        .strip_prefix("/v1/")
        .map(|r| r.split('/').collect())
        .unwrap_or_default();
    let mut challenge_id = "";
    let (want, which) = match segments.as_slice() {
        ["health"] => (Method::GET, 0),
        ["admin", "inventory"] => (Method::GET, 1),
        ["admin", "revoke"] => (Method::POST, 2),
        ["admin", "reload"] => (Method::POST, 3),
        ["admin", "approvals"] => (Method::GET, 4),
        ["admin", "approvals", id] if !id.is_empty() => {
            challenge_id = id;
            (Method::POST, 5)
        }
        _ => {
            return AdminHandled::Reply(Reply::error(404, "no such endpoint", Auth::Open));
        }
    };
    if *call.method != want {
        return AdminHandled::Reply(Reply::error(
            405,
            format!("method not allowed; use {want}"),
            Auth::Open,
        ));
    }
    match which {
        0 => AdminHandled::Reply(health()),
        1 => {
            let body = json::to_body(&serde_json::json!({
                "env": state.settings.env.as_str(),
                "secrets": state.inventory(now),
            }));
            AdminHandled::Reply(Reply::ok(200, body, Auth::Open))
        }
        2 => revoke(state, call.body, now),
        3 => AdminHandled::Reload,
        4 => {
            let pending = state
                .approvals
                .as_mut()
                .map(|a| {
                    a.prune(now);
                    a.list(now)
                })
                .unwrap_or_default();
            let body = json::to_body(&serde_json::json!({ "challenges": pending }));
            AdminHandled::Reply(Reply::ok(200, body, Auth::Open))
        }
        _ => AdminHandled::Reply(approve(state, challenge_id, call.body, now)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    code: String,
}

/// The operator's answer to a challenge. The code is never echoed, logged
/// or audited.
fn approve(state: &mut State, challenge_id: &str, body: &[u8], now: Now) -> Reply {
    let mut req: ApproveBody = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => return Reply::error(400, "expected {\"code\": \"...\"}", Auth::Open),
    };
    let answer = match state.approvals.as_mut() {
        Some(a) => a.answer(challenge_id, req.code.as_bytes(), now),
        None => Answer::Unknown,
    };
    zeroize::Zeroize::zeroize(&mut req.code);
    let about = |secret_id: &str| {
        let (reference, scope) = state
            .secrets
            .get(secret_id)
            .map(|e| (Some(e.reference.clone()), e.scope.clone()))
            .unwrap_or_default();
        Subject {
            id: secret_id.to_string(),
            reference,
            scope,
        }
    };
    let event = |subject: &Subject, outcome, reason: String| {
        let mut ev = Event::new(EventKind::Approve)
            .result(outcome)
            .reason(reason);
        if let Some(r) = &subject.reference {
            ev = ev.secret(&subject.id, r, &subject.scope);
        }
        ev
    };
    match answer {
        Answer::Approved {
            secret_id,
            token_id,
        } => {
            let subject = about(&secret_id);
            let body = json::to_body(&serde_json::json!({
                "challenge_id": challenge_id,
                "approved": true,
                "secret_id": secret_id,
                "token_id": token_id,
            }));
            let mut reply = Reply::ok(200, body, Auth::Open).about(subject.clone());
            reply.events.push(event(
                &subject,
                Outcome::Ok,
                format!("challenge {challenge_id} approved: one read by token {token_id}"),
            ));
            reply
        }
        Answer::Wrong { secret_id, left } => {
            let subject = about(&secret_id);
            let why = format!(
                "wrong code for challenge {challenge_id}; {left} attempt{} left",
                if left == 1 { "" } else { "s" }
            );
            let mut reply = Reply::error(403, why.clone(), Auth::Open).about(subject.clone());
            reply.events.push(event(&subject, Outcome::Denied, why));
            reply
        }
        Answer::Locked { secret_id } => {
            let subject = about(&secret_id);
            let why = format!("wrong code for challenge {challenge_id}; the challenge is locked");
            let mut reply = Reply::error(403, why.clone(), Auth::Open).about(subject.clone());
            reply.events.push(event(&subject, Outcome::Denied, why));
            reply
        }
        // The id is not quoted back: it is what the request sent.
        Answer::Unknown => Reply::error(
            404,
            "no such open challenge (answered, expired, locked or unknown)",
            Auth::Open,
        ),
    }
}

fn revoke(state: &mut State, body: &[u8], now: Now) -> AdminHandled {
    let req: RevokeBody = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return AdminHandled::Reply(Reply::error(
                400,
                format!(
                    "expected {{\"id\", \"reason\"}}; the body is {}",
                    json::error_class(&e)
                ),
                Auth::Open,
            ))
        }
    };
    let reason = req
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "revoked by the operator".to_string());
    let Some(e) = state.revoke(&req.id, &reason) else {
        return AdminHandled::Reply(
            Reply::error(404, "no such secret", Auth::Open).about_unknown(&req.id),
        );
    };
    let subject = Subject {
        id: e.id.clone(),
        reference: Some(e.reference.clone()),
        scope: e.scope.clone(),
    };
    let record = Revocation {
        id: e.id.clone(),
        reference: e.reference.to_string(),
        reason: Some(reason.clone()),
        revoked_at: rfc3339(now.wall),
    };
    let body = json::to_body(&serde_json::json!({
        "id": e.id, "ref": e.reference.as_str(), "revoked": true, "reason": reason,
    }));
    let mut reply = Reply::ok(200, body, Auth::Open).about(subject);
    reply.events.push(
        Event::new(EventKind::Revoke)
            .secret(&e.id, &e.reference, &e.scope)
            .result(Outcome::Ok)
            .reason(reason),
    );
    AdminHandled::Revoked { reply, record }
}

/// The answer to a reload, given what the reload callback returned.
pub fn reloaded(
    state: &mut State,
    result: crate::error::Result<Vec<super::ServedSecret>>,
    now: Now,
) -> Reply {
    match result {
        Ok(secrets) => {
            let n = secrets.len();
            state.replace(secrets, now);
            let mut reply = Reply::ok(
                200,
                json::to_body(&serde_json::json!({"reloaded": true, "secrets": n})),
                Auth::Open,
            );
            reply
                .events
                .push(Event::new(EventKind::Reload).result(Outcome::Ok));
            reply
        }
        Err(e) => {
            let mut reply = Reply::error(500, format!("reload failed: {e}"), Auth::Open);
            // The exit code `keywarden reload` gives for it.
            reply.body = json::to_body(&serde_json::json!({
                "error": format!("reload failed: {e}"),
                "exit_code": e.exit_code(),
            }));
            reply.events.push(
                Event::new(EventKind::Reload)
                    .result(Outcome::Error)
                    .reason(e.to_string()),
            );
            reply
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::tests::{served, settings};
    use super::super::tokens::Issued;
    use super::*;
    use std::time::Duration;

    struct Fixture {
        state: State,
        root: Issued,
        counter: u8,
    }

    impl Fixture {
        fn new(max_ttl: Option<u64>) -> Self {
            let now = Now::system();
            let mut approval = served("gated", &["pool"], None, "vg");
            approval.approval = Approval::Required;
            let mut state = State::new(
                settings(max_ttl),
                vec![
                    served("openai", &["llm:chat"], Some(60), "v-openai"),
                    served("shared", &["pool"], None, "v-shared"),
                    served("search", &["skill:web"], None, "v-search"),
                    served("both", &["pool", "llm:chat"], None, "v-both"),
                    approval,
                    served("slack_signing", &["internal"], None, "v-slack"),
                ],
                now,
            );
            state.settings.slack_secret_id = Some("slack_signing".into());
            let root = state.tokens.issue_root(
                vec!["pool".into(), "llm:chat".into(), "skill:web".into()],
                &[9; TOKEN_RANDOM_BYTES],
            );
            Fixture {
                state,
                root,
                counter: 0,
            }
        }

        fn call(
            &mut self,
            method: Method,
            path: &str,
            token: Option<&[u8]>,
            body: &str,
            now: Now,
        ) -> Handled {
            let counter = &mut self.counter;
            let mut random = || {
                *counter += 1;
                Some([*counter; TOKEN_RANDOM_BYTES])
            };
            let call = Call {
                method: &method,
                path,
                bearer: token,
                body: body.as_bytes(),
            };
            handle(&mut self.state, &call, now, &mut random)
        }

        fn reply(&mut self, method: Method, path: &str, token: Option<&[u8]>, body: &str) -> Reply {
            match self.call(method, path, token, body, Now::system()) {
                Handled::Reply(r) => r,
                Handled::Refresh(ids) => panic!("refresh {ids:?}"),
            }
        }

        fn root(&self) -> Vec<u8> {
            self.root.text.expose().to_vec()
        }
    }

    fn body(r: &Reply) -> serde_json::Value {
        serde_json::from_slice(&r.body).expect("json body")
    }

    #[test]
    fn status_table() {
        let mut f = Fixture::new(None);
        let root = f.root();
        // Well-formed, but issued by nobody.
        let stranger = format!("kw_{}_{}", "0".repeat(16), "A".repeat(43)).into_bytes();
        type Row<'a> = (Method, &'a str, Option<&'a [u8]>, &'a str, u16);
        let table: Vec<Row<'_>> = vec![
            (Method::GET, "/v1/health", None, "", 200),
            (Method::POST, "/v1/health", None, "", 405),
            (Method::GET, "/v1/nope", Some(&root), "", 404),
            (Method::GET, "/v2/secrets/openai", Some(&root), "", 404),
            (Method::GET, "/v1/secrets/openai", None, "", 401),
            (Method::GET, "/v1/secrets/openai", Some(b""), "", 401),
            (Method::GET, "/v1/secrets/openai", Some(&stranger), "", 401),
            (Method::GET, "/v1/secrets/openai", Some(&root), "", 200),
            (Method::GET, "/v1/secrets/missing", Some(&root), "", 404),
            (
                Method::GET,
                "/v1/secrets/slack_signing",
                Some(&root),
                "",
                403,
            ),
            (Method::GET, "/v1/secrets/gated", Some(&root), "", 403),
            (Method::POST, "/v1/secrets/openai", Some(&root), "", 405),
            (Method::POST, "/v1/tokens", Some(&root), "{}", 400),
            (
                Method::POST,
                "/v1/tokens",
                Some(&root),
                r#"{"scopes":["pool"],"ttl_seconds":5}"#,
                200,
            ),
            (
                Method::POST,
                "/v1/tokens",
                Some(&root),
                r#"{"scopes":["admin"],"ttl_seconds":5}"#,
                403,
            ),
            (Method::POST, "/v1/slack/verify", Some(&root), "{}", 400),
        ];
        for (method, path, token, req, want) in table {
            let r = f.reply(method.clone(), path, token, req);
            assert_eq!(
                r.status,
                want,
                "{method} {path} {req}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let v = body(&r);
            if want >= 400 {
                assert!(v["error"].is_string(), "{v}");
            }
        }
        f.state.revoke("openai", "leaked");
        assert_eq!(
            f.reply(Method::GET, "/v1/secrets/openai", Some(&root), "")
                .status,
            410
        );
        let r = f.reply(Method::GET, "/v1/secrets/gated", Some(&root), "");
        assert!(body(&r)["error"]
            .as_str()
            .is_some_and(|e| e.contains("approval")));
    }

    #[test]
    fn approval_required_secrets_need_an_answered_challenge_per_read() {
        let mut f = Fixture::new(None);
        // No key given: the first challenge makes one.
        f.state.approvals = Some(Approvals::new(None));
        let root = f.root();
        let r = f.reply(Method::GET, "/v1/secrets/gated", Some(&root), "");
        assert_eq!(r.status, 202);
        let cid = body(&r)["challenge_id"].as_str().expect("id").to_string();
        assert!(body(&r)["expires_at"].is_string());
        assert!(!r.carries_secret);
        let code = r
            .challenge
            .as_ref()
            .expect("a new challenge")
            .code
            .to_string();
        assert!(!String::from_utf8_lossy(&r.body).contains(&code));
        assert_eq!(r.events[0].kind(), EventKind::Challenge);
        // Asking again: the same challenge, no new code.
        let again = f.reply(Method::GET, "/v1/secrets/gated", Some(&root), "");
        assert_eq!(
            (again.status, body(&again)["challenge_id"].as_str()),
            (202, Some(cid.as_str()))
        );
        assert!(again.challenge.is_none());
        // The skill route never serves it.
        let skill = f.reply(Method::GET, "/v1/skills/x/secrets", Some(&root), "");
        assert!(body(&skill)["secrets"].get("gated").is_none());

        let admin = |f: &mut Fixture, method: Method, path: &str, body: &str| {
            let call = Call {
                method: &method,
                path,
                bearer: None,
                body: body.as_bytes(),
            };
            match handle_admin(&mut f.state, &call, Now::system()) {
                AdminHandled::Reply(r) => r,
                _ => panic!("not a reply"),
            }
        };
        let listed = admin(&mut f, Method::GET, "/v1/admin/approvals", "");
        let text = String::from_utf8_lossy(&listed.body).to_string();
        assert!(text.contains(&cid) && !text.contains(&code), "{text}");
        let path = format!("/v1/admin/approvals/{cid}");
        let wrong = admin(&mut f, Method::POST, &path, r#"{"code":"not-it"}"#);
        assert_eq!(wrong.status, 403);
        assert!(body(&wrong)["error"]
            .as_str()
            .is_some_and(|e| e.contains("2 attempts left")));
        let bad = admin(&mut f, Method::POST, &path, "{}");
        assert_eq!(bad.status, 400);
        let ok = admin(
            &mut f,
            Method::POST,
            &path,
            &format!(r#"{{"code":"{code}"}}"#),
        );
        assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
        assert_eq!(ok.events[0].kind(), EventKind::Approve);
        let used = admin(
            &mut f,
            Method::POST,
            &path,
            &format!(r#"{{"code":"{code}"}}"#),
        );
        assert_eq!(used.status, 404);

        // One read is served, the next needs a new challenge.
        let r = f.reply(Method::GET, "/v1/secrets/gated", Some(&root), "");
        assert_eq!(r.status, 200);
        assert_eq!(body(&r)["value"], "vg");
        let r = f.reply(Method::GET, "/v1/secrets/gated", Some(&root), "");
        assert_eq!(r.status, 202);
        assert_ne!(body(&r)["challenge_id"].as_str(), Some(cid.as_str()));
        // Revocation ends the challenge.
        let cid2 = body(&r)["challenge_id"].as_str().expect("id").to_string();
        let code2 = r.challenge.as_ref().expect("new").code.to_string();
        f.state.revoke("gated", "test");
        let gone = admin(
            &mut f,
            Method::POST,
            &format!("/v1/admin/approvals/{cid2}"),
            &format!(r#"{{"code":"{code2}"}}"#),
        );
        assert_eq!(gone.status, 404);
    }

    #[test]
    fn a_secret_reply_has_the_contract_fields() {
        let mut f = Fixture::new(None);
        let root = f.root();
        let r = f.reply(Method::GET, "/v1/secrets/openai", Some(&root), "");
        assert!(r.carries_secret);
        assert_eq!(r.auth, Auth::Granted(f.root.grant.id.clone()));
        let v = body(&r);
        assert_eq!(v["id"], "openai");
        assert_eq!(v["value"], "v-openai");
        assert_eq!(v["scope"], serde_json::json!(["llm:chat"]));
        assert!(v["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')));
        let shared = body(&f.reply(Method::GET, "/v1/secrets/shared", Some(&root), ""));
        assert!(shared["expires_at"].is_null());
        assert_eq!(
            r.subject.expect("subject").reference.expect("ref").as_str(),
            "kv://openai/dev"
        );
    }

    #[test]
    fn binary_values_are_refused_not_mangled() {
        let mut f = Fixture::new(None);
        let root = f.root();
        f.state.install(
            "shared",
            crate::secret::SecretBytes::copy_from(b"\xff\xfe-binary"),
            Now::system(),
        );
        let r = f.reply(Method::GET, "/v1/secrets/shared", Some(&root), "");
        assert_eq!(r.status, 500);
        assert!(!r.carries_secret);
        assert!(body(&r)["error"]
            .as_str()
            .is_some_and(|e| e.contains("not UTF-8")));
        let r = f.reply(Method::GET, "/v1/skills/web/secrets", Some(&root), "");
        assert_eq!(r.status, 500);
    }

    #[test]
    fn scopes_narrow_and_never_widen() {
        let mut f = Fixture::new(Some(120));
        let root = f.root();
        let r = f.reply(
            Method::POST,
            "/v1/tokens",
            Some(&root),
            r#"{"scopes":["pool"],"ttl_seconds":999}"#,
        );
        let v = body(&r);
        assert_eq!(v["ttl_seconds"], 120, "clamped to the policy");
        assert_eq!(r.events[0].kind(), EventKind::TokenMint);
        let pool = v["token"].as_str().expect("token").as_bytes().to_vec();
        assert_eq!(
            f.reply(Method::GET, "/v1/secrets/shared", Some(&pool), "")
                .status,
            200
        );
        assert_eq!(
            f.reply(Method::GET, "/v1/secrets/both", Some(&pool), "")
                .status,
            200
        );
        assert_eq!(
            f.reply(Method::GET, "/v1/secrets/openai", Some(&pool), "")
                .status,
            403
        );
        assert_eq!(
            f.reply(
                Method::POST,
                "/v1/tokens",
                Some(&pool),
                r#"{"scopes":["llm:chat"],"ttl_seconds":5}"#
            )
            .status,
            403
        );
        // Verifying needs no scope: the answer reveals nothing secret.
        assert_eq!(
            f.reply(
                Method::POST,
                "/v1/slack/verify",
                Some(&pool),
                r#"{"timestamp":"1","signature":"v0=","body":""}"#
            )
            .status,
            200
        );
        let skills = body(&f.reply(Method::GET, "/v1/skills/web/secrets", Some(&pool), ""));
        assert_eq!(
            skills,
            serde_json::json!({"secrets": {"both": "v-both", "shared": "v-shared"}})
        );
        let skills = body(&f.reply(Method::GET, "/v1/skills/web/secrets", Some(&root), ""));
        assert_eq!(
            skills,
            serde_json::json!({"secrets": {"both": "v-both", "shared": "v-shared", "search": "v-search"}})
        );
        let other = body(&f.reply(Method::GET, "/v1/skills/mail/secrets", Some(&root), ""));
        assert_eq!(other["secrets"].as_object().map(|o| o.len()), Some(2));
    }

    #[test]
    fn expired_values_are_wiped_and_refreshed() {
        let mut f = Fixture::new(None);
        let root = f.root();
        let later = Now::system().plus(Duration::from_secs(61));
        match f.call(Method::GET, "/v1/secrets/openai", Some(&root), "", later) {
            Handled::Refresh(ids) => assert_eq!(ids, vec!["openai".to_string()]),
            Handled::Reply(r) => panic!("{}", r.status),
        }
        assert!(!f.state.secrets["openai"].is_cached());
        f.state.install(
            "openai",
            crate::secret::SecretBytes::copy_from(b"v2"),
            later,
        );
        match f.call(Method::GET, "/v1/secrets/openai", Some(&root), "", later) {
            Handled::Reply(r) => assert_eq!(body(&r)["value"], "v2"),
            Handled::Refresh(_) => panic!("still stale"),
        }
        // Without a valid token nothing is resolved.
        let much_later = later.plus(Duration::from_secs(61));
        assert!(matches!(
            f.call(Method::GET, "/v1/secrets/openai", None, "", much_later),
            Handled::Reply(Reply { status: 401, .. })
        ));
    }

    #[test]
    fn slack_verification_through_the_route() {
        let mut f = Fixture::new(None);
        let root = f.root();
        let now = Now::system();
        let ts = now.unix().to_string();
        let sig = slack::sign(b"v-slack", &ts, b"a=1");
        let req = serde_json::json!({"timestamp": ts, "signature": sig, "body": "a=1"}).to_string();
        let v = body(&f.reply(Method::POST, "/v1/slack/verify", Some(&root), &req));
        assert_eq!(v, serde_json::json!({"valid": true, "reason": null}));
        let req = serde_json::json!({"timestamp": ts, "signature": sig, "body": "a=2"}).to_string();
        let v = body(&f.reply(Method::POST, "/v1/slack/verify", Some(&root), &req));
        assert_eq!(v["valid"], false);
        assert!(!String::from_utf8_lossy(
            &f.reply(Method::POST, "/v1/slack/verify", Some(&root), &req)
                .body
        )
        .contains("v-slack"));
    }

    #[test]
    fn admin_calls() {
        let mut f = Fixture::new(None);
        let now = Now::system();
        let admin = |st: &mut State, m: Method, p: &str, b: &str| {
            handle_admin(
                st,
                &Call {
                    method: &m,
                    path: p,
                    bearer: None,
                    body: b.as_bytes(),
                },
                now,
            )
        };
        let AdminHandled::Reply(inv) = admin(&mut f.state, Method::GET, "/v1/admin/inventory", "")
        else {
            panic!("inventory")
        };
        let v = body(&inv);
        assert_eq!(v["secrets"].as_array().map(Vec::len), Some(6));
        assert!(!String::from_utf8_lossy(&inv.body).contains("v-openai"));
        let AdminHandled::Revoked { reply, record } = admin(
            &mut f.state,
            Method::POST,
            "/v1/admin/revoke",
            r#"{"id":"openai","reason":"leaked"}"#,
        ) else {
            panic!("revoke")
        };
        assert_eq!(reply.status, 200);
        assert_eq!(record.reference, "kv://openai/dev");
        assert_eq!(reply.events[0].kind(), EventKind::Revoke);
        assert!(f.state.secrets["openai"].revoked.is_some());
        assert!(matches!(
            admin(
                &mut f.state,
                Method::POST,
                "/v1/admin/revoke",
                r#"{"id":"nope"}"#
            ),
            AdminHandled::Reply(Reply { status: 404, .. })
        ));
        assert!(matches!(
            admin(&mut f.state, Method::POST, "/v1/admin/reload", ""),
            AdminHandled::Reload
        ));
        assert!(matches!(
            admin(&mut f.state, Method::GET, "/v1/admin/reload", ""),
            AdminHandled::Reply(Reply { status: 405, .. })
        ));
        let r = reloaded(
            &mut f.state,
            Ok(vec![served("x", &["pool"], None, "vx")]),
            now,
        );
        assert_eq!(r.status, 200);
        assert_eq!(f.state.secrets.len(), 1);
    }
}
