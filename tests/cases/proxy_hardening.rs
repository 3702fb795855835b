//! The credential proxy under pressure: a revocation in the middle of a
//! stream, `--no-socket` (the proxy alone, reloaded by signal).
//! Same fixtures as `proxy.rs`: a real HTTPS upstream, a real keywarden,
//! raw sockets as the child's client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::proxy::{assert_free_of, bearer, ca_opt, setup, upstream};
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
    let dir = Dir::new();
    let up = upstream(&dir);
    let key = setup(&dir, &up, "");
    let ca = ca_opt();
    let admin = dir.join("admin.sock");
    let admin_opt = admin.display().to_string();
    let live = Live::start(
        &dir,
        &[
            "--proxy-ca",
            &ca,
            "--admin-socket",
            &admin_opt,
            "--audit",
            "audit.log",
        ],
    );
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
    let dir = Dir::new();
    let up = upstream(&dir);
    setup(&dir, &up, "");
    let ca = ca_opt();
    let admin = dir.join("admin.sock");
    let admin_opt = admin.display().to_string();
    let live = Live::start(&dir, &["--proxy-ca", &ca, "--admin-socket", &admin_opt]);
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
