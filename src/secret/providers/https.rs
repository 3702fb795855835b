//! The HTTP(S) client the remote providers share: HTTP/1 over TCP or rustls
//! (ring), pooled, plus how a transport failure is told and worded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::ResolveError;

/// A pooled client for `http://` and `https://` endpoints.
pub(super) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled client trusting `roots`, connecting within `connect_timeout`.
pub(super) fn pooled_client(
    roots: rustls::RootCertStore,
    connect_timeout: Duration,
) -> Result<HttpClient, ResolveError> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ResolveError::unavailable(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(32)
        .build(connector))
}

/// The system's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).
pub(super) fn native_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// True when a transport error comes from TLS (a certificate, a handshake):
/// a `rustls::Error` anywhere in the chain, io errors wrapping included.
pub(super) fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if is_tls(inner) {
            return true;
        }
    }
    e.source().is_some_and(is_tls)
}

/// A transport error in words: the innermost I/O error, else hyper's.
pub(super) fn transport(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.to_string();
        }
        last = s.to_string();
        source = s.source();
    }
    last
}
