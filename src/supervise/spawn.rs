//! Finding and starting the command: `which`-style lookup in the child's
//! `PATH` (127 not found, 126 not executable), arguments verbatim, stdin
//! inherited, stdout/stderr through pipes for the relay.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::unistd::Pid;

use crate::error::{Error, ErrorKind, Result};
use crate::sys::{Credentials, ExecPlan, StartError, Step};

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
    /// Run on this pty slave (stdout, stderr, controlling terminal)
    /// instead of pipes.
    pub pty_slave: Option<OwnedFd>,
    /// On a pty, the slave is stdin too (else stdin is inherited).
    pub pty_stdin: bool,
    /// A process group of its own (off a pty, whose session has one).
    pub own_group: bool,
    /// With `own_group`: that group takes the terminal's foreground when
    /// keywarden's group has it (`--signal-group`).
    pub foreground: bool,
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
/// tied to the thread that starts it.
pub fn spawn(spec: SpawnSpec<'_>) -> Result<Spawned> {
    let shown = spec
        .argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let os = |what: &str, e: std::io::Error| Error::new(ErrorKind::Os, format!("{what}: {e}"));
    let (outputs, stdio) = match &spec.pty_slave {
        None => {
            let pipe = || {
                nix::unistd::pipe2(OFlag::O_CLOEXEC)
                    .map_err(|e| os("cannot make the output pipes", e.into()))
            };
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let stdio = [None, Some(out_w.as_raw_fd()), Some(err_w.as_raw_fd())];
            (Some(((out_r, err_r), (out_w, err_w))), stdio)
        }
        Some(slave) => {
            let fd = slave.as_raw_fd();
            (None, [spec.pty_stdin.then_some(fd), Some(fd), Some(fd)])
        }
    };
    let plan = ExecPlan::new(
        spec.program.as_os_str().as_bytes(),
        spec.argv.iter().map(|a| a.as_bytes()),
        spec.env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        stdio,
        spec.credentials.as_ref(),
        spec.pty_slave.is_some(),
        spec.own_group,
    )
    .map(|p| {
        if spec.foreground {
            p.take_foreground()
        } else {
            p
        }
    })
    .map_err(|_| {
        Error::new(
            ErrorKind::Usage,
            format!(
                "cannot start {shown}: an argument or an environment variable holds a NUL byte"
            ),
        )
    })?;
    let pid = plan.start().map_err(|e| spawn_error(&shown, &e))?;
    drop(plan); // wipes the environment strings
    drop(spec.pty_slave); // the parent's copy of the pty slave
    let outputs = outputs.map(|(read, _write)| read); // closes the write ends
    Ok(Spawned { pid, outputs })
}

/// Map a failed start like a shell would: ENOENT (also a missing script
/// interpreter) is 127, EACCES / ENOEXEC / ETXTBSY is 126; a refused
/// privilege change in the child (setuid, setgroups) is 77; anything else
/// is an OS failure (71).
fn spawn_error(shown: &str, e: &StartError) -> Error {
    let errno = e.error.raw_os_error();
    let (kind, what) = match (e.step, errno) {
        (Step::Exec, Some(libc::ENOENT)) => (ErrorKind::NotFound, "command not found"),
        (Step::Exec, Some(libc::EACCES | libc::ENOEXEC | libc::ETXTBSY | libc::EISDIR)) => {
            (ErrorKind::NotExecutable, "cannot execute")
        }
        (_, Some(libc::EPERM)) => (ErrorKind::Permission, "cannot start"),
        _ => (ErrorKind::Os, "cannot start"),
    };
    let detail = match e.step {
        Step::Exec => e.error.to_string(),
        Step::ParentGone => e.step.describe().to_string(),
        step => format!("{}: {}", step.describe(), e.error),
    };
    Error::new(kind, format!("{what}: {shown}: {detail}"))
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
