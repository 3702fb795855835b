//! The key ring: which 256-bit key seals each key version of the store.
//!
//! Pure: it takes the environment, and the contents of the key file and of
//! systemd credentials already read by the caller, as values. Sources:
//!
//! - the current key (the one writes use), first found of: `--key-file PATH`
//!   (`KEYWARDEN_KEY_FILE`; `cred://NAME` names a systemd credential),
//!   `ENCRYPTION_KEY`, the systemd credential
//!   `$CREDENTIALS_DIRECTORY/encryption_key`; its version is
//!   `ENCRYPTION_KEY_VERSION`, 0 when unset (so rotating keeps the current
//!   key as `ENCRYPTION_KEY_V0` and sets the new one as version 1);
//! - older keys, for reading what they sealed: `ENCRYPTION_KEY_V<n>` or the
//!   credential `encryption_key_v<n>`.
//!
//! Every key is exactly 64 lowercase hex characters (files may end with one
//! newline). Anything else is a configuration error (exit 78) that names
//! the source and what is wrong with it, never its content. Keys live only
//! in [`SecretBytes`]; parsing goes through zeroized buffers.

#![forbid(unsafe_code)]

use std::collections::btree_map::{BTreeMap, Entry as MapEntry};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;

use zeroize::Zeroizing;

use super::format::KEY_LEN;
use crate::error::{Error, Result};
use crate::secret::SecretBytes;

/// The current key.
pub const KEY_VAR: &str = "ENCRYPTION_KEY";
/// The version of the current key.
pub const VERSION_VAR: &str = "ENCRYPTION_KEY_VERSION";
/// Older keys: `ENCRYPTION_KEY_V<n>`.
pub const OLD_KEY_VAR_PREFIX: &str = "ENCRYPTION_KEY_V";
/// The systemd credential holding the current key.
pub const CREDENTIAL: &str = "encryption_key";
/// Systemd credentials holding older keys: `encryption_key_v<n>`.
pub const OLD_CREDENTIAL_PREFIX: &str = "encryption_key_v";
/// The version of the current key when `ENCRYPTION_KEY_VERSION` is unset.
pub const DEFAULT_VERSION: u32 = 0;

const HEX_LEN: usize = KEY_LEN * 2;
const HOW_TO_MAKE: &str = "expected exactly 64 lowercase hex characters \
                           (a 256-bit key, e.g. from `openssl rand -hex 32`)";

/// The text of a key read from a file by the caller.
#[derive(Debug)]
pub struct KeyText {
    /// How to name it in messages: `key file /etc/kw.key`, `credential encryption_key`.
    pub source: String,
    /// The file's contents.
    pub text: SecretBytes,
}

/// Everything the key ring is built from.
#[derive(Debug, Default)]
pub struct KeyInputs<'a> {
    /// keywarden's environment.
    pub env: &'a [(OsString, OsString)],
    /// The contents of `--key-file`, if one was named.
    pub key_file: Option<KeyText>,
    /// Files of `$CREDENTIALS_DIRECTORY` named `encryption_key` or
    /// `encryption_key_v<n>`, by file name.
    pub credentials: Vec<(String, KeyText)>,
}

/// One key and where it came from.
pub struct Key {
    version: u32,
    source: String,
    bytes: SecretBytes,
}

impl Key {
    /// Its key version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Where it came from, for messages: `ENCRYPTION_KEY`, `ENCRYPTION_KEY_V1`,
    /// `key file PATH`, `credential encryption_key`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The 32 key bytes.
    pub fn expose(&self) -> &[u8] {
        self.bytes.expose()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("version", &self.version)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The keys keywarden holds, by version, and which one is current.
#[derive(Debug, Default)]
pub struct KeyRing {
    current: Option<u32>,
    keys: BTreeMap<u32, Key>,
}

impl KeyRing {
    /// Build the ring from its sources (see the module doc).
    pub fn load(inputs: KeyInputs<'_>) -> Result<KeyRing> {
        let env = last_wins(inputs.env);
        let mut ring = KeyRing::default();

        let mut creds: BTreeMap<String, KeyText> = inputs.credentials.into_iter().collect();
        let current_text = if let Some(file) = inputs.key_file {
            Some((file.source, trim_newline(file.text.expose()).to_vec()))
        } else if let Some(value) = env.get(OsStr::new(KEY_VAR)) {
            Some((KEY_VAR.to_string(), value.as_encoded_bytes().to_vec()))
        } else {
            creds
                .remove(CREDENTIAL)
                .map(|c| (c.source, trim_newline(c.text.expose()).to_vec()))
        };
        if let Some((source, text)) = current_text {
            let text = Zeroizing::new(text);
            let version = match env.get(OsStr::new(VERSION_VAR)) {
                Some(v) if !v.is_empty() => parse_version(v).ok_or_else(|| {
                    Error::config(format!(
                        "{VERSION_VAR} must be a whole number from 0 to {} (value not shown)",
                        u32::MAX
                    ))
                })?,
                _ => DEFAULT_VERSION,
            };
            let bytes = parse_key(&source, &text)?;
            ring.insert(Key {
                version,
                source,
                bytes,
            })?;
            ring.current = Some(version);
        }

        let mut old: Vec<(u32, String, Zeroizing<Vec<u8>>)> = Vec::new();
        for (name, value) in &env {
            let Some(name) = name.to_str() else { continue };
            let Some(suffix) = name.strip_prefix(OLD_KEY_VAR_PREFIX) else {
                continue;
            };
            if let Some(version) = old_version(name, suffix)? {
                let text = Zeroizing::new(value.as_encoded_bytes().to_vec());
                old.push((version, name.to_string(), text));
            }
        }
        for (name, cred) in &creds {
            let Some(suffix) = name.strip_prefix(OLD_CREDENTIAL_PREFIX) else {
                continue;
            };
            if let Some(version) = old_version(&cred.source, suffix)? {
                let text = Zeroizing::new(trim_newline(cred.text.expose()).to_vec());
                old.push((version, cred.source.clone(), text));
            }
        }
        // Deterministic: the same conflict is reported the same way each time.
        old.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (version, source, text) in old {
            let bytes = parse_key(&source, &text)?;
            ring.insert(Key {
                version,
                source,
                bytes,
            })?;
        }
        Ok(ring)
    }

    /// A ring from raw 32-byte keys (tests, benchmarks, embedding).
    pub fn from_keys(
        current: Option<(u32, SecretBytes)>,
        old: Vec<(u32, SecretBytes)>,
    ) -> Result<KeyRing> {
        let mut ring = KeyRing::default();
        let check = |source: &str, bytes: &SecretBytes| {
            if bytes.len() == KEY_LEN {
                Ok(())
            } else {
                Err(Error::config(format!("{source} is not a 32-byte key")))
            }
        };
        if let Some((version, bytes)) = current {
            check(KEY_VAR, &bytes)?;
            ring.insert(Key {
                version,
                source: KEY_VAR.to_string(),
                bytes,
            })?;
            ring.current = Some(version);
        }
        for (version, bytes) in old {
            let source = format!("{OLD_KEY_VAR_PREFIX}{version}");
            check(&source, &bytes)?;
            ring.insert(Key {
                version,
                source,
                bytes,
            })?;
        }
        Ok(ring)
    }

    fn insert(&mut self, key: Key) -> Result<()> {
        match self.keys.entry(key.version) {
            MapEntry::Vacant(slot) => {
                slot.insert(key);
                Ok(())
            }
            MapEntry::Occupied(have) if have.get().expose() == key.expose() => Ok(()),
            MapEntry::Occupied(have) => Err(Error::config(format!(
                "{} and {} are different keys for key version {}: keep one",
                have.get().source,
                key.source,
                key.version
            ))),
        }
    }

    /// The key writes use, if one is set.
    pub fn current(&self) -> Option<&Key> {
        self.current.and_then(|v| self.keys.get(&v))
    }

    /// The key writes use, or a configuration error saying how to set one.
    pub fn require_current(&self) -> Result<&Key> {
        self.current().ok_or_else(|| {
            Error::config(format!(
                "no encryption key: set {KEY_VAR} (64 lowercase hex characters), \
                 pass --key-file, or provide the systemd credential {CREDENTIAL}"
            ))
        })
    }

    /// The key of `version`.
    pub fn get(&self, version: u32) -> Option<&Key> {
        self.keys.get(&version)
    }

    /// Every key, by ascending version.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.values()
    }

    /// True when no key at all is set.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// How to supply the key of `version`, for "no key" messages.
pub fn how_to_supply(version: u32) -> String {
    format!(
        "set {OLD_KEY_VAR_PREFIX}{version} (or {KEY_VAR} with {VERSION_VAR}={version}, \
         or the credential {OLD_CREDENTIAL_PREFIX}{version})"
    )
}

/// The value of `name` in `env` (the last one wins, as with `setenv`).
pub fn lookup<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsStr> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_os_str())
}

fn last_wins(env: &[(OsString, OsString)]) -> HashMap<&OsStr, &OsStr> {
    env.iter()
        .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
        .collect()
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// Canonical decimal: digits only, no leading zero (except "0").
fn parse_version(text: &OsStr) -> Option<u32> {
    let s = text.to_str()?;
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// The version named by an old key's suffix (`V<n>` / `v<n>`); `None` for
/// names that are not old keys (`ENCRYPTION_KEY_VERSION`).
fn old_version(source: &str, suffix: &str) -> Result<Option<u32>> {
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    parse_version(OsStr::new(suffix)).map(Some).ok_or_else(|| {
        Error::config(format!(
            "{source}: write the key version without leading zeros, from 0 to {}",
            u32::MAX
        ))
    })
}

/// Decode 64 lowercase hex characters into a key. Messages name `source`
/// and the fault, never the text.
fn parse_key(source: &str, text: &[u8]) -> Result<SecretBytes> {
    let bad = |what: String| Error::config(format!("{source} {what}: {HOW_TO_MAKE}"));
    if text.is_empty() {
        return Err(bad("is empty".into()));
    }
    if text.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(bad("contains whitespace or a line break".into()));
    }
    let chars = std::str::from_utf8(text).map_or(text.len(), |s| s.chars().count());
    if chars != HEX_LEN {
        let which = if chars < HEX_LEN {
            "too short"
        } else {
            "too long"
        };
        return Err(bad(format!("is {which} ({chars} characters)")));
    }
    if let Some(pos) = text.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "contains a character that is not a hex digit (at position {})",
            pos + 1
        )));
    }
    if text.iter().any(u8::is_ascii_uppercase) {
        return Err(bad(
            "contains uppercase hex digits; write it in lowercase".into()
        ));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    for (out, pair) in key.iter_mut().zip(text.chunks_exact(2)) {
        *out = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Ok(SecretBytes::copy_from(&key[..]))
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's hex text, derived from a seed (no literal keys in code).
    fn hex_key(seed: u8) -> String {
        (0..KEY_LEN)
            .map(|i| format!("{:02x}", seed.wrapping_mul(37).wrapping_add(i as u8)))
            .collect()
    }

    fn key_bytes(seed: u8) -> Vec<u8> {
        (0..KEY_LEN)
            .map(|i| seed.wrapping_mul(37).wrapping_add(i as u8))
            .collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<KeyRing> {
        let env = env(pairs);
        KeyRing::load(KeyInputs {
            env: &env,
            ..KeyInputs::default()
        })
    }

    #[test]
    fn current_key_and_default_version() {
        let ring = load(&[(KEY_VAR, &hex_key(1))]).expect("ring");
        let k = ring.require_current().expect("current");
        assert_eq!(k.version(), 0);
        assert_eq!(k.source(), KEY_VAR);
        assert_eq!(k.expose(), key_bytes(1));
    }

    #[test]
    fn bad_keys_are_named_and_never_echoed() {
        let good = hex_key(2);
        let table: Vec<(String, &str)> = vec![
            (String::new(), "is empty"),
            (good[..63].to_string(), "is too short (63 characters)"),
            (good[..10].to_string(), "is too short (10 characters)"),
            (format!("{good}a"), "is too long (65 characters)"),
            (good.to_uppercase(), "contains uppercase hex digits"),
            (
                format!("{}g", &good[..63]),
                "not a hex digit (at position 64)",
            ),
            (format!("{good}\n"), "contains whitespace"),
            (format!(" {}", &good[1..]), "contains whitespace"),
            (format!("{}é", &good[..63]), "not a hex digit"),
        ];
        for (text, want) in table {
            let e = load(&[(KEY_VAR, &text)]).expect_err(want);
            assert_eq!(e.exit_code(), 78, "{want}");
            let msg = e.to_string();
            assert!(msg.starts_with("ENCRYPTION_KEY "), "{msg}");
            assert!(msg.contains(want), "{msg} lacks {want}");
            if text.len() >= 8 {
                assert!(!msg.contains(&text[..8]), "echoed: {msg}");
                assert!(!msg.contains(&text.to_lowercase()[..8]), "echoed: {msg}");
            }
        }
    }

    #[test]
    fn versions_and_old_keys() {
        let ring = load(&[
            (KEY_VAR, &hex_key(3)),
            (VERSION_VAR, "3"),
            ("ENCRYPTION_KEY_V1", &hex_key(1)),
            ("ENCRYPTION_KEY_V0", &hex_key(9)),
            ("ENCRYPTION_KEY_VALUE", "ignored"),
        ])
        .expect("ring");
        assert_eq!(ring.require_current().expect("current").version(), 3);
        assert_eq!(ring.get(1).expect("v1").expose(), key_bytes(1));
        assert_eq!(ring.get(0).expect("v0").source(), "ENCRYPTION_KEY_V0");
        assert!(ring.get(2).is_none());
        let versions: Vec<u32> = ring.iter().map(Key::version).collect();
        assert_eq!(versions, [0, 1, 3]);
    }

    #[test]
    fn old_keys_alone_have_no_current() {
        let ring = load(&[("ENCRYPTION_KEY_V1", &hex_key(1))]).expect("ring");
        assert!(ring.current().is_none());
        let e = ring.require_current().expect_err("none");
        assert_eq!(e.exit_code(), 78);
        assert!(e.to_string().contains("set ENCRYPTION_KEY"), "{e}");
    }

    #[test]
    fn version_errors() {
        for bad in ["x", "-1", "01", "1.0", "4294967296", " 1"] {
            let e = load(&[(KEY_VAR, &hex_key(1)), (VERSION_VAR, bad)]).expect_err(bad);
            assert_eq!(e.exit_code(), 78);
            assert!(e.to_string().contains(VERSION_VAR), "{e}");
        }
        let e = load(&[("ENCRYPTION_KEY_V01", &hex_key(1))]).expect_err("leading zero");
        assert!(e.to_string().contains("ENCRYPTION_KEY_V01"), "{e}");
        let ring = load(&[(KEY_VAR, &hex_key(1)), (VERSION_VAR, "")]).expect("empty = default");
        assert_eq!(ring.require_current().expect("k").version(), 0);
    }

    #[test]
    fn conflicting_keys_for_one_version() {
        let e = load(&[
            (KEY_VAR, &hex_key(1)),
            (VERSION_VAR, "2"),
            ("ENCRYPTION_KEY_V2", &hex_key(2)),
        ])
        .expect_err("conflict");
        assert!(
            e.to_string().contains("different keys for key version 2"),
            "{e}"
        );
        // The same key twice is fine.
        load(&[
            (KEY_VAR, &hex_key(1)),
            (VERSION_VAR, "2"),
            ("ENCRYPTION_KEY_V2", &hex_key(1)),
        ])
        .expect("same key");
    }

    #[test]
    fn key_file_wins_and_may_end_with_a_newline() {
        let env = env(&[(KEY_VAR, &hex_key(1)), (VERSION_VAR, "4")]);
        let ring = KeyRing::load(KeyInputs {
            env: &env,
            key_file: Some(KeyText {
                source: "key file /k".into(),
                text: SecretBytes::from_vec(format!("{}\n", hex_key(5)).into_bytes()),
            }),
            credentials: Vec::new(),
        })
        .expect("ring");
        let k = ring.require_current().expect("current");
        assert_eq!((k.version(), k.source()), (4, "key file /k"));
        assert_eq!(k.expose(), key_bytes(5));

        let e = KeyRing::load(KeyInputs {
            env: &[],
            key_file: Some(KeyText {
                source: "key file /k".into(),
                text: SecretBytes::from_vec(format!("{}\n\n", hex_key(5)).into_bytes()),
            }),
            credentials: Vec::new(),
        })
        .expect_err("two newlines");
        assert!(
            e.to_string().starts_with("key file /k contains whitespace"),
            "{e}"
        );
    }

    #[test]
    fn systemd_credentials() {
        let cred = |name: &str, seed: u8| {
            (
                name.to_string(),
                KeyText {
                    source: format!("credential {name}"),
                    text: SecretBytes::from_vec(format!("{}\n", hex_key(seed)).into_bytes()),
                },
            )
        };
        let ring = KeyRing::load(KeyInputs {
            env: &env(&[(VERSION_VAR, "2")]),
            key_file: None,
            credentials: vec![cred(CREDENTIAL, 2), cred("encryption_key_v1", 1)],
        })
        .expect("ring");
        let k = ring.require_current().expect("current");
        assert_eq!((k.version(), k.source()), (2, "credential encryption_key"));
        assert_eq!(ring.get(1).expect("v1").expose(), key_bytes(1));

        // ENCRYPTION_KEY beats the credential.
        let ring = KeyRing::load(KeyInputs {
            env: &env(&[(KEY_VAR, &hex_key(7))]),
            key_file: None,
            credentials: vec![cred(CREDENTIAL, 2)],
        })
        .expect("ring");
        assert_eq!(ring.require_current().expect("k").expose(), key_bytes(7));
    }

    #[test]
    fn debug_shows_no_key() {
        let text = hex_key(8);
        let ring = load(&[(KEY_VAR, &text)]).expect("ring");
        let printed = format!("{ring:?}");
        assert!(printed.contains("ENCRYPTION_KEY"), "{printed}");
        assert!(!printed.contains(&text[..16]), "{printed}");
        let bytes = key_bytes(8);
        assert!(!printed.contains(&format!("{:?}", &bytes[..4])[1..8]));
    }

    #[test]
    fn lookup_takes_the_last_value() {
        let e = env(&[("A", "1"), ("A", "2")]);
        assert_eq!(lookup(&e, "A"), Some(OsStr::new("2")));
        assert_eq!(lookup(&e, "B"), None);
    }
}
