//! The command runs transparently: arguments, stdin, exit codes, lookup.

use crate::util::*;

#[test]
fn args_with_spaces_and_stdin_pass_through() {
    let dir = Dir::new();
    let mut cmd = kw(
        &dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            r#"printf '%s|' "$@"; cat"#,
            "sh",
            "a  b",
            "",
            "--user",
            "-v",
            "c\td",
        ],
    );
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"from stdin\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(stdout(&out), "a  b||--user|-v|c\td|from stdin\n");
    assert!(out.status.success());
}

#[test]
fn the_command_may_follow_run_without_a_separator() {
    let dir = Dir::new();
    let out = output(&mut kw(&dir, &["run", "echo", "-n", "x"]));
    assert_eq!(stdout(&out), "x");
}

#[test]
fn exit_status_passes_through() {
    let dir = Dir::new();
    for code in [0, 1, 3, 42, 255] {
        let out = output(&mut kw(
            &dir,
            &["run", "--", "sh", "-c", &format!("exit {code}")],
        ));
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    }
}

#[test]
fn killed_by_signal_n_gives_128_plus_n() {
    let dir = Dir::new();
    for (sig, n) in [("TERM", 15), ("KILL", 9), ("USR1", 10)] {
        let out = output(&mut kw(
            &dir,
            &["run", "--", "sh", "-c", &format!("kill -{sig} $$")],
        ));
        assert_eq!(out.status.code(), Some(128 + n), "{sig}: {}", stderr(&out));
    }
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126() {
    let dir = Dir::new();
    let out = output(&mut kw(&dir, &["run", "--", "no-such-command-kw"]));
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("command not found: no-such-command-kw"),
        "{}",
        stderr(&out)
    );

    let out = output(&mut kw(&dir, &["run", "--", "./missing"]));
    assert_eq!(out.status.code(), Some(127));

    dir.write("plain", "echo hi\n");
    let out = output(&mut kw(&dir, &["run", "--", "./plain"]));
    assert_eq!(out.status.code(), Some(126));
    assert!(
        stderr(&out).contains("command not executable: ./plain"),
        "{}",
        stderr(&out)
    );

    // Found on PATH but not executable: 126, like a shell.
    let out = output(kw(&dir, &["run", "--", "plain"]).env("PATH", dir.path()));
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));

    // A directory is not executable either.
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    let out = output(&mut kw(&dir, &["run", "--", "./sub"]));
    assert_eq!(out.status.code(), Some(126));
}

#[test]
fn usage_errors_are_64() {
    let dir = Dir::new();
    for args in [
        &["run"][..],
        &["frobnicate"],
        &["run", "--grace", "soon", "--", "true"],
        &["run", "--bogus", "--", "true"],
        &["run", "-x", "true"],
        &["check", "--format", "xml"],
        &[],
    ] {
        let out = output(&mut kw(&dir, args));
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        if !args.is_empty() {
            // One line naming what is wrong (a bare `keywarden` shows help).
            assert_eq!(
                stderr(&out).lines().count(),
                1,
                "{args:?}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).starts_with("keywarden: error: "),
                "{}",
                stderr(&out)
            );
        }
    }
    let out = output(&mut kw(&dir, &["--help"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("run"));
}

#[test]
fn binary_output_is_relayed_byte_for_byte() {
    let dir = Dir::new();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    dir.write("blob", &data);
    let out = output(&mut kw(&dir, &["run", "--", "cat", "blob"]));
    assert!(out.status.success());
    assert!(out.stdout == data, "relayed bytes differ");
}

#[test]
fn stdout_and_stderr_stay_apart_and_in_order() {
    let dir = Dir::new();
    // A policy: something is protected, so stderr is the command's alone.
    dir.write("configs/secrets-policy.json", "{}");
    let out = output(&mut kw(
        &dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done",
        ],
    ));
    assert_eq!(stdout(&out), "out1\nout2\nout3\nout4\nout5\n");
    assert_eq!(stderr(&out), "err1\nerr2\nerr3\nerr4\nerr5\n");
}

#[test]
fn output_is_relayed_while_the_child_still_runs() {
    let dir = Dir::new();
    let mut child = kw(
        &dir,
        &["run", "--", "sh", "-c", "printf 'Password: '; sleep 5"],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 32];
    use std::io::Read;
    let n = out.read(&mut buf).expect("read");
    assert_eq!(&buf[..n], b"Password: ");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn output_left_in_the_pipe_when_the_child_exits_is_not_lost() {
    let dir = Dir::new();
    // A grandchild keeps the pipe open: keywarden must still exit, with
    // everything the child itself wrote.
    let out = output(&mut kw(
        &dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "head -c 200000 /dev/zero | tr '\\0' x; (sleep 30 &) ; echo done",
        ],
    ));
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 200_005);
}

/// keywarden started with stdin and stdout closed opens them on /dev/null
/// first (as std's own start-up would; the binary has its own `main`), so
/// none of its descriptors takes their numbers: the child's stdin is
/// /dev/null, not a keywarden pipe or signalfd, and its output is relayed.
#[test]
fn closed_stdio_is_reopened_on_dev_null() {
    let dir = Dir::new();
    dir.write("configs/secrets-policy.json", "{}");
    let closed = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec 0<&- 1>&-; exec \"$0\" run --env dev --no-socket -- sh -c 'readlink /proc/self/fd/0 >&2; echo out; echo err >&2'")
        .arg(bin())
        .current_dir(dir.path())
        .env_remove("CI")
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .expect("spawn");
    assert!(closed.status.success(), "{}", stderr(&closed));
    assert_eq!(stderr(&closed), "/dev/null\nerr\n");
}
