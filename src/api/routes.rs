//! The socket API's calls, as a pure function of a request and the
//! [`State`]: status, JSON body, what to audit. Values that need resolving
//! again come back as [`Handled::Refresh`]; the server resolves them and
//! asks again. Order of checks for a secret: token (401) → id (404) → scope
//! (403) → revocation (410) → approval (202 with a challenge, until the
//! operator answers it) → value.

#![forbid(unsafe_code)]

use hyper::Method;
use serde::Deserialize;

use super::approvals::{Answer, Approvals, CHALLENGE_RANDOM_BYTES};
use super::json::{self, Body, Part};
use super::revocations::Revocation;
use super::slack;
use super::state::{Now, Secrets, Settings, State};
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
        (false, ["secrets", id]) if state.secrets.contains_key(id) => format!("/v1/secrets/{id}"),
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
    secrets: &mut Secrets,
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
        id: e.id.to_string(),
        reference: Some(e.reference.clone()),
        scope: e.scope.to_vec(),
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
    secrets: &mut Secrets,
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
            refresh.push(e.id.to_string());
        }
        ids.push(e.id.to_string());
    }
    if !refresh.is_empty() {
        for id in &refresh {
            if let Some(e) = secrets.get_mut(id.as_str()) {
                let _ = e.fresh_value(now); // wipes the expired value
            }
        }
        return Handled::Refresh(refresh);
    }
    let mut texts = Vec::with_capacity(ids.len());
    for id in &ids {
        let text = secrets[id.as_str()]
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
    secrets: &mut Secrets,
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
    let Some(e) = secrets.get_mut(id.as_str()) else {
        return Handled::Reply(Reply::error(
            503,
            format!("the Slack signing secret '{id}' is not in the registry for this environment"),
            auth,
        ));
    };
    let subject = Subject {
        id: id.clone(),
        reference: Some(e.reference.clone()),
        scope: e.scope.to_vec(),
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
            .map(|e| (Some(e.reference.clone()), e.scope.to_vec()))
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
        id: e.id.to_string(),
        reference: Some(e.reference.clone()),
        scope: e.scope.to_vec(),
    };
    let record = Revocation {
        id: e.id.to_string(),
        reference: e.reference.to_string(),
        reason: Some(reason.clone()),
        revoked_at: rfc3339(now.wall),
    };
    let body = json::to_body(&serde_json::json!({
        "id": &*e.id, "ref": e.reference.as_str(), "revoked": true, "reason": reason,
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
#[path = "routes_tests.rs"]
mod tests;
