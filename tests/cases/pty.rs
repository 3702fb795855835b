//! `--pty`: on a terminal the child gets a pseudo-terminal of its own — a
//! tty, colours, the window size, Ctrl-C — and the user's terminal mode is
//! restored on exit, also after a signal.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags};

use crate::util::*;

/// keywarden running with stdin/stdout/stderr on a test-owned terminal.
struct OnTerminal {
    child: Child,
    master: OwnedFd,
    slave: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(dir: &Dir, args: &[&str]) -> OnTerminal {
        Self::start_with(dir, args, &[])
    }

    fn start_with(dir: &Dir, args: &[&str], vars: &[(&str, &str)]) -> OnTerminal {
        Self::start_full(dir, args, vars, true)
    }

    /// With `stdin_on_terminal` false, keywarden's stdin is /dev/null.
    fn start_full(
        dir: &Dir,
        args: &[&str],
        vars: &[(&str, &str)],
        stdin_on_terminal: bool,
    ) -> OnTerminal {
        let ws = Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&ws), None).expect("openpty");
        let stdio = || Stdio::from(pty.slave.try_clone().expect("dup"));
        // A terminal's ^C must be able to interrupt the child: keywarden
        // and the child inherit SIGINT and SIGQUIT ignored when the suite
        // runs as a background job of a non-interactive shell, so they are
        // set back to their defaults here.
        let child = kw_under(dir, &["env", "--default-signal=INT,QUIT"], args)
            .envs(vars.iter().copied())
            .stdin(if stdin_on_terminal {
                stdio()
            } else {
                Stdio::null()
            })
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .expect("spawn");
        let seen = collect(pty.master.try_clone().expect("dup"));
        OnTerminal {
            child,
            master: pty.master,
            slave: pty.slave,
            seen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).into_owned()
    }

    fn wait_for(&self, needle: &str) -> bool {
        eventually(Duration::from_secs(10), || self.text().contains(needle))
    }

    fn type_bytes(&self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).expect("type");
    }

    fn lflag(&self) -> LocalFlags {
        tcgetattr(self.slave.as_fd())
            .expect("tcgetattr")
            .local_flags
    }
}

#[test]
fn the_child_sees_a_terminal_with_colours_and_the_window_size() {
    let dir = Dir::new();
    let mut t = OnTerminal::start(
        &dir,
        &["run", "--", "sh", "-c", "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-ttys; stty size; printf '\\033[32mgreen\\033[0m\\n'"],
    );
    let status = wait_timeout(&mut t.child, Duration::from_secs(10)).expect("exits");
    assert!(status.success());
    assert!(t.wait_for("\x1b[32mgreen\x1b[0m"), "{:?}", t.text());
    assert!(t.text().contains("all-ttys"), "{:?}", t.text());
    assert!(t.text().contains("33 101"), "{:?}", t.text());
}

#[test]
fn a_window_change_resizes_the_childs_terminal() {
    let dir = Dir::new();
    let mut t = OnTerminal::start(
        &dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "trap 'echo size=$(stty size)' WINCH; echo ready; while :; do sleep 0.02; done",
        ],
    );
    assert!(t.wait_for("ready"));
    let slave = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&t.slave)
    ))
    .expect("pts path");
    let status = std::process::Command::new("stty")
        .arg("-F")
        .arg(&slave)
        .args(["rows", "40", "cols", "120"])
        .status()
        .expect("stty");
    assert!(status.success());
    signal(t.child.id(), "WINCH");
    assert!(t.wait_for("size=40 120"), "{:?}", t.text());
    signal(t.child.id(), "TERM");
    wait_timeout(&mut t.child, Duration::from_secs(10)).expect("exits");
}

/// SPEC: `--pty auto` and a terminal on stdout give the child a pty. With
/// stdin not a terminal the child reads it as it is (no echo, no pump).
#[test]
fn a_terminal_on_stdout_alone_gives_a_pty_with_stdin_as_it_is() {
    need("ps");
    let dir = Dir::new();
    let mut t = OnTerminal::start_full(
        &dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "[ -t 0 ] || echo stdin-as-is; [ -t 1 ] && [ -t 2 ] && echo out-tty; \
             cat; echo cat-done; ps -o tty= -p $$",
        ],
        &[],
        false,
    );
    let status = wait_timeout(&mut t.child, Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{:?}", t.text());
    assert!(t.wait_for("cat-done"), "{:?}", t.text());
    let text = t.text();
    assert!(text.contains("stdin-as-is"), "{text:?}");
    assert!(text.contains("out-tty"), "{text:?}");
    // Its controlling terminal is the pty keywarden made, not ours.
    let last = text.trim_end().lines().last().unwrap_or_default().trim();
    assert!(last.starts_with("pts/"), "{text:?}");
}

#[test]
fn pipes_are_used_with_pty_never() {
    let dir = Dir::new();
    let mut t = OnTerminal::start(
        &dir,
        &[
            "run",
            "--pty",
            "never",
            "--",
            "sh",
            "-c",
            "[ -t 1 ] || echo not-a-tty",
        ],
    );
    wait_timeout(&mut t.child, Duration::from_secs(10)).expect("exits");
    assert!(t.wait_for("not-a-tty"), "{:?}", t.text());
}

#[test]
fn keystrokes_and_ctrl_c_reach_the_child() {
    let dir = Dir::new();
    let mut t = OnTerminal::start(
        &dir,
        &["run", "--", "sh", "-c", "read line; echo got:$line; trap 'echo interrupted; exit 3' INT; echo ready; while :; do sleep 0.02; done"],
    );
    // keywarden puts the user's terminal in raw mode while the child runs.
    assert!(eventually(Duration::from_secs(5), || !t
        .lflag()
        .contains(LocalFlags::ICANON)));
    t.type_bytes(b"hello\r");
    assert!(t.wait_for("got:hello"), "{:?}", t.text());
    assert!(t.wait_for("ready"));
    t.type_bytes(b"\x03");
    let status = wait_timeout(&mut t.child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(3), "{:?}", t.text());
    assert!(t.text().contains("interrupted"));
}

#[test]
fn the_terminal_mode_is_restored_after_sigterm() {
    let dir = Dir::new();
    let before = {
        let ws = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let probe = openpty(Some(&ws), None).expect("openpty");
        tcgetattr(probe.slave.as_fd())
            .expect("tcgetattr")
            .local_flags
    };
    let mut t = OnTerminal::start(
        &dir,
        &["run", "--", "sh", "-c", "echo ready; exec sleep 30"],
    );
    assert!(t.wait_for("ready"));
    assert!(!t.lflag().contains(LocalFlags::ICANON), "raw while running");
    signal(t.child.id(), "TERM");
    let status = wait_timeout(&mut t.child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(143));
    let after = t.lflag();
    assert!(
        after.contains(LocalFlags::ICANON) && after.contains(LocalFlags::ECHO),
        "{after:?}"
    );
    assert_eq!(after, before);
}

#[test]
fn output_on_the_pty_is_redacted_too() {
    let dir = Dir::new();
    let value = secret(32);
    dir.write("k", &value);
    let mut t = OnTerminal::start_with(
        &dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "printf '\\033[1mkey=%s\\033[0m\\n' \"$K\"",
        ],
        &[("K", "file://k")],
    );
    wait_timeout(&mut t.child, Duration::from_secs(10)).expect("exits");
    assert!(t.wait_for("key=[REDACTED:K]"), "{:?}", t.text());
    assert!(!t.text().contains(&value));
}

/// `keywarden ARGS` under `script -qec` (a terminal that `script` holds),
/// with `script`'s own stdin fed `input`: once it ends, `script` sends the
/// terminal's EOF character, often before keywarden switches it to raw mode.
fn under_script(dir: &Dir, args: &str, input: &[u8]) -> Option<Vec<u8>> {
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &format!("{} {args}", bin()), "/dev/null"]);
    let mut child = prepare(dir, c)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write");
    }
    let mut out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    wait_timeout(&mut child, Duration::from_secs(10))?;
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

#[test]
fn review_20_no_stray_nul_when_stdin_ends_before_raw_mode() {
    need("script");
    let dir = Dir::new();
    for run in 0..20 {
        let out = under_script(&dir, "run -q --pty auto -- echo hello", b"").expect("exits");
        let text = String::from_utf8_lossy(&out);
        assert!(
            !out.contains(&0) && !text.contains("^@"),
            "run {run}: {text:?}"
        );
        assert_eq!(text, "hello\r\n", "run {run}");
    }
}

#[test]
fn input_and_an_eof_sent_before_raw_mode_reach_the_child_in_order() {
    need("script");
    let dir = Dir::new();
    for run in 0..5 {
        let out = under_script(&dir, "run -q --pty auto -- cat", b"typed ahead\n")
            .unwrap_or_else(|| panic!("run {run}: cat never saw the end of its input"));
        let text = String::from_utf8_lossy(&out);
        assert!(
            !out.contains(&0) && !text.contains("^@"),
            "run {run}: {text:?}"
        );
        assert!(text.contains("typed ahead"), "run {run}: {text:?}");
    }
}
