//! `dotenv://path#KEY`: one key of a `.env` file.
//!
//! The parser is small and local so that the file's contents only ever sit
//! in buffers that are wiped afterwards. It understands `KEY=value`,
//! `export KEY=value`, `#` comments, single quotes (literal) and double
//! quotes (with `\n`, `\t`, `\"`, `\\` escapes), and ` #` comments after
//! unquoted values.

use zeroize::Zeroizing;

use super::file::read_secret_file;
use super::{non_empty, Context, Provider, Request, ResolveError, ResolveFuture};

pub(super) struct DotenvProvider;

/// Find `key` in dotenv text. Returns `Ok(None)` when the key is absent and
/// `Err(line)` for a line that cannot be parsed (line number only: the line
/// itself may hold a secret).
pub fn parse_dotenv(text: &[u8], key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, usize> {
    // The last assignment wins, as in a shell.
    Ok(dotenv_entries(text)?
        .into_iter()
        .rev()
        .find(|(name, _)| name == key.as_bytes())
        .map(|(_, value)| value))
}

/// One `KEY=value` of a dotenv file: the name, and the value (wiped on drop).
pub type DotenvEntry = (Vec<u8>, Zeroizing<Vec<u8>>);

/// Every `KEY=value` of dotenv text, in order. `Err(line)` for the first
/// line that cannot be parsed (its number only: it may hold a secret).
pub fn dotenv_entries(text: &[u8]) -> Result<Vec<DotenvEntry>, usize> {
    let mut entries = Vec::new();
    for (n, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = trim_ascii(raw);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let line = line
            .strip_prefix(b"export ")
            .map(trim_ascii)
            .unwrap_or(line);
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            return Err(n + 1);
        };
        let name = trim_ascii(&line[..eq]);
        if name.is_empty()
            || !name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        {
            return Err(n + 1);
        }
        let value = parse_value(trim_ascii(&line[eq + 1..])).ok_or(n + 1)?;
        entries.push((name.to_vec(), value));
    }
    Ok(entries)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn parse_value(v: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len()));
    match v.first() {
        Some(b'\'') => {
            let end = v[1..].iter().position(|&b| b == b'\'')? + 1;
            rest_is_comment(&v[end + 1..])?;
            out.extend_from_slice(&v[1..end]);
        }
        Some(b'"') => {
            let mut i = 1;
            loop {
                match *v.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        let c = *v.get(i + 1)?;
                        out.push(match c {
                            b'n' => b'\n',
                            b't' => b'\t',
                            b'r' => b'\r',
                            other => other,
                        });
                        i += 2;
                    }
                    c => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            rest_is_comment(&v[i + 1..])?;
        }
        _ => {
            let end = v
                .windows(2)
                .position(|w| w[0].is_ascii_whitespace() && w[1] == b'#')
                .unwrap_or(v.len());
            out.extend_from_slice(trim_ascii(&v[..end]));
        }
    }
    Some(out)
}

fn rest_is_comment(rest: &[u8]) -> Option<()> {
    let rest = trim_ascii(rest);
    (rest.is_empty() || rest.starts_with(b"#")).then_some(())
}

impl Provider for DotenvProvider {
    fn resolve<'a>(&'a self, req: &'a Request, _ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(async move {
            let path = req.base_dir.join(req.reference.path());
            let shown = path.display().to_string();
            let key = req.reference.field().unwrap_or_default().to_string();
            let read =
                tokio::task::spawn_blocking(move || read_secret_file(&path).map(Zeroizing::new))
                    .await
                    .map_err(|e| ResolveError::unavailable(format!("{shown}: {e}")))?;
            let text = read.map_err(|e| ResolveError::io(&shown, &e))?;
            match parse_dotenv(&text, &key) {
                Ok(Some(mut value)) => {
                    non_empty(std::mem::take(&mut *value), &format!("{shown}#{key}"))
                }
                Ok(None) => Err(ResolveError::unavailable(format!(
                    "key {key} not found in {shown}"
                ))),
                Err(line) => Err(ResolveError::config(format!(
                    "{shown}:{line}: not a KEY=value line"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(text: &str, key: &str) -> Option<String> {
        parse_dotenv(text.as_bytes(), key)
            .expect("parses")
            .map(|v| String::from_utf8(v.to_vec()).expect("utf8"))
    }

    #[test]
    fn table() {
        let text = "# comment\n\nA=plain\nexport B=exported\nC='single # kept'\nD=\"double \\\"q\\\"\\nnl\"\nE=value # trailing\nF=\nA=again\n";
        assert_eq!(get(text, "A").as_deref(), Some("again"));
        assert_eq!(get(text, "B").as_deref(), Some("exported"));
        assert_eq!(get(text, "C").as_deref(), Some("single # kept"));
        assert_eq!(get(text, "D").as_deref(), Some("double \"q\"\nnl"));
        assert_eq!(get(text, "E").as_deref(), Some("value"));
        assert_eq!(get(text, "F").as_deref(), Some(""));
        assert_eq!(get(text, "G"), None);
    }

    #[test]
    fn bad_lines_report_the_line_number_only() {
        assert_eq!(
            parse_dotenv(b"A=1\nno equals here\n", "A").map(|_| ()),
            Err(2)
        );
        assert_eq!(parse_dotenv(b"A=\"unterminated\n", "A").map(|_| ()), Err(1));
        assert_eq!(parse_dotenv(b"A='x' junk\n", "A").map(|_| ()), Err(1));
    }
}
