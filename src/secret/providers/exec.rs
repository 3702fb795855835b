//! `exec://PROGRAM?PATH`: Summon's provider protocol. PROGRAM gets PATH as
//! its one argument and prints the value on stdout; a non-zero exit is an
//! error carrying the first line of its stderr, with the value scrubbed out.
//! A program name without `/` is looked up in `$PATH`; a relative path is
//! taken from the request's base folder.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{
    non_empty, scrub, trim_newline, Context, Provider, Request, ResolveError, ResolveFuture,
};

pub(super) struct ExecProvider;

/// Kills the provider process if the resolution is abandoned (timeout).
struct KillOnDrop(Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

const STDERR_SHOWN: usize = 300;

impl Provider for ExecProvider {
    fn resolve<'a>(&'a self, req: &'a Request, ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(async move {
            let (program, arg) = req.reference.path().split_once('?').unwrap_or_default();
            let path = if program.contains('/') {
                req.base_dir.join(program)
            } else {
                let search = ctx.var("PATH").cloned().unwrap_or_default();
                which::which_in(program, Some(search), &req.base_dir).map_err(|_| {
                    ResolveError::unavailable(format!(
                        "provider program '{program}' not found in PATH"
                    ))
                })?
            };
            run(path, arg.to_string(), ctx).await
        })
    }
}

async fn run(
    program: PathBuf,
    arg: String,
    ctx: &Context,
) -> Result<crate::secret::SecretBytes, ResolveError> {
    let shown = program.display().to_string();
    let mut child = Command::new(&program)
        .arg(&arg)
        .env_clear()
        .envs(ctx.env.iter())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ResolveError::io(&shown, &e))?;
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
        .map_err(|e| ResolveError::unavailable(format!("{shown}: {e}")))?
        .map_err(|e| ResolveError::io(&shown, &e))?;
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let mut first = scrub(first, &[&out]);
        if first.len() > STDERR_SHOWN {
            let mut cut = STDERR_SHOWN;
            while !first.is_char_boundary(cut) {
                cut -= 1;
            }
            first.truncate(cut);
            first.push('…');
        }
        zeroize::Zeroize::zeroize(&mut out);
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        let detail = if first.is_empty() {
            String::new()
        } else {
            format!(": {first}")
        };
        return Err(ResolveError::unavailable(format!(
            "provider {shown} {how}{detail}"
        )));
    }
    trim_newline(&mut out);
    non_empty(out, &format!("output of {shown}"))
}
