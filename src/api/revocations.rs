//! The revocation list: a JSON file of revoked secret ids and the refs they
//! had — never values — that keeps an id refused in later runs until its
//! ref changes (rotating the secret to a new ref lifts the revocation).
//!
//! Default place: `$XDG_STATE_HOME/keywarden/revocations.json`, else
//! `$HOME/.local/state/keywarden/revocations.json`; `--revocation-list` /
//! `KEYWARDEN_REVOCATION_LIST` override it, for `run` and `revoke` alike.
//! Written atomically (temp file, fsync, rename) under an exclusive lock on
//! a sibling `.lock` file, mode 0600 in a 0700 folder.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The variable that overrides the list's place.
pub const REVOCATION_LIST_VAR: &str = "KEYWARDEN_REVOCATION_LIST";

/// One revoked secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The secret id.
    pub id: String,
    /// The ref it had when revoked.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Why, as the operator said.
    #[serde(default)]
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub revoked_at: String,
}

/// The whole list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// Revoked (id, ref) pairs.
    #[serde(default)]
    pub revoked: Vec<Revocation>,
}

fn one() -> u32 {
    1
}

/// The default place, from the environment (`var` looks a variable up):
/// `$KEYWARDEN_REVOCATION_LIST`, else `$XDG_STATE_HOME/keywarden/`, else
/// systemd's `$STATE_DIRECTORY/` (`StateDirectory=`), else
/// `$HOME/.local/state/keywarden/`; as root with none of those (a system
/// service, a container's PID 1), `/var/lib/keywarden/`.
pub fn default_path(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    default_path_for(var, nix::unistd::geteuid().is_root())
}

fn default_path_for(var: impl Fn(&str) -> Option<OsString>, root: bool) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = set(REVOCATION_LIST_VAR) {
        return Some(p);
    }
    let file = "revocations.json";
    if let Some(state) = set("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
        return Some(state.join("keywarden").join(file));
    }
    // systemd may list several folders, separated by ':'; the first is ours.
    if let Some(dir) = set("STATE_DIRECTORY")
        .and_then(|d| {
            d.to_str()
                .and_then(|d| d.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| p.is_absolute())
    {
        return Some(dir.join(file));
    }
    if let Some(home) = set("HOME").filter(|p| p.is_absolute()) {
        return Some(home.join(".local/state/keywarden").join(file));
    }
    root.then(|| PathBuf::from("/var/lib/keywarden").join(file))
}

fn io_err(path: &Path, what: &str, e: &std::io::Error) -> Error {
    Error::new(
        crate::error::io_kind(e),
        format!("{}: cannot {what} the revocation list: {e}", path.display()),
    )
}

impl RevocationList {
    /// Parse the file's text.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            Error::new(
                ErrorKind::Data,
                format!(
                    "{}:{}: not a revocation list: {e}",
                    path.display(),
                    e.line()
                ),
            )
        })
    }

    /// Read the list at `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(Self::default()),
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_err(path, "read", &e)),
        }
    }

    /// The revocation of `id` at `reference`, if any.
    pub fn find(&self, id: &str, reference: &str) -> Option<&Revocation> {
        self.revoked
            .iter()
            .find(|r| r.id == id && r.reference == reference)
    }

    /// Add `entry` to the list at `path` (no duplicate of an (id, ref)
    /// pair). Returns whether it was new.
    pub fn add(path: &Path, entry: Revocation) -> Result<bool> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| io_err(path, "create the folder of", &e))?;
        let mut lock_name = path.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(PathBuf::from(lock_name))
            .map_err(|e| io_err(path, "lock", &e))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(path, "lock", &std::io::Error::from(e)))?;
        let mut list = Self::load(path)?;
        if list.find(&entry.id, &entry.reference).is_some() {
            return Ok(false);
        }
        list.revoked.push(entry);
        let mut text = serde_json::to_vec_pretty(&list)
            .map_err(|e| Error::new(ErrorKind::Software, format!("revocation list: {e}")))?;
        text.push(b'\n');
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            File::open(parent)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(path, "write", &e)
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry(id: &str, r: &str) -> Revocation {
        Revocation {
            id: id.into(),
            reference: r.into(),
            reason: Some("leaked".into()),
            revoked_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn default_path_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            default_path(env(&[(REVOCATION_LIST_VAR, "/x/r.json"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/r.json"))
        );
        assert_eq!(
            default_path(env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])),
            Some(PathBuf::from("/s/keywarden/revocations.json"))
        );
        assert_eq!(
            default_path(env(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/keywarden/revocations.json"))
        );
        assert_eq!(default_path_for(env(&[]), false), None);
        assert_eq!(
            default_path_for(env(&[]), true),
            Some(PathBuf::from("/var/lib/keywarden/revocations.json"))
        );
        assert_eq!(
            default_path_for(
                env(&[
                    ("STATE_DIRECTORY", "/var/lib/agent:/var/lib/other"),
                    ("HOME", "/h")
                ]),
                false
            ),
            Some(PathBuf::from("/var/lib/agent/revocations.json"))
        );
    }

    #[test]
    fn add_is_idempotent_atomic_and_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state/kw/revocations.json");
        assert_eq!(
            RevocationList::load(&path).expect("missing"),
            RevocationList::default()
        );
        assert!(RevocationList::add(&path, entry("openai", "kv://openai/dev")).expect("add"));
        assert!(!RevocationList::add(&path, entry("openai", "kv://openai/dev")).expect("dup"));
        assert!(RevocationList::add(&path, entry("openai", "kv://openai/dev2")).expect("add"));
        let list = RevocationList::load(&path).expect("load");
        assert_eq!(list.revoked.len(), 2);
        assert!(list.find("openai", "kv://openai/dev").is_some());
        assert!(list.find("openai", "kv://openai/prod").is_none());
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("parent")), 0o700);
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "{names:?}: the list and its lock, no temp file"
        );
        std::fs::write(&path, "{\"revoked\": 3}").expect("write");
        let e = RevocationList::load(&path).expect_err("malformed");
        assert_eq!(e.exit_code(), 65);
    }
}
