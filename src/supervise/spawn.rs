//! Finding and starting the command: `which`-style lookup in the child's
//! `PATH` (127 not found, 126 not executable), arguments verbatim, stdin
//! inherited, stdout/stderr through pipes for the relay.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::Pid;

use crate::error::{Error, ErrorKind, Result};
use crate::sys::{install_child_setup, ChildSetup, Credentials};

/// What to start.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// The program as resolved by [`locate`].
    pub program: PathBuf,
    /// `argv`, starting with the name as the user wrote it.
    pub argv: &'a [OsString],
    /// The complete environment.
    pub env: &'a [(OsString, OsString)],
    /// Run as this user (root only).
    pub credentials: Option<Credentials>,
    /// Run on this pty slave (stdin, stdout, stderr, controlling terminal)
    /// instead of pipes.
    pub pty_slave: Option<OwnedFd>,
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid.
    pub pid: Pid,
    /// Read ends of its stdout and stderr (none on a pty: read the master).
    pub outputs: Option<(OwnedFd, OwnedFd)>,
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Find `name` the way `execvp` would, in `path_var` (the child's `PATH`).
pub fn locate(name: &OsStr, path_var: Option<&OsStr>, cwd: &Path) -> Result<PathBuf> {
    let shown = name.to_string_lossy();
    if name.is_empty() {
        return Err(Error::new(ErrorKind::NotFound, "command not found: ''"));
    }
    if name.as_encoded_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return match std::fs::metadata(&path) {
            Err(_) => Err(Error::new(
                ErrorKind::NotFound,
                format!("command not found: {shown}"),
            )),
            Ok(_) if !is_executable(&path) => Err(Error::new(
                ErrorKind::NotExecutable,
                format!("command not executable: {shown}"),
            )),
            Ok(_) => Ok(path),
        };
    }
    let search = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    if let Ok(found) = which::which_in(name, Some(search), cwd) {
        return Ok(found);
    }
    let exists = std::env::split_paths(search).any(|dir| dir.join(name).is_file());
    if exists {
        Err(Error::new(
            ErrorKind::NotExecutable,
            format!("command not executable: {shown}"),
        ))
    } else {
        Err(Error::new(
            ErrorKind::NotFound,
            format!("command not found: {shown}"),
        ))
    }
}

/// Start the child. Call from the main thread: the parent-death signal is
/// tied to the thread that forks.
pub fn spawn(spec: SpawnSpec<'_>) -> Result<Spawned> {
    let shown = spec
        .argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = Command::new(&spec.program);
    if let Some(arg0) = spec.argv.first() {
        cmd.arg0(arg0);
    }
    cmd.args(spec.argv.iter().skip(1))
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    let on_pty = spec.pty_slave.is_some();
    match &spec.pty_slave {
        None => {
            cmd.stdin(Stdio::inherit())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        Some(slave) => {
            let dup = || {
                slave.try_clone().map(Stdio::from).map_err(|e| {
                    Error::new(ErrorKind::Os, format!("cannot duplicate the pty: {e}"))
                })
            };
            cmd.stdin(dup()?).stdout(dup()?).stderr(dup()?);
        }
    }
    install_child_setup(
        &mut cmd,
        ChildSetup {
            credentials: spec.credentials,
            parent: nix::unistd::getpid(),
            controlling_tty: on_pty,
        },
    );
    let mut child = cmd.spawn().map_err(|e| spawn_error(&shown, &e))?;
    drop(cmd); // closes the parent's copies of the pty slave
    let pid = Pid::from_raw(child.id() as i32);
    let outputs = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => Some((out.into(), err.into())),
        _ => None,
    };
    Ok(Spawned { pid, outputs })
}

/// Map a failed spawn like a shell would: ENOENT (also a missing script
/// interpreter) is 127, EACCES / ENOEXEC / ETXTBSY is 126; a refused
/// privilege change in the child (setuid, setgroups) is 77; anything else
/// is an OS failure (71).
fn spawn_error(shown: &str, e: &std::io::Error) -> Error {
    let (kind, what) = match e.raw_os_error() {
        Some(libc::ENOENT) => (ErrorKind::NotFound, "command not found"),
        Some(libc::EACCES | libc::ENOEXEC | libc::ETXTBSY | libc::EISDIR) => {
            (ErrorKind::NotExecutable, "cannot execute")
        }
        Some(libc::EPERM) => (ErrorKind::Permission, "cannot start"),
        _ => (ErrorKind::Os, "cannot start"),
    };
    Error::new(kind, format!("{what}: {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_classes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").expect("write");
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.path().as_os_str();
        let cwd = Path::new("/");
        assert_eq!(
            locate(OsStr::new("tool"), Some(path), cwd).expect("found"),
            exe
        );
        assert_eq!(
            locate(OsStr::new("plain"), Some(path), cwd)
                .expect_err("126")
                .exit_code(),
            126
        );
        assert_eq!(
            locate(OsStr::new("nope"), Some(path), cwd)
                .expect_err("127")
                .exit_code(),
            127
        );
        assert_eq!(
            locate(plain.as_os_str(), None, cwd)
                .expect_err("126")
                .exit_code(),
            126
        );
        assert_eq!(
            locate(OsStr::new("/no/such"), None, cwd)
                .expect_err("127")
                .exit_code(),
            127
        );
    }
}
