//! The socket API: scoped, short-lived retrieval of secrets for the child,
//! and an admin socket for the operator (SPEC "Socket API", "Lifecycle").
//!
//! Pure parts — [`tokens`], [`state`], [`routes`], [`limit`], [`slack`],
//! [`json`] — take time, randomness and requests as values. Effects live at
//! the edge: [`server`] (hyper on a current-thread tokio runtime, on its own
//! thread), [`socket`] (binding private unix sockets, removing them),
//! [`revocations`] (the revocation list file). The clients (`get`, `revoke`,
//! `inventory`, `approve`) are commands: `crate::commands::clients`, over
//! the HTTP client in `crate::client`.
//!
//! What `run` does with it, in order: [`bind`] before spawning the child
//! (the socket exists and listens when it returns); give the child
//! [`RunningApi::child_env`]; once the child runs, [`RunningApi::serve`]
//! (starts the server thread) at once when held values expire, else when a
//! connection waits on one of [`RunningApi::idle_listeners`];
//! [`RunningApi::shutdown`] after the child ended (dropping the handle does
//! the same). [`start`] is [`bind`] and [`RunningApi::serve`] in one.

#![forbid(unsafe_code)]

pub mod approvals;
pub mod conn;
pub mod json;
pub mod limit;
pub mod revocations;
pub mod routes;
pub mod server;
pub mod slack;
pub mod socket;
pub mod state;
pub mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::audit::Auditor;
use crate::config::{Approval, Environment, PlannedSecret};
use crate::error::Result;
use crate::secret::{SecretBytes, SecretRef};

pub use server::{bind, keyring, reload_at, start, KeyAnswer, Keyring, RunningApi};
pub use state::Now;

/// The variable that tells the child where the socket is.
pub const SOCKET_VAR: &str = "KEYWARDEN_SOCKET";
/// The variable that holds the child's token.
pub const TOKEN_VAR: &str = "KEYWARDEN_TOKEN";
/// The variable naming the admin socket for `revoke` and `inventory`
/// (denied in the child's environment by the `KEYWARDEN_ADMIN_*` rule).
pub const ADMIN_SOCKET_VAR: &str = "KEYWARDEN_ADMIN_SOCKET";
/// Scopes of the child's token when the policy names none.
pub const DEFAULT_CHILD_SCOPES: [&str; 1] = ["pool"];

/// One secret the API can serve, as `run` hands it over.
#[derive(Debug)]
pub struct ServedSecret {
    /// Registry id (or variable name, for refs found in the environment).
    pub id: Arc<str>,
    /// Where the value lives (re-resolved from there when it expires).
    pub reference: SecretRef,
    /// Scope labels: a token reads the secret when its scopes meet these.
    pub scope: Box<[String]>,
    /// min(entry `max_ttl_seconds`, policy for the env); `None`: no expiry.
    pub ttl_seconds: Option<u64>,
    /// Whether a human must approve each use (refused in this build).
    pub approval: Approval,
    /// The variable the child gets it in, if injected.
    pub env_var: Option<Box<str>>,
    /// The value, or `None` to resolve it on first use.
    pub value: Option<SecretBytes>,
    /// When the secret was created and last rotated (unix seconds), where
    /// its backend knows (the store's dates, a file's mtime).
    pub dates: SecretDates,
    /// When `value` was resolved (its TTL runs from then).
    pub resolved_at: SystemTime,
    /// The lease the backend gave `value` (Vault): the cached value
    /// expires at the earlier of the TTL and the lease.
    pub lease: Option<std::time::Duration>,
    /// Served only through the credential proxy: the socket refuses it
    /// (403, `"reason":"proxied"`).
    pub proxied: bool,
}

impl ServedSecret {
    /// From a planned secret and its resolved value.
    pub fn from_planned(
        planned: &PlannedSecret,
        value: Option<SecretBytes>,
        resolved_at: SystemTime,
    ) -> Self {
        ServedSecret {
            id: planned.id.clone(),
            reference: planned.reference.clone(),
            scope: planned.scope.clone(),
            ttl_seconds: planned.ttl_seconds(),
            approval: planned.approval,
            env_var: planned.env_var.clone(),
            value,
            resolved_at,
            dates: SecretDates {
                rotate_every_days: planned.rotate_every_days(),
                ..SecretDates::default()
            },
            lease: None,
            proxied: planned.proxy.is_some(),
        }
    }
}

/// Creation and rotation dates of a secret, as unix seconds, and how
/// often it should be rotated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretDates {
    /// First stored.
    pub created: Option<i64>,
    /// Value last changed.
    pub rotated: Option<i64>,
    /// The registry's `rotate_every_days`.
    pub rotate_every_days: Option<u64>,
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The child's socket (`--socket PATH`); default `api.sock` in a fresh
    /// 0700 folder under `runtime_dir`.
    pub socket: Option<PathBuf>,
    /// The admin socket; default `admin.sock` in another fresh 0700 folder
    /// under `runtime_dir`.
    pub admin_socket: Option<PathBuf>,
    /// Where the fresh folders go: `$XDG_RUNTIME_DIR`, else the temp dir
    /// (see [`socket::runtime_dir`]).
    pub runtime_dir: PathBuf,
    /// The uid the child runs as: the only peer uid (with root) the child
    /// socket answers. In separate-uid mode the socket and its folder are
    /// given to this uid; the admin socket stays keywarden's.
    pub child_uid: u32,
    /// The child's group, for the socket's folder in separate-uid mode.
    pub child_gid: u32,
    /// Every group the child is in: whether it can reach the runtime
    /// folder depends on them.
    pub child_groups: Vec<u32>,
    /// Scopes of the child's token (policy `child_scopes`).
    pub child_scopes: Vec<String>,
    /// The environment (dev, ci, prod).
    pub env: Environment,
    /// The policy's TTL ceiling for the env (also caps minted tokens).
    pub max_ttl_seconds: Option<u64>,
    /// The registry id of the Slack signing secret (policy).
    pub slack_secret_id: Option<String>,
    /// The revocation list file (see [`revocations::default_path`]).
    pub revocation_list: PathBuf,
    /// Where events go.
    pub audit: Auditor,
    /// The key challenge codes are kept under (`HITL_CHALLENGE_HMAC_KEY`);
    /// `None`: a random key for this run.
    pub approval_key: Option<Arc<SecretBytes>>,
    /// Header and idle timeouts, connections per peer uid.
    pub limits: conn::ConnLimits,
}

/// A value resolved again, with the lease its backend gave it.
#[derive(Debug)]
pub struct Fresh {
    /// The value.
    pub value: SecretBytes,
    /// Its lease, if the backend has leases.
    pub lease: Option<std::time::Duration>,
}

/// Re-resolve one secret by id (called on a blocking thread).
pub type ResolveFn = dyn Fn(&str) -> Result<Fresh> + Send + Sync;
/// Re-read registry and policy and resolve again (blocking thread).
pub type ReloadFn = dyn Fn() -> Result<Vec<ServedSecret>> + Send + Sync;

/// Mask a token just minted in the child's output (blocking thread; the
/// token is handed out once this returns).
/// It opens nothing after the instant given.
pub type MaskTokenFn = dyn Fn(SecretBytes, std::time::Instant) + Send + Sync;

/// What the server calls back into `run` for.
#[derive(Clone)]
pub struct Callbacks {
    /// Resolve one expired (or not yet resolved) value again.
    pub resolve: Arc<ResolveFn>,
    /// Admin reload.
    pub reload: Arc<ReloadFn>,
    /// Mask a minted token.
    pub mask_token: Arc<MaskTokenFn>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callbacks")
    }
}

/// The vendor of a secret id: the part before the first `_`.
pub fn vendor_of(id: &str) -> &str {
    id.split('_').next().unwrap_or(id)
}
