//! Tests of the socket API's routes: tables of requests against a state
//! built in memory, with time and randomness as values.

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
