//! What the socket API lets into keywarden's records and replies, through
//! `keywarden run`: nothing the child sends is trusted into the audit log,
//! a log line or an error reply (SPEC invariant 7), minted tokens are
//! masked like the child's own, and the Slack signing secret is a registry
//! id, never a value.

use base64::Engine;

use crate::util::*;

/// A value with characters every encoding changes (`+`, `/`, `=`).
fn canary_value() -> String {
    format!("{}+/={}", secret(24), secret(16))
}

fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

/// Every form SPEC invariant 1 names: raw, base64 and base64url (padded or
/// not), hex in either case, percent-encoded in either case, JSON-escaped.
fn forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let b = value.as_bytes();
    let hex: String = b.iter().map(|c| format!("{c:02x}")).collect();
    let json = serde_json::to_string(value).expect("json");
    let mut all = vec![
        value.to_string(),
        STANDARD.encode(b),
        STANDARD_NO_PAD.encode(b),
        URL_SAFE.encode(b),
        URL_SAFE_NO_PAD.encode(b),
        hex.clone(),
        hex.to_uppercase(),
        percent(value),
        percent(value).to_lowercase(),
        json[1..json.len() - 1].to_string(),
    ];
    all.dedup();
    all
}

/// Which of `value`'s forms `text` holds.
fn leaks(text: &str, value: &str) -> Vec<String> {
    forms(value)
        .into_iter()
        .filter(|f| text.contains(f.as_str()))
        .collect()
}

/// The child's side of the canary: every error path of the socket API,
/// with the value (`$OPENAI_API_KEY`) and the child's token where a
/// request takes a string. Each reply goes to `replies/NAME` (outside the
/// relay, so it is seen as the server sent it) and its status to
/// `replies/NAME.status`.
const PROBE: &str = r#"
S="$KEYWARDEN_SOCKET"; T="$KEYWARDEN_TOKEN"; V="$OPENAI_API_KEY"; P="$(cat enc/pct)"
mkdir -p replies bodies
call() { # NAME METHOD PATH TOKEN BODYFILE
  name=$1; method=$2; path=$3; tok=$4; body=$5
  set -- -s -o "replies/$name" -w '%{http_code}' --max-time 10 --unix-socket "$S" -X "$method" -H "X-Probe: $V" -H "User-Agent: $V"
  if [ -n "$tok" ]; then set -- "$@" -H "Authorization: Bearer $tok"; fi
  if [ -n "$body" ]; then set -- "$@" -H 'Content-Type: application/json' --data-binary "@$body"; fi
  curl "$@" "http://kw$path" > "replies/$name.status"
}
printf '{"scopes":["%s"],"ttl_seconds":5}' "$V" > bodies/scope
printf '{"scopes":["%s"],"ttl_seconds":5}' "$T" > bodies/scope_token
printf '{"scopes":["pool"],"ttl_seconds":"%s"}' "$V" > bodies/ttl_type
printf '{"%s":1}' "$V" > bodies/field
printf '%s' "$V" > bodies/syntax
printf '{"scopes":["%s"' "$V" > bodies/eof
printf '{"timestamp":"%s","signature":"v0=%s","body":"%s"}' "$V" "$V" "$V" > bodies/slack
printf '{"timestamp":"%s","signature":"%s"}' "$V" "$T" > bodies/slack_missing
printf '{"timestamp":1,"signature":"v0=%s","body":"x","%s":2}' "$T" "$V" > bodies/slack_field
i=0; : > bodies/big; while [ $i -lt 14 ]; do printf '%s' "$V$V$V$V$V$V$V$V$V$V$V$V$V$V$V$V" >> bodies/big; i=$((i+1)); done
i=0; while [ $i -lt 16 ]; do cat bodies/big bodies/big bodies/big bodies/big bodies/big bodies/big bodies/big bodies/big >> bodies/huge; i=$((i+1)); done
call unknown_pct GET "/v1/secrets/$P" "$T"
call unknown_raw GET "/v1/secrets/$V" "$T"
call unknown_token GET "/v1/secrets/$T" "$T"
call skill_pct GET "/v1/skills/$P/secrets" "$T"
call skill_token GET "/v1/skills/$T/secrets" "$T"
call endpoint_pct GET "/v1/$P" "$T"
call out_of_scope GET /v1/secrets/hidden "$T"
call revoked GET /v1/secrets/gone "$T"
call mint_scope POST /v1/tokens "$T" bodies/scope
call mint_scope_token POST /v1/tokens "$T" bodies/scope_token
call mint_ttl_type POST /v1/tokens "$T" bodies/ttl_type
call mint_field POST /v1/tokens "$T" bodies/field
call mint_syntax POST /v1/tokens "$T" bodies/syntax
call mint_eof POST /v1/tokens "$T" bodies/eof
call mint_huge POST /v1/tokens "$T" bodies/huge
call slack POST /v1/slack/verify "$T" bodies/slack
call slack_missing POST /v1/slack/verify "$T" bodies/slack_missing
call slack_field POST /v1/slack/verify "$T" bodies/slack_field
call slack_huge POST /v1/slack/verify "$T" bodies/huge
call wrong_method DELETE "/v1/secrets/$P" "$T"
"$KEYWARDEN_BIN" get "$V" > /dev/null 2>&1
"$KEYWARDEN_BIN" get "$T" > /dev/null 2>&1
# Refused tokens last: they lock the uid out for a while.
call token_value GET /v1/secrets/openai "$V"
call token_pct GET /v1/secrets/openai "$P"
call token_altered GET /v1/secrets/openai "${T}x"
call token_shaped GET /v1/secrets/openai "kw_0123456789abcdef_$(printf '%s' "$T" | cut -c21-)"
call token_no_bearer GET "/v1/secrets/$P" ""
call token_value_mint POST /v1/tokens "$V" bodies/scope
call token_locked GET "/v1/secrets/$P" "$V"
echo probed
"#;

fn canary_setup(dir: &Dir) -> String {
    let value = canary_value();
    dir.write("secrets/openai", &value);
    dir.write("secrets/hidden", secret(40));
    dir.write("secrets/gone", secret(40));
    dir.write("secrets/slack", secret(40));
    dir.write("enc/pct", percent(&value));
    dir.write(
        "reg.yaml",
        "openai:\n  dev:\n    secret_ref: file://secrets/openai\n    scope: [pool]\n    env: OPENAI_API_KEY\n\
         hidden:\n  dev:\n    secret_ref: file://secrets/hidden\n    scope: [internal]\n\
         gone:\n  dev:\n    secret_ref: file://secrets/gone\n    scope: [pool]\n\
         slack:\n  dev:\n    secret_ref: file://secrets/slack\n    scope: [internal]\n",
    );
    dir.write("pol.json", r#"{"slack_signing_secret": "slack"}"#);
    dir.write(
        "revocations.json",
        r#"{"version":1,"revoked":[{"id":"gone","ref":"file://secrets/gone","reason":"test","revoked_at":"2024-01-01T00:00:00.000Z"}]}"#,
    );
    dir.script("probe.sh", PROBE);
    value
}

/// Runs the probe with `log_opts`; returns (keywarden's stderr, the audit
/// file, every error reply, the child's token).
fn canary_run(dir: &Dir, log_opts: &[&str], audit: &str) -> (String, String, String, String) {
    let _ = std::fs::remove_dir_all(dir.join("replies"));
    let _ = std::fs::remove_dir_all(dir.join("bodies"));
    let mut args = vec!["run", "--env", "dev", "--registry", "reg.yaml"];
    args.extend(["--policy", "pol.json", "--audit", audit]);
    args.extend_from_slice(log_opts);
    args.extend([
        "--",
        "sh",
        "-c",
        "printf '%s' \"$KEYWARDEN_TOKEN\" > token.txt; ./probe.sh",
    ]);
    let mut cmd = kw(dir, &args);
    cmd.env("KEYWARDEN_BIN", bin());
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("probed"), "{}", stderr(&out));
    let mut replies = String::new();
    let mut statuses = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir.join("replies"))
        .expect("replies")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names.iter().filter(|n| !n.ends_with(".status")) {
        let status = dir.read(&format!("replies/{name}.status"));
        statuses.push(format!("{name}={status}"));
        // The skill route deliberately returns the pool's values (with an
        // unknown skill too); the Slack probe answers `valid: false`.
        match (name.as_str(), status.as_str()) {
            ("skill_pct" | "skill_token", "200") => continue,
            ("slack", "200") => {}
            (_, code) => assert!(code >= "400", "{name}={code}"),
        }
        replies.push_str(&dir.read(&format!("replies/{name}")));
        replies.push('\n');
    }
    for (name, code) in [
        ("mint_huge", "413"),
        ("slack_huge", "413"),
        ("revoked", "410"),
    ] {
        assert!(statuses.contains(&format!("{name}={code}")), "{statuses:?}");
    }
    let token = dir.read("token.txt");
    assert!(token.starts_with("kw_"), "no token: {token}");
    (stderr(&out), dir.read(audit), replies, token)
}

#[test]
fn review_02_no_request_string_reaches_the_audit_log_logs_or_replies() {
    let dir = Dir::new();
    let value = canary_setup(&dir);
    for (opts, audit) in [
        (&["-v"][..], "audit-text.jsonl"),
        (&["--log-format", "json", "-vv"][..], "audit-json.jsonl"),
    ] {
        let (err, audit, replies, token) = canary_run(&dir, opts, audit);
        assert!(audit.lines().count() > 20, "{audit}");
        for line in audit.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("audit lines stay JSON");
        }
        for (what, secret) in [("value", &value), ("child token", &token)] {
            for (place, text) in [("audit", &audit), ("stderr", &err), ("replies", &replies)] {
                let found = leaks(text, secret);
                assert!(
                    found.is_empty(),
                    "{opts:?}: the {what} reached {place} as {found:?}:\n{text}"
                );
            }
        }
        // The unknown ids are kept only as keyed fingerprints.
        assert!(audit.contains("unknown_id_hmac_run_key"), "{audit}");
    }
}

#[test]
fn review_02_an_unknown_id_is_fingerprinted_with_the_audit_key() {
    let dir = Dir::new();
    let value = canary_setup(&dir);
    let script = "curl -s -o /dev/null --unix-socket \"$KEYWARDEN_SOCKET\" \
                  -H \"Authorization: Bearer $KEYWARDEN_TOKEN\" \"http://kw/v1/secrets/$(cat enc/pct)\"; \
                  curl -s -o /dev/null --unix-socket \"$KEYWARDEN_SOCKET\" \
                  -H \"Authorization: Bearer $KEYWARDEN_TOKEN\" \"http://kw/v1/secrets/$(cat enc/pct)\"";
    let mut cmd = kw(&dir, &run_sh(&["--audit", "audit.jsonl"], script));
    let key: String = secret(16).bytes().map(|b| format!("{b:02x}")).collect();
    cmd.env("KEYWARDEN_AUDIT_KEY", key);
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let audit = dir.read("audit.jsonl");
    let prints: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["status"] == 404)
        .map(|v| {
            assert!(v["secret_id"].is_null(), "{v}");
            assert_eq!(v["call"], "GET /v1/secrets/{id}", "{v}");
            v["unknown_id_hmac_audit_key"]
                .as_str()
                .expect("fingerprint")
                .to_string()
        })
        .collect();
    assert_eq!(prints.len(), 2, "{audit}");
    assert_eq!(prints[0], prints[1], "one id, one fingerprint");
    assert_eq!(prints[0].len(), 16);
    assert!(leaks(&audit, &value).is_empty(), "{audit}");
}

#[test]
fn review_03_a_raw_slack_signing_secret_in_the_policy_is_78_and_never_echoed() {
    let dir = Dir::new();
    let raw = secret(32);
    dir.write("secrets/openai", secret(40));
    dir.write(
        "reg.yaml",
        "openai:\n  dev:\n    secret_ref: file://secrets/openai\n    scope: [pool]\n",
    );
    dir.write(
        "pol.json",
        format!("{{\"slack_signing_secret\": \"{raw}\"}}"),
    );
    let base = [
        "--env",
        "dev",
        "--registry",
        "reg.yaml",
        "--policy",
        "pol.json",
    ];
    let check: Vec<&str> = std::iter::once("check").chain(base).collect();
    let mut run: Vec<&str> = std::iter::once("run").chain(base).collect();
    run.extend(["--", "true"]);
    for args in [check, run] {
        let out = output(&mut kw(&dir, &args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        assert!(err.contains("slack_signing_secret"), "{err}");
        assert!(err.contains("pol.json"), "{err}");
        assert!(!err.contains(&raw) && !stdout(&out).contains(&raw), "{err}");
    }
    // A registry id is accepted.
    dir.write("pol.json", r#"{"slack_signing_secret": "openai"}"#);
    let out = output(&mut kw(
        &dir,
        &[
            "check",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--policy",
            "pol.json",
        ],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn review_13_minted_tokens_are_masked_in_the_childs_output() {
    let dir = Dir::new();
    dir.write("secrets/openai", secret(40));
    dir.write(
        "reg.yaml",
        "openai:\n  dev:\n    secret_ref: file://secrets/openai\n    scope: [pool]\n",
    );
    let script = "curl -s --unix-socket \"$KEYWARDEN_SOCKET\" -H \"Authorization: Bearer $KEYWARDEN_TOKEN\" \
                  --data-binary '{\"scopes\":[\"pool\"],\"ttl_seconds\":60}' http://kw/v1/tokens > minted.json; \
                  t=$(sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/' minted.json); \
                  echo \"raw=$t\"; printf '%s' \"$t\" | base64 -w0; echo; \
                  curl -s -o /dev/null -w '%{http_code}\\n' --unix-socket \"$KEYWARDEN_SOCKET\" -H \"Authorization: Bearer $t\" http://kw/v1/secrets/openai";
    let out = output(&mut kw(&dir, &run_sh(&[], script)));
    assert!(out.status.success(), "{}", stderr(&out));
    let minted: serde_json::Value =
        serde_json::from_str(&dir.read("minted.json")).expect("minted json");
    let token = minted["token"].as_str().expect("token");
    let shown = stdout(&out);
    assert!(shown.ends_with("200\n"), "the minted token works: {shown}");
    assert!(
        shown.starts_with("raw=[REDACTED:KEYWARDEN_TOKEN]\n"),
        "{shown}"
    );
    let found = leaks(&shown, token);
    assert!(
        found.is_empty(),
        "the minted token leaked as {found:?}: {shown}"
    );
}
