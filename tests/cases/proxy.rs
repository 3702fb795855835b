//! The credential proxy (SPEC "Credential proxy (secret-free agents)",
//! invariant 8): a real HTTPS upstream on 127.0.0.1 with a CA made at test
//! time, a real keywarden, curl and raw sockets as the child's clients.

use std::time::{Duration, Instant};

use crate::util::upstream::{curl, raw, Live, Upstream};
use crate::util::{eventually, kw, output, secret, stderr, stdout, Dir};

pub(crate) const TEST_ALLOW: &str = r#"["POST /chat/completions", "GET /models*", "GET /echo", "POST /echo", "GET /leak", "GET /sse", "GET /big", "GET /redirect", "GET /slow"]"#;

/// The registry: `openai` proxied to the upstream (with the test routes
/// allowed), `anthropic` proxied too (another placeholder), `plain`
/// served by the socket. Returns the openai key.
pub(crate) fn setup(dir: &Dir, up: &Upstream, openai_extra: &str) -> String {
    let _ = up;
    let key = std::fs::read_to_string(dir.join("openai.key")).expect("key");
    dir.write("anthropic.key", secret(40));
    dir.write("plain.key", secret(32));
    dir.write(
        "reg.yaml",
        format!(
            "openai:\n  dev:\n    secret_ref: file://openai.key\n    scope: [\"pool\"]\n{openai_extra}    proxy:\n      preset: openai\n      upstream: \"{}\"\n      allow: {TEST_ALLOW}\nanthropic:\n  dev:\n    secret_ref: file://anthropic.key\n    proxy:\n      preset: anthropic\n      upstream: \"{}\"\nplain:\n  dev:\n    secret_ref: file://plain.key\n    scope: [\"pool\"]\n",
            up.url("/v1"),
            up.url(""),
        ),
    );
    key
}

pub(crate) fn upstream(dir: &Dir) -> Upstream {
    dir.write("openai.key", secret(40));
    Upstream::start(dir, &dir.join("openai.key"), true)
}

pub(crate) fn ca_opt() -> String {
    crate::util::upstream::certs().ca.display().to_string()
}

/// A proxied run as most tests start it: a fresh upstream, the registry
/// of [`setup`] (no extra openai settings), keywarden trusting the test CA
/// and with an admin socket, and `opts` besides.
pub(crate) struct Proxied {
    pub dir: Dir,
    pub up: Upstream,
    /// The openai key.
    pub key: String,
    pub admin: std::path::PathBuf,
    pub live: Live,
}

pub(crate) fn start_with_admin(opts: &[&str]) -> Proxied {
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let admin = dir.join("admin.sock");
    let admin_opt = admin.display().to_string();
    let mut all = vec![
        "--proxy-ca",
        ca.as_str(),
        "--admin-socket",
        admin_opt.as_str(),
    ];
    all.extend_from_slice(opts);
    let live = Live::start(&dir, &all);
    Proxied {
        dir,
        up,
        key,
        admin,
        live,
    }
}

pub(crate) fn bearer(live: &Live) -> String {
    format!("Authorization: Bearer {}", live.var("OPENAI_API_KEY"))
}

pub(crate) fn assert_free_of(key: &str, what: &str, text: &str) {
    use base64::Engine;
    let forms = [
        key.to_string(),
        base64::engine::general_purpose::STANDARD.encode(key),
        key.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
        key[..key.len() / 2 + 4].to_string(),
    ];
    for f in forms {
        assert!(
            !text.contains(&f),
            "{what} holds the key (or a form of it): {text}"
        );
    }
}

#[test]
fn proxy_child_gets_url_and_placeholder_and_the_upstream_gets_the_key() {
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca, "--audit", "audit.log"]);
    let base = live.var("OPENAI_BASE_URL");
    let phantom = live.var("OPENAI_API_KEY");
    let port = base
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.strip_suffix("/openai"))
        .unwrap_or_else(|| panic!("{{url}} is http://127.0.0.1:PORT/<id>: {base}"));
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{base}");
    assert!(
        phantom.starts_with("kwp_") && phantom.len() == 4 + 43,
        "{phantom}"
    );
    assert_ne!(
        phantom,
        live.var("ANTHROPIC_API_KEY"),
        "one placeholder per route"
    );
    assert_eq!(
        live.var("ANTHROPIC_BASE_URL"),
        base.replace("/openai", "/anthropic")
    );

    let (status, body) = curl(&[&format!("{base}/echo?x=1"), "-H", &bearer(&live)]);
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(echo["path"], "/v1/echo");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["headers"]["authorization"], "Bearer [REDACTED:openai]");
    let (status, body) = curl(&[&format!("{base}/leak"), "-H", &bearer(&live), "-i"]);
    assert_eq!(status, 200);
    assert_free_of(&key, "a proxied response", &body);
    let (status, body) = curl(&[&format!("{base}/echo"), "-H", &bearer(&live), "-i"]);
    assert_eq!(status, 200);
    assert!(body.contains("x-echo-key: [REDACTED:openai]"), "{body}");
    assert!(
        up.requests().iter().all(|r| r["key_ok"] == true),
        "{:?}",
        up.requests()
    );

    let environ = std::fs::read(dir.join("child.environ")).expect("environ");
    assert_free_of(
        &key,
        "the child's /proc/self/environ",
        &String::from_utf8_lossy(&environ),
    );
    let (status, out, err) = live.finish();
    assert!(status.success(), "{err}");
    assert_free_of(&key, "keywarden's output", &(out + &err));
    let audit = dir.read("audit.log");
    assert_free_of(&key, "the audit log", &audit);
    assert!(
        !audit.contains(&phantom),
        "the audit log holds the placeholder"
    );
    let ev: serde_json::Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "proxy" && e["path"] == "/openai/echo")
        .expect("a proxy event");
    assert_eq!(ev["secret_id"], "openai");
    assert_eq!(ev["method"], "GET");
    assert_eq!(ev["status"], 200);
    assert!(ev["response_bytes"].as_u64().is_some_and(|n| n > 0), "{ev}");
    assert!(
        ev["request_bytes"].is_u64() && ev["duration_ms"].is_number(),
        "{ev}"
    );
    assert!(
        ev["actor"]["token_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("kwp-")),
        "{ev}"
    );
}

#[test]
fn proxy_refusals_follow_spec() {
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca, "--audit", "audit.log"]);
    let base = live.var("OPENAI_BASE_URL");
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches("/openai")
        .to_string();
    let me = bearer(&live);
    let other = format!("Authorization: Bearer {}", live.var("ANTHROPIC_API_KEY"));
    let echo = format!("{base}/echo");
    let big = dir.write("big.bin", vec![b'a'; (32 << 20) + 1]);
    let big_arg = format!("@{}", big.display());
    let plain = dir.read("plain.key");
    let key_header = format!("X-Note: {key}");
    let key_body = format!("{{\"note\":\"{key}\"}}");
    let key_query = format!("{echo}?k={key}");
    let files = format!("{base}/files");
    let dots = format!("{base}/models/../echo");
    let nope = format!("http://{addr}/nope/x");
    let cases: Vec<(&str, Vec<&str>, u16)> = vec![
        ("no placeholder", vec![&echo], 401),
        (
            "wrong placeholder",
            vec![&echo, "-H", "Authorization: Bearer kwp_wrong"],
            401,
        ),
        (
            "placeholder in the wrong header",
            vec![&echo, "-H", "X-Api-Key: x"],
            401,
        ),
        (
            "another route's placeholder",
            vec![&echo, "-H", &other],
            403,
        ),
        ("a path outside allow", vec![&files, "-H", &me], 403),
        (
            "a method outside allow",
            vec!["-X", "DELETE", &echo, "-H", &me],
            403,
        ),
        ("dot segments", vec!["--path-as-is", &dots, "-H", &me], 400),
        (
            "a body over 32 MiB",
            vec![&echo, "-H", &me, "--data-binary", &big_arg],
            413,
        ),
        (
            "a secret in a header",
            vec![&echo, "-H", &me, "-H", &key_header],
            400,
        ),
        ("a secret in the query", vec![&key_query, "-H", &me], 400),
        (
            "a secret in the body",
            vec![&echo, "-H", &me, "--data-binary", &key_body],
            400,
        ),
        (
            "another secret in the body",
            vec![&echo, "-H", &me, "--data-binary", &plain],
            400,
        ),
        (
            "a websocket upgrade",
            vec![
                &echo,
                "-H",
                &me,
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
            ],
            501,
        ),
        ("an unknown route", vec![&nope, "-H", &me], 404),
    ];
    let before = up.requests().len();
    for (what, args, want) in &cases {
        let (status, body) = curl(args);
        assert_eq!(status, *want, "{what}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
        assert!(json["error"].is_string(), "{what}: {body}");
        assert_free_of(&key, what, &body);
    }
    assert_eq!(
        up.requests().len(),
        before,
        "a refused request reached the upstream: {:?}",
        up.requests()
    );
    let connect = raw(
        &addr,
        format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: x\r\n\r\n", up.port).as_bytes(),
    );
    assert!(
        connect.starts_with("HTTP/1.1 405") || connect.starts_with("HTTP/1.1 501"),
        "{connect}"
    );
    let forward = raw(
        &addr,
        format!(
            "GET {}/echo HTTP/1.1\r\nHost: x\r\n{me}\r\nConnection: close\r\n\r\n",
            up.url("/v1")
        )
        .as_bytes(),
    );
    assert!(
        forward.starts_with("HTTP/1.1 501") || forward.starts_with("HTTP/1.1 405"),
        "{forward}"
    );
    assert!(forward.contains("{\"error\":"), "{forward}");
    let (status, out, err) = live.finish();
    assert!(status.success(), "{err}");
    assert_free_of(&key, "keywarden's output", &(out + &err));
    let audit = dir.read("audit.log");
    assert_free_of(&key, "the audit log", &audit);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"event\":\"proxy\"") && l.contains("\"status\":400")),
        "{audit}"
    );
}

#[test]
fn proxy_rate_limit_answers_429() {
    let dir = Dir::new();
    let up = upstream(&dir);
    setup(&dir, &up, "");
    let reg = dir.read("reg.yaml").replacen(
        "      preset: openai\n",
        "      preset: openai\n      max_requests_per_minute: 2\n",
        1,
    );
    dir.write("reg.yaml", reg);
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let echo = format!("{}/echo", live.var("OPENAI_BASE_URL"));
    let me = bearer(&live);
    let codes: Vec<u16> = (0..3).map(|_| curl(&[&echo, "-H", &me]).0).collect();
    assert_eq!(codes, [200, 200, 429]);
    live.finish();
}

#[test]
fn proxy_returns_redirects_without_following_them() {
    let dir = Dir::new();
    let up = upstream(&dir);
    setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let url = format!("{}/redirect", live.var("OPENAI_BASE_URL"));
    let (status, body) = curl(&[&url, "-H", &bearer(&live), "-i"]);
    assert_eq!(status, 302, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("location: https://elsewhere.invalid/landing"),
        "{body}"
    );
    assert_eq!(up.requests().len(), 1);
    live.finish();
}

/// Server-sent events reach the client chunk by chunk: the first event
/// arrives long before the upstream has finished.
#[test]
fn proxy_streams_sse_chunk_by_chunk() {
    use std::io::{Read, Write};
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let base = live.var("OPENAI_BASE_URL");
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches("/openai")
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let start = Instant::now();
    write!(
        s,
        "GET /openai/sse?n=4&pause=0.6 HTTP/1.1\r\nHost: x\r\n{}\r\nConnection: close\r\n\r\n",
        bearer(&live)
    )
    .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut first = None;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if first.is_none() && String::from_utf8_lossy(&seen).contains("\"i\": 0") {
            first = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let first = first.expect("the first event");
    assert!(
        first < Duration::from_millis(1200),
        "first event after {first:?}"
    );
    assert!(
        total >= Duration::from_millis(2400),
        "the stream took {total:?}"
    );
    assert!(
        total - first >= Duration::from_millis(1500),
        "first {first:?}, total {total:?}"
    );
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("[DONE]"), "{text}");
    assert_free_of(&key, "the stream", &text);
    live.finish();
}

/// A client that hangs up mid-stream: the upstream connection is closed.
#[test]
fn proxy_client_disconnect_closes_the_upstream_connection() {
    let dir = Dir::new();
    let up = upstream(&dir);
    setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let url = format!("{}/sse?n=200&pause=0.05", live.var("OPENAI_BASE_URL"));
    let (_, body) = curl(&["-N", "--max-time", "1", &url, "-H", &bearer(&live)]);
    assert!(body.contains("\"i\": 0"), "{body}");
    let closed = up.state.join("closed");
    assert!(
        eventually(Duration::from_secs(8), || closed.exists()),
        "the upstream kept streaming after the client left"
    );
    live.finish();
}

#[test]
fn proxy_upstream_down_is_502_naming_the_route() {
    let dir = Dir::new();
    let mut up = upstream(&dir);
    let key = setup(&dir, &up, "");
    up.kill();
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let (status, body) = curl(&[
        &format!("{}/echo", live.var("OPENAI_BASE_URL")),
        "-H",
        &bearer(&live),
    ]);
    assert_eq!(status, 502, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("route 'openai'")),
        "{body}"
    );
    assert_free_of(&key, "the 502", &body);
    live.finish();
}

/// Revocation answers 410 at once; a reload swaps the key for the next
/// request, with the same child.
#[test]
fn proxy_reload_swaps_the_key_and_revoke_answers_410_with_the_same_child() {
    let Proxied {
        dir,
        up,
        key: old,
        admin,
        live,
    } = start_with_admin(&["--reload-signal", "HUP"]);
    let child = dir.read("child.pid");
    let echo = format!("{}/echo", live.var("OPENAI_BASE_URL"));
    let me = bearer(&live);
    assert_eq!(curl(&[&echo, "-H", &me]).0, 200);
    // Rotate: the upstream accepts only the new key from now on.
    let new = secret(40);
    dir.write("openai.key", &new);
    crate::util::signal(live.kw.id(), "HUP");
    assert!(
        eventually(Duration::from_secs(10), || {
            let (status, _) = curl(&[&echo, "-H", &me]);
            status == 200 && up.requests().last().is_some_and(|r| r["key_ok"] == true)
        }),
        "the proxy did not send the rotated key"
    );
    let (status, body) = curl(&[&format!("{}/leak", live.var("OPENAI_BASE_URL")), "-H", &me]);
    assert_eq!(status, 200);
    assert_free_of(&new, "a response after rotation", &body);
    assert_free_of(&old, "a response after rotation", &body);
    let out = output(
        kw(&dir, &["revoke", "openai", "--reason", "leaked"]).env("KEYWARDEN_ADMIN_SOCKET", &admin),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = curl(&[&echo, "-H", &me]);
    assert_eq!(status, 410, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|j| j["error"].is_string()));
    assert_eq!(dir.read("child.pid"), child, "the child was restarted");
    let (status, _, err) = live.finish();
    assert!(status.success(), "{err}");
}

/// A TTL expiry resolves the value again for the next request.
#[test]
fn proxy_ttl_expiry_swaps_the_key() {
    let dir = Dir::new();
    let up = upstream(&dir);
    setup(&dir, &up, "    max_ttl_seconds: 1\n");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let echo = format!("{}/echo", live.var("OPENAI_BASE_URL"));
    let me = bearer(&live);
    assert_eq!(curl(&[&echo, "-H", &me]).0, 200);
    dir.write("openai.key", secret(40));
    assert!(
        eventually(Duration::from_secs(10), || curl(&[&echo, "-H", &me]).0
            == 200
            && up.requests().last().is_some_and(|r| r["key_ok"] == true)),
        "the expired value was not resolved again"
    );
    live.finish();
}

/// The socket never serves a proxied secret: 403 `"reason":"proxied"`,
/// for the secret route and the skill route; others are served.
#[test]
fn proxy_socket_refuses_proxied_secrets() {
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let sock = live.var("KEYWARDEN_SOCKET");
    let auth = format!("Authorization: Bearer {}", live.var("KEYWARDEN_TOKEN"));
    for path in ["/v1/secrets/openai", "/v1/skills/any/secrets"] {
        let (status, body) = curl(&[
            "--unix-socket",
            &sock,
            &format!("http://localhost{path}"),
            "-H",
            &auth,
        ]);
        assert_eq!(status, 403, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["reason"], "proxied", "{body}");
        assert_free_of(&key, path, &body);
    }
    let (status, _) = curl(&[
        "--unix-socket",
        &sock,
        "http://localhost/v1/secrets/plain",
        "-H",
        &auth,
    ]);
    assert_eq!(status, 200);
    live.finish();
}

#[test]
fn proxy_listen_is_loopback_or_unix() {
    let dir = Dir::new();
    let up = upstream(&dir);
    setup(&dir, &up, "");
    for addr in ["0.0.0.0:0", "10.0.0.1:8080"] {
        let out = output(&mut kw(
            &dir,
            &[
                "run",
                "--env",
                "dev",
                "--registry",
                "reg.yaml",
                "--proxy-listen",
                addr,
                "--",
                "true",
            ],
        ));
        assert_eq!(out.status.code(), Some(78), "{addr}: {}", stderr(&out));
        assert!(stderr(&out).contains("--proxy-listen"), "{}", stderr(&out));
    }
    let not_pem = dir.write("not.pem", "no certificate here\n");
    for ca in [dir.join("missing.pem"), not_pem] {
        let ca = ca.display().to_string();
        let out = output(&mut kw(
            &dir,
            &[
                "run",
                "--env",
                "dev",
                "--registry",
                "reg.yaml",
                "--proxy-ca",
                &ca,
                "--",
                "true",
            ],
        ));
        assert_eq!(out.status.code(), Some(78), "{ca}: {}", stderr(&out));
        assert!(stderr(&out).contains(&ca), "{}", stderr(&out));
    }
    let sock = dir.join("proxy.sock");
    let listen = format!("unix:{}", sock.display());
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca, "--proxy-listen", &listen]);
    let (status, body) = curl(&[
        "--unix-socket",
        &sock.display().to_string(),
        "http://localhost/openai/echo",
        "-H",
        &bearer(&live),
    ]);
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = live.finish();
    assert!(status.success());
    assert!(!sock.exists(), "the proxy's socket was left behind");
}

#[test]
fn proxy_check_shows_the_route_and_its_upstream() {
    let dir = Dir::new();
    let up = upstream(&dir);
    setup(&dir, &up, "");
    let out = output(&mut kw(
        &dir,
        &["check", "--env", "dev", "--registry", "reg.yaml"],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("proxy /openai -> {}", up.url("/v1"))),
        "{text}"
    );
    let out = output(&mut kw(
        &dir,
        &[
            "check",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--format",
            "json",
        ],
    ));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = json["secrets"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["id"] == "openai")
        .expect("openai")
        .clone();
    assert_eq!(row["proxy"]["upstream"], up.url("/v1"));
    assert_eq!(row["proxy"]["route"], "/openai");
}

#[test]
fn proxy_config_errors_are_78() {
    let dir = Dir::new();
    dir.write("k", secret(32));
    let cases = [
        ("proxy: nope", "unknown preset"),
        ("proxy: bearer", "upstream is required"),
        (
            "proxy:\n      preset: openai\n      upstream: \"http://api.example.com/v1\"",
            "loopback only",
        ),
        (
            "proxy:\n      preset: openai\n      inject: \"cookie:x\"",
            "inject",
        ),
        (
            "proxy:\n      preset: openai\n      colour: blue",
            "unknown field 'colour'",
        ),
        (
            "proxy:\n      preset: openai\n      env: {KEYWARDEN_TOKEN: \"{phantom}\"}",
            "KEYWARDEN_TOKEN",
        ),
    ];
    for (proxy, says) in cases {
        dir.write(
            "reg.yaml",
            format!("openai:\n  dev:\n    secret_ref: file://k\n    {proxy}\n"),
        );
        let out = output(&mut kw(
            &dir,
            &[
                "run",
                "--env",
                "dev",
                "--registry",
                "reg.yaml",
                "--",
                "true",
            ],
        ));
        assert_eq!(out.status.code(), Some(78), "{proxy}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(says) && stderr(&out).contains("reg.yaml"),
            "{proxy}: {}",
            stderr(&out)
        );
    }
}

/// The registry for the SDK tests: openai, anthropic and slack routes, all
/// to the one upstream (which accepts one key, so all three share it).
fn sdk_setup(dir: &Dir, up: &Upstream) -> String {
    let key = std::fs::read_to_string(dir.join("openai.key")).expect("key");
    dir.write(
        "reg.yaml",
        format!(
            "openai:\n  dev:\n    secret_ref: file://openai.key\n    proxy:\n      preset: openai\n      upstream: \"{}\"\nanthropic:\n  dev:\n    secret_ref: file://openai.key\n    proxy:\n      preset: anthropic\n      upstream: \"{}\"\nslack_bot:\n  dev:\n    secret_ref: file://openai.key\n    proxy:\n      preset: slack\n      upstream: \"{}\"\n",
            up.url("/v1"),
            up.url(""),
            up.url("/api"),
        ),
    );
    key
}

const PY_AGENT: &str = r#"
import os, openai, anthropic
from slack_sdk import WebClient
msgs = [{"role": "user", "content": "hi"}]
c = openai.OpenAI(max_retries=0)
print("openai:", c.chat.completions.create(model="test-model", messages=msgs).choices[0].message.content)
s = c.chat.completions.create(model="test-model", messages=msgs, stream=True)
print("openai-stream:", "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices))
print("models:", [m.id for m in c.models.list()])
a = anthropic.Anthropic(max_retries=0)
print("anthropic:", a.messages.create(model="m", max_tokens=10, messages=msgs).content[0].text)
with a.messages.stream(model="m", max_tokens=10, messages=msgs) as st:
    print("anthropic-stream:", "".join(st.text_stream))
w = WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
print("slack:", w.chat_postMessage(channel="C1", text="hi")["ok"])
try:
    c.files.list()
except openai.PermissionDeniedError as e:
    print("refused:", e.status_code)
"#;

/// The official Python SDKs, pointed at keywarden by environment only.
#[test]
fn proxy_python_sdks_work_unmodified() {
    let Some(python) = crate::util::sdk::python() else {
        panic!("the Python SDKs could not be installed into .venv");
    };
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = sdk_setup(&dir, &up);
    dir.write("agent.py", PY_AGENT);
    let ca = ca_opt();
    let py = python.display().to_string();
    let out = output(&mut kw(
        &dir,
        &[
            "run",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--proxy-ca",
            &ca,
            "--no-redact",
            "--",
            &py,
            "agent.py",
        ],
    ));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for line in [
        "openai: Hello from upstream",
        "openai-stream: Hello from upstream",
        "models: ['test-model']",
        "anthropic: Hello from upstream",
        "anthropic-stream: Hello from upstream",
        "slack: True",
        "refused: 403",
    ] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
    assert_free_of(&key, "the agent's output", &(text + &stderr(&out)));
    assert!(
        up.requests().iter().all(|r| r["key_ok"] == true),
        "{:?}",
        up.requests()
    );
}

const NODE_AGENT: &str = r#"
const OpenAI = require('openai');
const c = new OpenAI({ maxRetries: 0 });
const msgs = [{ role: 'user', content: 'hi' }];
(async () => {
  const r = await c.chat.completions.create({ model: 'test-model', messages: msgs });
  console.log('node:', r.choices[0].message.content);
  const s = await c.chat.completions.create({ model: 'test-model', messages: msgs, stream: true });
  let t = '';
  for await (const ch of s) t += (ch.choices[0] && ch.choices[0].delta.content) || '';
  console.log('node-stream:', t);
})().catch((e) => { console.error('failed:', e.status, e.message); process.exit(1); });
"#;

/// The official Node SDK, pointed at keywarden by environment only.
#[test]
fn proxy_node_sdk_works_unmodified() {
    let Some(modules) = crate::util::sdk::node_modules() else {
        panic!("the Node SDK could not be installed into node_modules");
    };
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = sdk_setup(&dir, &up);
    dir.write("agent.js", NODE_AGENT);
    let ca = ca_opt();
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--env",
                "dev",
                "--registry",
                "reg.yaml",
                "--proxy-ca",
                &ca,
                "--no-redact",
                "--",
                "node",
                "agent.js",
            ],
        )
        .env("NODE_PATH", &modules),
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("node: Hello from upstream"), "{text}");
    assert!(text.contains("node-stream: Hello from upstream"), "{text}");
    assert_free_of(&key, "the agent's output", &(text + &stderr(&out)));
}
