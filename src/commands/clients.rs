//! The socket API's subcommands, as clap argument structs and functions
//! that return keywarden's exit code: `get` (the client for scripts inside
//! the child), `revoke` and `inventory` (the operator's, over the admin
//! socket).
//!
//! `keywarden get ID` exit codes: 0 the value was printed; 77 the token
//! was refused, the secret is out of scope, is revoked or awaits approval
//! (401, 403, 410, 202 — the challenge id is printed on stderr); 65 no such
//! secret (404); 69 no sidecar (no `KEYWARDEN_SOCKET`, nothing listening),
//! rate-limited (429) or it failed (5xx). The token is read from
//! `KEYWARDEN_TOKEN` only, never from argv.
//!
//! `keywarden approve CHALLENGE_ID` reads the code without echo from the
//! terminal (or one line from stdin) and answers on the admin socket: 0
//! approved; 77 wrong code (the challenge locks after the third); 65 no
//! such open challenge; 69 no sidecar.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use hyper::Method;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::api::revocations::{self, Revocation, RevocationList};
use crate::api::{socket, ADMIN_SOCKET_VAR, SOCKET_VAR, TOKEN_VAR};
use crate::audit::rfc3339;
use crate::client::{self, Answer};
use crate::config::Common;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretBytes;

/// `keywarden get ID`
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The secret id
    pub id: String,
    /// Print the value without a trailing newline
    #[arg(short = 'n', long)]
    pub no_newline: bool,
    /// The sidecar's socket
    #[arg(long, env = SOCKET_VAR, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `keywarden revoke ID`
#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// The secret id
    pub id: String,
    /// Why (recorded in the revocation list and the audit log)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The running sidecar's admin socket [default: the only one running
    /// under $XDG_RUNTIME_DIR or the temp dir, if any]
    #[arg(long, env = ADMIN_SOCKET_VAR, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// The revocation list [default: $XDG_STATE_HOME/keywarden/revocations.json]
    #[arg(long, env = revocations::REVOCATION_LIST_VAR, value_name = "FILE")]
    pub revocation_list: Option<PathBuf>,
}

/// `keywarden approve CHALLENGE_ID`
#[derive(Debug, Clone, Args)]
pub struct ApproveArgs {
    /// The challenge id (from the 202 answer, or shown with the code)
    pub challenge_id: String,
    /// The running sidecar's admin socket [default: the only one running]
    #[arg(long, env = ADMIN_SOCKET_VAR, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
}

/// Output format of `inventory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InventoryFormat {
    /// Aligned columns.
    Table,
    /// The admin socket's JSON.
    Json,
}

/// `keywarden inventory`
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    /// The running sidecar's admin socket [default: the only one running]
    #[arg(long, env = ADMIN_SOCKET_VAR, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: InventoryFormat,
}

fn unreachable(socket: &Path, e: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("{}: no keywarden sidecar answers: {e}", socket.display()),
    )
}

/// No sidecar was found (69).
pub(super) fn no_sidecar() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("no running keywarden sidecar found; name its admin socket with --admin-socket or {ADMIN_SOCKET_VAR}"),
    )
}

fn server_error(what: &str, a: &Answer) -> String {
    let why = a.error().unwrap_or_else(|| format!("HTTP {}", a.status));
    format!("{what}: {why}")
}

/// `keywarden get ID`: print the value of `ID` from the running sidecar.
/// `token` is the value of `KEYWARDEN_TOKEN`.
pub fn get(args: &GetArgs, token: Option<OsString>, out: &mut dyn Write) -> Result<u8> {
    let Some(socket) = args.socket.as_deref().filter(|p| !p.as_os_str().is_empty()) else {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!("{SOCKET_VAR} is not set: run this inside `keywarden run`"),
        ));
    };
    let token = match token {
        Some(t) if !t.is_empty() => Zeroizing::new(t.into_encoded_bytes()),
        _ => {
            return Err(Error::new(
                ErrorKind::Permission,
                format!("{TOKEN_VAR} is not set: run this inside `keywarden run`"),
            ))
        }
    };
    let path = format!("/v1/secrets/{}", args.id);
    let answer = client::call(socket, Method::GET, &path, Some(&token), None)
        .map_err(|e| unreachable(socket, &e))?;
    let what = format!("secret '{}'", args.id);
    if answer.status == 202 {
        let v = answer.json();
        return Err(Error::new(
            ErrorKind::Permission,
            format!(
                "{what} needs approval: challenge {} (expires {}); the operator answers it with \
                 `keywarden approve {}`, then ask again",
                v["challenge_id"].as_str().unwrap_or("?"),
                v["expires_at"].as_str().unwrap_or("?"),
                v["challenge_id"].as_str().unwrap_or("?"),
            ),
        ));
    }
    let kind = match answer.status {
        200 => None,
        401 | 403 | 410 => Some(ErrorKind::Permission),
        404 => Some(ErrorKind::Data),
        _ => Some(ErrorKind::Unavailable),
    };
    if let Some(kind) = kind {
        return Err(Error::new(kind, server_error(&what, &answer)));
    }
    #[derive(Deserialize)]
    struct Value {
        value: String,
    }
    let v: Value = serde_json::from_slice(&answer.body).map_err(|_| {
        Error::new(
            ErrorKind::Unavailable,
            format!("{what}: the sidecar's answer is not what `get` expects"),
        )
    })?;
    let value = Zeroizing::new(v.value);
    let written = out
        .write_all(value.as_bytes())
        .and_then(|_| {
            if args.no_newline {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .and_then(|_| out.flush());
    written.map_err(|e| Error::new(ErrorKind::Os, format!("cannot write the value: {e}")))?;
    Ok(0)
}

/// Live admin sockets under `base` (`keywarden-admin-*/admin.sock`, ours):
/// the sockets in their default place, and those at a chosen path that a
/// sidecar linked there (given as the path it was started with).
pub fn find_admin_sockets(base: &Path) -> Vec<PathBuf> {
    let euid = nix::unistd::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("keywarden-"))
        .filter(|e| e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == euid))
        .map(|e| e.path().join("admin.sock"))
        .map(|p| std::fs::read_link(&p).unwrap_or(p))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.uid() == euid))
        .filter(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The admin socket named, or every one running (ours, in the runtime
/// folder).
pub(super) fn admin_sockets(named: Option<&Path>) -> Vec<PathBuf> {
    match named.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => vec![p.to_path_buf()],
        None => find_admin_sockets(&socket::runtime_dir(|k| std::env::var_os(k))),
    }
}

/// The admin socket named, or the only one running; `None` when none runs.
fn admin_socket(named: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = named.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(Some(p.to_path_buf()));
    }
    let base = socket::runtime_dir(|k| std::env::var_os(k));
    let mut found = find_admin_sockets(&base);
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(Error::usage(format!(
            "several keywarden sidecars are running; choose one with --admin-socket: {}",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The inventory without a sidecar: every secret of `common`'s registry for
/// its env, with the dates the backends know and the revocation list
/// applied; nothing is resolved.
pub fn offline_inventory(common: &Common) -> Result<serde_json::Value> {
    use crate::api::state::{Settings, State};
    let process_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let config = crate::config::load(common.registry.as_deref(), common.policy.as_deref())?;
    let plan = crate::config::build_plan(&config, common.env, &process_env, &cwd)?;
    let now = std::time::SystemTime::now();
    let dates = crate::resolve::secret_dates(&plan, &common.store, &process_env, |_| true);
    let served = plan
        .secrets
        .iter()
        .map(|p| {
            let mut s = crate::api::ServedSecret::from_planned(p, None, now);
            if let Some(d) = dates.get(&*p.id) {
                s.dates = *d;
            }
            s
        })
        .collect();
    let mut state = State::new(
        Settings {
            env: common.env,
            max_ttl_seconds: plan.policy.max_ttl_for(common.env),
            slack_secret_id: None,
        },
        served,
        crate::api::Now::system(),
    );
    let named = std::env::var_os("KEYWARDEN_REVOCATION_LIST").map(PathBuf::from);
    if let Ok(path) = revocation_list_path(named.as_deref()) {
        state.apply_revocations(&RevocationList::load(&path)?);
    }
    Ok(serde_json::json!({
        "env": common.env.as_str(),
        "secrets": state.inventory(crate::api::Now::system()),
    }))
}

/// Where the revocation list is: named, or the default place.
pub fn revocation_list_path(named: Option<&Path>) -> Result<PathBuf> {
    named
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| revocations::default_path(|k| std::env::var_os(k)))
        .ok_or_else(|| {
            Error::usage(
                "no place for the revocation list: pass --revocation-list or set XDG_STATE_HOME or HOME",
            )
        })
}

/// The ref of `id` in the registry for `env` (for `revoke` when no running
/// sidecar knows the id). An id the registry lacks is bad input (65).
pub fn registry_ref(
    registry: Option<&Path>,
    policy: Option<&Path>,
    env: crate::config::Environment,
    id: &str,
) -> Result<String> {
    let config = crate::config::load(registry, policy)?;
    let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let plan = crate::config::build_plan(&config, env, &vars, &cwd)?;
    plan.secrets
        .iter()
        .find(|s| *s.id == *id)
        .map(|s| s.reference.to_string())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Data,
                format!(
                    "no secret '{id}' in the registry for env '{}'",
                    env.as_str()
                ),
            )
        })
}

/// `keywarden revoke ID`: revoke in the running sidecar (if any) and, in any
/// case, add (id, ref) to the revocation list. `lookup` finds the id's ref
/// when no running sidecar knows it (see [`registry_ref`]).
pub fn revoke(
    args: &RevokeArgs,
    lookup: impl FnOnce(&str) -> Result<String>,
    out: &mut dyn Write,
) -> Result<u8> {
    let list = revocation_list_path(args.revocation_list.as_deref())?;
    // Every running sidecar (or the one named): a revocation is meant to
    // hold everywhere.
    let admin = admin_sockets(args.admin_socket.as_deref());
    let reason = args
        .reason
        .clone()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "revoked by the operator".to_string());
    let mut reference: Option<String> = None;
    let mut sidecar_error = None;
    for sock in &admin {
        let body = serde_json::json!({"id": args.id, "reason": reason}).to_string();
        match client::call(
            sock,
            Method::POST,
            "/v1/admin/revoke",
            None,
            Some(body.into_bytes()),
        ) {
            Ok(a) if a.status == 200 => {
                if reference.is_none() {
                    reference = a.json()["ref"].as_str().map(str::to_string);
                }
                let _ = writeln!(
                    out,
                    "revoked '{}' in the sidecar at {}",
                    args.id,
                    sock.display()
                );
            }
            Ok(a) if a.status == 404 => {}
            Ok(a) => {
                sidecar_error = sidecar_error.or(Some(Error::new(
                    ErrorKind::Unavailable,
                    server_error(&format!("{}", sock.display()), &a),
                )))
            }
            Err(e) => sidecar_error = sidecar_error.or(Some(unreachable(sock, &e))),
        }
    }
    let reference = match reference {
        Some(r) => r,
        None => match lookup(&args.id) {
            Ok(r) => r,
            // A sidecar that did not answer is the news, not the registry.
            Err(e) if sidecar_error.is_some() => {
                return Err(sidecar_error.unwrap_or(e));
            }
            // No sidecar, and the registry does not know the id either.
            Err(e) if admin.is_empty() => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("{}; and {e}: nothing was revoked", no_sidecar().message()),
                ));
            }
            Err(e) => return Err(e.context("no running sidecar knows it either")),
        },
    };
    if admin.is_empty() {
        tracing::warn!(
            "no running keywarden sidecar found: '{}' is recorded in the revocation list only (a sidecar refuses it when it starts or reloads)",
            args.id
        );
    }
    let added = RevocationList::add(
        &list,
        Revocation {
            id: args.id.clone(),
            reference: reference.clone(),
            reason: Some(reason),
            revoked_at: rfc3339(std::time::SystemTime::now()),
        },
    )?;
    let _ = writeln!(
        out,
        "'{}' ({reference}) {} in {}",
        args.id,
        if added {
            "added to the revocation list"
        } else {
            "was already on the revocation list"
        },
        list.display()
    );
    match sidecar_error {
        Some(e) => {
            Err(e.context("recorded in the revocation list, but the sidecar did not revoke it"))
        }
        None => Ok(0),
    }
}

/// `keywarden approve CHALLENGE_ID`: answer a challenge with the code that
/// `read_code` reads (without echo), once the sidecar is found. The code is
/// sent to the admin socket only.
pub fn approve(
    args: &ApproveArgs,
    read_code: impl FnOnce() -> Result<SecretBytes>,
    out: &mut dyn Write,
) -> Result<u8> {
    let id = args.challenge_id.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::usage(format!(
            "'{}' is not a challenge id",
            args.challenge_id
        )));
    }
    let mut sockets = admin_sockets(args.admin_socket.as_deref());
    if sockets.is_empty() {
        return Err(no_sidecar());
    }
    if sockets.len() > 1 {
        // Several sidecars: the one holding this challenge.
        sockets.retain(|s| holds_challenge(s, id));
        if sockets.len() != 1 {
            return Err(Error::new(
                ErrorKind::Data,
                format!("challenge {id}: no single running sidecar holds it"),
            ));
        }
    }
    let sock = sockets.remove(0);
    let code = read_code()?;
    let text = std::str::from_utf8(code.expose())
        .map_err(|_| Error::new(ErrorKind::Data, "the code is not text"))?;
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b' ')
    {
        return Err(Error::new(
            ErrorKind::Data,
            "a code is 8 digits (e.g. 1234-5678); nothing was sent",
        ));
    }
    // Digits, dashes and spaces need no JSON escaping.
    let body = Zeroizing::new(format!("{{\"code\":\"{text}\"}}").into_bytes());
    let answer = client::call(
        &sock,
        Method::POST,
        &format!("/v1/admin/approvals/{id}"),
        None,
        Some(body.to_vec()),
    )
    .map_err(|e| unreachable(&sock, &e))?;
    let what = format!("challenge {id}");
    match answer.status {
        200 => {
            let v = answer.json();
            let _ = writeln!(
                out,
                "approved: one read of '{}' by token {}",
                v["secret_id"].as_str().unwrap_or("?"),
                v["token_id"].as_str().unwrap_or("?")
            );
            Ok(0)
        }
        403 => Err(Error::new(
            ErrorKind::Permission,
            server_error(&what, &answer),
        )),
        404 => Err(Error::new(ErrorKind::Data, server_error(&what, &answer))),
        _ => Err(Error::new(
            ErrorKind::Unavailable,
            server_error(&what, &answer),
        )),
    }
}

/// Whether the sidecar at `sock` has the open challenge `id`.
fn holds_challenge(sock: &Path, id: &str) -> bool {
    client::call(sock, Method::GET, "/v1/admin/approvals", None, None)
        .ok()
        .filter(|a| a.status == 200)
        .is_some_and(|a| {
            a.json()["challenges"]
                .as_array()
                .is_some_and(|l| l.iter().any(|c| c["challenge_id"] == id))
        })
}

/// `keywarden inventory`: the running sidecar's secrets (never values).
pub fn inventory(
    args: &InventoryArgs,
    offline: impl FnOnce() -> Result<serde_json::Value>,
    out: &mut dyn Write,
) -> Result<u8> {
    let body = match admin_socket(args.admin_socket.as_deref())? {
        Some(sock) => {
            let a = client::call(&sock, Method::GET, "/v1/admin/inventory", None, None)
                .map_err(|e| unreachable(&sock, &e))?;
            if a.status != 200 {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    server_error(&format!("{}", sock.display()), &a),
                ));
            }
            a.json()
        }
        // No sidecar runs: the same metadata from the registry and policy
        // (nothing is resolved; nothing is cached).
        None => {
            let v = offline()?;
            tracing::warn!(
                "no running keywarden sidecar found: showing the registry's secrets for env '{}' instead (nothing resolved, nothing cached); name a sidecar with --admin-socket or {ADMIN_SOCKET_VAR}",
                v["env"].as_str().unwrap_or("?")
            );
            v
        }
    };
    let written = match args.format {
        InventoryFormat::Json => out
            .write_all(crate::api::json::to_body(&body).as_slice())
            .and_then(|_| out.write_all(b"\n")),
        InventoryFormat::Table => out.write_all(table(&body).as_bytes()),
    };
    written.map_err(|e| Error::new(ErrorKind::Os, format!("cannot write: {e}")))?;
    Ok(0)
}

fn table(v: &serde_json::Value) -> String {
    let head = [
        "ID", "REF", "VENDOR", "SCOPE", "ENV", "TTL", "CREATED", "ROTATED", "POLICY", "RESOLVED",
        "STATE",
    ];
    let text = |x: &serde_json::Value| match x {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let mut rows = vec![head.map(str::to_string).to_vec()];
    for s in v["secrets"].as_array().into_iter().flatten() {
        let state = if s["revoked"].is_string() {
            "revoked"
        } else if s["approval"] == "required" {
            "approval"
        } else if s["cached"] == true {
            "cached"
        } else {
            "-"
        };
        let p = &s["policy"];
        let mut policy = format!("approval={}", text(&p["approval"]));
        if let Some(days) = p["rotate_every_days"].as_u64() {
            policy.push_str(&format!(" rotate={days}d"));
        }
        if p["rotation_overdue"] == true {
            policy.push_str(" overdue");
        }
        rows.push(vec![
            text(&s["id"]),
            text(&s["ref"]),
            text(&s["vendor"]),
            text(&s["scope"]),
            text(&s["env"]),
            text(&s["ttl_seconds"]),
            text(&s["created"]),
            text(&s["rotated"]),
            policy,
            text(&s["resolved_at"]),
            state.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `keywarden get ID`, with the token from the environment.
pub fn get_command(args: &GetArgs) -> Result<u8> {
    get(args, std::env::var_os(TOKEN_VAR), &mut std::io::stdout())
}

/// `keywarden revoke ID`, finding the ref in the registry for the list.
pub fn revoke_command(args: &RevokeArgs, common: &Common) -> Result<u8> {
    revoke(
        args,
        |id| {
            registry_ref(
                common.registry.as_deref(),
                common.policy.as_deref(),
                common.env,
                id,
            )
        },
        &mut std::io::stdout(),
    )
}

/// `keywarden inventory`: the sidecar's, or the registry's without one.
pub fn inventory_command(args: &InventoryArgs, common: &Common) -> Result<u8> {
    inventory(args, || offline_inventory(common), &mut std::io::stdout())
}

/// `keywarden approve ID`: the code from the terminal without echo, or one
/// line of stdin.
pub fn approve_command(args: &ApproveArgs) -> Result<u8> {
    let read_code = || {
        use std::io::IsTerminal;
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let code = if stdin.is_terminal() {
            crate::store::input::prompt_value(
                stdin.as_fd(),
                &mut std::io::stderr(),
                &format!("Code for challenge {}: ", args.challenge_id),
            )
        } else {
            crate::store::input::read_value(&mut stdin.lock())
        };
        code.map_err(|e| match e.kind() {
            ErrorKind::Data => Error::new(
                ErrorKind::Data,
                "no code given: type it at the prompt or pipe it on stdin",
            ),
            _ => e,
        })
    };
    approve(args, read_code, &mut std::io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_without_a_sidecar() {
        let args = GetArgs {
            id: "openai".into(),
            no_newline: false,
            socket: None,
        };
        let mut out = Vec::new();
        assert_eq!(
            get(&args, Some("x".into()), &mut out)
                .expect_err("no socket")
                .exit_code(),
            69
        );
        let args = GetArgs {
            socket: Some(PathBuf::from("/nonexistent/kw.sock")),
            ..args
        };
        assert_eq!(
            get(&args, None, &mut out)
                .expect_err("no token")
                .exit_code(),
            77
        );
        assert_eq!(
            get(&args, Some("kw_x".into()), &mut out)
                .expect_err("unreachable")
                .exit_code(),
            69
        );
        assert!(out.is_empty());
    }

    #[test]
    fn inventory_table() {
        let v = serde_json::json!({"secrets": [
            {"id": "openai", "ref": "kv://openai/dev", "vendor": "openai", "scope": ["llm:chat", "pool"],
             "env": "dev", "ttl_seconds": 60, "resolved_at": null, "cached": false, "revoked": "leaked",
             "approval": "none"}
        ]});
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID      REF"), "{t}");
        assert!(
            lines[1].contains("llm:chat,pool") && lines[1].ends_with("revoked"),
            "{t}"
        );
    }
}
