//! Running a provider program (`exec://`, `pass`, `op`): a CLI is looked up
//! in the `PATH` of keywarden's environment; the program gets that
//! environment (and nothing else), its stdout is the value and a non-zero exit is an error carrying
//! the first line of its stderr with the value scrubbed out. The process is
//! killed if the resolution is abandoned (the resolver's timeout).
//!

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{scrub, Context, ResolveError};
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
    let mut child = Command::new(&program)
        .args(&args)
        .env_clear()
        .envs(ctx.env.iter())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ResolveError::io(tool, &e))?;
    let mut guard = KillOnDrop(Some(Pid::from_raw(child.id() as i32)));
    let waited = tokio::task::spawn_blocking(move || {
        let mut stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(64 * 1024).read_to_end(&mut buf);
            }
            buf
        });
        let mut out = Vec::with_capacity(8192);
        if let Some(mut s) = child.stdout.take() {
            s.read_to_end(&mut out)?;
        }
        let status = child.wait()?;
        let err = reader.join().unwrap_or_default();
        Ok::<_, std::io::Error>((status, out, err))
    })
    .await;
    guard.0 = None;
    let (status, mut out, err) = waited
        .map_err(|e| ResolveError::unavailable(format!("{tool}: {e}")))?
        .map_err(|e| ResolveError::io(tool, &e))?;
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
