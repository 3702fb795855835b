//! Glue between resolved secrets and the redactor: which values are masked
//! (every resolved secret, and the values of always-denied variables found
//! in keywarden's own environment, which the child never gets but might
//! still find elsewhere), and the relay [`Filter`] that applies it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use crate::config::LaunchPlan;
use crate::envfilter::DenyList;
use crate::redact::{Counts, Mask, Matcher, Secret, Stream};
use crate::relay::Filter;
use crate::secret::SecretBytes;

/// Build the matcher for a plan's resolved values (in plan order) plus the
/// denied variables of `process_env`.
pub fn matcher_for(
    plan: &LaunchPlan,
    values: &[SecretBytes],
    process_env: &[(OsString, OsString)],
    extra: &[(&str, &[u8])],
    mask: &Mask,
) -> Matcher {
    let deny = DenyList::new(&plan.policy.deny_env);
    let mut secrets: Vec<Secret<'_>> = plan
        .secrets
        .iter()
        .zip(values)
        .map(|(s, v)| Secret {
            id: s.id.as_str(),
            value: v.expose(),
        })
        .collect();
    secrets.extend(extra.iter().map(|&(id, value)| Secret { id, value }));
    for (name, value) in process_env {
        let Some(name) = name.to_str() else { continue };
        if deny.is_denied(name) && !value.is_empty() {
            secrets.push(Secret {
                id: name,
                value: value.as_bytes(),
            });
        }
    }
    Matcher::new(&secrets, mask)
}

/// Ids whose values are too short to mask safely.
pub fn too_short(plan: &LaunchPlan, values: &[SecretBytes]) -> Vec<String> {
    let secrets: Vec<Secret<'_>> = plan
        .secrets
        .iter()
        .zip(values)
        .map(|(s, v)| Secret {
            id: s.id.as_str(),
            value: v.expose(),
        })
        .collect();
    Matcher::too_short(&secrets)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The relay stage that masks secrets in one stream; its counts are added
/// to a shared total when the stream ends.
pub struct RedactFilter {
    stream: Stream,
    total: Arc<Mutex<Counts>>,
}

impl RedactFilter {
    /// A filter over `matcher` adding its counts to `total`.
    pub fn new(matcher: Arc<Matcher>, total: Arc<Mutex<Counts>>) -> Self {
        RedactFilter {
            stream: Stream::new(matcher),
            total,
        }
    }
}

impl std::fmt::Debug for RedactFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactFilter")
            .field("stream", &self.stream)
            .finish()
    }
}

impl Filter for RedactFilter {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.stream.push(input, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.stream.finish(out);
        if let Ok(mut t) = self.total.lock() {
            t.merge(self.stream.counts());
        }
    }
}

/// `keywarden redact`: stdin → stdout with every secret masked, learning the
/// secrets from the same sources as `run`. For CI logs and artifacts.
pub fn redact_command(common: &crate::cli::Common, mask: &Mask) -> crate::error::Result<u8> {
    use std::io::{Read, Write};

    use crate::error::{Error, ErrorKind};

    let process_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/"));
    let config = crate::config::load(common.registry.as_deref(), common.policy.as_deref())?;
    let plan = crate::config::build_plan(&config, common.env, &process_env, &cwd)?;
    let outcomes =
        crate::resolve::resolve_plan(&plan, &common.store, &process_env, common.timeout, None)?;
    let values = crate::resolve::require_all(outcomes)?;
    for id in too_short(&plan, &values) {
        tracing::warn!("secret '{id}' is too short to mask safely; it is not redacted");
    }
    let matcher = Arc::new(matcher_for(&plan, &values, &process_env, &[], mask));
    drop(values);
    let mut stream = Stream::new(matcher);
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = Vec::with_capacity(buf.len() + 4096);
    let io = |what: &str, e: std::io::Error| Error::new(ErrorKind::Os, format!("{what}: {e}"));
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("cannot read stdin", e)),
        };
        out.clear();
        stream.push(&buf[..n], &mut out);
        output
            .write_all(&out)
            .and_then(|_| output.flush())
            .map_err(|e| io("cannot write stdout", e))?;
    }
    out.clear();
    stream.finish(&mut out);
    output
        .write_all(&out)
        .and_then(|_| output.flush())
        .map_err(|e| io("cannot write stdout", e))?;
    log_counts(stream.counts());
    Ok(0)
}

/// Report how often each secret was masked (ids and counts, never values).
pub fn log_counts(counts: &Counts) {
    for (id, n) in counts.iter() {
        tracing::info!("masked {id} {n} time{}", if n == 1 { "" } else { "s" });
    }
}
