//! Running a provider program (`exec://`, `pass`, `op`): a CLI is looked up
//! in the `PATH` of keywarden's environment; the program gets that
//! environment less what no provider may see (`Context::tool_env`), its
//! stdout is the value and a non-zero exit is an error carrying the first
//! line of its stderr with the value scrubbed out. The process is killed if
//! the resolution is abandoned (the resolver's timeout).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{scrub, Context, ResolveError, MAX_SOURCE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use zeroize::Zeroize;

const STDERR_SHOWN: usize = 300;

/// Kills the tool if the resolution is abandoned.
struct KillOnDrop(Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Read the program's stdout (at most [`MAX_SOURCE`] bytes: past them it
/// is killed and `FileTooLarge` returned) and the start of its stderr, then
/// reap it.
fn collect(
    mut child: std::process::Child,
    pid: Pid,
) -> std::io::Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>)> {
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut buf);
        }
        buf
    });
    let mut out = Vec::with_capacity(8192);
    let read = match child.stdout.take() {
        Some(s) => s.take(MAX_SOURCE as u64 + 1).read_to_end(&mut out),
        None => Ok(0),
    };
    let too_large = out.len() > MAX_SOURCE;
    if too_large || read.is_err() {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let status = child.wait()?;
    let err = reader.join().unwrap_or_default();
    if too_large {
        out.zeroize();
        return Err(std::io::ErrorKind::FileTooLarge.into());
    }
    read?;
    Ok((status, out, err))
}

/// `tool` found in the `PATH` of `ctx`, or a clear error naming it (69).
pub(crate) fn find(tool: &str, ctx: &Context, what: &str) -> Result<PathBuf, ResolveError> {
    let search = ctx.var("PATH").cloned().unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    which::which_in(tool, Some(search), cwd).map_err(|_| {
        ResolveError::unavailable(format!(
            "'{tool}' ({what}) is not installed: not found in PATH"
        ))
    })
}

/// Run `program args…` and return its stdout; `tool` names it in errors.
pub(crate) async fn run(
    tool: &str,
    program: PathBuf,
    args: Vec<String>,
    ctx: &Context,
) -> Result<Vec<u8>, ResolveError> {
    let child = Command::new(&program)
        .args(&args)
        .env_clear()
        .envs(ctx.tool_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ResolveError::io(tool, &e))?;
    let pid = Pid::from_raw(child.id() as i32);
    let mut guard = KillOnDrop(Some(pid));
    // The program is waited for on a thread of its own (not the blocking
    // pool, which file reads share): at most the bound of programs run.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(collect(child, pid));
    });
    let waited = rx.await;
    guard.0 = None;
    let (status, mut out, err) = waited
        .map_err(|e| ResolveError::unavailable(format!("{tool}: {e}")))?
        .map_err(|e| ResolveError::io(&format!("the output of {tool}"), &e))?;
    if status.success() {
        return Ok(out);
    }
    let text = String::from_utf8_lossy(&err);
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    // Scrub the whole output and each of its lines (a tool may print the
    // value and fail afterwards).
    let mut values: Vec<&[u8]> = vec![&out];
    values.extend(
        out.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l)),
    );
    let mut first = scrub(first, &values);
    if first.len() > STDERR_SHOWN {
        let mut cut = STDERR_SHOWN;
        while !first.is_char_boundary(cut) {
            cut -= 1;
        }
        first.truncate(cut);
        first.push('…');
    }
    out.zeroize();
    let how = match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
    };
    let detail = if first.is_empty() {
        String::new()
    } else {
        format!(": {first}")
    };
    Err(ResolveError::unavailable(format!("'{tool}' {how}{detail}")))
}
