//! Redaction of secret values from byte streams: what keywarden applies to
//! everything the child writes (and `keywarden redact`/`scan` to files), so
//! that no secret, nor its encoded form, gets past it (invariant 1).
//!
//! Pure: no I/O, no `unsafe`. A [`Matcher`] is built once from the resolved
//! secrets; each output stream then gets a [`Stream`], or a whole buffer goes
//! through [`Matcher::redact_all`]. [`live`] holds what a running command
//! needs around it: the matcher for a plan's values, swapped on rotation,
//! and the relay's filter. Everything is bytes: the input need not
//! be UTF-8, and bytes outside masked spans pass through unchanged.
//!
//! ## Patterns
//! For each secret value of at least [`MIN_SECRET_LEN`] (8) bytes:
//! - the value itself, and each line of a multi-line value (split on `\n`,
//!   one trailing `\r` trimmed) that is itself at least 8 bytes long, except
//!   PEM armor lines (`-----BEGIN ...`/`-----END ...`), which are the same
//!   in every key and so no secret;
//! - its encoded forms, each kept only if at least [`MIN_ENCODED_LEN`] (12)
//!   bytes long, since short fragments of encoded text match innocent
//!   output: base64 and base64url, padded and unpadded, plus for each
//!   alphabet the three forms of the value inside a larger encoded blob (at
//!   byte offset 0, 1 or 2 of a 3-byte group, without the edge characters
//!   that depend on neighbouring bytes); hex, lower and upper case;
//!   percent-encoding of every byte that is not RFC 3986 unreserved, with
//!   upper and lower case hex (and with `+` for space when the value has
//!   one); JSON string escaping as serde_json writes it (`\"`, `\\`, `\n`,
//!   `\r`, `\t`, `\b`, `\f`, `\u00xx`), plus the `\/`, Go's HTML-safe
//!   `\u003c`/`\u003e`/`\u0026` and the ASCII-only `\uXXXX` variants when they
//!   differ.
//!
//! Values shorter than 8 bytes are not masked at all: a short value such as
//! `true` or `1234` would mask innocent output everywhere. [`Matcher::too_short`]
//! lists them so `check` can warn.
//!
//! ## Semantics
//! Let O be the set of every occurrence `[start, end)` of every pattern in
//! the whole input, overlapping ones included. The masked spans are the
//! connected components of the union of O, where two occurrences connect
//! when they share at least one byte: a secret that is a prefix of another,
//! two overlapping secrets, or a chain of overlaps all become one span.
//! Occurrences that only touch (one ends where the next starts) give two
//! spans, and so two masks side by side. Each span becomes one mask, named
//! by the longest occurrence that starts where the span starts, and counts
//! once for that id in [`Counts`]. Bytes outside every span are copied
//! unchanged. [`Stream`] produces exactly the same bytes as
//! [`Matcher::redact_all`] on the concatenated input, however it is split,
//! and holds back only a tail that is still a proper prefix of some pattern
//! (fewer than [`Matcher::max_pattern_len`] bytes).
//!
//! ## Cost
//! Building costs about 20 ms per 1,000 secrets. Scanning tests one window
//! every few bytes (every 25 bytes when all patterns are 32 bytes or
//! longer), so it runs at several GB/s on cached log text; a secret shorter
//! than 32 bytes adds a second, denser pass for the short patterns only
//! (2–3 GB/s with one 8-byte secret among 1,000 long ones).
//! `cargo bench --bench redact` prints the figures next to a plain copy.

#![forbid(unsafe_code)]

mod encode;
pub mod live;
mod matcher;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

pub use matcher::{Matcher, Span};
pub use stream::Stream;

/// Values shorter than this many bytes are not masked (and lines of a
/// multi-line value shorter than this are not masked on their own).
pub const MIN_SECRET_LEN: usize = 8;

/// Encoded forms shorter than this many bytes are not masked.
pub const MIN_ENCODED_LEN: usize = 12;

/// One secret to mask: its registry id (used in the mask text) and its value.
#[derive(Clone, Copy)]
pub struct Secret<'a> {
    pub id: &'a str,
    pub value: &'a [u8],
}

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("len", &self.value.len())
            .finish()
    }
}

/// The text that replaces a masked span: a format in which every `{id}`
/// becomes the secret's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    format: String,
}

impl Mask {
    /// `[REDACTED:{id}]`.
    pub const DEFAULT_FORMAT: &'static str = "[REDACTED:{id}]";

    pub fn new(format: &str) -> Mask {
        Mask {
            format: format.to_owned(),
        }
    }

    /// The mask text for one id.
    pub fn render(&self, id: &str) -> String {
        self.format.replace("{id}", id)
    }

    pub fn format(&self) -> &str {
        &self.format
    }
}

impl Default for Mask {
    fn default() -> Self {
        Mask::new(Mask::DEFAULT_FORMAT)
    }
}

/// How many masks were written for each secret id. Holds no values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    by_id: BTreeMap<Box<str>, u64>,
}

impl Counts {
    /// Masks written for `id` (0 if none).
    pub fn get(&self, id: &str) -> u64 {
        self.by_id.get(id).copied().unwrap_or(0)
    }

    /// Masks written in all.
    pub fn total(&self) -> u64 {
        self.by_id.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// `(id, count)` for every id masked at least once, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.by_id.iter().map(|(id, &n)| (&**id, n))
    }

    /// Adds the counts of `other` (for example of several streams).
    pub fn merge(&mut self, other: &Counts) {
        for (id, n) in other.iter() {
            self.add_n(id, n);
        }
    }

    fn add(&mut self, id: &str) {
        self.add_n(id, 1);
    }

    fn add_n(&mut self, id: &str, n: u64) {
        match self.by_id.get_mut(id) {
            Some(count) => *count += n,
            None => {
                self.by_id.insert(id.into(), n);
            }
        }
    }
}
