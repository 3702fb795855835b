//! `kv://path`: delegated to the configured KV backend (the embedded store by
//! default). With no backend, every `kv://` ref fails closed with the reason.

use std::sync::Arc;

use super::{Context, Provider, Request, ResolveError, ResolveFuture};

/// A key-value secret backend.
pub trait KvBackend: Send + Sync {
    /// Fetch the value stored under `path`.
    fn get<'a>(&'a self, path: &'a str) -> ResolveFuture<'a>;
}

pub(super) struct KvProvider {
    /// The backend, or why there is none.
    backend: Result<Arc<dyn KvBackend>, String>,
}

impl KvProvider {
    pub(super) fn new(backend: Result<Arc<dyn KvBackend>, String>) -> Self {
        KvProvider { backend }
    }
}

impl Provider for KvProvider {
    fn resolve<'a>(&'a self, req: &'a Request, _ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(async move {
            match &self.backend {
                Ok(b) => b.get(req.reference.path()).await,
                Err(why) => Err(ResolveError::unavailable(format!("no kv backend: {why}"))),
            }
        })
    }
}
