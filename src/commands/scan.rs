//! `keywarden scan PATH...`: report every place a secret (or an encoded
//! form of one) appears in the files given (folders are walked), learning
//! the secrets from the same sources as `run`. Never the value: a finding
//! is a path, a line, a column and the secret's id.
//!
//! Formats: `text` (`PATH:LINE:COLUMN: secret 'ID'`, one a line), `json`
//! (one document, `{"findings": [...]}`) and `sarif` (SARIF 2.1.0, one
//! rule `secret-leak`, the id in each result's message and properties), for
//! CI systems that show findings inline. Exit 1 when anything was found,
//! 0 when nothing was.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::Common;
use crate::error::{named_file_error, Error, ErrorKind, Result};
use crate::redact::live::{matcher_for, too_short};
use crate::redact::Mask;

/// Output format of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    /// `PATH:LINE:COLUMN: secret 'ID'`, one a line.
    Text,
    /// One JSON document: `{"findings": [{path, line, column, secret_id}]}`.
    Json,
    /// SARIF 2.1.0 (one rule, `secret-leak`).
    Sarif,
}

/// The one SARIF rule: a known secret appears in a file.
pub const RULE_ID: &str = "secret-leak";

/// One place a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file, as given or found by walking a folder given.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in bytes.
    pub column: usize,
    /// 1-based column, in Unicode code points (SARIF's column kind).
    pub char_column: usize,
    /// The secret's id.
    pub secret_id: String,
}

/// Where each of `spans` (byte offsets into `data`) starts: line, byte
/// column and code-point column, all 1-based.
fn position(data: &[u8], start: usize) -> (usize, usize, usize) {
    let before = &data[..start];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let prefix = &data[line_start..start];
    let chars = String::from_utf8_lossy(prefix).chars().count();
    (line, start - line_start + 1, chars + 1)
}

/// The findings in `data` (the contents of `path`).
pub fn findings_in(matcher: &crate::redact::Matcher, path: &Path, data: &[u8]) -> Vec<Finding> {
    matcher
        .find_spans(data)
        .into_iter()
        .map(|span| {
            let (line, column, char_column) = position(data, span.start);
            Finding {
                path: path.to_path_buf(),
                line,
                column,
                char_column,
                secret_id: span.id.to_string(),
            }
        })
        .collect()
}

/// The findings as `format`.
pub fn render(findings: &[Finding], format: ScanFormat) -> String {
    match format {
        ScanFormat::Text => findings
            .iter()
            .map(|f| {
                format!(
                    "{}:{}:{}: secret '{}'\n",
                    f.path.display(),
                    f.line,
                    f.column,
                    f.secret_id
                )
            })
            .collect(),
        ScanFormat::Json => {
            let list: Vec<_> = findings
                .iter()
                .map(|f| {
                    json!({
                        "path": f.path.to_string_lossy(),
                        "line": f.line,
                        "column": f.column,
                        "secret_id": f.secret_id,
                    })
                })
                .collect();
            pretty(&json!({ "findings": list }))
        }
        ScanFormat::Sarif => pretty(&sarif(findings)),
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// A SARIF 2.1.0 log of `findings`.
fn sarif(findings: &[Finding]) -> serde_json::Value {
    let results: Vec<_> = findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": RULE_ID,
                "ruleIndex": 0,
                "level": "error",
                "message": {
                    "text": format!("secret '{}' found (its value or an encoded form of it)", f.secret_id)
                },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.path) },
                        "region": { "startLine": f.line, "startColumn": f.char_column }
                    }
                }],
                "properties": { "secret_id": f.secret_id }
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "keywarden",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": [{
                        "id": RULE_ID,
                        "name": "SecretLeak",
                        "shortDescription": { "text": "A known secret appears in a file" },
                        "fullDescription": {
                            "text": "The value of a secret keywarden knows (from the registry or a ref in the environment), or its base64, base64url, hex, URL-encoded or JSON-escaped form, appears in this file."
                        },
                        "defaultConfiguration": { "level": "error" },
                        "help": { "text": "Remove the value from the file and rotate the secret." }
                    }]
                }
            },
            "columnKind": "unicodeCodePoints",
            "results": results
        }]
    })
}

/// `path` as a SARIF artifact URI: a relative reference (as given), with
/// every byte outside the unreserved set and `/` percent-encoded.
fn uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if path.is_absolute() {
        format!("file://{out}")
    } else {
        out
    }
}

/// `keywarden scan PATH...` in `format`.
pub fn scan_command(common: &Common, paths: &[PathBuf], format: ScanFormat) -> Result<u8> {
    // The paths first: a wrong one is reported before any ref is resolved.
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
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
    let mut findings = Vec::new();
    for file in files {
        let data =
            zeroize::Zeroizing::new(std::fs::read(&file).map_err(|e| named_file_error(&file, &e))?);
        findings.extend(findings_in(&matcher, &file, &data));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(render(&findings, format).as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::new(ErrorKind::Os, format!("cannot write stdout: {e}")))?;
    let found = findings.len();
    if found > 0 {
        tracing::warn!(
            "{found} secret occurrence{} found",
            if found == 1 { "" } else { "s" }
        );
        return Ok(1);
    }
    Ok(0)
}

/// `path`'s regular files (folders walked in name order; symbolic links
/// not followed).
fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| named_file_error(path, &e))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| named_file_error(path, &e))?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(path: &str, line: usize, column: usize, char_column: usize) -> Finding {
        Finding {
            path: PathBuf::from(path),
            line,
            column,
            char_column,
            secret_id: "openai".to_string(),
        }
    }

    #[test]
    fn positions_by_table() {
        type Position = (usize, usize, usize);
        let table: [(&[u8], usize, Position); 4] = [
            (b"SECRET", 0, (1, 1, 1)),
            (b"a\nbc SECRET", 5, (2, 4, 4)),
            ("é SECRET".as_bytes(), 3, (1, 4, 3)),
            (b"\n\n\nX", 3, (4, 1, 1)),
        ];
        for (data, start, want) in table {
            assert_eq!(position(data, start), want, "{data:?}");
        }
    }

    #[test]
    fn every_format_names_the_place_and_the_id() {
        let f = [finding("logs/a b.txt", 3, 7, 6)];
        assert_eq!(
            render(&f, ScanFormat::Text),
            "logs/a b.txt:3:7: secret 'openai'\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render(&f, ScanFormat::Json)).expect("json");
        assert_eq!(v["findings"][0]["line"], 3);
        assert_eq!(v["findings"][0]["secret_id"], "openai");
        let s: serde_json::Value =
            serde_json::from_str(&render(&f, ScanFormat::Sarif)).expect("sarif");
        assert_eq!(s["version"], "2.1.0");
        let run = &s["runs"][0];
        assert_eq!(run["tool"]["driver"]["name"], "keywarden");
        assert_eq!(run["tool"]["driver"]["rules"][0]["id"], RULE_ID);
        let r = &run["results"][0];
        assert_eq!(r["ruleId"], RULE_ID);
        assert_eq!(r["properties"]["secret_id"], "openai");
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "logs/a%20b.txt");
        assert_eq!(loc["region"]["startLine"], 3);
        assert_eq!(loc["region"]["startColumn"], 6);
        let empty: serde_json::Value =
            serde_json::from_str(&render(&[], ScanFormat::Sarif)).expect("sarif");
        assert_eq!(empty["runs"][0]["results"], serde_json::json!([]));
        assert_eq!(uri(Path::new("/tmp/x")), "file:///tmp/x");
    }
}
