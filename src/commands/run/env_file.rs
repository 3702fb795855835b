//! `--env-file FILE`: `KEY=value` lines added to the child's environment
//! before filtering, in dotenv syntax (`#` comments, blank lines, an
//! `export ` prefix, single or double quotes). A value may be a ref: it is
//! then resolved like any env value that is a ref. The denied-variable
//! rules apply to these variables as to inherited ones.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{named_file_error, Error, ErrorKind, Result};
use crate::secret::providers::dotenv_entries;

/// The variables of the env file at `path`, in order. A line that is not
/// `KEY=value` is bad input (65), named by file and line, never by value.
pub(super) fn read(path: &Path) -> Result<Vec<(OsString, OsString)>> {
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| named_file_error(path, &e))?);
    let entries = dotenv_entries(&text).map_err(|line| {
        Error::new(
            ErrorKind::Data,
            format!(
                "{}:{line}: not a KEY=value line (--env-file takes dotenv syntax)",
                path.display()
            ),
        )
    })?;
    Ok(entries
        .into_iter()
        .map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v.to_vec())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_by_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        type Want = Result<Vec<(&'static str, &'static str)>, &'static str>;
        let table: [(&str, Want); 5] = [
            (
                "# comment\n\nexport A=1\nB='two words' # note\nC=\"x\\ny\"\n",
                Ok(vec![("A", "1"), ("B", "two words"), ("C", "x\ny")]),
            ),
            (
                "TOKEN=file:///run/t\n",
                Ok(vec![("TOKEN", "file:///run/t")]),
            ),
            ("A=1\nnot a line\n", Err(":2: not a KEY=value line")),
            ("A='unterminated\n", Err(":1: not a KEY=value line")),
            ("=x\n", Err(":1: not a KEY=value line")),
        ];
        for (i, (text, want)) in table.into_iter().enumerate() {
            let path = dir.path().join(format!("e{i}.env"));
            std::fs::write(&path, text).expect("write");
            match (read(&path), want) {
                (Ok(got), Ok(want)) => {
                    let want: Vec<(OsString, OsString)> = want
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect();
                    assert_eq!(got, want, "{text:?}");
                }
                (Err(e), Err(tail)) => {
                    assert_eq!(e.exit_code(), 65, "{text:?}");
                    assert!(e.to_string().contains(tail), "{e}");
                    assert!(e.to_string().starts_with(&path.display().to_string()));
                }
                (got, want) => panic!("{text:?}: {got:?} vs {want:?}"),
            }
        }
        let missing = read(&dir.path().join("nothere")).expect_err("missing");
        assert_eq!(missing.exit_code(), 64);
        assert!(missing
            .to_string()
            .ends_with("nothere: no such file or directory"));
    }
}
