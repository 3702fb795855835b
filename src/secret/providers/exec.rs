//! `exec://PROGRAM?PATH`: Summon's provider protocol. PROGRAM gets PATH as
//! its one argument and prints the value on stdout; a non-zero exit is an
//! error carrying the first line of its stderr, with the value scrubbed out.
//! A program name without `/` is looked up in `$PATH`; a relative path is
//! taken from the request's base folder.

use std::path::PathBuf;

use super::{non_empty, trim_newline, Context, Provider, Request, ResolveError, ResolveFuture};
use crate::secret::SecretBytes;

pub(super) struct ExecProvider;

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

async fn run(program: PathBuf, arg: String, ctx: &Context) -> Result<SecretBytes, ResolveError> {
    let shown = format!("provider {}", program.display());
    let mut out = super::tool::run(&shown, program, vec![arg], ctx).await?;
    trim_newline(&mut out);
    non_empty(out, &format!("output of {shown}"))
}
