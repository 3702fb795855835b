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
//! For each secret value of at least [`MIN_SECRET_LEN`] (8) bytes, and for
//! each value derived from it (without whitespace at its end, or at both
//! ends, as a child that `strip()`s it prints it; the inner value of one
//! wrapped in double or single quotes), when that is 8 bytes or more:
//! - the value, every prefix and every suffix of it that is at least 16
//!   bytes and at least half its length (a log line cut short, a debug
//!   `key[:24]`), and each line of a multi-line value (split on `\n`, one
//!   trailing `\r` trimmed) of 8 bytes or more, except PEM armor lines;
//! - base64 and base64url, padded or not, of the value on its own, of the
//!   value without its first one or two bytes, and of the value inside a
//!   larger encoded blob at each of the three byte alignments (every
//!   character that depends on the value's bits alone); and wrapped at 64
//!   and 76 columns with `\n` or `\r\n` line ends (PEM, MIME, `base64`);
//! - hex in either case (mixed case too);
//! - percent-encoding as RFC 3986 (unreserved characters only, upper or
//!   lower case hex), Python `quote` (keeps `/`) and `quote_plus`,
//!   JavaScript `encodeURIComponent` (keeps `!'()*`), WHATWG form encoding
//!   and PHP `urlencode` write it;
//! - JSON string escaping as serde_json writes it, plus the `\/`, HTML-safe
//!   and ASCII-only variants, and JSON nested once in a JSON string;
//! - XML/HTML entities (`SecurityElement.Escape`, text-only, Python, Go and
//!   PHP quote styles), quote doubling (`''`, `""`), `"` as `\"` (the GitHub
//!   Actions runner's command-line escape), and each `&`-separated section
//!   of 8 bytes or more that PowerShell colour codes split out (with the
//!   runner's two sections around the last `&` or the first `&+`).
//!
//! Every encoded form of a masked value is masked, however short. Values
//! shorter than 8 bytes are not masked at all: a short value such as `true`
//! or `1234` would mask innocent output everywhere.
//! [`Matcher::too_short`] lists them so `check` can warn.
//!
//! Not covered: a secret inside a larger base64 blob that is also wrapped
//! into lines (each line holds a piece; pieces of a value's encoding that
//! are not themselves prefixes or suffixes of a form are not masked), and
//! truncated copies of encoded forms.
//!
//! Most forms are not stored one by one. A pattern is a core that must
//! occur in full plus bytes it may extend over on either side (see
//! `encode::Form`): one pattern holds a value with all its long prefixes,
//! one all its long suffixes, one each base64 shift with its padding and
//! straddling characters. Patterns compare in a flavour (exact, hex in
//! either case, base64 in either alphabet). The scan keys each window by
//! its bytes with bit 0x20 set (one OR: ASCII lower case), so hex upper and
//! lower case share one index entry; a base64 pattern gets one entry per
//! mix of `+`/`-` and `/`/`_` in a window (usually none). Text escapes that
//! change nothing (an alphanumeric value's JSON, XML or percent form) are
//! not stored.
//!
//! ## Semantics
//! A pattern with back bytes `b`, core `c` and forward bytes `f` stands for
//! every `b[j..] + c + f[..i]`. Let O be the set of every occurrence
//! `[start, end)` of every pattern in the whole input, overlapping ones
//! included. The masked spans are the
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
//! A 40-byte alphanumeric secret makes 8 patterns (the value's two, three
//! base64 shifts and hex indexed once each, plus two wrapped forms only for
//! values over 48 bytes), about 600 bytes of pattern text and, in the index,
//! one entry per core for each sampled offset. Building costs a few
//! microseconds per secret; `cargo bench --bench redact` prints the build
//! time, the heap and the scan speed next to a plain copy. Scanning tests one
//! window every few bytes: the step is the shortest core of a tier minus 7
//! (at most 25), and the cores of truncated copies (16 bytes, or half a
//! longer value) set it for secrets under 64 bytes. A secret shorter than 16
//! bytes adds a denser pass with 4-byte windows.
//! Relaying also checks, at the end of each write, which tail could begin a
//! pattern: every place a pattern can start is kept in a sorted list (a
//! value has one per suffix long enough), behind small bit sets and a Bloom
//! filter.

#![forbid(unsafe_code)]

mod encode;
mod hold;
pub mod live;
mod matcher;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

pub use matcher::{Builder, Matcher, Span};
pub use stream::Stream;

/// Values shorter than this many bytes are not masked (and lines of a
/// multi-line value shorter than this are not masked on their own).
pub const MIN_SECRET_LEN: usize = 8;

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

/// Where a stretch of a stream's output comes from (see
/// [`Stream::push_pieces`]): a range of the output buffer, or a range of
/// the input pushed, to be written unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Out(std::ops::Range<usize>),
    In(std::ops::Range<usize>),
}

impl Piece {
    fn is_empty(&self) -> bool {
        match self {
            Piece::Out(r) | Piece::In(r) => r.is_empty(),
        }
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
