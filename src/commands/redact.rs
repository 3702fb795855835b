//! `keywarden redact` and `keywarden scan`: the redactor applied to stdin
//! and to files, learning the secrets from the same sources as `run`.

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

/// `keywarden scan PATH...`: report every place a secret (or an encoded
/// form of one) appears in the files given (folders are walked), as
/// `PATH:LINE:COLUMN: secret 'ID'` — never the value. Exit 1 when anything
/// was found, 0 when nothing was.
pub fn scan_command(common: &Common, paths: &[std::path::PathBuf]) -> crate::error::Result<u8> {
    use std::io::Write;

    let crate::resolve::Resolved {
        process_env,
        plan,
        outcomes,
        ..
    } = crate::resolve::load_and_resolve(common)?;
    let values = crate::resolve::require_all(outcomes)?;
    for id in too_short(&plan, &values) {
        tracing::warn!("secret '{id}' is too short to be found safely; it is not scanned for");
    }
    let matcher = matcher_for(&plan, &values, &process_env, &[], &Mask::default());
    drop(values);
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let mut out = std::io::stdout().lock();
    let mut found = 0usize;
    for file in files {
        let data = zeroize::Zeroizing::new(std::fs::read(&file).map_err(|e| {
            crate::error::Error::new(
                crate::error::io_kind(&e),
                format!("{}: cannot read: {e}", file.display()),
            )
        })?);
        for span in matcher.find_spans(&data) {
            let before = &data[..span.start];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = span.start
                - before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            let _ = writeln!(out, "{}:{line}:{col}: secret '{}'", file.display(), span.id);
            found += 1;
        }
    }
    let _ = out.flush();
    if found > 0 {
        tracing::warn!(
            "{found} secret occurrence{} found",
            if found == 1 { "" } else { "s" }
        );
        return Ok(1);
    }
    Ok(0)
}

fn collect_files(
    path: &std::path::Path,
    files: &mut Vec<std::path::PathBuf>,
) -> crate::error::Result<()> {
    let io = |e: std::io::Error| {
        crate::error::Error::new(
            crate::error::io_kind(&e),
            format!("{}: {e}", path.display()),
        )
    };
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            collect_files(&e, files)?;
        }
    } else if meta.is_file() {
        files.push(path.to_path_buf());
    }
    Ok(())
}
