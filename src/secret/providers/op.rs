//! `op://vault/item/field`: 1Password through its CLI, `op read
//! op://vault/item/field` (the ref is passed to `op` as written). `op` is
//! taken from the `PATH` of keywarden's environment and runs with that
//! environment less what no provider may see (`OP_SERVICE_ACCOUNT_TOKEN`,
//! `OP_CONNECT_*`, a signed-in session pass); without it the ref fails
//! with an error naming `op` (69).
//! One trailing newline of the output is trimmed.

use super::{Context, Provider, Request, ResolveError, ResolveFuture};

use super::tool;

/// The `op://` provider.
#[derive(Debug, Default)]
pub struct OpProvider;

impl Provider for OpProvider {
    fn resolve<'a>(&'a self, req: &'a Request, ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(async move {
            let text = req.reference.as_str();
            let parts: Vec<&str> = req.reference.path().split('/').collect();
            if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
                return Err(ResolveError::config(
                    "op refs look like op://vault/item/field (or op://vault/item/section/field)",
                ));
            }
            let program = tool::find("op", ctx, "the 1Password CLI, needed for op:// refs")?;
            let mut out =
                tool::run("op", program, vec!["read".into(), text.to_string()], ctx).await?;
            if out.last() == Some(&b'\n') {
                out.pop();
                if out.last() == Some(&b'\r') {
                    out.pop();
                }
            }
            super::non_empty(out, "the output of 'op read'")
        })
    }
}
