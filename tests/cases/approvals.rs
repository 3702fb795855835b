//! Human-in-the-loop approvals end to end through `keywarden run`: the
//! child asks for an `approval: required` secret and gets a challenge; the
//! operator sees the code on keywarden's stderr (never in the child's
//! output, the log or the audit log) and answers with `keywarden approve`;
//! one read is then served.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::util::*;

/// `keywarden approve ID` with `code` on stdin; (exit code, stdout, stderr).
fn approve(dir: &Dir, admin: &str, id: &str, code: &str) -> (Option<i32>, String, String) {
    let out = feed(
        &mut kw(dir, &["approve", id, "--admin-socket", admin]),
        format!("{code}\n").as_bytes(),
    );
    (out.status.code(), stdout(&out), stderr(&out))
}

/// The challenge id and code of an operator notice line.
fn parse_notice(line: &str) -> (String, String) {
    let id = line
        .split("challenge ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .expect("challenge id")
        .to_string();
    let code = line
        .split("code ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("code")
        .to_string();
    (id, code)
}

#[test]
fn an_approval_required_secret_is_served_once_per_answered_challenge() {
    let dir = Dir::new();
    let value = secret(40);
    dir.write("secrets/billing", &value);
    dir.write(
        "reg.yaml",
        "billing:\n  dev:\n    secret_ref: file://secrets/billing\n    scope: [pool]\n    approval: required\n",
    );
    let admin = dir.join("admin.sock").display().to_string();
    // The child: asks (challenge), waits for the test to approve, reads
    // once (served), asks again (a new challenge).
    let script = format!(
        "{kw} get billing 2>first.err; echo first=$?; \
         while [ ! -f approved ]; do sleep 0.05; done; \
         {kw} get billing >value; echo second=$?; \
         {kw} get billing 2>third.err; echo third=$?; \
         while [ ! -f done ]; do sleep 0.05; done",
        kw = bin()
    );
    // Detached from any terminal, so the operator's line goes to stderr.
    let mut run = kw_detached(
        &dir,
        &run_sh(
            &["--admin-socket", &admin, "--audit", "audit.jsonl"],
            &script,
        ),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run");
    let (tx, rx) = mpsc::channel();
    let err = run.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines() {
            let line = line.expect("line");
            if line.contains("approval needed") {
                let _ = tx.send(line.clone());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let notice = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("an operator notice");
    assert!(notice.contains("secret 'billing'"), "{notice}");
    let (id, code) = parse_notice(&notice);
    assert_eq!(id.len(), 32, "{notice}");

    // A wrong code: 77, two attempts left; the right one: 0.
    let (rc, _, err) = approve(&dir, &admin, &id, "0000-000");
    assert_eq!(rc, Some(77), "{err}");
    assert!(err.contains("2 attempts left"), "{err}");
    let (rc, out, err) = approve(&dir, &admin, &id, &code);
    assert_eq!(rc, Some(0), "{err}");
    assert!(out.contains("approved: one read of 'billing'"), "{out}");
    // Answered: the challenge is gone.
    let (rc, _, err) = approve(&dir, &admin, &id, &code);
    assert_eq!(rc, Some(65), "{err}");
    dir.write("approved", "");

    // The next read asks anew: a second notice, a second challenge, which
    // three wrong codes lock.
    let second = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a second notice");
    let (id2, code2) = parse_notice(&second);
    assert_ne!(id2, id);
    for left in ["2 attempts left", "1 attempt left", "locked"] {
        let (rc, _, err) = approve(&dir, &admin, &id2, "1");
        assert_eq!(rc, Some(77), "{err}");
        assert!(err.contains(left), "{err}");
    }
    let (rc, _, _) = approve(&dir, &admin, &id2, &code2);
    assert_eq!(rc, Some(65));
    dir.write("done", "");

    let status = run.wait().expect("wait");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut run.stdout.take().expect("stdout"), &mut out)
        .expect("stdout");
    let all_err = reader.join().expect("reader");
    assert!(status.success(), "{all_err}");
    assert_eq!(out, "first=77\nsecond=0\nthird=77\n", "{all_err}");
    assert_eq!(dir.read("value").trim(), value);
    let first_err = dir.read("first.err");
    assert!(
        first_err.contains(&format!("challenge {id}")) && first_err.contains("keywarden approve"),
        "{first_err}"
    );
    // The codes reach the operator's stderr only: not the child, not the
    // audit log.
    let audit = dir.read("audit.jsonl");
    for c in [&code, &code2] {
        let digits: String = c.chars().filter(char::is_ascii_digit).collect();
        for text in [&audit, &out, &first_err, &dir.read("third.err")] {
            assert!(!text.contains(c.as_str()) && !text.contains(&digits));
        }
    }
    for event in ["\"event\":\"challenge\"", "\"event\":\"approve\""] {
        assert!(audit.contains(event), "{event} missing from the audit log");
    }
    assert!(!audit.contains(&value));
}

#[test]
fn approve_without_a_sidecar_or_with_a_bad_id() {
    let dir = Dir::new();
    let mut c = kw(&dir, &["approve", "0123abcd"]);
    let out = output(c.stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let out = output(&mut kw(
        &dir,
        &["approve", "../x", "--admin-socket", "/nonexistent"],
    ));
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}

/// With a controlling terminal, the operator's line goes there, not to
/// keywarden's stderr (which may be a log).
#[test]
fn the_code_goes_to_the_controlling_terminal_when_there_is_one() {
    let dir = Dir::new();
    dir.write("secrets/billing", secret(40));
    dir.write(
        "reg.yaml",
        "billing:\n  dev:\n    secret_ref: file://secrets/billing\n    scope: [pool]\n    approval: required\n",
    );
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let on_tty = || Stdio::from(pty.slave.try_clone().expect("dup"));
    let err_file = std::fs::File::create(dir.join("stderr.txt")).expect("stderr file");
    let script = format!("{kw} get billing 2>/dev/null; echo asked=$?", kw = bin());
    let mut run = kw_on_ctty(&dir, &run_sh(&["--pty", "never"], &script))
        .stdin(on_tty())
        .stdout(on_tty())
        .stderr(err_file)
        .spawn()
        .expect("run");
    let seen = collect(pty.master.try_clone().expect("dup"));
    let text = || String::from_utf8_lossy(&seen.lock().expect("lock")).into_owned();
    assert!(
        eventually(Duration::from_secs(10), || text().contains("asked=77")),
        "{}",
        text()
    );
    wait_timeout(&mut run, Duration::from_secs(10)).expect("exits");
    let terminal = text();
    assert!(
        terminal.contains("approval needed: secret 'billing'") && terminal.contains("code "),
        "{terminal}"
    );
    let logged = dir.read("stderr.txt");
    assert!(!logged.contains("approval needed"), "{logged}");
}
