//! `keywarden check`: validate the configuration, resolve every ref of the
//! environment, and print a table (or JSON) of what was found — never a
//! value. Exit 0 when every ref resolves, else the first failure's code;
//! 77 when every ref resolves but a secret is on the revocation list (its
//! status is `revoked`: `run` would neither resolve nor inject it).

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Common;
use crate::config::{self, Approval};
use crate::error::{Error, ErrorKind, Result};
use crate::secret::providers::scrub;
use crate::secret::SecretBytes;

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// One JSON document.
    Json,
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    #[serde(rename = "ref")]
    reference: String,
    source: &'static str,
    /// Which backend answers: the scheme, or `store`/`vault` for kv://.
    backend: &'static str,
    scope: Vec<String>,
    ttl_seconds: Option<u64>,
    env_var: Option<String>,
    approval: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    /// When the value last changed (unix seconds), where the backend knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    rotated_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotate_every_days: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_overdue: Option<bool>,
    /// The credential proxy's route, for a proxied secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<ProxyRow>,
    elapsed_ms: Option<u64>,
}

/// A proxied secret's route (never its placeholder, made per run).
#[derive(Debug, Serialize)]
struct ProxyRow {
    /// `/<id>`: the path under `run`'s proxy address.
    route: String,
    upstream: String,
    preset: Option<String>,
    /// `header:NAME` or `query:NAME`: where the key goes.
    inject: String,
    allow: Vec<String>,
    /// The variables the child gets.
    env: Vec<String>,
    max_requests_per_minute: Option<u64>,
}

impl ProxyRow {
    fn of(r: &crate::proxy::Route) -> ProxyRow {
        ProxyRow {
            route: format!("/{}", r.id),
            upstream: r.upstream.to_string(),
            preset: r.preset.clone(),
            inject: match &r.inject {
                crate::proxy::route::Inject::Header { name, .. } => format!("header:{name}"),
                crate::proxy::route::Inject::Query(n) => format!("query:{n}"),
            },
            allow: r.allow.clone(),
            env: r.env.iter().map(|t| t.name.clone()).collect(),
            max_requests_per_minute: r.max_requests_per_minute,
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    env: &'static str,
    registry: Option<PathBuf>,
    policy: Option<PathBuf>,
    ok: bool,
    secrets: Vec<Row>,
}

/// Run `check`; returns the exit code.
pub fn check(common: &Common, format: Format) -> Result<u8> {
    let crate::resolve::Resolved {
        process_env,
        config,
        plan,
        outcomes,
    } = crate::resolve::load_and_resolve(common)?;
    let values: Vec<&SecretBytes> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .collect();
    let exposed: Vec<&[u8]> = values.iter().map(|v| v.expose()).collect();
    let rotated: std::collections::HashMap<String, i64> =
        crate::resolve::secret_dates(&plan, &common.store, &process_env, |s| {
            s.rotate_every_days().is_some()
        })
        .into_iter()
        .filter_map(|(id, d)| d.rotated.map(|r| (id, r)))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let revoked = revocations();
    let mut worst: Option<ErrorKind> = None;
    let mut revoked_count = 0usize;
    let mut rows = Vec::new();
    for (s, o) in plan.secrets.iter().zip(&outcomes) {
        let mut warning = None;
        let revocation = revoked.find(&s.id, s.reference.as_str());
        let (status, reason) = match &o.result {
            _ if revocation.is_some() => {
                revoked_count += 1;
                let r = revocation.map(|r| {
                    format!(
                        "revoked {}{}",
                        r.revoked_at,
                        r.reason
                            .as_deref()
                            .map(|why| format!(" ({})", scrub(why, &exposed)))
                            .unwrap_or_default()
                    )
                });
                ("revoked", r)
            }
            Ok(v) => {
                if v.len() < crate::redact::MIN_SECRET_LEN {
                    let w = format!(
                        "shorter than {} bytes: too short to mask safely, it is not redacted",
                        crate::redact::MIN_SECRET_LEN
                    );
                    tracing::warn!("secret '{}': {w}", s.id);
                    warning = Some(w);
                }
                ("ok", None)
            }
            Err(e) => {
                if worst.is_none() || e.kind == ErrorKind::Config {
                    worst = Some(e.kind);
                }
                ("error", Some(scrub(&e.reason, &exposed)))
            }
        };
        rows.push(Row {
            id: s.id.to_string(),
            reference: s.reference.to_string(),
            backend: crate::resolve::backend_of(&plan, s),
            source: match s.origin {
                config::Origin::Registry { .. } => "registry",
                config::Origin::EnvVar => "env",
            },
            scope: s.scope.to_vec(),
            ttl_seconds: s.ttl_seconds(),
            env_var: s.env_var.as_deref().map(str::to_string),
            approval: match s.approval {
                Approval::None => "none",
                Approval::Required => "required",
            },
            proxy: s.proxy.as_deref().map(ProxyRow::of),
            rotated_at: rotated.get(&*s.id).copied(),
            rotate_every_days: s.rotate_every_days(),
            rotation_overdue: match (s.rotate_every_days(), rotated.get(&*s.id)) {
                (Some(days), Some(at)) => {
                    let age_days = (now - at).max(0) / 86_400;
                    let overdue = age_days as u64 > days;
                    if overdue {
                        let w = format!("overdue for rotation: last changed {age_days} days ago, due every {days} days");
                        tracing::warn!("secret '{}': {w}", s.id);
                        warning = Some(match warning {
                            Some(prev) => format!("{prev}; {w}"),
                            None => w,
                        });
                    }
                    Some(overdue)
                }
                _ => None,
            },
            status,
            reason,
            warning,
            elapsed_ms: Some(o.elapsed.as_millis() as u64),
        });
    }
    for s in &plan.skipped {
        rows.push(Row {
            id: s.id.clone(),
            reference: String::new(),
            source: "registry",
            backend: "-",
            scope: Vec::new(),
            ttl_seconds: None,
            env_var: None,
            approval: "none",
            status: "skipped",
            reason: Some(s.reason.clone()),
            warning: None,
            rotated_at: None,
            rotate_every_days: None,
            rotation_overdue: None,
            proxy: None,
            elapsed_ms: None,
        });
    }
    let report = Report {
        env: plan.env.as_str(),
        registry: plan.registry_path.clone(),
        policy: config.policy_path.clone(),
        ok: worst.is_none() && revoked_count == 0,
        secrets: rows,
    };
    let text = match format {
        Format::Json => {
            serde_json::to_string_pretty(&report).map_err(|e| {
                Error::new(
                    ErrorKind::Software,
                    format!("cannot encode the report: {e}"),
                )
            })? + "\n"
        }
        Format::Table => table(&report),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    drop(outcomes);
    match worst {
        None if revoked_count > 0 => Err(Error::new(
            ErrorKind::Permission,
            format!(
                "{revoked_count} of {} secrets are revoked",
                plan.secrets.len()
            ),
        )),
        None => Ok(0),
        Some(kind) => {
            let failed = report
                .secrets
                .iter()
                .filter(|r| r.status == "error")
                .count();
            Err(Error::new(
                kind,
                format!(
                    "{failed} of {} secrets could not be resolved",
                    plan.secrets.len()
                ),
            ))
        }
    }
}

/// The revocation list (`KEYWARDEN_REVOCATION_LIST` or its default
/// place); empty when there is none.
fn revocations() -> crate::api::revocations::RevocationList {
    let named = std::env::var_os(crate::api::revocations::REVOCATION_LIST_VAR).map(PathBuf::from);
    super::clients::revocation_list_path(named.as_deref())
        .ok()
        .and_then(|path| {
            crate::api::revocations::RevocationList::load(&path)
                .map_err(|e| tracing::warn!("{e}"))
                .ok()
        })
        .unwrap_or_default()
}

fn table(report: &Report) -> String {
    let header = ["ID", "REF", "SCOPE", "TTL", "ENV", "STATUS"];
    let mut lines: Vec<[String; 6]> = vec![header.map(String::from)];
    for r in &report.secrets {
        let mut status = match (&r.reason, r.elapsed_ms) {
            (Some(reason), _) => format!("{}: {reason}", r.status),
            (None, Some(ms)) => format!("{} ({}, {ms} ms)", r.status, r.backend),
            (None, None) => r.status.to_string(),
        };
        if let Some(w) = &r.warning {
            status.push_str(&format!("; warning: {w}"));
        }
        lines.push([
            r.id.clone(),
            if r.reference.is_empty() {
                "-".into()
            } else {
                r.reference.clone()
            },
            if r.scope.is_empty() {
                "-".into()
            } else {
                r.scope.join(",")
            },
            r.ttl_seconds.map_or("-".into(), |t| format!("{t}s")),
            match &r.proxy {
                Some(p) => format!("proxy {} -> {}", p.route, p.upstream),
                None => r.env_var.clone().unwrap_or_else(|| "-".into()),
            },
            status,
        ]);
    }
    let mut widths = [0usize; 6];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!(
        "env: {}  registry: {}  policy: {}\n",
        report.env,
        report
            .registry
            .as_ref()
            .map_or("(none)".into(), |p| p.display().to_string()),
        report
            .policy
            .as_ref()
            .map_or("(none)".into(), |p| p.display().to_string()),
    );
    for l in &lines {
        let mut line = String::new();
        for (i, c) in l.iter().enumerate() {
            if i + 1 == l.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
