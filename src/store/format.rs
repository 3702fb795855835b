//! The store file format, and the AEAD that seals each entry. Pure: bytes in,
//! bytes out; the caller brings the keys, the nonces and the clock.
//!
//! Layout of format version 1 (integers big-endian):
//!
//! ```text
//! magic "KWSTORE\0" (8) | format version u16 = 1 | flags u16 = 0
//! key-check count u16, then per key version in use, ascending:
//!     key version u32 | nonce (12) | tag (16)
//! entry count u32, then per entry, sorted by ref, refs unique:
//!     ref length u16 | ref (UTF-8, "kv://...") | key version u32
//!     created i64 | updated i64 (unix seconds) | nonce (12)
//!     sealed length u32 | sealed = AES-256-GCM ciphertext || tag (16)
//! SHA-256 of every byte above (32)
//! ```
//!
//! Each entry is sealed with the key of its version under a fresh random
//! 96-bit nonce; the associated data binds it to its ref *and* its key
//! version, so an entry copied to another name, or relabelled with another
//! version, fails to open. A key check (the GCM tag of an empty message
//! under the key) tells "wrong key" apart from "damaged entry" without
//! revealing anything about the key. The trailer catches truncation and
//! random damage; it is not a MAC — the AEAD tags are what an attacker
//! cannot forge. Parsing is strict: anything but a canonical file is an
//! error, so a damaged store is reported before anything is written over it.

#![forbid(unsafe_code)]

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use sha2::{Digest, Sha256};

use crate::secret::SecretBytes;

/// The first bytes of every store file.
pub const MAGIC: [u8; 8] = *b"KWSTORE\0";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// AES-256 key length in bytes.
pub const KEY_LEN: usize = 32;
/// GCM nonce length in bytes (96 bits).
pub const NONCE_LEN: usize = 12;
/// GCM tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Longest ref path (after `kv://`), in bytes.
pub const MAX_PATH_LEN: usize = 512;
/// Largest value the store holds, in bytes.
pub const MAX_VALUE_LEN: usize = 1 << 20;

const CHECKSUM_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + 2 + 2;
const ENTRY_AAD_DOMAIN: &[u8] = b"keywarden store v1 entry\0";
const KEY_CHECK_AAD_DOMAIN: &[u8] = b"keywarden store v1 key check\0";

/// The scheme prefix every stored ref carries.
pub const KV_PREFIX: &str = "kv://";

/// Proof that a key version's key was used to write this store: the GCM tag
/// of an empty message, so a wrong key is named as such.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    /// The key version it checks.
    pub version: u32,
    /// Its nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The tag.
    pub tag: [u8; TAG_LEN],
}

/// One sealed entry. Only `sealed` depends on the value, and it is
/// ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full ref, `kv://path`.
    pub reference: String,
    /// The version of the key it is sealed with.
    pub key_version: u32,
    /// When the ref was first stored (unix seconds).
    pub created: i64,
    /// When its value was last set (unix seconds); re-encryption under a new
    /// key does not change it, since the secret itself did not change.
    pub updated: i64,
    /// The GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub sealed: Vec<u8>,
}

/// A whole store, as held in memory: key checks ascending by version,
/// entries ascending by ref.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFile {
    /// One per key version the store uses.
    pub key_checks: Vec<KeyCheck>,
    /// The entries.
    pub entries: Vec<Entry>,
}

/// Why bytes are not a valid store. Never quotes file content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The file ends before a complete structure.
    Truncated {
        /// Where the missing part starts.
        offset: usize,
    },
    /// The magic is wrong: not a keywarden store.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion(u16),
    /// Reserved flags set.
    BadFlags,
    /// The SHA-256 trailer does not match the content.
    BadChecksum,
    /// A structural rule is broken at `offset`.
    Invalid {
        /// Byte offset of the offending field.
        offset: usize,
        /// Which rule.
        why: &'static str,
    },
    /// Bytes left after the last entry.
    TrailingBytes {
        /// Where they start.
        offset: usize,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Truncated { offset } => write!(f, "truncated at byte {offset}"),
            FormatError::BadMagic => f.write_str("not a keywarden store (bad magic bytes)"),
            FormatError::UnsupportedVersion(v) => write!(
                f,
                "format version {v}, which this keywarden cannot read (it reads version \
                 {FORMAT_VERSION}): the file is damaged, or was written by a newer keywarden"
            ),
            FormatError::BadFlags => f.write_str("reserved header flags are set"),
            FormatError::BadChecksum => {
                f.write_str("checksum mismatch: the file is truncated or damaged")
            }
            FormatError::Invalid { offset, why } => write!(f, "{why} at byte {offset}"),
            FormatError::TrailingBytes { offset } => {
                write!(f, "unexpected bytes after the last entry at byte {offset}")
            }
        }
    }
}

/// Why a seal or an open failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The key is not 32 bytes (a bug: the key ring checks lengths).
    KeyLength,
    /// The tag did not verify: wrong key, or the entry was altered, moved to
    /// another ref or relabelled with another key version.
    Authentication,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::KeyLength => f.write_str("the key is not 32 bytes"),
            CryptoError::Authentication => f.write_str("authentication failed"),
        }
    }
}

fn cipher(key: &[u8]) -> Result<Aes256Gcm, CryptoError> {
    Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::KeyLength)
}

/// The associated data of an entry: its ref and its key version.
fn entry_aad(reference: &str, key_version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(ENTRY_AAD_DOMAIN.len() + 4 + reference.len());
    aad.extend_from_slice(ENTRY_AAD_DOMAIN);
    aad.extend_from_slice(&key_version.to_be_bytes());
    aad.extend_from_slice(reference.as_bytes());
    aad
}

fn key_check_aad(version: u32) -> Vec<u8> {
    let mut aad = KEY_CHECK_AAD_DOMAIN.to_vec();
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Seal `plaintext` for `reference` under `key` (of `key_version`) with
/// `nonce`, which must never have been used with this key: callers draw it
/// at random. Returns ciphertext || tag.
pub fn seal(
    key: &[u8],
    key_version: u32,
    reference: &str,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = cipher(key)?;
    // Sized up front: the plaintext copy is encrypted in place and never
    // reallocated, so no stray copy of it is left on the heap.
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            &entry_aad(reference, key_version),
            &mut buf,
        )
        .map_err(|_| CryptoError::Authentication)?;
    buf.extend_from_slice(&tag);
    Ok(buf)
}

/// Open `entry` with `key` (the key of `entry.key_version`).
pub fn open(key: &[u8], entry: &Entry) -> Result<SecretBytes, CryptoError> {
    let cipher = cipher(key)?;
    let Some(split) = entry.sealed.len().checked_sub(TAG_LEN) else {
        return Err(CryptoError::Authentication);
    };
    let (ciphertext, tag) = entry.sealed.split_at(split);
    let mut buf = ciphertext.to_vec();
    // The tag is verified before any byte is decrypted: on failure `buf`
    // still holds ciphertext only.
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&entry.nonce),
            &entry_aad(&entry.reference, entry.key_version),
            &mut buf,
            Tag::from_slice(tag),
        )
        .map_err(|_| CryptoError::Authentication)?;
    Ok(SecretBytes::from_vec(buf))
}

/// Re-seal `entry` (sealed under `old_key`) under `new_key` as
/// `new_version` with `nonce`, for key rotation. The plaintext exists only
/// inside the one buffer, between its decryption and its encryption in
/// place, and never as a value of its own.
pub fn reseal(
    old_key: &[u8],
    new_key: &[u8],
    new_version: u32,
    entry: &Entry,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let (old, new) = (cipher(old_key)?, cipher(new_key)?);
    let Some(split) = entry.sealed.len().checked_sub(TAG_LEN) else {
        return Err(CryptoError::Authentication);
    };
    let (ciphertext, tag) = entry.sealed.split_at(split);
    let mut buf = Vec::with_capacity(entry.sealed.len());
    buf.extend_from_slice(ciphertext);
    old.decrypt_in_place_detached(
        Nonce::from_slice(&entry.nonce),
        &entry_aad(&entry.reference, entry.key_version),
        &mut buf,
        Tag::from_slice(tag),
    )
    .map_err(|_| CryptoError::Authentication)?;
    let sealed = new.encrypt_in_place_detached(
        Nonce::from_slice(&nonce),
        &entry_aad(&entry.reference, new_version),
        &mut buf,
    );
    match sealed {
        Ok(tag) => {
            buf.extend_from_slice(&tag);
            Ok(buf)
        }
        Err(_) => {
            // Unreachable for values within MAX_VALUE_LEN; wipe regardless.
            zeroize::Zeroize::zeroize(&mut buf);
            Err(CryptoError::Authentication)
        }
    }
}

/// A key check for `key` as key `version`.
pub fn make_key_check(
    key: &[u8],
    version: u32,
    nonce: [u8; NONCE_LEN],
) -> Result<KeyCheck, CryptoError> {
    let tag = cipher(key)?
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &key_check_aad(version), &mut [])
        .map_err(|_| CryptoError::Authentication)?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&tag);
    Ok(KeyCheck {
        version,
        nonce,
        tag: out,
    })
}

/// True when `key` is the key `check` was made with.
pub fn verify_key_check(key: &[u8], check: &KeyCheck) -> Result<bool, CryptoError> {
    let cipher = cipher(key)?;
    Ok(cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&check.nonce),
            &key_check_aad(check.version),
            &mut [],
            Tag::from_slice(&check.tag),
        )
        .is_ok())
}

/// Why a ref cannot name a store entry. Never quotes the input: a string
/// typed where a ref belongs may be a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefError {
    /// `scheme://` other than `kv://`.
    OtherScheme,
    /// Nothing after `kv://`.
    Empty,
    /// Longer than [`MAX_PATH_LEN`].
    TooLong,
    /// A control or whitespace character.
    BadCharacter,
    /// A leading, trailing or doubled `/`.
    EmptySegment,
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefError::OtherScheme => {
                "the store holds kv:// refs only (e.g. kv://openai/dev/api_key)"
            }
            RefError::Empty => "empty ref: expected kv://PATH or PATH, e.g. openai/dev/api_key",
            RefError::TooLong => "ref too long (at most 512 bytes after kv://)",
            RefError::BadCharacter => "ref contains whitespace or a control character",
            RefError::EmptySegment => {
                "ref has an empty path segment (leading, trailing or doubled '/')"
            }
        })
    }
}

/// `openai/dev/api_key` or `kv://openai/dev/api_key` → `kv://openai/dev/api_key`.
pub fn normalize_ref(input: &str) -> Result<String, RefError> {
    let path = match input.split_once("://") {
        Some(("kv", rest)) => rest,
        Some(_) => return Err(RefError::OtherScheme),
        None => input,
    };
    if path.is_empty() {
        return Err(RefError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(RefError::TooLong);
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(RefError::BadCharacter);
    }
    if path.split('/').any(str::is_empty) {
        return Err(RefError::EmptySegment);
    }
    Ok(format!("{KV_PREFIX}{path}"))
}

impl StoreFile {
    /// The entry for a normalized ref.
    pub fn find(&self, reference: &str) -> Option<&Entry> {
        self.position(reference).ok().map(|i| &self.entries[i])
    }

    /// Index of `reference`, or where it would go.
    pub fn position(&self, reference: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|e| e.reference.as_str().cmp(reference))
    }

    /// Insert or replace an entry, keeping the order.
    pub fn upsert(&mut self, entry: Entry) {
        match self.position(&entry.reference) {
            Ok(i) => self.entries[i] = entry,
            Err(i) => self.entries.insert(i, entry),
        }
    }

    /// Remove an entry; false when there was none.
    pub fn remove(&mut self, reference: &str) -> bool {
        match self.position(reference) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// The key check of `version`.
    pub fn key_check(&self, version: u32) -> Option<&KeyCheck> {
        self.key_checks.iter().find(|c| c.version == version)
    }

    /// Add or replace a key check, keeping the order.
    pub fn put_key_check(&mut self, check: KeyCheck) {
        match self
            .key_checks
            .binary_search_by_key(&check.version, |c| c.version)
        {
            Ok(i) => self.key_checks[i] = check,
            Err(i) => self.key_checks.insert(i, check),
        }
    }

    /// The highest key version the store has a check for.
    pub fn newest_key_version(&self) -> Option<u32> {
        self.key_checks.last().map(|c| c.version)
    }

    /// Serialize, trailer included.
    pub fn encode(&self) -> Vec<u8> {
        let size = HEADER_LEN
            + 2
            + self.key_checks.len() * (4 + NONCE_LEN + TAG_LEN)
            + 4
            + self
                .entries
                .iter()
                .map(|e| 2 + e.reference.len() + 4 + 8 + 8 + NONCE_LEN + 4 + e.sealed.len())
                .sum::<usize>()
            + CHECKSUM_LEN;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&(self.key_checks.len() as u16).to_be_bytes());
        for c in &self.key_checks {
            out.extend_from_slice(&c.version.to_be_bytes());
            out.extend_from_slice(&c.nonce);
            out.extend_from_slice(&c.tag);
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&(e.reference.len() as u16).to_be_bytes());
            out.extend_from_slice(e.reference.as_bytes());
            out.extend_from_slice(&e.key_version.to_be_bytes());
            out.extend_from_slice(&e.created.to_be_bytes());
            out.extend_from_slice(&e.updated.to_be_bytes());
            out.extend_from_slice(&e.nonce);
            out.extend_from_slice(&(e.sealed.len() as u32).to_be_bytes());
            out.extend_from_slice(&e.sealed);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Parse a whole file, strictly.
    pub fn decode(bytes: &[u8]) -> Result<StoreFile, FormatError> {
        if bytes.len() < MAGIC.len() {
            return Err(if MAGIC.starts_with(bytes) {
                FormatError::Truncated {
                    offset: bytes.len(),
                }
            } else {
                FormatError::BadMagic
            });
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let mut r = Reader {
            bytes,
            pos: MAGIC.len(),
            end: bytes.len(),
        };
        let version = r.u16()?;
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(FormatError::Truncated {
                offset: bytes.len(),
            });
        }
        let body_end = bytes.len() - CHECKSUM_LEN;
        if Sha256::digest(&bytes[..body_end]).as_slice() != &bytes[body_end..] {
            return Err(FormatError::BadChecksum);
        }
        r.end = body_end;
        if r.u16()? != 0 {
            return Err(FormatError::BadFlags);
        }

        let mut file = StoreFile::default();
        let checks = r.u16()?;
        for _ in 0..checks {
            let at = r.pos;
            let check = KeyCheck {
                version: r.u32()?,
                nonce: r.array()?,
                tag: r.array()?,
            };
            if file
                .key_checks
                .last()
                .is_some_and(|c| c.version >= check.version)
            {
                return Err(FormatError::Invalid {
                    offset: at,
                    why: "key checks out of order or repeated",
                });
            }
            file.key_checks.push(check);
        }

        let count = r.u32()?;
        for _ in 0..count {
            let at = r.pos;
            let len = usize::from(r.u16()?);
            let raw = r.take(len)?;
            let reference = std::str::from_utf8(raw)
                .ok()
                .filter(|s| normalize_ref(s).as_deref() == Ok(*s))
                .ok_or(FormatError::Invalid {
                    offset: at,
                    why: "invalid ref",
                })?
                .to_string();
            if file
                .entries
                .last()
                .is_some_and(|e| e.reference >= reference)
            {
                return Err(FormatError::Invalid {
                    offset: at,
                    why: "entries out of order or repeated",
                });
            }
            let version_at = r.pos;
            let key_version = r.u32()?;
            if file.key_check(key_version).is_none() {
                return Err(FormatError::Invalid {
                    offset: version_at,
                    why: "entry under a key version with no key check",
                });
            }
            let created = r.i64()?;
            let updated = r.i64()?;
            let nonce = r.array()?;
            let len_at = r.pos;
            let sealed_len = r.u32()? as usize;
            if !(TAG_LEN..=MAX_VALUE_LEN + TAG_LEN).contains(&sealed_len) {
                return Err(FormatError::Invalid {
                    offset: len_at,
                    why: "impossible ciphertext length",
                });
            }
            let sealed = r.take(sealed_len)?.to_vec();
            file.entries.push(Entry {
                reference,
                key_version,
                created,
                updated,
                nonce,
                sealed,
            });
        }
        if r.pos != r.end {
            return Err(FormatError::TrailingBytes { offset: r.pos });
        }
        Ok(file)
    }
}

/// A bounds-checked cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let stop = self
            .pos
            .checked_add(n)
            .filter(|&s| s <= self.end)
            .ok_or(FormatError::Truncated { offset: self.pos })?;
        let out = &self.bytes[self.pos..stop];
        self.pos = stop;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
}

/// Unix seconds as RFC 3339 UTC, e.g. `2025-01-31T12:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    crate::timefmt::rfc3339_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> [u8; KEY_LEN] {
        // Derived, not literal: a fixed pattern per seed.
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
    }

    fn nonce(n: u8) -> [u8; NONCE_LEN] {
        [n; NONCE_LEN]
    }

    fn entry(k: &[u8], version: u32, reference: &str, value: &[u8], n: u8) -> Entry {
        Entry {
            reference: reference.to_string(),
            key_version: version,
            created: 1_700_000_000,
            updated: 1_700_000_100,
            nonce: nonce(n),
            sealed: seal(k, version, reference, value, nonce(n)).expect("seal"),
        }
    }

    fn sample() -> StoreFile {
        let k = key(1);
        let mut f = StoreFile::default();
        f.put_key_check(make_key_check(&k, 1, nonce(9)).expect("check"));
        f.upsert(entry(&k, 1, "kv://b/two", b"second value", 2));
        f.upsert(entry(&k, 1, "kv://a/one", b"first value", 1));
        f
    }

    #[test]
    fn encode_decode_round_trip() {
        for f in [StoreFile::default(), sample()] {
            let bytes = f.encode();
            assert_eq!(StoreFile::decode(&bytes), Ok(f));
        }
        let f = sample();
        assert_eq!(f.entries[0].reference, "kv://a/one", "kept sorted");
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                StoreFile::decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(StoreFile::decode(&b).is_err(), "flip at byte {i} parsed");
            }
        }
    }

    /// Re-seal the checksum after editing the body, to reach the deeper rules.
    fn resum(mut bytes: Vec<u8>) -> Vec<u8> {
        let end = bytes.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&bytes[..end]);
        bytes[end..].copy_from_slice(&sum);
        bytes
    }

    #[test]
    fn structural_errors() {
        let good = sample().encode();

        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(StoreFile::decode(&b), Err(FormatError::BadMagic));
        assert_eq!(StoreFile::decode(b"hello"), Err(FormatError::BadMagic));
        assert_eq!(
            StoreFile::decode(b"KWST"),
            Err(FormatError::Truncated { offset: 4 })
        );

        let mut b = good.clone();
        b[9] = 2;
        let e = StoreFile::decode(&b).expect_err("newer");
        assert_eq!(e, FormatError::UnsupportedVersion(2));
        assert!(e.to_string().contains("newer keywarden"), "{e}");

        let mut b = good.clone();
        b[11] = 1;
        assert_eq!(StoreFile::decode(&resum(b)), Err(FormatError::BadFlags));

        let mut b = good.clone();
        b.insert(good.len() - CHECKSUM_LEN, 0);
        assert!(matches!(
            StoreFile::decode(&resum(b)),
            Err(FormatError::TrailingBytes { .. })
        ));

        // Entries in the wrong order.
        let mut f = sample();
        f.entries.swap(0, 1);
        assert!(matches!(
            StoreFile::decode(&f.encode()),
            Err(FormatError::Invalid {
                why: "entries out of order or repeated",
                ..
            })
        ));

        // Duplicate refs.
        let mut f = sample();
        let dup = f.entries[0].clone();
        f.entries.insert(0, dup);
        assert!(StoreFile::decode(&f.encode()).is_err());

        // An entry whose key version has no check.
        let mut f = sample();
        f.entries[0].key_version = 7;
        assert!(matches!(
            StoreFile::decode(&f.encode()),
            Err(FormatError::Invalid {
                why: "entry under a key version with no key check",
                ..
            })
        ));

        // A ref that is not canonical.
        let mut f = sample();
        f.entries[0].reference = "a/one".into();
        assert!(matches!(
            StoreFile::decode(&f.encode()),
            Err(FormatError::Invalid {
                why: "invalid ref",
                ..
            })
        ));

        // A sealed value shorter than a tag.
        let mut f = sample();
        f.entries[0].sealed.truncate(3);
        assert!(matches!(
            StoreFile::decode(&f.encode()),
            Err(FormatError::Invalid {
                why: "impossible ciphertext length",
                ..
            })
        ));
    }

    #[test]
    fn seal_open_round_trip_and_wrong_key() {
        let k = key(1);
        let e = entry(&k, 1, "kv://a", b"\x00value\xff", 3);
        assert_eq!(open(&k, &e).expect("open").expose(), b"\x00value\xff");
        assert_eq!(open(&key(2), &e).err(), Some(CryptoError::Authentication));
        assert_eq!(open(&k[..31], &e).err(), Some(CryptoError::KeyLength));
        assert!(!e.sealed.windows(5).any(|w| w == b"value"));
    }

    #[test]
    fn associated_data_binds_ref_and_key_version() {
        let k = key(1);
        let a = entry(&k, 1, "kv://a", b"value a", 1);
        let b = entry(&k, 1, "kv://b", b"value b", 2);

        let mut moved = a.clone();
        moved.reference = "kv://c".into();
        assert!(open(&k, &moved).is_err(), "moved to another name");

        let mut relabelled = a.clone();
        relabelled.key_version = 2;
        assert!(open(&k, &relabelled).is_err(), "relabelled version");

        let (mut a2, mut b2) = (a.clone(), b.clone());
        std::mem::swap(&mut a2.sealed, &mut b2.sealed);
        std::mem::swap(&mut a2.nonce, &mut b2.nonce);
        assert!(open(&k, &a2).is_err() && open(&k, &b2).is_err(), "swapped");

        let mut flipped = a;
        flipped.sealed[0] ^= 1;
        assert!(open(&k, &flipped).is_err(), "altered ciphertext");
    }

    #[test]
    fn reseal_moves_an_entry_to_a_new_key() {
        let (old, new) = (key(1), key(2));
        let e = entry(&old, 1, "kv://a", b"value", 1);
        let sealed = reseal(&old, &new, 2, &e, nonce(7)).expect("reseal");
        let moved = Entry {
            key_version: 2,
            nonce: nonce(7),
            sealed,
            ..e.clone()
        };
        assert_eq!(open(&new, &moved).expect("open").expose(), b"value");
        assert!(open(&old, &moved).is_err());
        assert_eq!(
            reseal(&new, &old, 3, &e, nonce(8)),
            Err(CryptoError::Authentication),
            "wrong old key"
        );
    }

    #[test]
    fn key_checks_tell_keys_apart() {
        let check = make_key_check(&key(1), 3, nonce(5)).expect("check");
        assert_eq!(verify_key_check(&key(1), &check), Ok(true));
        assert_eq!(verify_key_check(&key(2), &check), Ok(false));
        let relabelled = KeyCheck {
            version: 4,
            ..check.clone()
        };
        assert_eq!(verify_key_check(&key(1), &relabelled), Ok(false));
    }

    #[test]
    fn refs_are_normalized() {
        let ok = [
            ("openai/dev/api_key", "kv://openai/dev/api_key"),
            ("kv://openai/dev/api_key", "kv://openai/dev/api_key"),
            ("slack_bot", "kv://slack_bot"),
            ("a/b#c", "kv://a/b#c"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize_ref(input).as_deref(), Ok(want), "{input}");
        }
        let bad = [
            ("vault://secret/x", RefError::OtherScheme),
            ("", RefError::Empty),
            ("kv://", RefError::Empty),
            ("a b", RefError::BadCharacter),
            ("a\nb", RefError::BadCharacter),
            ("/a", RefError::EmptySegment),
            ("a//b", RefError::EmptySegment),
            ("a/", RefError::EmptySegment),
        ];
        for (input, want) in bad {
            assert_eq!(normalize_ref(input), Err(want), "{input:?}");
        }
        assert_eq!(
            normalize_ref(&"x".repeat(MAX_PATH_LEN + 1)),
            Err(RefError::TooLong)
        );
    }

    #[test]
    fn rfc3339_dates() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(secs), want, "{secs}");
        }
    }
}
