//! `aws-sm://secret-id[#json-key]`: AWS Secrets Manager `GetSecretValue`.
//!
//! * `POST {endpoint}/` with `X-Amz-Target: secretsmanager.GetSecretValue`,
//!   `Content-Type: application/x-amz-json-1.1`, body `{"SecretId": id}`,
//!   signed with SigV4 by `aws-sigv4` (service `secretsmanager`).
//! * Credentials: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN` (optional). Region: `AWS_REGION`, else
//!   `AWS_DEFAULT_REGION`, else 78. Endpoint:
//!   `AWS_ENDPOINT_URL_SECRETSMANAGER`, else `AWS_ENDPOINT_URL`, else
//!   `https://secretsmanager.{region}.amazonaws.com`.
//! * `SecretString` is the value; with `#key` the secret must be a JSON
//!   object and the key's value is returned (a string decoded, anything else
//!   as its JSON text; a missing key → 78 listing the key names only).
//!   `SecretBinary` is returned base64-decoded (no `#key`).
//! * `ResourceNotFoundException` → 69; access/signature/token errors and any
//!   403 → 77; unreachable → 69. Connection errors, timeouts and 5xx are
//!   retried with exponential backoff; 4xx never.
//! * Errors carry the server's error type and message, scrubbed of the key
//!   id, secret key and session token; never a value.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use super::https::{
    attempts as attempts_word, backoff, exchange, native_roots, pooled_client, HttpClient,
};
use super::{scrub, Context, Provider, Request, ResolveError, ResolveFuture};
use crate::error::ErrorKind;
use crate::secret::SecretBytes;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::Zeroize;

/// Longest server message quoted in an error.
const REASON_SHOWN: usize = 200;
/// The SigV4 service name.
const SERVICE: &str = "secretsmanager";

/// Timeouts and retries of the AWS Secrets Manager provider.
#[derive(Debug, Clone)]
pub struct AwsSmOptions {
    /// Bound on one HTTP attempt (connect + answer + body).
    pub request_timeout: Duration,
    /// Attempts in all, for connection errors, timeouts and 5xx.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each later one (≤ 5 s).
    pub backoff: Duration,
}

impl Default for AwsSmOptions {
    fn default() -> Self {
        AwsSmOptions {
            request_timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// The `aws-sm://` provider: one pooled HTTP client for its life.
pub struct AwsSmProvider {
    options: AwsSmOptions,
    client: OnceLock<Result<HttpClient, ResolveError>>,
    /// Credentials from a web identity login and when they expire (unix
    /// seconds), kept until shortly before that.
    web_identity: tokio::sync::Mutex<Option<(Arc<Creds>, Option<i64>)>>,
}

impl std::fmt::Debug for AwsSmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSmProvider")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Default for AwsSmProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl AwsSmProvider {
    /// A provider with the default options.
    pub fn new() -> Self {
        Self::with_options(AwsSmOptions::default())
    }

    /// A provider with `options`.
    pub fn with_options(options: AwsSmOptions) -> Self {
        AwsSmProvider {
            options,
            client: OnceLock::new(),
            web_identity: tokio::sync::Mutex::new(None),
        }
    }

    fn client(&self) -> Result<&HttpClient, ResolveError> {
        self.client
            .get_or_init(|| build_client(&self.options))
            .as_ref()
            .map_err(Clone::clone)
    }

    async fn fetch(&self, req: &Request, ctx: &Context) -> Result<SecretBytes, ResolveError> {
        let secret_id = req.reference.path();
        let region = region(ctx)?;
        let endpoint = endpoint(ctx, &region)?;
        let client = self.client()?;
        let creds = self.credentials(ctx, client, &region).await?;
        #[derive(serde::Serialize)]
        struct Get<'a> {
            #[serde(rename = "SecretId")]
            secret_id: &'a str,
        }
        let body = serde_json::to_vec(&Get { secret_id })
            .map_err(|e| ResolveError::config(format!("cannot encode the request: {e}")))?;
        let (status, mut answer) = self
            .call(client, &endpoint, &creds.scrub_list(), || {
                signed_request(&endpoint, &region, &creds, &body)
            })
            .await?;
        let what = format!("secret '{secret_id}'");
        let result = if status == StatusCode::OK {
            select(req, &what, &answer)
        } else {
            Err(status_error(status, &answer, &creds.scrub_list(), &what))
        };
        answer.zeroize();
        result
    }

    /// Static credentials from the environment, else those of a web
    /// identity login (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`).
    async fn credentials(
        &self,
        ctx: &Context,
        client: &HttpClient,
        region: &str,
    ) -> Result<Arc<Creds>, ResolveError> {
        if let Some(c) = static_credentials(ctx)? {
            return Ok(Arc::new(c));
        }
        let (Some(token_file), Some(role_arn)) = (
            var(ctx, "AWS_WEB_IDENTITY_TOKEN_FILE")?,
            var(ctx, "AWS_ROLE_ARN")?,
        ) else {
            return Err(ResolveError::config(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (and AWS_SESSION_TOKEN for temporary ones), or AWS_WEB_IDENTITY_TOKEN_FILE \
                 and AWS_ROLE_ARN",
            ));
        };
        let mut cached = self.web_identity.lock().await;
        if let Some((c, expires)) = cached.as_ref() {
            if still_valid(*expires, unix_now()) {
                return Ok(Arc::clone(c));
            }
        }
        let mut token = std::fs::read(token_file)
            .map_err(|e| ResolveError::io("AWS_WEB_IDENTITY_TOKEN_FILE", &e))?;
        let text = std::str::from_utf8(&token)
            .map(str::trim)
            .map_err(|_| ResolveError::config("the web identity token is not valid UTF-8"))?;
        if text.is_empty() {
            token.zeroize();
            return Err(ResolveError::config("the web identity token file is empty"));
        }
        let session = match var(ctx, "AWS_ROLE_SESSION_NAME")? {
            Some(s) => s.to_string(),
            None => format!("keywarden-{}", std::process::id()),
        };
        let endpoint = match var(ctx, "AWS_ENDPOINT_URL_STS")? {
            Some(u) => parse_endpoint("AWS_ENDPOINT_URL_STS", u)?,
            None => match var(ctx, "AWS_ENDPOINT_URL")? {
                Some(u) => parse_endpoint("AWS_ENDPOINT_URL", u)?,
                None => {
                    parse_endpoint("the region", &format!("https://sts.{region}.amazonaws.com"))?
                }
            },
        };
        let mut form = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
            form_encode(role_arn),
            form_encode(&session),
            form_encode(text)
        );
        let scrub_list: Vec<&[u8]> = vec![text.as_bytes()];
        let answer = self
            .call(client, &endpoint, &scrub_list, || {
                hyper::Request::builder()
                    .method(hyper::Method::POST)
                    .uri(endpoint.uri.clone())
                    .header(
                        hyper::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(Full::new(Bytes::copy_from_slice(form.as_bytes())))
                    .map_err(|_| ResolveError::config("cannot build the login request"))
            })
            .await;
        let what = "web identity login (AssumeRoleWithWebIdentity)";
        let result = match answer {
            Err(e) => Err(ResolveError {
                kind: e.kind,
                reason: format!("{what}: {}", e.reason),
            }),
            Ok((status, mut body)) => {
                let r = if status == StatusCode::OK {
                    assumed_credentials(&body)
                } else {
                    Err(status_error(status, &body, &scrub_list, what))
                };
                body.zeroize();
                r
            }
        };
        form.zeroize();
        token.zeroize();
        let (creds, expires) = result?;
        let creds = Arc::new(creds);
        *cached = Some((Arc::clone(&creds), expires));
        Ok(creds)
    }

    /// Send what `build` makes, retrying connection errors, timeouts and
    /// 5xx; `secrets` are scrubbed from quoted server messages.
    async fn call(
        &self,
        client: &HttpClient,
        endpoint: &Endpoint,
        secrets: &[&[u8]],
        build: impl Fn() -> Result<hyper::Request<Full<Bytes>>, ResolveError>,
    ) -> Result<(StatusCode, Vec<u8>), ResolveError> {
        let attempts = self.options.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(self.options.backoff, attempt)).await;
            }
            // Signed anew for each attempt: the signature holds the time.
            let request = build()?;
            match exchange(
                client,
                request,
                self.options.request_timeout,
                &endpoint.shown,
            )
            .await?
            {
                Err(why) => last = why,
                Ok((status, mut out)) if status.is_server_error() => {
                    let (kind, msg) = aws_error(&out, secrets);
                    last = format!(
                        "server error {}{}",
                        status.as_u16(),
                        describe(kind.as_deref(), msg.as_deref())
                    );
                    out.zeroize();
                }
                Ok(answer) => return Ok(answer),
            }
        }
        Err(ResolveError::unavailable(format!(
            "{last} ({})",
            attempts_word(attempts)
        )))
    }
}

impl Provider for AwsSmProvider {
    fn resolve<'a>(&'a self, req: &'a Request, ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(self.fetch(req, ctx))
    }
}

/// Static credentials from the environment. `Credentials` keeps the secret
/// key in zeroizing memory; the copies here are for scrubbing messages.
struct Creds {
    identity: Identity,
    key_id: String,
    secret: zeroize::Zeroizing<String>,
    token: Option<zeroize::Zeroizing<String>>,
}

fn var<'a>(ctx: &'a Context, name: &str) -> Result<Option<&'a str>, ResolveError> {
    match ctx.var(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .ok_or_else(|| ResolveError::config(format!("{name} is not valid UTF-8"))),
    }
}

impl Creds {
    fn new(key_id: &str, secret: &str, token: Option<&str>) -> Creds {
        let identity: Identity =
            Credentials::new(key_id, secret, token.map(str::to_string), None, "keywarden").into();
        Creds {
            identity,
            key_id: key_id.to_string(),
            secret: zeroize::Zeroizing::new(secret.to_string()),
            token: token.map(|t| zeroize::Zeroizing::new(t.to_string())),
        }
    }

    /// What must never appear in a message.
    fn scrub_list(&self) -> Vec<&[u8]> {
        let mut values: Vec<&[u8]> = vec![self.key_id.as_bytes(), self.secret.as_bytes()];
        if let Some(t) = &self.token {
            values.push(t.as_bytes());
        }
        values
    }
}

fn static_credentials(ctx: &Context) -> Result<Option<Creds>, ResolveError> {
    let (Some(key_id), Some(secret)) = (
        var(ctx, "AWS_ACCESS_KEY_ID")?,
        var(ctx, "AWS_SECRET_ACCESS_KEY")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Creds::new(
        key_id,
        secret,
        var(ctx, "AWS_SESSION_TOKEN")?,
    )))
}

/// Temporary credentials are used until this long before their
/// `<Expiration>`, then a new login is made (as the AWS SDKs do).
const REFRESH_BEFORE: i64 = 5 * 60;

/// Whether credentials expiring at `expires` (unix seconds; `None`: not
/// said) may still be used at `now`.
fn still_valid(expires: Option<i64>, now: i64) -> bool {
    expires.is_none_or(|e| now + REFRESH_BEFORE < e)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The temporary credentials of an `AssumeRoleWithWebIdentity` answer, and
/// their `<Expiration>` (unix seconds).
fn assumed_credentials(body: &[u8]) -> Result<(Creds, Option<i64>), ResolveError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ResolveError::unavailable("the STS answer is not text"))?;
    let field = |tag| {
        xml_text(text, tag)
            .ok_or_else(|| ResolveError::unavailable(format!("the STS answer has no {tag}")))
    };
    let key_id = field("AccessKeyId")?;
    let mut secret = field("SecretAccessKey")?;
    let mut token = field("SessionToken")?;
    let creds = Creds::new(&key_id, &secret, Some(&token));
    secret.zeroize();
    token.zeroize();
    let expires = xml_text(text, "Expiration").and_then(|t| crate::timefmt::parse_rfc3339(&t));
    Ok((creds, expires))
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn region(ctx: &Context) -> Result<String, ResolveError> {
    let r = match var(ctx, "AWS_REGION")? {
        Some(r) => r,
        None => var(ctx, "AWS_DEFAULT_REGION")?.ok_or_else(|| {
            ResolveError::config("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION")
        })?,
    };
    if !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ResolveError::config(format!(
            "AWS region '{r}' is not valid"
        )));
    }
    Ok(r.to_string())
}

/// Where requests go, and how it is named in messages.
struct Endpoint {
    uri: Uri,
    shown: String,
}

fn endpoint(ctx: &Context, region: &str) -> Result<Endpoint, ResolveError> {
    let (from, text) = match var(ctx, "AWS_ENDPOINT_URL_SECRETSMANAGER")? {
        Some(u) => ("AWS_ENDPOINT_URL_SECRETSMANAGER", u.to_string()),
        None => match var(ctx, "AWS_ENDPOINT_URL")? {
            Some(u) => ("AWS_ENDPOINT_URL", u.to_string()),
            None => (
                "the region",
                format!("https://secretsmanager.{region}.amazonaws.com"),
            ),
        },
    };
    parse_endpoint(from, &text)
}

fn parse_endpoint(from: &str, text: &str) -> Result<Endpoint, ResolveError> {
    let bad = || ResolveError::config(format!("{from}: not an http(s) URL without credentials"));
    let uri: Uri = text.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    let Some(authority) = uri.authority() else {
        return Err(bad());
    };
    if !scheme_ok || authority.as_str().contains('@') || uri.query().is_some() {
        return Err(bad());
    }
    let path = uri.path();
    let path = if path.is_empty() { "/" } else { path };
    let base = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("https"),
        authority,
        path
    );
    let uri: Uri = base.parse().map_err(|_| bad())?;
    Ok(Endpoint { shown: base, uri })
}

fn signed_request(
    endpoint: &Endpoint,
    region: &str,
    creds: &Creds,
    body: &[u8],
) -> Result<hyper::Request<Full<Bytes>>, ResolveError> {
    let host = endpoint
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let mut request = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(endpoint.uri.clone())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/x-amz-json-1.1")
        .header("x-amz-target", "secretsmanager.GetSecretValue")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|_| ResolveError::config("cannot build the request"))?;
    let params = v4::SigningParams::builder()
        .identity(&creds.identity)
        .region(region)
        .name(SERVICE)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ResolveError::config(format!("cannot sign the request: {e}")))?
        .into();
    let uri = endpoint.uri.to_string();
    let headers = request
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)));
    let signable = SignableRequest::new("POST", &uri, headers, SignableBody::Bytes(body))
        .map_err(|e| ResolveError::config(format!("cannot sign the request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| ResolveError::config(format!("cannot sign the request: {e}")))?
        .into_parts();
    instructions.apply_to_request_http1x(&mut request);
    for (name, value) in request.headers_mut().iter_mut() {
        if name == hyper::header::AUTHORIZATION || name.as_str() == "x-amz-security-token" {
            value.set_sensitive(true);
        }
    }
    Ok(request)
}

#[derive(Deserialize)]
struct SecretValue {
    #[serde(rename = "SecretString")]
    string: Option<String>,
    #[serde(rename = "SecretBinary")]
    binary: Option<String>,
}

/// The value (or its `#key`) out of a `GetSecretValue` answer.
fn select(req: &Request, what: &str, body: &[u8]) -> Result<SecretBytes, ResolveError> {
    let mut answer: SecretValue = serde_json::from_slice(body)
        .map_err(|_| ResolveError::unavailable("the server's answer is not a secret value"))?;
    let result = pick(req, what, &answer);
    if let Some(s) = answer.string.as_mut() {
        s.zeroize();
    }
    if let Some(b) = answer.binary.as_mut() {
        b.zeroize();
    }
    result
}

fn pick(req: &Request, what: &str, answer: &SecretValue) -> Result<SecretBytes, ResolveError> {
    let key = req.reference.field();
    let bytes = match (&answer.string, &answer.binary, key) {
        (Some(s), _, None) => s.as_bytes().to_vec(),
        (Some(s), _, Some(key)) => {
            let fields: BTreeMap<String, &RawValue> = serde_json::from_str(s).map_err(|_| {
                ResolveError::config(format!(
                    "{what} is not a JSON object: it has no key '{key}'"
                ))
            })?;
            let Some(raw) = fields.get(key) else {
                let names = fields
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ResolveError::config(format!(
                    "{what} has no key '{key}'; its keys: {names}"
                )));
            };
            let text = raw.get();
            if text.starts_with('"') {
                serde_json::from_str::<String>(text)
                    .map_err(|_| ResolveError::unavailable("the key's value is not valid JSON"))?
                    .into_bytes()
            } else if text == "null" {
                Vec::new()
            } else {
                text.as_bytes().to_vec()
            }
        }
        (None, Some(_), Some(key)) => {
            return Err(ResolveError::config(format!(
                "{what} is binary: it has no key '{key}'"
            )))
        }
        (None, Some(b), None) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|_| ResolveError::unavailable("the binary secret is not valid base64"))?,
        (None, None, _) => {
            return Err(ResolveError::unavailable(format!(
                "{what}: the answer holds neither SecretString nor SecretBinary"
            )))
        }
    };
    super::non_empty(bytes, what)
}

/// The error type (without its namespace) and message of an AWS JSON error,
/// scrubbed of the credentials.
fn aws_error(body: &[u8], secrets: &[&[u8]]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct AwsError {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let e = match serde_json::from_slice::<AwsError>(body) {
        Ok(e) => e,
        // Some front ends (and moto's signature checks) answer in XML.
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            AwsError {
                kind: xml_text(&text, "Code"),
                message: xml_text(&text, "Message"),
            }
        }
    };
    let kind = e
        .kind
        .map(|k| k.rsplit(['#', ':']).next().unwrap_or_default().to_string())
        .filter(|k| k.bytes().all(|b| b.is_ascii_alphanumeric()) && !k.is_empty());
    let message = e.message.map(|m| {
        let m: String = scrub(&m, secrets).chars().take(REASON_SHOWN).collect();
        m
    });
    (kind, message)
}

/// The text of the first `<tag>…</tag>` in `text`.
fn xml_text(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{tag}>"))? + start;
    Some(text[start..end].to_string())
}

fn describe(kind: Option<&str>, message: Option<&str>) -> String {
    match (kind, message) {
        (Some(k), Some(m)) => format!(": {k}: {m}"),
        (Some(k), None) => format!(": {k}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

fn status_error(status: StatusCode, body: &[u8], secrets: &[&[u8]], what: &str) -> ResolveError {
    let (kind, message) = aws_error(body, secrets);
    let detail = describe(kind.as_deref(), message.as_deref());
    let denied = matches!(
        kind.as_deref(),
        Some(
            "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "IncompleteSignature"
                | "InvalidClientTokenId"
                | "ExpiredTokenException"
                | "ExpiredToken"
                | "InvalidIdentityToken"
                | "IDPRejectedClaim"
        )
    );
    if kind.as_deref() == Some("ResourceNotFoundException") {
        ResolveError::unavailable(format!("{what}: not found"))
    } else if denied || status == StatusCode::FORBIDDEN {
        ResolveError {
            kind: ErrorKind::Permission,
            reason: format!(
                "{what}: permission denied by the server ({}){detail}",
                status.as_u16()
            ),
        }
    } else {
        ResolveError::unavailable(format!(
            "{what}: the server answered {}{detail}",
            status.as_u16()
        ))
    }
}

/// The shared client, trusting the system's roots.
fn build_client(options: &AwsSmOptions) -> Result<HttpClient, ResolveError> {
    pooled_client(native_roots(), options.request_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_credentials_are_refreshed_before_they_expire() {
        let now = 1_800_000_000;
        assert!(still_valid(None, now));
        assert!(still_valid(Some(now + 3600), now));
        assert!(still_valid(Some(now + REFRESH_BEFORE + 1), now));
        assert!(!still_valid(Some(now + REFRESH_BEFORE), now));
        assert!(!still_valid(Some(now - 1), now));
    }

    #[test]
    fn reads_the_expiration_of_an_sts_answer() {
        let (key, secret, token) = ("test-key-id", "test-secret-part", "test-session-part");
        let body = format!(
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
             <AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>\
             <SessionToken>{token}</SessionToken><Expiration>2027-01-01T00:00:00Z</Expiration>\
             </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
        );
        let (creds, expires) = assumed_credentials(body.as_bytes()).expect("parses");
        assert_eq!(expires, Some(1_798_761_600));
        assert_eq!(creds.key_id, key);
        let no_expiry = body.replace("<Expiration>2027-01-01T00:00:00Z</Expiration>", "");
        assert_eq!(
            assumed_credentials(no_expiry.as_bytes()).expect("parses").1,
            None
        );
    }
}
