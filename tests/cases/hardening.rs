//! Hardening: non-dumpable keywarden, parent-death signal, no leaked
//! descriptors, and separate-uid mode with `--user`.

use std::process::Stdio;
use std::time::Duration;

use crate::util::*;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Run keywarden as uid/gid 65534 through setpriv (tests run as root in CI).
fn as_nobody(dir: &Dir, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        bin(),
    ])
    .args(args)
    .current_dir(dir.path())
    .env_remove("CI")
    .env("KEYWARDEN_REVOCATION_LIST", dir.join("revocations.json"))
    .stdin(Stdio::null());
    c
}

#[test]
fn a_same_uid_child_cannot_read_keywardens_environ() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    need("setpriv");
    let dir = Dir::new();
    let value = secret(32);
    let script = "if cat /proc/$PPID/environ >/dev/null 2>&1; then echo parent-readable; else echo parent-denied; fi; \
                  if cat /proc/self/environ >/dev/null 2>&1; then echo self-readable; fi; id -u";
    let out = output(as_nobody(&dir, &["run", "--", "sh", "-c", script]).env("SOME_TOKEN", &value));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "parent-denied\nself-readable\n65534\n");
}

#[test]
fn the_child_dies_when_keywarden_is_killed() {
    let dir = Dir::new();
    let mut kwp = kw(
        &dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo $$ > child.pid; exec sleep 60",
        ],
    )
    .spawn()
    .expect("spawn");
    assert!(eventually(Duration::from_secs(5), || dir
        .read("child.pid")
        .trim()
        .parse::<u32>()
        .is_ok()));
    let child: u32 = dir.read("child.pid").trim().parse().expect("pid");
    assert!(matches!(proc_state(child), Some('S') | Some('R')));
    signal(kwp.id(), "KILL");
    let _ = kwp.wait();
    assert!(
        eventually(Duration::from_secs(5), || matches!(
            proc_state(child),
            None | Some('Z')
        )),
        "the child outlived keywarden"
    );
}

#[test]
fn no_descriptor_of_keywarden_reaches_the_child() {
    let dir = Dir::new();
    dir.write("inherited", "x");
    // fd 7 is open (not close-on-exec) in keywarden; keywarden itself holds
    // a signalfd, an eventfd and pipes. Only 0, 1, 2 may reach the child.
    let script = format!(
        "exec 7<inherited; exec {} run -- sh -c 'ls /proc/$$/fd'",
        bin()
    );
    let out = output(&mut kw(&dir, &["run", "--", "sh", "-c", &script]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut fds: Vec<u32> = stdout(&out)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    fds.sort_unstable();
    assert_eq!(fds, vec![0, 1, 2], "{}", stdout(&out));
}

#[test]
fn user_switches_uid_groups_and_home() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = Dir::new();
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--user",
                "nobody",
                "--",
                "sh",
                "-c",
                "id -u; id -g; id -G; echo $HOME $USER $LOGNAME",
            ],
        )
        .env("HOME", "/root"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "65534");
    assert!(
        !lines[2].split_whitespace().any(|g| g == "0"),
        "root group kept: {text}"
    );
    assert!(lines[3].ends_with("nobody nobody"), "{text}");
    assert!(!lines[3].starts_with("/root"), "{text}");

    let out = output(&mut kw(
        &dir,
        &["run", "--user", "65534:65534", "--", "id", "-u"],
    ));
    assert_eq!(stdout(&out), "65534\n");

    let out = output(&mut kw(
        &dir,
        &["run", "--user", "no-such-user-kw", "--", "true"],
    ));
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("no such user 'no-such-user-kw'"));
}

#[test]
fn user_is_refused_when_not_root() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    need("setpriv");
    let dir = Dir::new();
    let out = output(&mut as_nobody(
        &dir,
        &["run", "--user", "root", "--", "touch", "marker"],
    ));
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("must run as root"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("marker").exists());
}

#[test]
fn an_unreadable_secret_file_is_permission_denied_77() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    need("setpriv");
    let dir = Dir::new();
    let p = dir.write("k", secret(20));
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = output(as_nobody(&dir, &["run", "--", "true"]).env("K", "file://k"));
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(stderr(&out).contains("permission denied"));
}

#[test]
fn mlock_refusal_is_warned_about_once() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    need("setpriv");
    need("prlimit");
    let dir = Dir::new();
    for name in ["a", "b", "c"] {
        dir.write(name, secret(24));
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "prlimit",
        "--memlock=0:0",
        bin(),
        "run",
        "--",
        "true",
    ])
    .current_dir(dir.path())
    .env_remove("CI")
    .env("KEYWARDEN_REVOCATION_LIST", dir.join("revocations.json"))
    .env("A", "file://a")
    .env("B", "file://b")
    .env("C", "file://c");
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).matches("cannot lock secret memory").count(),
        1,
        "{}",
        stderr(&out)
    );
}

/// A runtime folder only root can enter, as `/run/user/0` is.
fn root_only_runtime_dir(dir: &Dir) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let run = dir.join("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    run
}

#[test]
fn review_15_a_user_child_can_open_its_socket_under_a_root_only_runtime_dir() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    need("curl");
    let dir = Dir::new();
    let run = root_only_runtime_dir(&dir);
    // The child calls its API with its token, then tries the runtime
    // folder, where the admin socket stays.
    let script = "curl -sS --max-time 10 --unix-socket \"$KEYWARDEN_SOCKET\" \
                  -H \"Authorization: Bearer $KEYWARDEN_TOKEN\" http://kw/v1/health; echo; \
                  id -u; stat -c '%u %a' \"$KEYWARDEN_SOCKET\" \"$(dirname \"$KEYWARDEN_SOCKET\")\"; \
                  ls \"$RUN\" >/dev/null 2>&1 && echo admin-folder-open || echo admin-folder-closed";
    let out = output(
        kw(&dir, &["run", "--user", "nobody", "--", "sh", "-c", script])
            .env("XDG_RUNTIME_DIR", &run)
            .env("RUN", &run),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "{\"status\":\"ok\"}", "{text}\n{}", stderr(&out));
    assert_eq!(lines[1], "65534");
    assert_eq!(lines[2], "65534 600", "the socket is the child's, 0600");
    assert_eq!(lines[3], "65534 700", "its folder is the child's, 0700");
    assert_eq!(lines[4], "admin-folder-closed", "{text}");
    // The admin socket stayed in the root-only folder, and works.
    let admin: Vec<_> = std::fs::read_dir(&run)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("keywarden-admin-")
        })
        .collect();
    assert!(admin.is_empty(), "removed on exit: {admin:?}");
}

#[test]
fn review_15_a_chosen_socket_the_user_child_cannot_reach_is_78() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = Dir::new();
    let run = root_only_runtime_dir(&dir);
    let socket = run.join("api.sock");
    let out = output(&mut kw(
        &dir,
        &[
            "run",
            "--user",
            "nobody",
            "--socket",
            &socket.to_string_lossy(),
            "--",
            "touch",
            "ran",
        ],
    ));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("uid 65534"), "{err}");
    assert!(err.contains(&run.to_string_lossy().into_owned()), "{err}");
    assert!(!dir.join("ran").exists());
}
