//! Stage 4 of `run`: the services keywarden offers the child besides its
//! environment: the socket API, and the credential proxy when the registry
//! proxies a secret (it reads the API's state, so revocations and reloads
//! reach both; with `--no-socket` it has that state to itself).
//!
//! The seam: a [`Service`] is built before the spawn from the resolved
//! secrets and the audit, tells the child what to add to its environment
//! ([`Service::child_env`]), starts serving once the child runs
//! ([`Service::started`]), is polled by the supervisor while it runs
//! ([`Service::watch`]), and is stopped at teardown ([`Service::stop`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::SystemTime;

use nix::poll::PollFlags;

use crate::api::{self, ApiOptions, Callbacks, Keyring, RunningApi, SecretDates, ServedSecret};
use crate::config::{Common, Origin};
use crate::error::{Error, Result};
use crate::proxy::server::Proxy;
use crate::proxy::{Listen, Route};
use crate::secret::SecretBytes;
use crate::supervise::Watch;

use super::plan::Planned;
use super::resolve::Resolved;
use super::rotation::Sources;
use super::{var, RunOptions};

/// A service `run` starts for the child (see the module's paragraph).
pub(super) trait Service {
    /// Variables the child gets (values kept as secrets, wiped after each
    /// start), and whether the relay must mask each value.
    fn child_env(&mut self) -> Vec<(String, SecretBytes, Masked)>;
    /// The child runs; `first` on its first start (not on a restart).
    fn started(&mut self, first: bool);
    /// How this service carries out a reload signal, if it does (else
    /// `run` reloads its sources itself).
    fn reloader(&self) -> Option<Reloader> {
        None
    }
    /// The supervisor polls this while the child runs.
    fn watch(&mut self) -> &mut dyn Watch;
    /// keywarden stops: close, remove what was created, wipe what is held.
    fn stop(self: Box<Self>);
}

/// A service's way of carrying out a reload (from any thread).
pub(super) type Reloader = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// Whether the relay masks a service's variable in the child's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Masked {
    Yes,
    No,
}

/// Build every service the options ask for.
pub(super) fn start(
    common: &Common,
    opts: &RunOptions,
    env: &[(OsString, OsString)],
    planned: &Planned,
    resolved: &Resolved,
    sources: &Arc<Sources>,
) -> Result<Vec<Box<dyn Service>>> {
    // A bad --proxy-listen is refused even when nothing is proxied.
    if let Some(text) = &opts.proxy_listen {
        Listen::parse(text).map_err(Error::config)?;
    }
    let mut services: Vec<Box<dyn Service>> = Vec::new();
    let mut keyring = None;
    if !opts.no_socket {
        let api = SocketApi::bind(common, opts, env, planned, resolved, sources)?;
        keyring = api.api.as_ref().map(RunningApi::keyring);
        services.push(Box::new(api));
    }
    let routes: Vec<Route> = planned
        .plan
        .secrets
        .iter()
        .filter_map(|s| s.proxy.as_deref().cloned())
        .collect();
    if !routes.is_empty() {
        let headless = keyring.is_none();
        let keyring = match keyring {
            Some(k) => k,
            None => api::keyring(
                &api_options(common, opts, env, planned),
                served(common, env, planned, resolved),
                callbacks(sources),
            )?,
        };
        services.push(Box::new(ProxyService::bind(
            opts, planned, routes, keyring, headless, sources,
        )?));
    }
    if let Some(every) = opts.watch {
        // Through the socket API's reload when it runs (its state follows),
        // else the sources' own.
        let reload = services
            .iter()
            .find_map(|s| s.reloader())
            .unwrap_or_else(|| {
                let sources = sources.clone();
                Arc::new(move || sources.reload().map(drop))
            });
        services.push(Box::new(super::watch::SourceWatch::new(
            every,
            sources.clone(),
            reload,
        )));
    }
    Ok(services)
}

/// The socket API: bound before the spawn (the child gets its address and
/// a token, never a secret); its server thread starts after the spawn, at
/// once when held values expire (its sweep wipes them) or a reload signal
/// may call the admin socket, otherwise on the first connection, which
/// waits in the listen backlog meanwhile (a child that never calls the API
/// costs no thread and no runtime).
struct SocketApi {
    api: Option<RunningApi>,
    serve_at_start: bool,
}

/// The socket API's options, from the plan and keywarden's environment.
fn api_options(
    common: &Common,
    opts: &RunOptions,
    env: &[(OsString, OsString)],
    planned: &Planned,
) -> ApiOptions {
    let (plan, audit) = (&planned.plan, &planned.audit);
    let (child_uid, child_gid, child_groups) = match &planned.user {
        Some(u) => (
            u.credentials.uid.as_raw(),
            u.credentials.gid.as_raw(),
            u.credentials.groups.iter().map(|g| g.as_raw()).collect(),
        ),
        None => (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
            Vec::new(),
        ),
    };
    ApiOptions {
        socket: opts.socket.clone(),
        admin_socket: opts.admin_socket.clone(),
        runtime_dir: api::socket::runtime_dir(|k| var(env, k)),
        child_uid,
        child_gid,
        child_groups,
        child_scopes: plan.policy.child_scopes.clone().unwrap_or_else(|| {
            api::DEFAULT_CHILD_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect()
        }),
        env: common.env,
        max_ttl_seconds: plan.policy.max_ttl_for(common.env),
        slack_secret_id: plan.policy.slack_signing_secret.clone(),
        revocation_list: planned.revocation_list.clone(),
        limits: api::conn::ConnLimits::default(),
        audit: audit.clone(),
        approval_key: var(env, "HITL_CHALLENGE_HMAC_KEY")
            .filter(|k| !k.is_empty())
            .map(|k| Arc::new(SecretBytes::copy_from(k.as_bytes()))),
    }
}

/// The secrets the API (and the proxy) serve: the plan's, with their
/// values, and the revoked ones without.
fn served(
    common: &Common,
    env: &[(OsString, OsString)],
    planned: &Planned,
    resolved: &Resolved,
) -> Vec<ServedSecret> {
    let plan = &planned.plan;
    let now = SystemTime::now();
    let mut served: Vec<ServedSecret> =
        Vec::with_capacity(plan.secrets.len() + planned.revoked.len());
    served.extend(
        plan.secrets
            .iter()
            .zip(resolved.values.iter())
            .zip(&resolved.leases)
            .map(|((p, v), lease)| ServedSecret {
                lease: *lease,
                ..ServedSecret::from_planned(p, Some(v.duplicate()), now)
            }),
    );
    served.extend(
        planned
            .revoked
            .iter()
            .map(|p| ServedSecret::from_planned(p, None, now)),
    );
    let dates = crate::resolve::secret_dates_read(plan, &common.store, env, &resolved.modified);
    // A served secret has the dates of the last planned secret of its id
    // that has some. Registry ids are distinct: without secrets from the
    // environment or revoked ones, that is each secret's own.
    let ids_repeat =
        !planned.revoked.is_empty() || plan.secrets.iter().any(|s| s.origin == Origin::EnvVar);
    if ids_repeat {
        let by_id: HashMap<&str, SecretDates> = plan
            .secrets
            .iter()
            .zip(&dates)
            .filter_map(|(p, d)| Some((&*p.id, (*d)?)))
            .collect();
        for s in served.iter_mut() {
            if let Some(d) = by_id.get(&*s.id) {
                s.dates = *d;
            }
        }
    } else {
        for (s, d) in served.iter_mut().zip(dates) {
            if let Some(d) = d {
                s.dates = d;
            }
        }
    }
    served
}

fn callbacks(sources: &Arc<Sources>) -> Callbacks {
    let (s1, s2, s3) = (sources.clone(), sources.clone(), sources.clone());
    Callbacks {
        resolve: Arc::new(move |id: &str| s1.resolve_one(id)),
        reload: Arc::new(move || s2.reload()),
        mask_token: Arc::new(move |token, expires| s3.mask_token(token, expires)),
    }
}

impl SocketApi {
    fn bind(
        common: &Common,
        opts: &RunOptions,
        env: &[(OsString, OsString)],
        planned: &Planned,
        resolved: &Resolved,
        sources: &Arc<Sources>,
    ) -> Result<SocketApi> {
        let api = api::bind(
            api_options(common, opts, env, planned),
            served(common, env, planned, resolved),
            callbacks(sources),
        )?;
        Ok(SocketApi {
            serve_at_start: api.must_serve_now()
                || opts.reload_signal.is_some()
                || opts.watch.is_some(),
            api: Some(api),
        })
    }

    /// Start the server thread if it is not running; on failure its
    /// listeners are closed (clients are refused) and the command runs on.
    fn serve(&mut self) {
        if let Some(a) = &mut self.api {
            if let Err(e) = a.serve() {
                tracing::error!("{e}; the socket API refuses connections");
            }
        }
    }
}

impl Service for SocketApi {
    fn child_env(&mut self) -> Vec<(String, SecretBytes, Masked)> {
        let Some(api) = &mut self.api else {
            return Vec::new();
        };
        api.child_env()
            .into_iter()
            .map(|(k, v)| {
                // The child's own token is masked too: it is a credential.
                let masked = if k == api::TOKEN_VAR {
                    Masked::Yes
                } else {
                    Masked::No
                };
                (k, v, masked)
            })
            .collect()
    }

    fn started(&mut self, first: bool) {
        if first && self.serve_at_start {
            self.serve();
        }
    }

    fn reloader(&self) -> Option<Reloader> {
        // Through the admin socket, so the API's state follows the reload.
        let path = self.api.as_ref()?.admin_path().to_path_buf();
        Some(Arc::new(move || api::reload_at(&path)))
    }

    fn watch(&mut self) -> &mut dyn Watch {
        self
    }

    fn stop(mut self: Box<Self>) {
        if let Some(a) = self.api.take() {
            a.shutdown();
        }
    }
}

/// The API's listening sockets, polled by the supervisor until a
/// connection starts the server thread.
impl Watch for SocketApi {
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.api
            .as_ref()
            .map(RunningApi::idle_listeners)
            .unwrap_or_default()
    }

    fn ready(&mut self, _: &[PollFlags]) {
        self.serve();
    }
}

/// The credential proxy: bound before the spawn (the child gets each
/// route's `{url}` and placeholder), served from the first connection on.
struct ProxyService {
    proxy: Option<Proxy>,
    /// With `--no-socket`, no admin socket carries out reloads: the proxy's
    /// keyring does.
    reload: Option<Keyring>,
}

impl ProxyService {
    fn bind(
        opts: &RunOptions,
        planned: &Planned,
        routes: Vec<Route>,
        keyring: Keyring,
        headless: bool,
        sources: &Arc<Sources>,
    ) -> Result<ProxyService> {
        let listen = match &opts.proxy_listen {
            Some(text) => Listen::parse(text).map_err(Error::config)?,
            None => Listen::default(),
        };
        let mut not_secrets = vec![api::TOKEN_VAR.to_string()];
        for r in &routes {
            not_secrets.extend(
                r.env
                    .iter()
                    .filter(|t| t.has_phantom())
                    .map(|t| t.name.clone()),
            );
        }
        let s = sources.clone();
        let proxy = crate::proxy::server::bind(crate::proxy::server::ProxyOptions {
            listen,
            ca_file: opts.proxy_ca.clone(),
            routes,
            keyring: keyring.clone(),
            matcher: Arc::new(move || s.rotation().cell.as_ref().map(|c| c.current())),
            not_secrets,
            audit: planned.audit.clone(),
        })?;
        Ok(ProxyService {
            proxy: Some(proxy),
            reload: headless.then_some(keyring),
        })
    }

    fn serve(&mut self) {
        if let Some(p) = &mut self.proxy {
            if let Err(e) = p.serve() {
                tracing::error!("{e}; the credential proxy refuses connections");
            }
        }
    }
}

impl Service for ProxyService {
    fn child_env(&mut self) -> Vec<(String, SecretBytes, Masked)> {
        let Some(p) = &mut self.proxy else {
            return Vec::new();
        };
        p.child_env()
            .into_iter()
            .map(|(k, v, phantom)| (k, v, if phantom { Masked::Yes } else { Masked::No }))
            .collect()
    }

    fn started(&mut self, _first: bool) {}

    fn reloader(&self) -> Option<Reloader> {
        let k = self.reload.clone()?;
        Some(Arc::new(move || k.reload()))
    }

    fn watch(&mut self) -> &mut dyn Watch {
        self
    }

    fn stop(mut self: Box<Self>) {
        if let Some(p) = self.proxy.take() {
            p.shutdown();
        }
    }
}

/// The proxy's listener, polled by the supervisor until a connection
/// starts its thread.
impl Watch for ProxyService {
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.proxy
            .as_ref()
            .and_then(Proxy::idle_listener)
            .into_iter()
            .collect()
    }

    fn ready(&mut self, _: &[PollFlags]) {
        self.serve();
    }
}
