//! `kv://path`: delegated to the configured KV backend (the embedded store by
//! default, Vault when policy says so). With no backend, every `kv://` ref
//! fails closed with a clear message.

use std::sync::Arc;

use super::{Context, Provider, Request, ResolveError, ResolveFuture};

/// A key-value secret backend.
pub trait KvBackend: Send + Sync {
    /// Fetch the value stored under `path`.
    fn get<'a>(&'a self, path: &'a str) -> ResolveFuture<'a>;
}

pub(super) struct KvProvider {
    backend: Option<Arc<dyn KvBackend>>,
}

impl KvProvider {
    pub(super) fn new(backend: Option<Arc<dyn KvBackend>>) -> Self {
        KvProvider { backend }
    }
}

impl Provider for KvProvider {
    fn resolve<'a>(&'a self, req: &'a Request, _ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(async move {
            match &self.backend {
                Some(b) => b.get(req.reference.path()).await,
                None => Err(ResolveError::unavailable(
                    "no kv backend is configured: this build has no embedded store yet; \
                     use file://, env://, dotenv://, cred:// or exec:// refs",
                )),
            }
        })
    }
}
