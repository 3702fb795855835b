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

/// Largest answer body read (a secret's answer is small): a source's cap.
pub(super) const MAX_BODY: usize = super::MAX_SOURCE;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait before attempt `attempt` (2, 3, …): `base`, doubled for each
/// later attempt, at most 5 s.
pub(super) fn backoff(base: Duration, attempt: u32) -> Duration {
    (base * 2u32.saturating_pow(attempt.saturating_sub(2))).min(MAX_BACKOFF)
}

/// "N attempt(s)".
pub(super) fn attempts(n: u32) -> String {
    format!("{n} {}", if n == 1 { "attempt" } else { "attempts" })
}

/// Send `request` and read its answer (at most [`MAX_BODY`] bytes) within
/// `timeout`. `Ok(Ok(answer))` for any answer; `Ok(Err(why))` for what is
/// worth another try (no answer in time, a connection error); `Err` for
/// what is not (TLS, an oversized answer). `shown` names the server.
pub(super) async fn exchange(
    client: &HttpClient,
    request: hyper::Request<Full<Bytes>>,
    timeout: Duration,
    shown: &str,
) -> Result<Result<(hyper::StatusCode, Vec<u8>), String>, ResolveError> {
    use http_body_util::BodyExt;
    use zeroize::Zeroize;
    let exchange = async {
        let resp = client.request(request).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Ok(chunk) = frame.into_data() {
                if out.len() + chunk.len() > MAX_BODY {
                    out.zeroize();
                    return Ok(Err(status));
                }
                out.extend_from_slice(&chunk);
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Ok((status, out)))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Ok(Err(format!(
            "no answer from {shown} within {} ms",
            timeout.as_millis()
        ))),
        // A certificate problem does not go away on retry.
        Ok(Err(e)) if is_tls(&*e) => Err(ResolveError::unavailable(format!(
            "TLS with {shown} failed: {}",
            transport(&*e)
        ))),
        Ok(Err(e)) => Ok(Err(format!("cannot reach {shown}: {}", transport(&*e)))),
        Ok(Ok(Err(status))) => Err(ResolveError::too_large(&format!(
            "the answer of {shown} ({status})"
        ))),
        Ok(Ok(Ok(answer))) => Ok(Ok(answer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let base = Duration::from_millis(200);
        let waits: Vec<u128> = (2..=8).map(|a| backoff(base, a).as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(attempts(1), "1 attempt");
        assert_eq!(attempts(3), "3 attempts");
    }
}
