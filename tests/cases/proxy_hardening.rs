//! The credential proxy under pressure: a revocation in the middle of a
//! stream, `--no-socket` (the proxy alone, reloaded by signal), malformed
//! HTTP on its listener, slow heads and stalled uploads, reloads that
//! change a route's settings, and where the placeholder is accepted.
//! Same fixtures as `proxy.rs`: a real HTTPS upstream, a real keywarden,
//! raw sockets as the child's client.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use super::proxy::{assert_free_of, bearer, ca_opt, setup, start_with_admin, upstream, Proxied};
use crate::util::upstream::{curl, Live};
use crate::util::{eventually, kw, output, secret, stderr, Dir};

/// `host:port` of the proxy.
fn proxy_addr(live: &Live) -> String {
    live.var("OPENAI_BASE_URL")
        .trim_start_matches("http://")
        .trim_end_matches("/openai")
        .to_string()
}

/// Read from `s` until `pattern` has arrived (or `limit` passes): all
/// that was read.
fn read_until(s: &mut TcpStream, pattern: &str, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(pattern) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{pattern:?} not received: {}",
            String::from_utf8_lossy(&seen)
        );
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "closed before {pattern:?}: {}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading: {e}: {}", String::from_utf8_lossy(&seen)),
        }
    }
    seen
}

/// Read from `s` until the server closes it (EOF or reset): what arrived,
/// and whether it closed within `limit`.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (seen, false);
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return (seen, true),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (seen, false)
            }
            Err(_) => return (seen, true),
        }
    }
}

fn revoke(dir: &Dir, admin: &std::path::Path, id: &str) {
    let out =
        output(kw(dir, &["revoke", id, "--reason", "test"]).env("KEYWARDEN_ADMIN_SOCKET", admin));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The upstream noticed the proxy hang up (its `closed` marker).
fn upstream_hung_up(up: &crate::util::upstream::Upstream, limit: Duration) -> bool {
    let closed = up.state.join("closed");
    eventually(limit, || closed.exists())
}

/// A client is reading a stream whose next event is a minute away; the
/// operator revokes the route: the client's stream breaks at once (no
/// clean end, no further event), the upstream connection is closed, the
/// next request answers 410, and the audit log says why.
#[test]
fn proxy_revocation_cuts_a_silent_stream_at_once() {
    let Proxied {
        dir,
        up,
        key,
        admin,
        live,
    } = start_with_admin(&["--audit", "audit.log"]);
    let mut s = TcpStream::connect(proxy_addr(&live)).expect("connect");
    // Three events a minute apart: the stream would last two minutes.
    write!(
        s,
        "GET /openai/sse?n=3&pause=60 HTTP/1.1\r\nHost: x\r\n{}\r\n\r\n",
        bearer(&live)
    )
    .expect("write");
    let before = read_until(&mut s, "\"i\": 0", Duration::from_secs(15));
    let revoked_at = Instant::now();
    revoke(&dir, &admin, "openai");
    let (after, closed) = read_to_close(&mut s, Duration::from_secs(15));
    let took = revoked_at.elapsed();
    assert!(closed, "the stream went on after the revocation");
    assert!(
        took < Duration::from_secs(10),
        "the stream ended {took:?} after the revocation (the upstream's next event was 60 s away)"
    );
    let text = String::from_utf8_lossy(&[before, after].concat()).into_owned();
    assert!(!text.contains("\"i\": 1"), "an event after the cut: {text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the stream ended cleanly, as if complete: {text}"
    );
    assert!(
        upstream_hung_up(&up, Duration::from_secs(10)),
        "the upstream connection stayed open"
    );
    assert_free_of(&key, "the cut stream", &text);
    let echo = format!("{}/echo", live.var("OPENAI_BASE_URL"));
    let (status, body) = curl(&[&echo, "-H", &bearer(&live)]);
    assert_eq!(status, 410, "{body}");
    let (status, _, err) = live.finish();
    assert!(status.success(), "{err}");
    let audit = dir.read("audit.log");
    assert!(
        audit.lines().any(|l| l.contains("\"event\":\"proxy\"")
            && l.contains("/openai/sse")
            && l.contains("revoked while streaming")),
        "{audit}"
    );
}

/// A revocation while the upstream has not answered yet: the call is
/// dropped (the upstream sees the hang-up) and the client gets 410 at once.
#[test]
fn proxy_revocation_answers_410_to_a_request_still_waiting_for_the_upstream() {
    let Proxied {
        dir,
        up,
        admin,
        live,
        ..
    } = start_with_admin(&[]);
    let mut s = TcpStream::connect(proxy_addr(&live)).expect("connect");
    write!(
        s,
        "GET /openai/slow?delay=60 HTTP/1.1\r\nHost: x\r\n{}\r\nConnection: close\r\n\r\n",
        bearer(&live)
    )
    .expect("write");
    // The upstream has the request (it logs it before waiting).
    assert!(
        eventually(Duration::from_secs(15), || up
            .requests()
            .iter()
            .any(|r| r["path"] == "/v1/slow")),
        "the request did not reach the upstream"
    );
    let revoked_at = Instant::now();
    revoke(&dir, &admin, "openai");
    let (reply, closed) = read_to_close(&mut s, Duration::from_secs(15));
    let reply = String::from_utf8_lossy(&reply);
    assert!(closed && reply.starts_with("HTTP/1.1 410"), "{reply}");
    assert!(revoked_at.elapsed() < Duration::from_secs(10));
    assert!(reply.contains("{\"error\":"), "{reply}");
    assert!(
        upstream_hung_up(&up, Duration::from_secs(10)),
        "the upstream connection stayed open"
    );
    live.finish();
}

/// `--no-socket`: the proxy alone. The child gets `{url}` and
/// `{phantom}` but no socket; `--reload-signal` swaps the key for the
/// next request with the same child; a revocation recorded without a
/// sidecar (`keywarden revoke` finds none) takes effect on that reload,
/// and cuts a stream in flight.
#[test]
fn proxy_with_no_socket_reloads_by_signal_and_revokes() {
    let dir = Dir::new();
    let up = upstream(&dir);
    let old = setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(
        &dir,
        &["--proxy-ca", &ca, "--no-socket", "--reload-signal", "USR1"],
    );
    for var in ["KEYWARDEN_SOCKET", "KEYWARDEN_TOKEN"] {
        assert!(
            !live.env.iter().any(|(k, _)| k == var),
            "--no-socket, yet the child has {var}"
        );
    }
    let runtime: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("keywarden"))
        .collect();
    assert!(runtime.is_empty(), "a socket folder: {runtime:?}");
    let child = dir.read("child.pid");
    let base = live.var("OPENAI_BASE_URL");
    let echo = format!("{base}/echo");
    let me = bearer(&live);
    let (status, body) = curl(&[&echo, "-H", &me]);
    assert_eq!(status, 200, "{body}");
    assert!(up.requests().iter().all(|r| r["key_ok"] == true));

    // Rotate: the upstream takes only the new key from now on.
    let new = secret(40);
    dir.write("openai.key", &new);
    assert_eq!(curl(&[&echo, "-H", &me]).0, 401, "the upstream's own 401");
    crate::util::signal(live.kw.id(), "USR1");
    assert!(
        eventually(Duration::from_secs(10), || {
            curl(&[&echo, "-H", &me]).0 == 200
                && up.requests().last().is_some_and(|r| r["key_ok"] == true)
        }),
        "the reload did not swap the key"
    );
    let (status, body) = curl(&[&format!("{base}/leak"), "-H", &me]);
    assert_eq!(status, 200);
    assert_free_of(&new, "a response after the reload", &body);
    assert_free_of(&old, "a response after the reload", &body);

    // Revoked with no sidecar to tell: written to the list; the next
    // reload applies it, and cuts the stream in flight.
    let mut s = TcpStream::connect(proxy_addr(&live)).expect("connect");
    write!(
        s,
        "GET /openai/sse?n=3&pause=60 HTTP/1.1\r\nHost: x\r\n{me}\r\n\r\n"
    )
    .expect("write");
    read_until(&mut s, "\"i\": 0", Duration::from_secs(15));
    let out = output(&mut kw(
        &dir,
        &["revoke", "openai", "--env", "dev", "--registry", "reg.yaml"],
    ));
    assert!(
        stderr(&out).contains("recorded in the revocation list only"),
        "{}",
        stderr(&out)
    );
    crate::util::signal(live.kw.id(), "USR1");
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(15));
    assert!(closed, "the stream went on after the revocation");
    let (status, body) = curl(&[&echo, "-H", &me]);
    assert_eq!(status, 410, "{body}");
    assert_eq!(dir.read("child.pid"), child, "the child was restarted");
    let (status, out, err) = live.finish();
    assert!(status.success(), "{err}");
    assert_free_of(&new, "keywarden's output", &(out.clone() + &err));
    assert_free_of(&old, "keywarden's output", &(out + &err));
}

/// One exchange on a fresh connection: send `request` (then half-close
/// when `half_close`), read until the proxy closes the connection or
/// `limit` passes. Write errors are ignored: the proxy may close first.
fn exchange(addr: &str, request: &[u8], half_close: bool, limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.write_all(request);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let (reply, closed) = read_to_close(&mut s, limit);
    (String::from_utf8_lossy(&reply).into_owned(), closed)
}

/// The status of the first reply in `reply`, 0 for none.
fn status_of(reply: &str) -> u16 {
    reply
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| reply.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A normal request on a fresh connection is answered 200 by the
/// upstream through the proxy.
fn assert_serves(addr: &str, me: &str, after: &str) {
    let (reply, _) = exchange(
        addr,
        format!("GET /openai/echo HTTP/1.1\r\nHost: x\r\n{me}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
        false,
        Duration::from_secs(15),
    );
    assert_eq!(
        status_of(&reply),
        200,
        "after {after}, a normal request: {reply}"
    );
}

/// Malformed HTTP on the proxy's listener: each is refused or closed,
/// none reaches the upstream as a request, no reply carries the key, and
/// the proxy serves a normal request after each.
#[test]
fn proxy_survives_malformed_http() {
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca, "--audit", "audit.log"]);
    let addr = proxy_addr(&live);
    let me = bearer(&live);
    let head = |method: &str, extra: &str| {
        format!("{method} /openai/echo HTTP/1.1\r\nHost: x\r\n{me}\r\n{extra}")
    };
    let mut tls_hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ];
    tls_hello.extend((0..64u8).map(|b| b.wrapping_mul(37)));
    let junk: Vec<u8> = (0..=255u8).cycle().take(2048).collect();
    let huge_header = head("GET", &format!("X-Big: {}\r\n\r\n", "a".repeat(1 << 20)));
    let many_headers = head(
        "GET",
        &format!(
            "{}\r\n",
            (0..200)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        ),
    );
    let long_target = format!(
        "GET /openai/echo?q={} HTTP/1.1\r\nHost: x\r\n{me}\r\n\r\n",
        "a".repeat(70_000)
    );
    let ws_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(secret(16))
    };
    let upgrade = head(
        "GET",
        &format!("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {ws_key}\r\n\r\n"),
    );
    let absolute = format!(
        "GET {}/echo HTTP/1.1\r\nHost: x\r\n{me}\r\nConnection: close\r\n\r\n",
        up.url("/v1")
    );
    let connect = format!(
        "CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{me}\r\n\r\n",
        up.port, up.port
    );
    // (what, bytes, half-close, statuses accepted; 0: closed unanswered)
    type Case = (&'static str, Vec<u8>, bool, &'static [u16]);
    let cases: Vec<Case> = vec![
        ("a TLS hello on the plain port", tls_hello, false, &[400]),
        ("a garbage request line", b"HELLO\r\n\r\n".to_vec(), false, &[400]),
        ("binary junk", junk, false, &[400]),
        (
            "a header line without a colon",
            head("GET", "Not A Header\r\n\r\n").into_bytes(),
            false,
            &[400],
        ),
        (
            "a NUL in a header value",
            head("GET", "X-A: a\0b\r\n\r\n").into_bytes(),
            false,
            &[400],
        ),
        (
            "an obsolete folded header",
            head("GET", "X-A: a\r\n b\r\n\r\n").into_bytes(),
            false,
            &[400],
        ),
        ("a 1 MiB header", huge_header.into_bytes(), false, &[431]),
        ("200 headers", many_headers.into_bytes(), false, &[431]),
        ("a 70 kB request target", long_target.into_bytes(), false, &[414]),
        (
            "a chunk size that is not hex",
            head("POST", "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").into_bytes(),
            false,
            &[400],
        ),
        (
            "a chunk longer than announced",
            head("POST", "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n").into_bytes(),
            false,
            &[400],
        ),
        (
            "a body shorter than its Content-Length, then close",
            head("POST", "Content-Length: 100\r\n\r\n{\"short\":1}").into_bytes(),
            true,
            &[400],
        ),
        // Framed by Transfer-Encoding (an empty body), then the connection
        // is closed: the request after it, which an upstream reading the
        // Content-Length would take for a second one, is never served.
        (
            "Content-Length and Transfer-Encoding both",
            head(
                "POST",
                &format!("Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /openai/echo HTTP/1.1\r\nHost: x\r\n{me}\r\n\r\n"),
            )
            .into_bytes(),
            false,
            &[200],
        ),
        (
            "two Content-Lengths that differ",
            head("POST", "Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc").into_bytes(),
            false,
            &[400],
        ),
        (
            "an unknown Transfer-Encoding",
            head("POST", "Transfer-Encoding: gzip\r\n\r\nabc").into_bytes(),
            false,
            &[400],
        ),
        (
            "an HTTP/0.9 request",
            b"GET /openai/echo\r\n\r\n".to_vec(),
            true,
            &[400],
        ),
        (
            "an HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            true,
            &[400, 505, 0],
        ),
        ("an absolute-form target", absolute.into_bytes(), false, &[501]),
        ("CONNECT", connect.into_bytes(), true, &[405]),
        ("a WebSocket upgrade", upgrade.into_bytes(), true, &[501]),
    ];
    let before = up.requests().len();
    for (what, bytes, half_close, want) in &cases {
        let (reply, closed) = exchange(&addr, bytes, *half_close, Duration::from_secs(5));
        let status = status_of(&reply);
        eprintln!("{what}: {status}{}", if closed { ", closed" } else { "" });
        assert!(
            want.contains(&status),
            "{what}: status {status}, want one of {want:?}: {reply}"
        );
        assert!(closed || status != 0, "{what}: neither answered nor closed");
        assert!(
            reply.matches("HTTP/1.1 ").count() <= 1,
            "{what}: more than one answer: {reply}"
        );
        assert!(
            !reply.contains(" 101 "),
            "{what}: switched protocols: {reply}"
        );
        if status >= 400 && reply.contains("application/json") {
            assert!(reply.contains("{\"error\":"), "{what}: {reply}");
        }
        assert_free_of(&key, what, &reply);
        assert_serves(&addr, &me, what);
    }
    // Only the normal requests reached the upstream whole, and the POST
    // framed by Transfer-Encoding with its empty body. (A body that ends
    // early is streamed as it comes, then the upstream connection is
    // dropped: the upstream sees a request shorter than it declared.)
    let got = up.requests();
    let new = &got[before..];
    let normal = |r: &&serde_json::Value| {
        r["path"] == "/v1/echo" && r["method"] == "GET" && r["key_ok"] == true
    };
    let cut_short = |r: &&serde_json::Value| {
        let declared = r["length"].as_str().and_then(|l| l.parse::<u64>().ok());
        r["body_bytes"]
            .as_u64()
            .zip(declared)
            .is_some_and(|(n, d)| n < d)
    };
    let chunked_empty = |r: &&serde_json::Value| {
        r["method"] == "POST" && r["body_bytes"] == 0 && r["length"].is_null()
    };
    assert!(
        new.iter()
            .all(|r| normal(&r) || cut_short(&r) || chunked_empty(&r)),
        "a malformed request reached the upstream: {new:?}"
    );
    assert!(new.iter().filter(chunked_empty).count() <= 1, "{new:?}");
    assert_eq!(new.iter().filter(normal).count(), cases.len(), "{new:?}");
    let (status, out, err) = live.finish();
    assert!(status.success(), "{err}");
    assert_free_of(&key, "keywarden's output", &(out + &err));
    assert_free_of(&key, "the audit log", &dir.read("audit.log"));
}

/// A head that never ends is closed at the head timeout (10 s), as is a
/// connection that sends nothing; a connection idle between requests for
/// longer than that stays open (the idle timeout is 60 s); the proxy
/// serves meanwhile.
#[test]
fn proxy_closes_slow_heads_at_ten_seconds_and_keeps_idle_connections() {
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let addr = proxy_addr(&live);
    let me = bearer(&live);
    let request = format!("GET /openai/echo HTTP/1.1\r\nHost: x\r\n{me}\r\n\r\n");
    // Keep-alive: one request now, the next after the head timeout.
    let mut keep = TcpStream::connect(&addr).expect("connect");
    keep.write_all(request.as_bytes()).expect("write");
    let first = read_until(&mut keep, "\r\n0\r\n\r\n", Duration::from_secs(15));
    assert_eq!(status_of(&String::from_utf8_lossy(&first)), 200);
    let start = Instant::now();
    let mut silent = TcpStream::connect(&addr).expect("connect");
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.write_all(format!("GET /openai/echo HTTP/1.1\r\nHost: x\r\n{me}\r\n").as_bytes())
        .expect("write");
    // A header line every half second: bytes keep coming, the head never
    // ends.
    let mut n = 0;
    let slow_closed = loop {
        if slow
            .write_all(format!("X-Drip-{n}: x\r\n").as_bytes())
            .is_err()
        {
            break start.elapsed();
        }
        n += 1;
        let (_, closed) = read_to_close(&mut slow, Duration::from_millis(500));
        if closed {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the slow head was never closed"
        );
        if n == 4 {
            assert_serves(&addr, &me, "a slow head started");
        }
    };
    assert!(
        slow_closed >= Duration::from_millis(9_500),
        "closed before the head timeout: {slow_closed:?}"
    );
    let (_, closed) = read_to_close(&mut silent, Duration::from_secs(15));
    assert!(closed, "a connection that sent nothing was kept open");
    assert!(start.elapsed() >= Duration::from_millis(9_500));
    // The keep-alive connection idled longer than the head timeout.
    keep.write_all(request.as_bytes()).expect("write");
    let second = read_until(&mut keep, "\r\n0\r\n\r\n", Duration::from_secs(15));
    let second = String::from_utf8_lossy(&second);
    assert_eq!(status_of(&second), 200, "{second}");
    assert_free_of(&key, "the reply", &second);
    live.finish();
}

/// A reload that changes a route's settings: the running proxy keeps the
/// ones it started with (SPEC promises only the value swap) and says so
/// in keywarden's log, naming the settings and the way to apply them.
#[test]
fn proxy_reload_that_changes_route_settings_warns_and_keeps_the_old_ones() {
    let Proxied {
        dir,
        up,
        admin,
        live,
        ..
    } = start_with_admin(&[]);
    let echo = format!("{}/echo", live.var("OPENAI_BASE_URL"));
    let me = bearer(&live);
    assert_eq!(curl(&[&echo, "-H", &me]).0, 200);
    // /echo leaves the allow list, the upstream moves, the key rotates.
    let reg = dir
        .read("reg.yaml")
        .replace("\"GET /echo\", ", "")
        .replacen(&up.url("/v1"), "https://127.0.0.2:9/v1", 1);
    dir.write("reg.yaml", reg);
    dir.write("openai.key", secret(40));
    let out = output(kw(&dir, &["reload"]).env("KEYWARDEN_ADMIN_SOCKET", &admin));
    assert!(out.status.success(), "{}", stderr(&out));
    // The old settings: still allowed, still the same upstream; the new key.
    let (status, body) = curl(&[&echo, "-H", &me]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        up.requests().last().map(|r| r["key_ok"].clone()),
        Some(true.into())
    );
    let (status, _, err) = live.finish();
    assert!(status.success(), "{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("route 'openai'"))
        .unwrap_or_else(|| panic!("no warning about the changed route: {err}"));
    assert!(
        warning.contains("upstream, allow") && warning.contains("restart keywarden"),
        "{warning}"
    );
    assert!(
        !warning.contains("127.0.0.2"),
        "a setting's value: {warning}"
    );
}

/// A reload that drops `proxy:` from a secret: the running proxy serves
/// the route on, and the socket goes on refusing the value to the child
/// (403 "proxied") until keywarden restarts; keywarden's log says so.
#[test]
fn proxy_reload_that_drops_proxy_keeps_the_value_from_the_child() {
    let Proxied {
        dir,
        up: _up,
        key,
        admin,
        live,
    } = start_with_admin(&[]);
    let reg = dir.read("reg.yaml");
    let start = reg
        .find("    proxy:\n      preset: openai")
        .expect("openai's proxy");
    let end = start + reg[start..].find("anthropic:").expect("next entry");
    dir.write("reg.yaml", format!("{}{}", &reg[..start], &reg[end..]));
    let out = output(kw(&dir, &["reload"]).env("KEYWARDEN_ADMIN_SOCKET", &admin));
    assert!(out.status.success(), "{}", stderr(&out));
    let sock = live.var("KEYWARDEN_SOCKET");
    let auth = format!("Authorization: Bearer {}", live.var("KEYWARDEN_TOKEN"));
    let (status, body) = curl(&[
        "--unix-socket",
        &sock,
        "http://localhost/v1/secrets/openai",
        "-H",
        &auth,
    ]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("proxied"), "{body}");
    assert_free_of(&key, "the socket's answer", &body);
    let echo = format!("{}/echo", live.var("OPENAI_BASE_URL"));
    assert_eq!(curl(&[&echo, "-H", &bearer(&live)]).0, 200);
    let (status, _, err) = live.finish();
    assert!(status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("secret 'openai' is no longer proxied")
                && l.contains("restart keywarden")),
        "{err}"
    );
}

/// The placeholder is accepted where `inject` puts the key, and nowhere
/// else (401), on its own route only. The one exception is the anthropic
/// preset, whose official SDK sends the key as `Authorization: Bearer`:
/// accepted there too (and stripped), the upstream still gets `x-api-key`.
#[test]
fn proxy_placeholder_only_where_the_key_goes() {
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    // The upstream takes one key: both routes' secrets hold it.
    dir.write("anthropic.key", &key);
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca]);
    let openai = format!("{}/echo", live.var("OPENAI_BASE_URL"));
    let anthropic = format!("{}/v1/messages", live.var("ANTHROPIC_BASE_URL"));
    let own = live.var("OPENAI_API_KEY");
    let theirs = live.var("ANTHROPIC_API_KEY");
    let h = |name: &str, value: &str| format!("{name}: {value}");
    let cases: Vec<(&str, &str, String, u16)> = vec![
        (
            "openai: in its Authorization",
            &openai,
            h("Authorization", &format!("Bearer {own}")),
            200,
        ),
        ("openai: in x-api-key", &openai, h("X-Api-Key", &own), 401),
        ("openai: in another header", &openai, h("X-Key", &own), 401),
        (
            "openai: without Bearer",
            &openai,
            h("Authorization", &own),
            200,
        ),
        (
            "openai: as Basic",
            &openai,
            h("Authorization", &format!("Basic {own}")),
            401,
        ),
        (
            "anthropic: in x-api-key",
            &anthropic,
            h("X-Api-Key", &theirs),
            200,
        ),
        (
            "anthropic: as a bearer token",
            &anthropic,
            h("Authorization", &format!("Bearer {theirs}")),
            200,
        ),
        (
            "anthropic: in another header",
            &anthropic,
            h("X-Key", &theirs),
            401,
        ),
        (
            "anthropic: openai's in x-api-key",
            &anthropic,
            h("X-Api-Key", &own),
            403,
        ),
    ];
    for (what, url, header, want) in &cases {
        let body = "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[]}";
        let (status, reply) = if url.ends_with("/messages") {
            curl(&[
                url,
                "-H",
                header,
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ])
        } else {
            curl(&[url, "-H", header])
        };
        assert_eq!(status, *want, "{what}: {reply}");
        assert_free_of(&key, what, &reply);
    }
    let sent: Vec<_> = up.requests();
    assert!(sent.iter().all(|r| r["key_ok"] == true), "{sent:?}");
    let messages: Vec<_> = sent
        .iter()
        .filter(|r| r["path"] == "/v1/messages")
        .collect();
    assert_eq!(messages.len(), 2, "{sent:?}");
    for r in messages {
        let names: Vec<&str> = r["headers"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n.as_str())
            .collect();
        assert!(
            names.contains(&"x-api-key") && !names.contains(&"authorization"),
            "the upstream gets x-api-key alone: {names:?}"
        );
    }
    live.finish();
}

/// A request body that stops halfway is cut at the body timeout (10 s
/// without a byte): the upstream call is dropped (the upstream sees the
/// connection go), the client gets 408 naming the route, the audit log
/// records it, and the proxy serves on. Meanwhile a multi-MiB body sent
/// slowly but steadily, for longer than the timeout in all, passes whole.
/// Both run at once: the test waits for the timeout once.
#[test]
fn proxy_cuts_a_stalled_upload_and_passes_a_slow_steady_one() {
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let live = Live::start(&dir, &["--proxy-ca", &ca, "--audit", "audit.log"]);
    let addr = proxy_addr(&live);
    let me = bearer(&live);
    let phantom = live.var("OPENAI_API_KEY");

    // Steady: 14 pieces of 256 KiB a second apart, 13 s in all.
    const PIECE: usize = 256 << 10;
    const PIECES: usize = 14;
    let steady = {
        let (addr, me) = (addr.clone(), me.clone());
        std::thread::spawn(move || {
            let total = PIECE * PIECES;
            let mut body = b"{\"model\":\"m\",\"messages\":[],\"pad\":\"".to_vec();
            body.resize(total - 2, b'x');
            body.extend_from_slice(b"\"}");
            let mut s = TcpStream::connect(&addr).expect("connect");
            write!(
                s,
                "POST /openai/chat/completions HTTP/1.1\r\nHost: x\r\n{me}\r\nContent-Type: application/json\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
            )
            .expect("head");
            let start = Instant::now();
            let mut sent = Ok(());
            for (i, piece) in body.chunks(PIECE).enumerate() {
                if i > 0 {
                    // Pacing, not synchronisation: the upload is meant to
                    // be slow.
                    std::thread::sleep(Duration::from_secs(1));
                }
                if let Err(e) = s.write_all(piece) {
                    sent = Err(format!("piece {i} after {:?}: {e}", start.elapsed()));
                    break;
                }
            }
            let took = start.elapsed();
            let (reply, _) = read_to_close(&mut s, Duration::from_secs(30));
            (reply, sent, took, total)
        })
    };

    // Stalled: the head and half of the body, then nothing.
    let declared: usize = 64 << 10;
    let mut stalled = TcpStream::connect(&addr).expect("connect");
    write!(
        stalled,
        "POST /openai/echo HTTP/1.1\r\nHost: x\r\n{me}\r\nContent-Length: {declared}\r\n\r\n"
    )
    .expect("head");
    stalled
        .write_all(&vec![b'y'; declared / 2])
        .expect("half the body");
    let stalled_at = Instant::now();
    assert_serves(&addr, &me, "an upload stalled");
    let (reply, closed) = read_to_close(&mut stalled, Duration::from_secs(40));
    let took = stalled_at.elapsed();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert_eq!(status_of(&reply), 408, "after {took:?}: {reply}");
    assert!(closed, "the connection stayed open after the 408: {reply}");
    assert!(
        (Duration::from_millis(9_500)..Duration::from_secs(30)).contains(&took),
        "cut {took:?} after the body stalled (the timeout is 10 s)"
    );
    assert!(
        reply.contains("{\"error\":") && reply.contains("route 'openai'"),
        "{reply}"
    );
    assert_free_of(&key, "the 408", &reply);
    assert!(!reply.contains(&phantom), "the 408 holds the placeholder");
    assert!(
        upstream_hung_up(&up, Duration::from_secs(10)),
        "the upstream call of the stalled upload was not dropped"
    );
    let cut = up
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/v1/echo" && r["method"] == "POST")
        .expect("the stalled request reached the upstream");
    assert!(
        cut["body_bytes"]
            .as_u64()
            .is_some_and(|n| n < declared as u64),
        "{cut}"
    );
    assert_serves(&addr, &me, "a stalled upload was cut");

    let (reply, sent, took, total) = steady.join().expect("the steady upload");
    let reply = String::from_utf8_lossy(&reply);
    if let Err(e) = sent {
        panic!("the steady upload was cut: {e}: {reply}");
    }
    assert!(took > Duration::from_secs(10), "not slow enough: {took:?}");
    assert_eq!(status_of(&reply), 200, "the steady upload: {reply}");
    assert!(reply.contains("Hello from upstream"), "{reply}");
    let whole = up
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/v1/chat/completions")
        .expect("the steady upload reached the upstream");
    assert_eq!(whole["body_bytes"].as_u64(), Some(total as u64), "{whole}");

    let (status, _, err) = live.finish();
    assert!(status.success(), "{err}");
    let audit = dir.read("audit.log");
    let line = audit
        .lines()
        .find(|l| l.contains("\"event\":\"proxy\"") && l.contains("\"status\":408"))
        .unwrap_or_else(|| panic!("no proxy event with 408: {audit}"));
    assert!(
        line.contains("/openai/echo") && line.contains("no request body bytes"),
        "{line}"
    );
    assert_free_of(&key, "the audit log", &audit);
    assert!(!audit.contains(&phantom), "placeholder in the audit log");
}
