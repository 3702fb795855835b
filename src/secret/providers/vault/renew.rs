//! Keeping a run's Vault token alive: `lookup-self` to learn the lifetime
//! of a `VAULT_TOKEN`, `renew-self` two thirds into each TTL, and a new
//! AppRole login when a login token reaches its maximum TTL (or a renewal
//! is refused). A `VAULT_TOKEN` that cannot be renewed any further is
//! reported once, with the time it expires; re-resolving after that fails
//! closed with the server's 403.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use zeroize::Zeroize;

use super::session::{capped, step, Step, TokenLife, TokenSource, VaultSession};
use super::{namespace, server_reason, Addrs, VaultOptions, VaultProvider};
use crate::secret::providers::{Context, ResolveError};
use crate::secret::SecretBytes;

/// Longest sleep between two looks at the session.
const LOOK_EVERY: Duration = Duration::from_secs(30);
/// Wait after a failed renewal or login before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

impl VaultProvider {
    /// `GET auth/token/lookup-self`: the token's lifetime, or `None` when
    /// it never expires or cannot be looked up (its policy may not allow
    /// it; it is then simply not renewed). An error only when the server
    /// cannot be reached (the read would fail the same way).
    pub(super) async fn lookup_self(
        &self,
        addrs: &Addrs,
        token: &SecretBytes,
        namespace: Option<&HeaderValue>,
    ) -> Result<Option<TokenLife>, ResolveError> {
        #[derive(Deserialize)]
        struct Lookup {
            data: Option<LookupData>,
        }
        #[derive(Deserialize)]
        struct LookupData {
            #[serde(default)]
            ttl: u64,
            #[serde(default)]
            creation_ttl: u64,
            #[serde(default)]
            renewable: bool,
        }
        let asked = Instant::now();
        let answer = self
            .call(
                addrs,
                Method::GET,
                "/v1/auth/token/lookup-self",
                Some(token),
                namespace,
                None,
            )
            .await;
        let (status, mut body) = answer?;
        let parsed = serde_json::from_slice::<Lookup>(&body)
            .ok()
            .and_then(|l| l.data);
        body.zeroize();
        Ok(match (status, parsed) {
            (StatusCode::OK, Some(d)) if d.ttl > 0 => Some(TokenLife {
                ttl: Duration::from_secs(d.ttl),
                renewable: d.renewable,
                normal: Duration::from_secs(d.creation_ttl.max(d.ttl)),
                at: asked,
            }),
            (StatusCode::OK, _) => None,
            (status, _) => {
                tracing::debug!(
                    "cannot look up the Vault token's lifetime ({}): it is not renewed",
                    status.as_u16()
                );
                None
            }
        })
    }

    /// `POST auth/token/renew-self`: the TTL granted and whether it stays
    /// renewable.
    async fn renew_self(
        &self,
        addrs: &Addrs,
        token: &SecretBytes,
        namespace: Option<&HeaderValue>,
    ) -> Result<(Duration, bool), ResolveError> {
        #[derive(Deserialize)]
        struct Renewed {
            auth: Option<RenewedAuth>,
        }
        #[derive(Deserialize)]
        struct RenewedAuth {
            #[serde(default)]
            lease_duration: u64,
            #[serde(default)]
            renewable: bool,
        }
        let (status, mut body) = self
            .call(
                addrs,
                Method::POST,
                "/v1/auth/token/renew-self",
                Some(token),
                namespace,
                Some(b"{}"),
            )
            .await?;
        let out = match status {
            StatusCode::OK => match serde_json::from_slice::<Renewed>(&body) {
                Ok(Renewed { auth: Some(a) }) => {
                    Ok((Duration::from_secs(a.lease_duration), a.renewable))
                }
                _ => Err(ResolveError::unavailable(
                    "the renewal's answer has no lease",
                )),
            },
            other => Err(ResolveError::unavailable(format!(
                "renewal refused ({}){}",
                other.as_u16(),
                server_reason(&body, Some(token))
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ))),
        };
        body.zeroize();
        out
    }
}

/// Renew the session's token in the background for as long as the process
/// lives (the thread ends when there is nothing left to renew). `ctx` is
/// keywarden's environment, as the providers see it.
pub fn start_renewer(
    session: Arc<VaultSession>,
    options: VaultOptions,
    ctx: Context,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vault-renew".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("cannot start the Vault token renewer: {e}");
                    return;
                }
            };
            let provider = VaultProvider::with_session(options, session);
            runtime.block_on(provider.keep_alive(&ctx));
        })?;
    Ok(())
}

impl VaultProvider {
    /// The renewer's loop.
    async fn keep_alive(&self, ctx: &Context) {
        let (Ok(addrs), Ok(ns)) = (Addrs::from_env(ctx), namespace(ctx)) else {
            return;
        };
        if self.client(ctx).is_err() {
            return;
        }
        let mut warned = false;
        loop {
            let snapshot = {
                let held = self.session.held.lock().await;
                held.as_ref()
                    .and_then(|h| Some((Arc::clone(&h.token), h.source, h.life?)))
            };
            let Some((token, source, life)) = snapshot else {
                // No token, or one that never expires: nothing to renew.
                return;
            };
            let now = Instant::now();
            if now < life.due() {
                tokio::time::sleep((life.due() - now).min(LOOK_EVERY)).await;
                continue;
            }
            match step(source, &life) {
                Step::GiveUp => {
                    if !warned {
                        tracing::warn!(
                            "the Vault token from VAULT_TOKEN cannot be renewed: it expires in {}s; \
                             secrets re-resolved after that will fail",
                            life.expires().saturating_duration_since(now).as_secs()
                        );
                    }
                    return;
                }
                Step::Login => {
                    if !self.login_again(ctx, &addrs, ns.as_ref(), &token).await {
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
                Step::Renew => match self.renew_self(&addrs, &token, ns.as_ref()).await {
                    Ok((granted, renewable)) => {
                        let at_max = capped(&life, granted);
                        let next = TokenLife {
                            ttl: granted,
                            renewable: renewable && !at_max,
                            normal: life.normal,
                            at: now,
                        };
                        tracing::info!(
                            "renewed the Vault token: valid for {}s more",
                            granted.as_secs()
                        );
                        if at_max && source == TokenSource::Env {
                            tracing::warn!(
                                "the Vault token from VAULT_TOKEN reached its maximum TTL: it \
                                 expires in {}s and cannot be renewed further",
                                granted.as_secs()
                            );
                            warned = true;
                        }
                        self.update(&token, next).await;
                    }
                    Err(e) => {
                        tracing::warn!("cannot renew the Vault token: {e}");
                        if source == TokenSource::AppRole {
                            if !self.login_again(ctx, &addrs, ns.as_ref(), &token).await {
                                tokio::time::sleep(RETRY_AFTER).await;
                            }
                        } else if life.spent(Instant::now()) {
                            tracing::warn!("the Vault token from VAULT_TOKEN has expired");
                            return;
                        } else {
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                    }
                },
            }
        }
    }

    /// Record `life` for the held token, if it is still `token`.
    async fn update(&self, token: &Arc<SecretBytes>, life: TokenLife) {
        let mut held = self.session.held.lock().await;
        if let Some(h) = held.as_mut().filter(|h| Arc::ptr_eq(&h.token, token)) {
            h.life = Some(life);
        }
    }

    /// Replace the login token `old` by a new login; whether it worked.
    async fn login_again(
        &self,
        ctx: &Context,
        addrs: &Addrs,
        ns: Option<&HeaderValue>,
        old: &Arc<SecretBytes>,
    ) -> bool {
        self.forget(old).await;
        match self.token(ctx, addrs, ns).await {
            Ok(_) => {
                tracing::info!("logged in to Vault again (AppRole): the old token ran out");
                true
            }
            Err(e) => {
                tracing::warn!("cannot log in to Vault again: {e}");
                false
            }
        }
    }
}
