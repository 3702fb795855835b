//! `env://NAME`: a variable of keywarden's own environment. The variable is
//! stripped from the child's environment (see `envfilter`).

use std::os::unix::ffi::OsStrExt;

use super::{non_empty, Context, Provider, Request, ResolveError, ResolveFuture};

pub(super) struct EnvProvider;

impl Provider for EnvProvider {
    fn resolve<'a>(&'a self, req: &'a Request, ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(async move {
            let name = req.reference.path();
            let value = ctx
                .var(name)
                .ok_or_else(|| ResolveError::unavailable(format!("variable {name} is not set")))?;
            non_empty(value.as_bytes().to_vec(), &format!("variable {name}"))
        })
    }
}
