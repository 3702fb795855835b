//! Test fixtures: a scratch folder, a `keywarden` command builder that
//! starts from a known environment, random secrets, and polling helpers
//! (deadlines, never fixed sleeps).

#![allow(dead_code)]

mod tools;
pub use tools::{need, venv_bin};
pub mod sdk;
pub mod upstream;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keywarden")
}

/// A scratch folder, removed on drop.
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix("kw-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Dir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Write a file (parents created), returning its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, contents).expect("write");
        p
    }

    /// Write an executable script.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.write(name, format!("#!/bin/sh\n{body}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.join(name)).unwrap_or_default()
    }
}

/// `keywarden ARGS` in `dir`, with keywarden's own variables and CI cleared
/// so the environment is `dev` unless a test says otherwise.
pub fn kw(dir: &Dir, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    prepare(dir, c)
}

/// The arguments of `run --env dev --registry reg.yaml OPTS -- sh -c
/// SCRIPT`, the shape most tests run.
pub fn run_sh<'a>(opts: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut args = vec!["run", "--env", "dev", "--registry", "reg.yaml"];
    args.extend_from_slice(opts);
    args.extend(["--", "sh", "-c", script]);
    args
}

/// `kw` in a new session (`setsid`): keywarden has no controlling terminal,
/// even when the tests run on one.
pub fn kw_detached(dir: &Dir, args: &[&str]) -> Command {
    let mut c = Command::new("setsid");
    c.arg(bin()).args(args);
    prepare(dir, c)
}

/// `kw` in a new session whose controlling terminal is keywarden's stdin
/// (`setsid --ctty`), which must then be a terminal.
pub fn kw_on_ctty(dir: &Dir, args: &[&str]) -> Command {
    let mut c = Command::new("setsid");
    c.arg("--ctty").arg(bin()).args(args);
    prepare(dir, c)
}

/// `kw` started through `wrapper` (a program and its arguments, which end
/// by exec'ing the rest of the command line: keywarden and `args`).
pub fn kw_under(dir: &Dir, wrapper: &[&str], args: &[&str]) -> Command {
    let mut c = Command::new(wrapper[0]);
    c.args(&wrapper[1..]).arg(bin()).args(args);
    prepare(dir, c)
}

/// `c` set up as `kw` sets up keywarden: in `dir`, from a known environment.
pub fn prepare(dir: &Dir, mut c: Command) -> Command {
    c.current_dir(dir.path());
    for v in [
        "CI",
        "KEYWARDEN_ENV",
        "KEYWARDEN_REGISTRY",
        "KEYWARDEN_POLICY",
        "KEYWARDEN_LOG_FORMAT",
        "KEYWARDEN_RESOLVE_TIMEOUT",
        "KEYWARDEN_STORE",
        "VAULT_ADDR",
        "VAULT_TOKEN",
    ] {
        c.env_remove(v);
    }
    // Never the real home or the shared temp folder: the revocation list
    // and the sockets' folders go in the scratch folder (a test that
    // SIGKILLs keywarden leaves its sockets behind, as any crash would).
    c.env("KEYWARDEN_REVOCATION_LIST", dir.join("revocations.json"));
    c.env("XDG_RUNTIME_DIR", dir.path());
    c.stdin(Stdio::null());
    c
}

/// Run to completion, capturing output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn keywarden")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A random alphanumeric secret of `n` characters (never a committed literal).
pub fn secret(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("urandom");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Poll `f` every 10 ms until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for a spawned child with a deadline; kill it if it overruns.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Send `sig` to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// The state letter of a process (`R`, `S`, `Z`, ...), or None when gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.chars().next()
}

/// Whether a tool is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run to completion with `input` on stdin, capturing output.
pub fn feed(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// A random store key as `ENCRYPTION_KEY` takes it: 64 lowercase hex digits.
pub fn store_key() -> String {
    secret(64)
        .bytes()
        .map(|b| format!("{:x}", b % 16))
        .collect()
}

/// Everything read from `fd` (a pty master, say), collected by a thread
/// until end of file or an error.
pub fn collect(fd: std::os::fd::OwnedFd) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::io::Read;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut reader = std::fs::File::from(fd);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    seen
}

/// `keywarden run --env dev --registry reg.yaml --admin-socket ADMIN -- sh
/// -c "echo ready > ready; wait for go; THEN"` in `dir`, stdout piped,
/// returned once the child wrote `ready` (so the sidecar serves).
pub fn sidecar_until_go(dir: &Dir, admin: &Path, then: &str) -> Child {
    let script = format!("echo ready > ready; while [ ! -f go ]; do sleep 0.02; done; {then}");
    let child = kw(
        dir,
        &[
            "run",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--admin-socket",
        ],
    )
    .arg(admin)
    .args(["--", "sh", "-c", &script])
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn");
    assert!(
        eventually(Duration::from_secs(10), || dir.join("ready").exists()),
        "the sidecar's child never started"
    );
    child
}
