//! An HTTP/1.1 client for the unix sockets (hyper over
//! `tokio::net::UnixStream`): `keywarden get`, `revoke` and `inventory` use
//! it, and so do the tests and the benchmark. Bodies come back in wiped-on-
//! drop buffers; the token is sent as a sensitive header.

#![forbid(unsafe_code)]

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use zeroize::Zeroizing;

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, wiped on drop.
    pub body: Zeroizing<Vec<u8>>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl Answer {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error` field of the body, if any.
    pub fn error(&self) -> Option<String> {
        self.json()
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string)
    }
}

fn io_other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// One keep-alive connection to a socket.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Connect to the socket at `path` (inside a tokio runtime).
    pub async fn open(path: &Path) -> std::io::Result<Connection> {
        let stream = UnixStream::connect(path).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io_other)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender, driver })
    }

    /// Send one request and read the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&[u8]>,
        body: Option<Vec<u8>>,
    ) -> std::io::Result<Answer> {
        let mut req = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
        *req.method_mut() = method;
        *req.uri_mut() = path.parse().map_err(io_other)?;
        let h = req.headers_mut();
        h.insert(HOST, HeaderValue::from_static("keywarden"));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(token) = bearer {
            let mut v = Zeroizing::new(Vec::with_capacity(7 + token.len()));
            v.extend_from_slice(b"Bearer ");
            v.extend_from_slice(token);
            let mut value = HeaderValue::from_bytes(&v).map_err(io_other)?;
            value.set_sensitive(true);
            h.insert(AUTHORIZATION, value);
        }
        self.sender.ready().await.map_err(io_other)?;
        let resp = self.sender.send_request(req).await.map_err(io_other)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut incoming = resp.into_body();
        let mut body = Zeroizing::new(Vec::new());
        while let Some(frame) = incoming.frame().await {
            if let Ok(data) = frame.map_err(io_other)?.into_data() {
                body.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// One request on a fresh connection, from synchronous code.
pub fn call(
    socket: &Path,
    method: Method,
    path: &str,
    bearer: Option<&[u8]>,
    body: Option<Vec<u8>>,
) -> std::io::Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    rt.block_on(async {
        let mut conn = Connection::open(socket).await?;
        conn.send(method, path, bearer, body).await
    })
}
