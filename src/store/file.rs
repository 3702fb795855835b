//! The store on disk: where it lives, reading it, and writing it so that a
//! crash at any instant leaves either the old file or the new one.
//!
//! A write goes to a fresh temp file in the same folder (0600), is fsynced,
//! renamed over the store, and the folder is fsynced. Writers take an
//! exclusive advisory lock on `<store>.lock` beside the store for the whole
//! read–modify–write, so concurrent `set`s both land; readers need no lock,
//! since rename is atomic. A file that does not parse is reported (exit 65)
//! and never written over. Also here: reading the key file and systemd
//! credentials, random nonces, and the clock.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use zeroize::Zeroizing;

use super::format::{FormatError, StoreFile, NONCE_LEN};
use super::key::{self, KeyInputs, KeyText, CREDENTIAL, OLD_CREDENTIAL_PREFIX};
use crate::error::{io_kind, Error, ErrorKind, Result};
use crate::secret::SecretBytes;

use std::ffi::OsString;

/// The variable naming the store file.
pub const STORE_VAR: &str = "KEYWARDEN_STORE";
/// The variable naming the key file.
pub const KEY_FILE_VAR: &str = "KEYWARDEN_KEY_FILE";

/// A store larger than this is refused as damaged rather than read.
const MAX_STORE_BYTES: u64 = 256 << 20;
/// A key file larger than this is not a key file.
const MAX_KEY_FILE_BYTES: usize = 1024;

/// The store file: `explicit` (`--store`), else `$KEYWARDEN_STORE`, else
/// `$XDG_DATA_HOME/keywarden/store`, else `~/.local/share/keywarden/store`.
/// Empty values count as unset; a relative `XDG_DATA_HOME` is ignored, as
/// the XDG spec says.
pub fn resolve_path(explicit: Option<&Path>, env: &[(OsString, OsString)]) -> Result<PathBuf> {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p.to_path_buf());
    }
    let var = |name: &str| key::lookup(env, name).filter(|v| !v.is_empty());
    if let Some(p) = var(STORE_VAR) {
        return Ok(PathBuf::from(p));
    }
    if let Some(data) = var("XDG_DATA_HOME")
        .map(Path::new)
        .filter(|p| p.is_absolute())
    {
        return Ok(data.join("keywarden").join("store"));
    }
    if let Some(home) = var("HOME") {
        return Ok(Path::new(home).join(".local/share/keywarden/store"));
    }
    Err(Error::config(format!(
        "cannot tell where the store is: pass --store, or set {STORE_VAR}, XDG_DATA_HOME or HOME"
    )))
}

/// The key file: `explicit` (`--key-file`), else `$KEYWARDEN_KEY_FILE`.
pub fn resolve_key_file(explicit: Option<&Path>, env: &[(OsString, OsString)]) -> Option<PathBuf> {
    explicit
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| {
            key::lookup(env, KEY_FILE_VAR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> Error {
    let why = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or folder".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    Error::new(io_kind(e), format!("{what} {}: {why}", path.display()))
}

/// The error for a store that is not there.
pub fn no_store(path: &Path) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "no store at {}: create it with `keywarden store init`",
            path.display()
        ),
    )
}

/// The error for a store that does not parse. The file is left as it is.
pub fn corrupt(path: &Path, e: &FormatError) -> Error {
    Error::new(
        ErrorKind::Data,
        format!(
            "the store {} is unreadable ({e}); it was left untouched: restore it from a backup",
            path.display()
        ),
    )
}

/// Read and parse the store; `None` when there is no file.
pub fn read(path: &Path) -> Result<Option<StoreFile>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot open the store", path, &e)),
    };
    let meta = f
        .metadata()
        .map_err(|e| io_error("cannot read the store", path, &e))?;
    if !meta.is_file() {
        return Err(Error::config(format!(
            "the store {} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > MAX_STORE_BYTES {
        return Err(Error::new(
            ErrorKind::Data,
            format!(
                "the store {} is larger than {} MiB: refusing to read it",
                path.display(),
                MAX_STORE_BYTES >> 20
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "the store {} is readable by other users (mode {:o}): chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.read_to_end(&mut bytes)
        .map_err(|e| io_error("cannot read the store", path, &e))?;
    StoreFile::decode(&bytes)
        .map(Some)
        .map_err(|e| corrupt(path, &e))
}

/// Create the store's folder (and missing parents) as 0700.
/// An existing folder is kept as it is, with a warning when others may
/// write to it (they could replace or remove the store, though not forge
/// its entries).
pub fn create_folder(path: &Path) -> Result<()> {
    let dir = folder(path);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("cannot create the store folder", dir, &e))?;
    if let Ok(meta) = fs::metadata(dir) {
        if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
            tracing::warn!(
                "the store folder {} is writable by other users (mode {:o}): \
                 they could replace or delete the store",
                dir.display(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}

fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into())
}

/// Proof that this process holds the store's write lock; released on drop.
#[derive(Debug)]
pub struct WriteLock {
    _lock: Flock<File>,
}

/// The lock file of a store: `<store>.lock` beside it.
pub fn lock_path(path: &Path) -> PathBuf {
    folder(path).join(format!("{}.lock", file_name(path)))
}

/// Take the store's write lock, waiting for other writers.
pub fn lock(path: &Path) -> Result<WriteLock> {
    let lock_path = lock_path(path);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| io_error("cannot open the lock file", &lock_path, &e))?;
    let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, errno)| {
        Error::new(
            ErrorKind::Unavailable,
            format!("cannot lock {}: {errno}", lock_path.display()),
        )
    })?;
    Ok(WriteLock { _lock: lock })
}

fn temp_prefix(path: &Path) -> String {
    format!(".{}.tmp-", file_name(path))
}

/// Write `file` over the store atomically: temp file, fsync, rename, fsync
/// the folder. Temp files left by a writer that crashed are removed first
/// (only a lock holder creates them, and the lock is ours).
pub fn write(_lock: &WriteLock, path: &Path, file: &StoreFile) -> Result<()> {
    let dir = folder(path);
    let prefix = temp_prefix(path);
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    let mut tag = [0u8; 8];
    fill_random(&mut tag)?;
    let tmp = dir.join(format!(
        "{prefix}{}-{:016x}",
        std::process::id(),
        u64::from_ne_bytes(tag)
    ));
    let bytes = file.encode();
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("cannot write the store", path, &e));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync the store folder", dir, &e))
}

/// Read the key file and the key credentials: the inputs of
/// [`key::KeyRing::load`].
pub fn key_inputs<'a>(
    key_file: Option<&Path>,
    env: &'a [(OsString, OsString)],
) -> Result<KeyInputs<'a>> {
    let key_file = match key_file {
        Some(p) => {
            let (path, source) = match p.to_str().and_then(|s| s.strip_prefix("cred://")) {
                Some(name) => (credential_path(name, env)?, format!("credential {name}")),
                None => (p.to_path_buf(), format!("key file {}", p.display())),
            };
            Some(KeyText {
                text: read_key_text(&path).map_err(|e| {
                    let kind = match e.kind() {
                        std::io::ErrorKind::NotFound => ErrorKind::Config,
                        _ => io_kind(&e),
                    };
                    Error::new(
                        kind,
                        io_error("cannot read the key file", &path, &e).message(),
                    )
                })?,
                source,
            })
        }
        None => None,
    };
    let mut creds = Vec::new();
    if let Some(dir) = key::lookup(env, "CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        let dir = Path::new(dir);
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != CREDENTIAL && !name.starts_with(OLD_CREDENTIAL_PREFIX) {
                    continue;
                }
                let text = read_key_text(&entry.path())
                    .map_err(|e| io_error("cannot read the credential", &entry.path(), &e))?;
                creds.push((
                    name.clone(),
                    KeyText {
                        source: format!("credential {name}"),
                        text,
                    },
                ));
            }
        }
    }
    Ok(KeyInputs {
        env,
        key_file,
        credentials: creds,
    })
}

/// `--key-file cred://NAME`: the systemd credential NAME.
fn credential_path(name: &str, env: &[(OsString, OsString)]) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::config(
            "--key-file cred://NAME: NAME must be a credential name, without '/'",
        ));
    }
    let dir = key::lookup(env, "CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            Error::config(format!(
                "--key-file cred://{name}: $CREDENTIALS_DIRECTORY is not set \
                 (LoadCredential= or SetCredentialEncrypted= in the unit)"
            ))
        })?;
    Ok(Path::new(dir).join(name))
}

/// Read a small file into a fixed, zeroized buffer (no reallocation leaves
/// a copy of the key behind). Longer files are cut, and then fail the
/// length check of the key parser.
fn read_key_text(path: &Path) -> std::io::Result<SecretBytes> {
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::other("is a folder"));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "{} is readable by other users (mode {:o}): chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let mut buf = Zeroizing::new([0u8; MAX_KEY_FILE_BYTES]);
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(SecretBytes::copy_from(&buf[..len]))
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    crate::sys::random::fill(buf).map_err(|e| {
        Error::new(
            ErrorKind::Os,
            format!("cannot draw random bytes from the system: {e}"),
        )
    })
}

/// A fresh random 96-bit nonce.
pub fn random_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    fill_random(&mut n)?;
    Ok(n)
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn store_path_precedence() {
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], Option<&'a str>);
        let table: &[Case] = &[
            (
                Some("/x/s"),
                &[(STORE_VAR, "/y/s"), ("HOME", "/h")],
                Some("/x/s"),
            ),
            (Some(""), &[(STORE_VAR, "/y/s")], Some("/y/s")),
            (
                None,
                &[(STORE_VAR, ""), ("XDG_DATA_HOME", "/d"), ("HOME", "/h")],
                Some("/d/keywarden/store"),
            ),
            (
                None,
                &[("XDG_DATA_HOME", "rel"), ("HOME", "/h")],
                Some("/h/.local/share/keywarden/store"),
            ),
            (None, &[], None),
        ];
        for (explicit, vars, want) in table {
            let got = resolve_path(explicit.map(Path::new), &env(vars));
            match want {
                Some(w) => assert_eq!(got.expect("path"), Path::new(w), "{vars:?}"),
                None => assert_eq!(got.expect_err("none").exit_code(), 78),
            }
        }
        assert_eq!(
            resolve_key_file(None, &env(&[(KEY_FILE_VAR, "/k")])),
            Some(PathBuf::from("/k"))
        );
        assert_eq!(resolve_key_file(None, &env(&[(KEY_FILE_VAR, "")])), None);
    }

    #[test]
    fn atomic_write_modes_and_stale_temp_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("sub/dir/store");
        create_folder(&path).expect("mkdir");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().expect("parent")), 0o700);
        let stale = path.with_file_name(".store.tmp-1-00");
        fs::write(&stale, b"half").expect("stale");
        let lock = lock(&path).expect("lock");
        write(&lock, &path, &StoreFile::default()).expect("write");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&lock_path(&path)), 0o600);
        assert!(!stale.exists(), "stale temp file removed");
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(read(&path).expect("read"), Some(StoreFile::default()));
        assert_eq!(read(&tmp.path().join("none")).expect("absent"), None);
    }

    #[test]
    fn damaged_file_is_data_error_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("store");
        fs::write(&path, b"KWSTORE\0\0\x01").expect("write");
        let e = read(&path).expect_err("damaged");
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(random_nonce().expect("n"), random_nonce().expect("n"));
    }
}
