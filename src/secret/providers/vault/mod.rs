//! `vault://mount/path[?version=N][#field]`: HashiCorp Vault / OpenBao KV.
//!
//! * KV v2: `GET {VAULT_ADDR}/v1/{mount}/data/{path}` (`mount` is the first
//!   segment of the ref's path; mounts with a `/` in their name are not
//!   reachable); a path ending in `?version=N` pins version N
//!   (`vault://secret/app/db?version=3#password`).
//! * KV v1 when the mount says so: the engine version of each mount is read
//!   once from `sys/internal/ui/mounts/{mount}` (as the `vault kv` CLI
//!   does); v1 reads `GET /v1/{mount}/{path}` and refuses a version pin.
//! * `#field` picks a key of `data.data`; without it, a secret with exactly
//!   one key returns that key's value, otherwise a configuration error lists
//!   the key names (78). A string value is returned decoded; any other JSON
//!   value (number, bool, object) as its JSON text.
//! * Headers: `X-Vault-Token`, `X-Vault-Namespace` from `VAULT_NAMESPACE`.
//! * Token, first found: `VAULT_TOKEN`; the file named by
//!   `VAULT_TOKEN_FILE` (read on every use, so an agent that rotates it is
//!   followed); an AppRole login (`VAULT_ROLE_ID` + `VAULT_SECRET_ID`,
//!   mount `VAULT_APPROLE_MOUNT`, default `approle`); `$HOME/.vault-token`.
//!   `VAULT_SECRET_ID` may be a literal or a *local* ref (`cred://`,
//!   `file://`, `env://`, `dotenv://`, `exec://`), resolved by a private
//!   resolver holding keywarden's built-in providers (a provider has no
//!   handle on the resolver that called it).
//! * A [`VaultSession`] holds the token between resolutions: `run` keeps
//!   one for its life, so the AppRole login is reused; a background renewer
//!   ([`start_renewer`]) renews it two thirds into each TTL and logs in
//!   again when it reaches its maximum TTL; a `VAULT_TOKEN` is looked up
//!   once (`lookup-self`) and renewed the same way. A login token refused
//!   with 403 is replaced by a new login once.
//! * `VAULT_ADDR` may list several addresses, separated by commas (the
//!   nodes of a cluster): each attempt tries them in turn, starting with
//!   the one that answered last.
//! * Transport: `http://` or `https://` (rustls with ring) with one shared
//!   hyper client (connection pool: sequential requests reuse one
//!   connection; at most `max_in_flight` requests at once). CA roots:
//!   `VAULT_CACERT` (a PEM file) and/or `VAULT_CAPATH` (a folder of PEM
//!   files), else the system store. `VAULT_SKIP_VERIFY` is refused (78).
//!   A TLS failure is not retried.
//! * Each HTTP attempt is bounded by `request_timeout`; connection errors,
//!   timeouts, 5xx and redirects (a standby whose active node is gone) are
//!   retried (`attempts` in all, default 5 or `VAULT_MAX_RETRIES` + 1,
//!   exponential backoff from `backoff`); 4xx never. 403 → 77 "permission denied by the
//!   server", 404 → 69 "not found", unreachable → 69. The resolver's own
//!   timeout still bounds the whole resolution.
//! * Errors carry the server's reason (its `errors` list, scrubbed of the
//!   token) but never a token or a value.
//! * `lease_duration`/`renewable` and the KV version of each answer are
//!   recorded in the session's [`LeaseBook`]; a non-zero lease caps how
//!   long the socket API caches the value.

mod renew;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use renew::start_renewer;
use session::Held;
pub use session::{Lease, LeaseBook, TokenLife, TokenSource, VaultSession};

use super::https::{attempts as attempts_word, backoff, exchange, pooled_client, HttpClient};
use super::{scrub, Context, Provider, Request, ResolveError, ResolveFuture, Resolver};
use crate::error::ErrorKind;
use crate::secret::{Scheme, SecretBytes, SecretRef};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, StatusCode, Uri};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::Zeroize;

/// Longest server reason quoted in an error.
const REASON_SHOWN: usize = 200;

/// Timeouts and retries of the Vault provider.
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// Bound on one HTTP attempt (connect + answer + body).
    pub request_timeout: Duration,
    /// Attempts in all, for connection errors, timeouts and 5xx.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each later one, at most
    /// 5 s.
    pub backoff: Duration,
    /// Requests in flight at once (so at most this many connections: HTTP/1
    /// has one request per connection); the others wait their turn and
    /// reuse a pooled connection.
    pub max_in_flight: usize,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            request_timeout: Duration::from_secs(5),
            // 0.2 + 0.4 + 0.8 + 1.6 s of backoff: enough to ride out a
            // raft leader election (1.5–2.5 s measured on OpenBao).
            attempts: 5,
            backoff: Duration::from_millis(200),
            max_in_flight: 8,
        }
    }
}

impl VaultOptions {
    /// The defaults, with `VAULT_MAX_RETRIES` (retries after the first
    /// attempt, as the Vault CLI reads it; at most 10) applied.
    pub fn from_env(ctx: &Context) -> Self {
        let mut options = VaultOptions::default();
        if let Some(raw) = ctx.var("VAULT_MAX_RETRIES").filter(|v| !v.is_empty()) {
            match raw.to_str().and_then(|r| r.trim().parse::<u32>().ok()) {
                Some(n) => options.attempts = n.min(10) + 1,
                None => tracing::warn!("VAULT_MAX_RETRIES is not a number: ignored"),
            }
        }
        options
    }
}

/// The `vault://` provider.
pub struct VaultProvider {
    /// Built on first use: its CA roots come from the resolver's context.
    client: std::sync::OnceLock<Result<HttpClient, ResolveError>>,
    options: VaultOptions,
    session: Arc<VaultSession>,
    in_flight: tokio::sync::Semaphore,
    kv_versions: tokio::sync::Mutex<HashMap<String, KvVersion>>,
}

/// The KV engine version of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KvVersion {
    V1,
    V2,
}

impl std::fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultProvider")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl VaultProvider {
    /// A provider with its own connection pool and a session of its own.
    pub fn new(options: VaultOptions) -> Self {
        Self::with_session(options, VaultSession::once())
    }

    /// A provider with its own connection pool, sharing `session` (the
    /// token and leases of a run) with other providers.
    pub fn with_session(options: VaultOptions, session: Arc<VaultSession>) -> Self {
        VaultProvider {
            client: std::sync::OnceLock::new(),
            in_flight: tokio::sync::Semaphore::new(options.max_in_flight.max(1)),
            kv_versions: tokio::sync::Mutex::default(),
            options,
            session,
        }
    }

    /// The shared client (built once, from `VAULT_CACERT`/`VAULT_CAPATH` or
    /// the system's roots).
    fn client(&self, ctx: &Context) -> Result<&HttpClient, ResolveError> {
        self.client
            .get_or_init(|| build_client(&self.options, ctx))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The lease book this provider fills.
    pub fn leases(&self) -> LeaseBook {
        self.session.leases()
    }

    async fn fetch(&self, req: &Request, ctx: &Context) -> Result<SecretBytes, ResolveError> {
        let target = KvTarget::parse(req.reference.path())?;
        let addrs = Addrs::from_env(ctx)?;
        self.client(ctx)?;
        let namespace = namespace(ctx)?;
        let (token, source) = self.token(ctx, &addrs, namespace.as_ref()).await?;
        match self
            .read(req, &target, &addrs, &token, namespace.as_ref())
            .await
        {
            // A login token refused (expired, or revoked by an operator):
            // log in again once.
            Err(e) if e.kind == ErrorKind::Permission && source == Some(TokenSource::AppRole) => {
                self.forget(&token).await;
                let (token, _) = self.token(ctx, &addrs, namespace.as_ref()).await?;
                self.read(req, &target, &addrs, &token, namespace.as_ref())
                    .await
            }
            other => other,
        }
    }

    /// Drop the held token if it is still `token`.
    async fn forget(&self, token: &Arc<SecretBytes>) {
        let mut held = self.session.held.lock().await;
        if held.as_ref().is_some_and(|h| Arc::ptr_eq(&h.token, token)) {
            *held = None;
        }
    }

    /// Read the secret `target` with `token`.
    async fn read(
        &self,
        req: &Request,
        target: &KvTarget,
        addrs: &Addrs,
        token: &SecretBytes,
        namespace: Option<&HeaderValue>,
    ) -> Result<SecretBytes, ResolveError> {
        let kv = self
            .kv_version(addrs, token, namespace, &target.mount)
            .await?;
        let pq = match (kv, target.version) {
            (KvVersion::V1, Some(_)) => {
                return Err(ResolveError::config(format!(
                    "{} is a KV v1 mount: it has no versions to pin",
                    target.mount
                )))
            }
            (KvVersion::V1, None) => {
                format!("/v1/{}/{}", encode(&target.mount), encode(&target.path))
            }
            (KvVersion::V2, None) => {
                format!(
                    "/v1/{}/data/{}",
                    encode(&target.mount),
                    encode(&target.path)
                )
            }
            (KvVersion::V2, Some(v)) => format!(
                "/v1/{}/data/{}?version={v}",
                encode(&target.mount),
                encode(&target.path)
            ),
        };
        let (status, mut body) = self
            .call(addrs, Method::GET, &pq, Some(token), namespace, None)
            .await?;
        let result = match status {
            StatusCode::OK => self.select(req, target, kv, &body),
            other => Err(status_error(other, &body, token, &target.describe())),
        };
        body.zeroize();
        result
    }

    /// Pick the field out of a KV answer.
    fn select(
        &self,
        req: &Request,
        target: &KvTarget,
        kv: KvVersion,
        body: &[u8],
    ) -> Result<SecretBytes, ResolveError> {
        let not_kv = |_| ResolveError::unavailable("the server's answer is not a KV secret");
        let (fields, lease) = match kv {
            KvVersion::V2 => {
                let resp: KvResponse<'_> = serde_json::from_slice(body).map_err(not_kv)?;
                let Some(data) = resp.data else {
                    return Err(ResolveError::unavailable("the server's answer has no data"));
                };
                let Some(fields) = data.data else {
                    return Err(ResolveError::unavailable(format!(
                        "{}: this version is deleted or destroyed",
                        target.describe()
                    )));
                };
                let lease = Lease {
                    duration: Duration::from_secs(resp.lease_duration),
                    renewable: resp.renewable,
                    version: data.metadata.as_ref().and_then(|m| m.version),
                };
                (fields, lease)
            }
            KvVersion::V1 => {
                let resp: KvV1Response<'_> = serde_json::from_slice(body).map_err(not_kv)?;
                let Some(fields) = resp.data else {
                    return Err(ResolveError::unavailable("the server's answer has no data"));
                };
                let lease = Lease {
                    duration: Duration::from_secs(resp.lease_duration),
                    renewable: resp.renewable,
                    version: None,
                };
                (fields, lease)
            }
        };
        let names = || {
            fields
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let raw = match req.reference.field() {
            Some(f) => fields.get(f).ok_or_else(|| {
                ResolveError::config(format!(
                    "{} has no field '{f}'; its fields: {}",
                    target.describe(),
                    names()
                ))
            })?,
            None if fields.len() == 1 => match fields.values().next() {
                Some(v) => v,
                None => unreachable!("one field"),
            },
            None => {
                return Err(ResolveError::config(format!(
                    "{} has {} fields, name one with #field: {}",
                    target.describe(),
                    fields.len(),
                    names()
                )))
            }
        };
        let text = raw.get();
        let bytes = if text.starts_with('"') {
            serde_json::from_str::<String>(text)
                .map_err(|_| ResolveError::unavailable("the field's value is not valid JSON"))?
                .into_bytes()
        } else if text == "null" {
            Vec::new()
        } else {
            text.as_bytes().to_vec()
        };
        if let Ok(mut book) = self.session.leases.lock() {
            book.insert(req.reference.as_str().to_string(), lease);
        }
        super::non_empty(bytes, "the field's value")
    }

    /// Whether `mount` is KV v1 or v2, asked once per mount
    /// (`sys/internal/ui/mounts/{mount}`, which any token with access to
    /// the mount may read). An answer other than 200 means "assume v2": the
    /// read itself then reports the server's reason.
    async fn kv_version(
        &self,
        addrs: &Addrs,
        token: &SecretBytes,
        namespace: Option<&HeaderValue>,
        mount: &str,
    ) -> Result<KvVersion, ResolveError> {
        let key = format!("{}|{}|{mount}", addrs.key, ns_text(namespace));
        let mut cache = self.kv_versions.lock().await;
        if let Some(v) = cache.get(&key) {
            return Ok(*v);
        }
        let pq = format!("/v1/sys/internal/ui/mounts/{}", encode(mount));
        let (status, body) = self
            .call(addrs, Method::GET, &pq, Some(token), namespace, None)
            .await?;
        if status != StatusCode::OK {
            return Ok(KvVersion::V2);
        }
        #[derive(Deserialize)]
        struct Mount {
            data: Option<MountData>,
        }
        #[derive(Deserialize)]
        struct MountData {
            #[serde(rename = "type")]
            kind: Option<String>,
            options: Option<HashMap<String, String>>,
        }
        let data = serde_json::from_slice::<Mount>(&body)
            .ok()
            .and_then(|m| m.data);
        let version = match data {
            Some(d) => {
                let v = d
                    .options
                    .as_ref()
                    .and_then(|o| o.get("version"))
                    .map(String::as_str);
                match (d.kind.as_deref(), v) {
                    (_, Some("2")) => KvVersion::V2,
                    (Some("kv") | Some("generic"), _) => KvVersion::V1,
                    _ => KvVersion::V2,
                }
            }
            None => KvVersion::V2,
        };
        cache.insert(key, version);
        Ok(version)
    }

    /// The token to send (see the module documentation for the order),
    /// and where it came from when the session holds it.
    async fn token(
        &self,
        ctx: &Context,
        addrs: &Addrs,
        namespace: Option<&HeaderValue>,
    ) -> Result<(Arc<SecretBytes>, Option<TokenSource>), ResolveError> {
        if let Some(t) = ctx.var("VAULT_TOKEN").filter(|t| !t.is_empty()) {
            let token = checked_token(SecretBytes::copy_from(t.as_bytes()), "VAULT_TOKEN")?;
            if !self.session.renew {
                return Ok((token, None));
            }
            // A run learns the token's lifetime once, to renew it.
            let key = format!("env|{}|{}", addrs.key, ns_text(namespace));
            let mut held = self.session.held.lock().await;
            if let Some(h) = held.as_ref().filter(|h| h.key == key) {
                return Ok((Arc::clone(&h.token), Some(TokenSource::Env)));
            }
            let life = self.lookup_self(addrs, &token, namespace).await?;
            *held = Some(Held {
                key,
                token: Arc::clone(&token),
                source: TokenSource::Env,
                life,
            });
            return Ok((token, Some(TokenSource::Env)));
        }
        if let Some(path) = ctx.var("VAULT_TOKEN_FILE").filter(|t| !t.is_empty()) {
            // Read on every use: an agent that rotates the file is followed.
            return Ok((
                token_file(std::path::Path::new(path), "VAULT_TOKEN_FILE")?,
                None,
            ));
        }
        if let Some(role) = ctx.var("VAULT_ROLE_ID").filter(|r| !r.is_empty()) {
            let key = format!(
                "approle|{}|{}|{}",
                addrs.key,
                ns_text(namespace),
                role.to_string_lossy()
            );
            let mut held = self.session.held.lock().await;
            let now = Instant::now();
            if let Some(h) = held
                .as_ref()
                .filter(|h| h.key == key && h.life.is_none_or(|l| !l.spent(now)))
            {
                return Ok((Arc::clone(&h.token), Some(TokenSource::AppRole)));
            }
            let (token, life) = self.approle_login(ctx, addrs, namespace).await?;
            let token = Arc::new(token);
            *held = Some(Held {
                key,
                token: Arc::clone(&token),
                source: TokenSource::AppRole,
                life,
            });
            return Ok((token, Some(TokenSource::AppRole)));
        }
        if let Some(home) = ctx.var("HOME").filter(|h| !h.is_empty()) {
            let path = std::path::Path::new(home).join(".vault-token");
            if path.exists() {
                return Ok((token_file(&path, "~/.vault-token")?, None));
            }
        }
        Err(ResolveError::config(
            "no Vault token: set VAULT_TOKEN, VAULT_TOKEN_FILE, or VAULT_ROLE_ID and \
             VAULT_SECRET_ID, or write ~/.vault-token",
        ))
    }

    /// An AppRole login: the token and its lifetime (`None`: no expiry).
    async fn approle_login(
        &self,
        ctx: &Context,
        addrs: &Addrs,
        namespace: Option<&HeaderValue>,
    ) -> Result<(SecretBytes, Option<TokenLife>), ResolveError> {
        let role_id = ctx
            .var("VAULT_ROLE_ID")
            .and_then(|r| r.to_str())
            .ok_or_else(|| ResolveError::config("VAULT_ROLE_ID is not valid UTF-8"))?;
        let secret_id = secret_id(ctx).await?;
        let secret_text = std::str::from_utf8(secret_id.expose())
            .map_err(|_| ResolveError::config("VAULT_SECRET_ID is not valid UTF-8"))?;
        let mount = ctx
            .var("VAULT_APPROLE_MOUNT")
            .and_then(|m| m.to_str())
            .filter(|m| !m.is_empty())
            .unwrap_or("approle");
        #[derive(serde::Serialize)]
        struct Login<'a> {
            role_id: &'a str,
            secret_id: &'a str,
        }
        let mut body = serde_json::to_vec(&Login {
            role_id,
            secret_id: secret_text,
        })
        .map_err(|e| ResolveError::unavailable(format!("cannot encode the login: {e}")))?;
        let pq = format!("/v1/auth/{}/login", encode(mount));
        let asked = Instant::now();
        let answer = self
            .call(addrs, Method::POST, &pq, None, namespace, Some(&body))
            .await;
        body.zeroize();
        let (status, mut resp) = answer.map_err(|e| ResolveError {
            kind: e.kind,
            reason: format!("AppRole login: {}", e.reason),
        })?;
        let out = if status == StatusCode::OK {
            #[derive(Deserialize)]
            struct LoginResp<'a> {
                #[serde(borrow)]
                auth: Option<Auth<'a>>,
            }
            #[derive(Deserialize)]
            struct Auth<'a> {
                #[serde(borrow)]
                client_token: &'a str,
                #[serde(default)]
                lease_duration: u64,
                #[serde(default)]
                renewable: bool,
            }
            match serde_json::from_slice::<LoginResp<'_>>(&resp) {
                Ok(LoginResp { auth: Some(a) }) => checked_token(
                    SecretBytes::copy_from(a.client_token.as_bytes()),
                    "the login",
                )
                .map(|t| {
                    let ttl = Duration::from_secs(a.lease_duration);
                    let life = (a.lease_duration > 0).then_some(TokenLife {
                        ttl,
                        renewable: a.renewable,
                        normal: ttl,
                        at: asked,
                    });
                    (Arc::try_unwrap(t).unwrap_or_else(|t| t.duplicate()), life)
                }),
                _ => Err(ResolveError::unavailable(
                    "AppRole login: the answer has no token",
                )),
            }
        } else {
            let e = status_error(status, &resp, &secret_id, &format!("auth/{mount}"));
            // Vault answers a wrong role or secret id with 400.
            let kind = if status == StatusCode::BAD_REQUEST {
                ErrorKind::Permission
            } else {
                e.kind
            };
            Err(ResolveError {
                kind,
                reason: format!("AppRole login refused: {}", e.reason),
            })
        };
        resp.zeroize();
        out
    }

    /// One request with retries; the body of the final answer, any status.
    ///
    /// With several addresses in `VAULT_ADDR`, each attempt tries them in
    /// turn, starting with the one that answered last: a connection error,
    /// a timeout or a 5xx moves on to the next address; any other answer is
    /// the answer. After a full round without one, the next attempt waits
    /// for the backoff.
    async fn call(
        &self,
        addrs: &Addrs,
        method: Method,
        path_and_query: &str,
        token: Option<&SecretBytes>,
        namespace: Option<&HeaderValue>,
        body: Option<&[u8]>,
    ) -> Result<(StatusCode, Vec<u8>), ResolveError> {
        let client = match self.client.get() {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(ResolveError::unavailable("the HTTP client is not built")),
        };
        let attempts = self.options.attempts.max(1);
        let count = addrs.list.len();
        let mut failures: Vec<Option<String>> = vec![None; count];
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(self.options.backoff, attempt)).await;
            }
            let first = self.session.preferred.load(Ordering::Relaxed) % count;
            for k in 0..count {
                let index = (first + k) % count;
                let addr = &addrs.list[index];
                let outcome = self
                    .exchange(
                        client,
                        addr,
                        &method,
                        path_and_query,
                        token,
                        namespace,
                        body,
                    )
                    .await?;
                match outcome {
                    Ok(answer) => {
                        self.session.preferred.store(index, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    Err(why) => failures[index] = Some(why),
                }
            }
        }
        let last: Vec<String> = failures.into_iter().flatten().collect();
        Err(ResolveError::unavailable(format!(
            "{} ({})",
            last.join("; "),
            attempts_word(attempts)
        )))
    }

    /// One HTTP exchange with `addr`: `Ok(Ok(answer))` for an answer,
    /// `Ok(Err(why))` for what is worth another try (a connection error,
    /// a timeout, a 5xx), `Err` for what is not (TLS, a request that cannot
    /// be built, an oversized answer).
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        client: &HttpClient,
        addr: &Addr,
        method: &Method,
        path_and_query: &str,
        token: Option<&SecretBytes>,
        namespace: Option<&HeaderValue>,
        body: Option<&[u8]>,
    ) -> Result<Result<(StatusCode, Vec<u8>), String>, ResolveError> {
        let uri: Uri = format!("{}{}", addr.base, path_and_query)
            .parse()
            .map_err(|_| ResolveError::config("the ref does not make a valid URL"))?;
        let mut builder = hyper::Request::builder().method(method.clone()).uri(uri);
        if let Some(t) = token {
            let mut v = HeaderValue::from_bytes(t.expose())
                .map_err(|_| ResolveError::config("the Vault token is not a valid header"))?;
            v.set_sensitive(true);
            builder = builder.header("x-vault-token", v);
        }
        if let Some(ns) = namespace {
            builder = builder.header("x-vault-namespace", ns.clone());
        }
        let payload = match body {
            Some(b) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::copy_from_slice(b))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder
            .body(payload)
            .map_err(|_| ResolveError::config("cannot build the request"))?;
        // Waiting for a turn is not part of the attempt's timeout (the
        // resolver's timeout still bounds it).
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| ResolveError::unavailable("the Vault provider is shutting down"))?;
        Ok(
            match exchange(client, request, self.options.request_timeout, &addr.shown).await? {
                // A standby that cannot forward to the active node (it is
                // gone, and no new one is elected yet) redirects to it. The
                // token is not sent elsewhere: try again.
                Ok((status, mut out)) if status.is_redirection() => {
                    out.zeroize();
                    Err(format!(
                        "redirect {} from {} (a standby without a reachable active node)",
                        status.as_u16(),
                        addr.shown
                    ))
                }
                Ok((status, mut out)) if status.is_server_error() => {
                    let why = format!(
                        "server error {} from {}{}",
                        status.as_u16(),
                        addr.shown,
                        server_reason(&out, token)
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    );
                    out.zeroize();
                    Err(why)
                }
                other => other,
            },
        )
    }
}

impl Provider for VaultProvider {
    fn resolve<'a>(&'a self, req: &'a Request, ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(self.fetch(req, ctx))
    }
}

/// `mount`, `path` and the version pin of a ref.
#[derive(Debug, PartialEq, Eq)]
struct KvTarget {
    mount: String,
    path: String,
    version: Option<u64>,
}

impl KvTarget {
    fn parse(text: &str) -> Result<KvTarget, ResolveError> {
        let (path, version) = match text.split_once('?') {
            None => (text, None),
            Some((p, q)) => {
                let n = q
                    .strip_prefix("version=")
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        ResolveError::config(
                            "the only query a vault:// ref takes is ?version=N (N ≥ 1)",
                        )
                    })?;
                (p, Some(n))
            }
        };
        let Some((mount, rest)) = path.split_once('/') else {
            return Err(ResolveError::config(
                "vault refs look like vault://mount/path[?version=N][#field]",
            ));
        };
        if mount.is_empty()
            || rest
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            || mount == "."
            || mount == ".."
        {
            return Err(ResolveError::config(
                "a vault:// path must not have empty, '.' or '..' segments",
            ));
        }
        Ok(KvTarget {
            mount: mount.to_string(),
            path: rest.to_string(),
            version,
        })
    }

    fn describe(&self) -> String {
        match self.version {
            Some(v) => format!("{}/{} version {v}", self.mount, self.path),
            None => format!("{}/{}", self.mount, self.path),
        }
    }
}

/// One address of `VAULT_ADDR`, checked.
#[derive(Debug, Clone)]
struct Addr {
    /// `http://host:port[/prefix]` without a trailing `/`.
    base: String,
    /// For messages.
    shown: String,
}

/// `VAULT_ADDR`: one address, or several separated by commas (the nodes of
/// a cluster, tried in turn).
#[derive(Debug, Clone)]
struct Addrs {
    list: Vec<Addr>,
    /// The whole list, as a cache key.
    key: String,
}

impl Addrs {
    fn from_env(ctx: &Context) -> Result<Addrs, ResolveError> {
        let raw = ctx
            .var("VAULT_ADDR")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ResolveError::config("VAULT_ADDR is not set"))?
            .to_str()
            .ok_or_else(|| ResolveError::config("VAULT_ADDR is not valid UTF-8"))?;
        Self::parse(raw)
    }

    fn parse(raw: &str) -> Result<Addrs, ResolveError> {
        let list = raw
            .split(',')
            .map(|a| Addr::parse(a.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Addrs {
            key: list
                .iter()
                .map(|a| a.base.as_str())
                .collect::<Vec<_>>()
                .join(","),
            list,
        })
    }
}

impl Addr {
    fn parse(raw: &str) -> Result<Addr, ResolveError> {
        if raw.is_empty() {
            return Err(ResolveError::config(
                "VAULT_ADDR has an empty entry in its list of addresses",
            ));
        }
        let base = raw.trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|_| ResolveError::config("VAULT_ADDR is not a URL"))?;
        let shown = match uri.authority() {
            Some(a) => a.as_str().rsplit('@').next().unwrap_or("").to_string(),
            None => return Err(ResolveError::config("VAULT_ADDR has no host")),
        };
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {}
            _ => {
                return Err(ResolveError::config(
                    "VAULT_ADDR must start with http:// or https://",
                ))
            }
        }
        if uri.query().is_some() || base.contains('@') {
            return Err(ResolveError::config(
                "VAULT_ADDR must not carry a query or credentials",
            ));
        }
        Ok(Addr {
            base: base.to_string(),
            shown,
        })
    }
}

/// The namespace, for cache keys.
fn ns_text(namespace: Option<&HeaderValue>) -> &str {
    namespace.and_then(|n| n.to_str().ok()).unwrap_or("")
}

fn namespace(ctx: &Context) -> Result<Option<HeaderValue>, ResolveError> {
    match ctx.var("VAULT_NAMESPACE").filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(n) => HeaderValue::from_bytes(n.as_bytes())
            .map(Some)
            .map_err(|_| ResolveError::config("VAULT_NAMESPACE is not a valid header value")),
    }
}

fn checked_token(token: SecretBytes, from: &str) -> Result<Arc<SecretBytes>, ResolveError> {
    if token.is_empty() || !token.expose().iter().all(|b| b.is_ascii_graphic()) {
        return Err(ResolveError::config(format!(
            "the Vault token from {from} is empty or has characters a header cannot carry"
        )));
    }
    Ok(Arc::new(token))
}

fn token_file(path: &std::path::Path, from: &str) -> Result<Arc<SecretBytes>, ResolveError> {
    let mut bytes = std::fs::read(path).map_err(|e| ResolveError::io(from, &e))?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let token = SecretBytes::copy_from(&bytes[..end]);
    bytes.zeroize();
    checked_token(token, from)
}

/// `VAULT_SECRET_ID`: a literal, or a local ref resolved by keywarden's
/// built-in providers.
async fn secret_id(ctx: &Context) -> Result<SecretBytes, ResolveError> {
    let raw = ctx
        .var("VAULT_SECRET_ID")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ResolveError::config("VAULT_ROLE_ID is set but VAULT_SECRET_ID is not"))?;
    let text = raw.to_str().unwrap_or("");
    let Ok(reference) = SecretRef::parse(text) else {
        return Ok(SecretBytes::copy_from(raw.as_bytes()));
    };
    if !matches!(
        reference.scheme(),
        Scheme::Cred | Scheme::File | Scheme::Env | Scheme::Dotenv | Scheme::Exec
    ) {
        return Err(ResolveError::config(format!(
            "VAULT_SECRET_ID may be a cred://, file://, env://, dotenv:// or exec:// ref, not {}://",
            reference.scheme()
        )));
    }
    let local = Resolver::new(
        ctx.clone(),
        Duration::from_secs(10),
        Err("not available for VAULT_SECRET_ID".into()),
    );
    let request = Request {
        label: "VAULT_SECRET_ID".into(),
        reference,
        base_dir: std::env::current_dir()
            .unwrap_or_else(|_| "/".into())
            .into(),
    };
    local.resolve(&request).await.map_err(|e| ResolveError {
        kind: e.kind,
        reason: format!("VAULT_SECRET_ID ({}): {}", request.reference, e.reason),
    })
}

/// The error for a non-200 answer.
fn status_error(status: StatusCode, body: &[u8], token: &SecretBytes, what: &str) -> ResolveError {
    let reason = server_reason(body, Some(token))
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let code = status.as_u16();
    match status {
        StatusCode::FORBIDDEN => ResolveError {
            kind: ErrorKind::Permission,
            reason: format!("permission denied by the server (403) for {what}{reason}"),
        },
        StatusCode::UNAUTHORIZED => ResolveError {
            kind: ErrorKind::Permission,
            reason: format!("the server refused the token (401) for {what}{reason}"),
        },
        StatusCode::NOT_FOUND => ResolveError::unavailable(format!("not found: {what} (404)")),
        StatusCode::BAD_REQUEST => ResolveError::config(format!(
            "the server rejected the request (400) for {what}{reason}"
        )),
        _ => ResolveError::unavailable(format!("unexpected answer {code} for {what}{reason}")),
    }
}

/// The server's `errors` list, one line, bounded, without the token.
fn server_reason(body: &[u8], token: Option<&SecretBytes>) -> Option<String> {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let errors = serde_json::from_slice::<Errors>(body).ok()?.errors;
    let joined = errors
        .iter()
        .flat_map(|e| e.split_whitespace())
        .filter(|w| *w != "*")
        .collect::<Vec<_>>()
        .join(" ");
    if joined.is_empty() {
        return None;
    }
    let mut text = match token {
        Some(t) => scrub(&joined, &[t.expose()]),
        None => joined,
    };
    if text.len() > REASON_SHOWN {
        let mut cut = REASON_SHOWN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    Some(text)
}

/// The shared client: HTTP/1 over TCP or rustls (ring), pooled.
fn build_client(options: &VaultOptions, ctx: &Context) -> Result<HttpClient, ResolveError> {
    if ctx
        .var("VAULT_SKIP_VERIFY")
        .is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
    {
        return Err(ResolveError::config(
            "VAULT_SKIP_VERIFY is not supported: give the server's CA with VAULT_CACERT",
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    if let Some(f) = ctx.var("VAULT_CACERT").filter(|v| !v.is_empty()) {
        files.push(f.into());
    }
    if let Some(dir) = ctx.var("VAULT_CAPATH").filter(|v| !v.is_empty()) {
        let entries = std::fs::read_dir(dir).map_err(|e| ResolveError::io("VAULT_CAPATH", &e))?;
        files.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file()),
        );
    }
    if files.is_empty() {
        // The system store (SSL_CERT_FILE/SSL_CERT_DIR honoured).
        roots = super::https::native_roots();
    } else {
        for file in &files {
            let shown = file.display().to_string();
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|_| ResolveError::config(format!("cannot read the CA file {shown}")))?;
            for cert in certs {
                let cert = cert.map_err(|_| {
                    ResolveError::config(format!("the CA file {shown} is not valid PEM"))
                })?;
                roots.add(cert).map_err(|_| {
                    ResolveError::config(format!(
                        "the CA file {shown} holds an invalid certificate"
                    ))
                })?;
            }
        }
        if roots.is_empty() {
            return Err(ResolveError::config(
                "VAULT_CACERT/VAULT_CAPATH hold no certificate",
            ));
        }
    }
    pooled_client(roots, options.request_timeout)
}

/// Percent-encode a path, keeping `/` and RFC 3986 unreserved characters.
fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct KvResponse<'a> {
    #[serde(borrow)]
    data: Option<KvData<'a>>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct KvV1Response<'a> {
    #[serde(borrow)]
    data: Option<BTreeMap<String, &'a RawValue>>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct KvData<'a> {
    #[serde(borrow)]
    data: Option<BTreeMap<String, &'a RawValue>>,
    metadata: Option<KvMetadata>,
}

#[derive(Deserialize)]
struct KvMetadata {
    version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = KvTarget::parse("secret/app/db?version=3").expect("parses");
        assert_eq!(
            t,
            KvTarget {
                mount: "secret".into(),
                path: "app/db".into(),
                version: Some(3)
            }
        );
        assert_eq!(KvTarget::parse("secret/a").expect("parses").version, None);
        for bad in [
            "secret",
            "secret/",
            "secret/a//b",
            "secret/../x",
            "secret/a?v=1",
            "secret/a?version=0",
            "/a",
        ] {
            assert!(KvTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vault_max_retries_sets_the_attempts() {
        let ctx = |v: &str| {
            Context::new(
                [("VAULT_MAX_RETRIES".into(), v.into())]
                    .into_iter()
                    .collect(),
                &[],
            )
        };
        assert_eq!(VaultOptions::from_env(&Context::default()).attempts, 5);
        assert_eq!(VaultOptions::from_env(&ctx("0")).attempts, 1);
        assert_eq!(VaultOptions::from_env(&ctx(" 2 ")).attempts, 3);
        assert_eq!(VaultOptions::from_env(&ctx("99")).attempts, 11);
        assert_eq!(VaultOptions::from_env(&ctx("many")).attempts, 5);
    }

    #[test]
    fn parses_address_lists() {
        let a = Addrs::parse("http://a:1/, https://b:2/prefix ,http://c").expect("parses");
        let bases: Vec<_> = a.list.iter().map(|x| x.base.as_str()).collect();
        assert_eq!(bases, ["http://a:1", "https://b:2/prefix", "http://c"]);
        assert_eq!(a.key, "http://a:1,https://b:2/prefix,http://c");
        assert_eq!(a.list[1].shown, "b:2");
        for bad in [
            "http://a,",
            ",http://a",
            "http://a,,http://b",
            "http://a,ftp://b",
            "http://a,b",
            "http://u:p@a",
        ] {
            assert!(Addrs::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_paths() {
        assert_eq!(encode("a b/c%d"), "a%20b/c%25d");
    }
}
