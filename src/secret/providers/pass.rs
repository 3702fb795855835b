//! `pass://path`: the first line of `pass show path` (the password; later
//! lines are pass's free-form metadata). `pass` is taken from the `PATH` of
//! keywarden's environment and runs with that environment less what no
//! provider may see (always-denied variables, `env://` sources,
//! `KEYWARDEN_*`), so `PASSWORD_STORE_DIR`, `GNUPGHOME` and the gpg agent
//! apply as usual.

use super::{Context, Provider, Request, ResolveError, ResolveFuture};
use zeroize::Zeroize;

use super::tool;

/// The `pass://` provider.
#[derive(Debug, Default)]
pub struct PassProvider;

impl Provider for PassProvider {
    fn resolve<'a>(&'a self, req: &'a Request, ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(async move {
            let path = req.reference.path();
            check_path(path)?;
            let program = tool::find("pass", ctx, "needed for pass:// refs")?;
            let mut out = tool::run("pass", program, vec!["show".into(), path.into()], ctx).await?;
            let end = out.iter().position(|&b| b == b'\n').unwrap_or(out.len());
            let mut first = out[..end].to_vec();
            out.zeroize();
            if first.last() == Some(&b'\r') {
                first.pop();
            }
            super::non_empty(first, "the first line of the pass entry")
        })
    }
}

/// A pass entry name: relative, no `.`/`..` segment, not an option.
fn check_path(path: &str) -> Result<(), ResolveError> {
    if path.starts_with('-') || path.starts_with('/') {
        return Err(ResolveError::config(
            "a pass:// path must be an entry name such as pass://email/work",
        ));
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(ResolveError::config(
            "a pass:// path must not have empty, '.' or '..' segments",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_odd_paths() {
        for p in ["-c", "/abs", "a//b", "a/../b", "./a", "a/"] {
            assert!(check_path(p).is_err(), "{p}");
        }
        assert!(check_path("email/work").is_ok());
    }
}
