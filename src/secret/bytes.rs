//! [`SecretBytes`]: the only place secret bytes live.
//!
//! Built on `secrecy`/`zeroize`: no `Clone`, `Display` or `Serialize`;
//! `Debug` prints `<redacted>`; the buffer is locked into RAM where the
//! system allows and wiped when dropped.

use std::fmt;

use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use zeroize::Zeroize;

use crate::sys;

/// Secret bytes, locked in memory and zeroized on drop.
pub struct SecretBytes {
    inner: SecretBox<[u8]>,
    locked: bool,
}

impl SecretBytes {
    /// Take ownership of `bytes`, copying them into an exact-size buffer and
    /// wiping the whole capacity of the vector they came in.
    pub fn from_vec(mut bytes: Vec<u8>) -> Self {
        let boxed: Box<[u8]> = Box::from(bytes.as_slice());
        bytes.zeroize();
        let inner = SecretBox::new(boxed);
        let locked = sys::lock_memory(inner.expose_secret());
        SecretBytes { inner, locked }
    }

    /// Copy `bytes` into a new secret (the caller wipes its own copy).
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::from_vec(bytes.to_vec())
    }

    /// The secret bytes. Every call site is a place a secret is used.
    pub fn expose(&self) -> &[u8] {
        self.inner.expose_secret()
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A second, independently locked copy (explicit: there is no `Clone`).
    pub fn duplicate(&self) -> Self {
        Self::copy_from(self.expose())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        // Wipe while the pages are still locked, then release the lock.
        self.inner.expose_secret_mut().zeroize();
        if self.locked {
            sys::unlock_memory(self.inner.expose_secret());
        }
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

impl PartialEq<[u8]> for SecretBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.expose() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let value = format!("canary-{}", std::process::id());
        let s = SecretBytes::copy_from(value.as_bytes());
        let printed = format!("{s:?} {:?}", vec![&s]);
        assert!(!printed.contains(&value), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn from_vec_keeps_the_bytes_and_duplicate_is_independent() {
        let s = SecretBytes::from_vec(b"abc\x00\xff".to_vec());
        assert_eq!(s.expose(), b"abc\x00\xff");
        let d = s.duplicate();
        drop(s);
        assert_eq!(d.expose(), b"abc\x00\xff");
        assert_eq!(d.len(), 5);
    }
}
