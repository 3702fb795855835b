//! `keywarden reload`: ask the running sidecar(s) to re-read registry and
//! policy and resolve again (`POST /v1/admin/reload` on the admin socket),
//! as the reload signal does. The sidecars are found the way `revoke`
//! finds them: the admin socket named, or every one running.
//!
//! Exit codes: 0 every sidecar reloaded; 69 no sidecar found, or one did
//! not answer; a failed reload's own code (78 a broken registry, 69 a
//! provider unreachable).

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use hyper::Method;

use crate::api::ADMIN_SOCKET_VAR;
use crate::client;
use crate::error::{Error, ErrorKind, Result};

use super::clients::{admin_sockets, no_sidecar};

/// `keywarden reload`
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// The running sidecar's admin socket [default: every one running]
    #[arg(long, env = ADMIN_SOCKET_VAR, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
}

/// Reload the sidecar at `sock`.
fn reload_one(sock: &Path) -> Result<()> {
    let answer = client::call(sock, Method::POST, "/v1/admin/reload", None, None).map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("{}: no keywarden sidecar answers: {e}", sock.display()),
        )
    })?;
    if answer.status == 200 {
        return Ok(());
    }
    // The sidecar's own error names the file or ref, with the exit code
    // the failure has in keywarden.
    let kind = match answer.json()["exit_code"].as_u64() {
        Some(65) => ErrorKind::Data,
        Some(77) => ErrorKind::Permission,
        Some(78) => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    };
    let why = answer
        .error()
        .unwrap_or_else(|| format!("reload failed: HTTP {}", answer.status));
    Err(Error::new(kind, format!("{}: {why}", sock.display())))
}

/// `keywarden reload`: every sidecar found reloads; the first failure is
/// the error (after the others were tried).
pub fn reload(args: &ReloadArgs, out: &mut dyn Write) -> Result<u8> {
    let sockets = admin_sockets(args.admin_socket.as_deref());
    if sockets.is_empty() {
        return Err(no_sidecar());
    }
    let mut first_error = None;
    for sock in &sockets {
        match reload_one(sock) {
            Ok(()) => {
                let _ = writeln!(out, "reloaded the sidecar at {}", sock.display());
            }
            Err(e) => {
                if sockets.len() > 1 {
                    tracing::error!("{e}");
                }
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(0),
        Some(e) if sockets.len() == 1 => Err(e),
        Some(e) => Err(e.context("not every sidecar reloaded")),
    }
}

/// `keywarden reload` on stdout.
pub fn reload_command(args: &ReloadArgs) -> Result<u8> {
    reload(args, &mut std::io::stdout())
}
