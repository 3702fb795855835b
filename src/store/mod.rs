//! The embedded encrypted store: the default `kv://` backend.
//!
//! One file ([`format`](mod@format)) of entries, each sealed with AES-256-GCM under a
//! key version of the key ring ([`key`]), written atomically under a lock
//! ([`file`](mod@file)). [`Store`] is the API (`get`, `set`, `rm`, `list`,
//! `rotate_key`); [`StoreBackend`] serves `kv://` refs to the resolver;
//! `keywarden store …` is a command: `crate::commands::store`.
//!
//! A key's version is what the key ring says (an `ENCRYPTION_KEY` with no
//! `ENCRYPTION_KEY_VERSION` is version 0); the store's key checks tell
//! which key sealed what, so a store whose versions are numbered otherwise
//! (written when the default was 1, say) is renumbered as it is read:
//! [`renumber`].
//!
//! Reads use the key of the entry's version; writes use the current key,
//! and refuse to write under a key that does not match what the store
//! already holds for that version, or under an older version than the
//! newest in use. If every copy of a key is lost, what it sealed cannot be
//! recovered: there is no back door.

#![forbid(unsafe_code)]

pub mod file;
pub mod format;
pub mod input;
pub mod key;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::secret::providers::{KvBackend, ResolveError, ResolveFuture};
use crate::secret::SecretBytes;
use format::{Entry, KeyCheck, StoreFile, MAX_VALUE_LEN};
use key::{Key, KeyRing};

/// Where the store is and where the current key comes from. (Global
/// options of the main command line.)
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreOptions {
    /// The store file [default: $XDG_DATA_HOME/keywarden/store]
    #[arg(
        long = "store",
        global = true,
        env = "KEYWARDEN_STORE",
        value_name = "PATH"
    )]
    pub store: Option<PathBuf>,
    /// Read the current encryption key (64 lowercase hex characters) from this file, or from the systemd credential cred://NAME, instead of ENCRYPTION_KEY
    #[arg(long, global = true, env = "KEYWARDEN_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// What `list` shows of an entry: never its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryMeta {
    /// `kv://path`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The key version it is sealed with.
    pub key_version: u32,
    /// First stored (unix seconds).
    pub created: i64,
    /// Value last set (unix seconds): the secret's rotation date.
    pub updated: i64,
}

/// What `set` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// A new ref.
    Created,
    /// A new value for an existing ref.
    Updated,
    /// The same value again: re-sealed, `updated` kept.
    Unchanged,
}

/// What `rotate_key` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateReport {
    /// The current key version.
    pub version: u32,
    /// Entries re-encrypted under it.
    pub reencrypted: usize,
    /// Entries that already were.
    pub already_current: usize,
}

/// Why one entry could not be read; turned into an [`Error`] with or
/// without the ref in front.
struct EntryFailure {
    kind: ErrorKind,
    reason: String,
}

/// An open store: the file as last read or written, and the keys.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    file: StoreFile,
    keys: KeyRing,
    status: KeyStatus,
}

/// Whether each key held matches the store's key check for its version,
/// worked out once per file rather than once per entry.
type KeyStatus = BTreeMap<u32, bool>;

fn key_status(f: &StoreFile, keys: &KeyRing) -> Result<KeyStatus> {
    let mut status = KeyStatus::new();
    for key in keys.iter() {
        if let Some(check) = f.key_check(key.version()) {
            status.insert(key.version(), key_matches(key, check)?);
        }
    }
    Ok(status)
}

impl Store {
    /// Open the store at `path`. It must exist (see [`Store::init`]); a
    /// damaged file is an error (65). `keys` may be empty for `list`/`rm`.
    pub fn open(path: impl Into<PathBuf>, keys: KeyRing) -> Result<Store> {
        let path = path.into();
        match file::read(&path)? {
            Some(file) => Store::assemble(path, file, keys),
            None => Err(file::no_store(&path)),
        }
    }

    /// Create an empty store bound to the current key (its folder 0700, the
    /// file 0600). An existing store is kept; the current key is checked
    /// against it. Returns the store and whether it was created.
    pub fn init(path: impl Into<PathBuf>, keys: KeyRing) -> Result<(Store, bool)> {
        let path = path.into();
        let key = keys.require_current()?;
        file::create_folder(&path)?;
        let lock = file::lock(&path)?;
        if let Some(mut existing) = file::read(&path)? {
            renumber(&mut existing, &keys)?;
            writable_with(&path, &existing, key)?;
            drop(lock);
            return Ok((Store::assemble(path, existing, keys)?, false));
        }
        let mut fresh = StoreFile::default();
        check_write_key(&path, &mut fresh, key)?;
        file::write(&lock, &path, &fresh)?;
        drop(lock);
        Ok((Store::assemble(path, fresh, keys)?, true))
    }

    fn assemble(path: PathBuf, mut file: StoreFile, keys: KeyRing) -> Result<Store> {
        renumber(&mut file, &keys)?;
        let status = key_status(&file, &keys)?;
        Ok(Store {
            path,
            file,
            keys,
            status,
        })
    }

    /// Take a file just written.
    fn replace(&mut self, file: StoreFile) -> Result<()> {
        self.status = key_status(&file, &self.keys)?;
        self.file = file;
        Ok(())
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Metadata of every entry, sorted by ref.
    pub fn list(&self) -> Vec<EntryMeta> {
        self.file
            .entries
            .iter()
            .map(|e| EntryMeta {
                reference: e.reference.clone(),
                key_version: e.key_version,
                created: e.created,
                updated: e.updated,
            })
            .collect()
    }

    /// Check every key held against the store's key checks: a wrong key is
    /// reported now, naming its source and version, rather than per entry.
    pub fn verify_keys(&self) -> Result<()> {
        for key in self.keys.iter() {
            if self.status.get(&key.version()) == Some(&false) {
                return Err(wrong_key(&self.path, key));
            }
        }
        Ok(())
    }

    /// Check that a write would be accepted (a current key that matches
    /// the store, not older than its newest version) before asking anyone
    /// to type a value.
    pub fn check_writable(&self) -> Result<()> {
        let key = self.keys.require_current()?;
        writable_with(&self.path, &self.file, key).map(|_| ())
    }

    /// The value of `reference` (`kv://path` or `path`).
    pub fn get(&self, reference: &str) -> Result<SecretBytes> {
        let reference = normalize(reference)?;
        self.lookup(&reference)
            .map_err(|f| Error::new(f.kind, format!("{reference}: {}", f.reason)))
    }

    fn lookup(&self, reference: &str) -> std::result::Result<SecretBytes, EntryFailure> {
        let entry = self.file.find(reference).ok_or_else(|| EntryFailure {
            kind: ErrorKind::Unavailable,
            reason: format!("no such entry in the store {}", self.path.display()),
        })?;
        unseal(&self.path, &self.status, &self.keys, entry)
    }

    /// Store `value` under `reference`, sealed with the current key.
    pub fn set(&mut self, reference: &str, value: &SecretBytes) -> Result<SetOutcome> {
        let reference = normalize(reference)?;
        if value.is_empty() {
            return Err(Error::new(
                ErrorKind::Data,
                "the value is empty: nothing stored",
            ));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "the value is larger than {} MiB: nothing stored",
                    MAX_VALUE_LEN >> 20
                ),
            ));
        }
        let key = self.keys.require_current()?;
        let now = file::now();
        let (fresh, outcome) = modify(&self.path, &self.keys, |path, f| {
            check_write_key(path, f, key)?;
            let (created, updated, outcome) = match f.find(&reference) {
                None => (now, now, SetOutcome::Created),
                Some(old) => {
                    let status = key_status(f, &self.keys)?;
                    let same = unseal(path, &status, &self.keys, old)
                        .is_ok_and(|v| v.expose() == value.expose());
                    if same {
                        (old.created, old.updated, SetOutcome::Unchanged)
                    } else {
                        (old.created, now, SetOutcome::Updated)
                    }
                }
            };
            let nonce = file::random_nonce()?;
            let sealed = format::seal(
                key.expose(),
                key.version(),
                &reference,
                value.expose(),
                nonce,
            )
            .map_err(crypto_bug)?;
            f.upsert(Entry {
                reference: reference.clone(),
                key_version: key.version(),
                created,
                updated,
                nonce,
                sealed,
            });
            Ok(outcome)
        })?;
        self.replace(fresh)?;
        Ok(outcome)
    }

    /// Remove `reference`. Needs no key.
    pub fn rm(&mut self, reference: &str) -> Result<()> {
        let reference = normalize(reference)?;
        let (fresh, ()) = modify(&self.path, &self.keys, |path, f| {
            if f.remove(&reference) {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("{reference}: no such entry in the store {}", path.display()),
                ))
            }
        })?;
        self.replace(fresh)?;
        Ok(())
    }

    /// Re-encrypt every entry under the current key, in one atomic write:
    /// a crash leaves the store all-old or all-new. Old key checks are
    /// dropped, so the old keys are no longer needed, nor accepted.
    pub fn rotate_key(&mut self) -> Result<RotateReport> {
        let current = self.keys.require_current()?;
        let (fresh, report) = modify(&self.path, &self.keys, |path, f| {
            check_write_key(path, f, current)?;
            let mut report = RotateReport {
                version: current.version(),
                reencrypted: 0,
                already_current: 0,
            };
            let status = key_status(f, &self.keys)?;
            // In place: on an error `f` is dropped unwritten.
            for entry in &mut f.entries {
                if entry.key_version == current.version() {
                    report.already_current += 1;
                    continue;
                }
                let failed = |e: EntryFailure| {
                    Error::new(
                        e.kind,
                        format!("{}: {}; nothing was changed", entry.reference, e.reason),
                    )
                };
                let old = usable_key(&status, &self.keys, entry.key_version).map_err(failed)?;
                let nonce = file::random_nonce()?;
                let sealed = format::reseal(
                    old.expose(),
                    current.expose(),
                    current.version(),
                    entry,
                    nonce,
                )
                .map_err(|e| failed(open_failure(path, entry.key_version, e)))?;
                entry.key_version = current.version();
                entry.nonce = nonce;
                entry.sealed = sealed;
                report.reencrypted += 1;
            }
            f.key_checks.retain(|c| c.version == current.version());
            Ok(report)
        })?;
        self.replace(fresh)?;
        Ok(report)
    }
}

/// `kv://` refs served from a [`Store`] read once, at start-up.
#[derive(Debug)]
pub struct StoreBackend {
    store: Store,
}

impl StoreBackend {
    /// Serve `store` (its keys already checked with [`Store::verify_keys`]).
    pub fn new(store: Store) -> Self {
        StoreBackend { store }
    }
}

impl KvBackend for StoreBackend {
    fn get<'a>(&'a self, path: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            let reference = normalize(path).map_err(|e| ResolveError {
                kind: ErrorKind::Config,
                reason: e.message().to_string(),
            })?;
            self.store.lookup(&reference).map_err(|f| ResolveError {
                kind: f.kind,
                reason: f.reason,
            })
        })
    }
}

/// The store file for `opts` and `env` (see [`file::resolve_path`]).
pub fn store_path(opts: &StoreOptions, env: &[(OsString, OsString)]) -> Result<PathBuf> {
    file::resolve_path(opts.store.as_deref(), env)
}

/// The key ring from `--key-file`, the environment and systemd credentials.
pub fn load_keys(opts: &StoreOptions, env: &[(OsString, OsString)]) -> Result<KeyRing> {
    let key_file = file::resolve_key_file(opts.key_file.as_deref(), env);
    KeyRing::load(file::key_inputs(key_file.as_deref(), env)?)
}

/// The `kv://` backend for `run`, `check` and `redact`: `None` when there is
/// no store file yet (then `kv://` refs fail, saying to run `keywarden
/// store init`); an error when the file is damaged, or exists but no key,
/// or a wrong key, is set.
pub fn open_backend(
    opts: &StoreOptions,
    env: &[(OsString, OsString)],
) -> Result<Option<Arc<dyn KvBackend>>> {
    let path = store_path(opts, env)?;
    let Some(file) = file::read(&path)? else {
        return Ok(None);
    };
    let keys = load_keys(opts, env)?;
    if keys.is_empty() {
        return Err(Error::config(format!(
            "the store {} exists but no encryption key is set: set {} \
             (64 lowercase hex characters), pass --key-file, or provide the \
             systemd credential {}",
            path.display(),
            key::KEY_VAR,
            key::CREDENTIAL
        )));
    }
    let store = Store::assemble(path, file, keys)?;
    store.verify_keys()?;
    Ok(Some(Arc::new(StoreBackend::new(store))))
}

/// A ref as the store names it, or a usage error that does not echo it.
pub(crate) fn normalize(reference: &str) -> Result<String> {
    format::normalize_ref(reference).map_err(|e| Error::usage(format!("invalid ref: {e}")))
}

fn crypto_bug(e: format::CryptoError) -> Error {
    Error::new(ErrorKind::Software, format!("cannot seal the value: {e}"))
}

fn key_matches(key: &Key, check: &KeyCheck) -> Result<bool> {
    format::verify_key_check(key.expose(), check).map_err(crypto_bug)
}

fn wrong_key(path: &Path, key: &Key) -> Error {
    Error::config(format!(
        "{} is not the key this store was written with for key version {} (store {})",
        key.source(),
        key.version(),
        path.display()
    ))
}

/// Refuse to write with `key` if the store holds another key for its
/// version, or a newer version. True when the store has no key check for
/// its version yet.
fn writable_with(path: &Path, f: &StoreFile, key: &Key) -> Result<bool> {
    if let Some(newest) = f.newest_key_version().filter(|&n| n > key.version()) {
        return Err(Error::config(format!(
            "{} is key version {}, but the store {} already uses key version {newest}: \
             set the newest key as {} with {}={newest} (older keys as {}<n>)",
            key.source(),
            key.version(),
            path.display(),
            key::KEY_VAR,
            key::VERSION_VAR,
            key::OLD_KEY_VAR_PREFIX,
        )));
    }
    match f.key_check(key.version()) {
        Some(check) if key_matches(key, check)? => Ok(false),
        Some(_) => Err(wrong_key(path, key)),
        None => Ok(true),
    }
}

/// [`writable_with`], then add the key check of a new version.
fn check_write_key(path: &Path, f: &mut StoreFile, key: &Key) -> Result<()> {
    if writable_with(path, f, key)? {
        let check = format::make_key_check(key.expose(), key.version(), file::random_nonce()?)
            .map_err(crypto_bug)?;
        f.put_key_check(check);
    }
    Ok(())
}

/// The key to open entries of `version` with, if it is set and right.
fn usable_key<'k>(
    status: &KeyStatus,
    keys: &'k KeyRing,
    version: u32,
) -> std::result::Result<&'k Key, EntryFailure> {
    let key = keys.get(version).ok_or_else(|| EntryFailure {
        kind: ErrorKind::Config,
        reason: format!(
            "encrypted with key version {version}, but no key for version {version} is set: {}",
            key::how_to_supply(version)
        ),
    })?;
    if status.get(&version) == Some(&false) {
        return Err(EntryFailure {
            kind: ErrorKind::Config,
            reason: format!(
                "cannot decrypt: {} is not the key this store was written with \
                 for key version {version}",
                key.source()
            ),
        });
    }
    Ok(key)
}

/// An entry that did not open under the right key was tampered with.
fn open_failure(path: &Path, version: u32, e: format::CryptoError) -> EntryFailure {
    match e {
        format::CryptoError::Authentication => EntryFailure {
            kind: ErrorKind::Data,
            reason: format!(
                "failed authentication under key version {version}: the entry was altered, \
                 moved from another name or relabelled (store {})",
                path.display()
            ),
        },
        other => {
            let e = crypto_bug(other);
            EntryFailure {
                kind: e.kind(),
                reason: e.message().to_string(),
            }
        }
    }
}

/// Open one entry with the key of its version.
fn unseal(
    path: &Path,
    status: &KeyStatus,
    keys: &KeyRing,
    entry: &Entry,
) -> std::result::Result<SecretBytes, EntryFailure> {
    let key = usable_key(status, keys, entry.key_version)?;
    format::open(key.expose(), entry).map_err(|e| open_failure(path, entry.key_version, e))
}

/// Read–modify–write under the lock: the closure sees the file as it is on
/// disk now (another writer may have changed it since we opened it); an
/// error from it writes nothing.
fn modify<T>(
    path: &Path,
    keys: &KeyRing,
    change: impl FnOnce(&Path, &mut StoreFile) -> Result<T>,
) -> Result<(StoreFile, T)> {
    let lock = file::lock(path)?;
    let mut fresh = file::read(path)?.ok_or_else(|| file::no_store(path))?;
    renumber(&mut fresh, keys)?;
    let out = change(path, &mut fresh)?;
    file::write(&lock, path, &fresh)?;
    Ok((fresh, out))
}

/// Number the store's key versions as the key ring does.
///
/// Each key check is passed by at most one key; when the ring holds that
/// key under another version (a store written while an unversioned key was
/// version 1, now read with the key as version 0, or kept as
/// `ENCRYPTION_KEY_V0` to rotate), the entries of that version are
/// re-sealed in memory under the ring's version, with the same key and
/// fresh nonces, and the key check follows: reads then find their key, and
/// the next write stores the new numbering. Nothing is renumbered when two
/// different keys would end up under one version.
fn renumber(f: &mut StoreFile, keys: &KeyRing) -> Result<()> {
    let mut moves: BTreeMap<u32, u32> = BTreeMap::new();
    for check in &f.key_checks {
        if let Some(own) = keys.get(check.version) {
            if key_matches(own, check)? {
                continue;
            }
        }
        for key in keys.iter().filter(|k| k.version() != check.version) {
            if key_matches(key, check)? {
                moves.insert(check.version, key.version());
                break;
            }
        }
    }
    if moves.is_empty() {
        return Ok(());
    }
    // A version that stays must not be taken by a moved one, unless the
    // ring's key for it is the one it was written with (then they merge).
    for (&from, &to) in &moves {
        let Some(staying) = f.key_check(to).filter(|_| !moves.contains_key(&to)) else {
            continue;
        };
        let same = keys.get(to).map(|k| key_matches(k, staying)).transpose()?;
        if same != Some(true) {
            tracing::debug!("key version {from} of the store is not renumbered to {to}: taken");
            return Ok(());
        }
    }
    let mut out = f.clone();
    for entry in out.entries.iter_mut() {
        let Some(&to) = moves.get(&entry.key_version) else {
            continue;
        };
        let Some(key) = keys.get(to) else {
            continue;
        };
        let nonce = file::random_nonce()?;
        // One that does not open is damaged: relabelled as it is, it still
        // fails, and is reported as damaged, when read.
        if let Ok(sealed) = format::reseal(key.expose(), key.expose(), to, entry, nonce) {
            entry.nonce = nonce;
            entry.sealed = sealed;
        }
        entry.key_version = to;
    }
    out.key_checks.retain(|c| !moves.contains_key(&c.version));
    for &to in moves.values() {
        if out.key_check(to).is_none() {
            if let Some(key) = keys.get(to) {
                let check = format::make_key_check(key.expose(), to, file::random_nonce()?)
                    .map_err(crypto_bug)?;
                out.put_key_check(check);
            }
        }
    }
    for (from, to) in &moves {
        tracing::debug!("the store's key version {from} is the keys' version {to}: renumbered");
    }
    *f = out;
    Ok(())
}
