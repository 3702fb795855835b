//! `keywarden redact`: the redactor applied to stdin, learning the secrets
//! from the same sources as `run`.

use std::sync::Arc;

use crate::config::Common;
use crate::redact::live::{log_counts, matcher_for, too_short};
use crate::redact::{Mask, Stream};

/// `keywarden redact`: stdin → stdout with every secret masked, learning the
/// secrets from the same sources as `run`. For CI logs and artifacts.
pub fn redact_command(common: &Common, mask: &Mask) -> crate::error::Result<u8> {
    use std::io::{Read, Write};

    use crate::error::{Error, ErrorKind};

    let crate::resolve::Resolved {
        process_env,
        plan,
        outcomes,
        ..
    } = crate::resolve::load_and_resolve(common)?;
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
