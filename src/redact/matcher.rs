//! The immutable multi-pattern matcher: builds every pattern of every secret
//! once, then finds all occurrences in a byte slice with a sampled q-gram
//! filter (Wu–Manber family) and verifies candidates exactly. The occurrences
//! are handed, in order of start, to a [`Sink`] that merges them into masked
//! spans; both the one-shot path and [`super::Stream`] use the same scanner and
//! the same merge rule, which is why their outputs agree byte for byte.
//!
//! Why one file of over 900 lines: the build (patterns, tiers, index) and
//! the scan share the index's layout, which is easy to break when the two
//! halves are read apart; encodings live in `encode.rs`, streaming in
//! `stream.rs`, the tests in `tests.rs`.
//!
//! ## The filter
//! Patterns are split by length into at most two tiers: under
//! [`SHORT_TIER_BELOW`] (16) bytes, and the rest. In a tier whose shortest
//! pattern has `min_len` bytes, let `q` = 8 (4 when `min_len` < 16),
//! `sample = min(min_len, q + MAX_STEP - 1)` and `step = sample - q + 1`
//! (25 for the long tier). The scanner loads the `q`-byte window at positions
//! `0, step, 2*step, ...` of the haystack. Any occurrence starting at `s`
//! covers `[s, s + sample)`, which holds exactly one tested window, at some
//! offset `o` in `0..step` of the pattern. So the tier's index holds, for each
//! group of patterns sharing their first `sample` bytes and each `o`, the
//! `q` bytes at `o`, as the scan loads them: each byte ORed with 0x20, and
//! for base64 patterns every mix of the two alphabets (`window_keys`). A
//! window is first tested against a [`Probe`] (one bit in
//! a table of up to 1 MiB, or a blocked Bloom filter for large tiers); a hit
//! looks up a bucketed table of `(group, o)` candidates, each a 32-bit
//! word that also keeps as many bits of the q-gram's hash as the ref leaves
//! free (8 at 50,000 secrets), checked first; then the bytes are compared.
//!
//! One test per `step` bytes, so the cost follows the shortest pattern of
//! each tier. The split keeps a few short secrets (and their encodings) from
//! dragging every long pattern down to a short step, and keeps the many hex
//! 4-grams of long patterns (hex request ids are common in logs) out of a
//! 4-byte filter.

use std::collections::HashMap;
use std::fmt;

use zeroize::Zeroizing;

use super::encode::{self, fold, Flavor, Form};
use super::hold::{LongEnds, LongPattern, Work, LONG_TAIL};
use super::{Counts, Mask, Piece, Secret, MIN_SECRET_LEN};
use crate::sys::{prefer_huge_pages, prefetch};

/// Patterns shorter than this go to their own tier.
pub(crate) const SHORT_TIER_BELOW: usize = 16;
const MAX_TIERS: usize = 2;
/// Largest distance between two tested windows: with 8-byte grams the long
/// tier samples exactly the first 32 bytes of a core that long (shorter cores
/// make the step shorter).
/// Each step costs one index entry per group of patterns.
const MAX_STEP: usize = 25;
/// Index entries per bucket, on average (at most twice this, by rounding):
/// 32 bytes of entries, in one or two cache lines; fewer would make the
/// bucket table larger for no faster a lookup.
const KEYS_PER_BUCKET: usize = 8;
/// Bloom filter bits per index entry, before rounding up to a power of two.
/// Each false positive costs a lookup in the index, out of cache with many
/// secrets: at 10,000 secrets 16 bits (0.3 % of windows pass, against
/// 2.9 % with 8) scan random base64 text ~10 % faster end to end, for
/// ~84 bytes a secret.
const BLOOM_BITS_PER_ENTRY: usize = 16;
/// Bytes scanned (by every tier) between two flushes of plain bytes to the
/// output, so the copy reads bytes the scan has just brought into cache.
/// Tests use tiny blocks so that property tests cross many block edges.
const FLUSH_BLOCK: usize = if cfg!(test) { 64 } else { 16 * 1024 };
/// Offsets are packed in the low bits of an index entry.
const OFFSET_BITS: u32 = 5;
/// Patterns from which the index and the start list are built on two
/// threads (about 700 secrets); below, a thread costs more than it saves.
const PARALLEL_BUILD_FROM: usize = 4096;

/// One pattern: a slice of the arena (`back` bytes, the core, `fwd` bytes;
/// see [`Form`]), how it compares, and the secret id it masks.
/// 20 bytes: the flavour takes the low bits of the id's word (there are
/// 300,000 patterns at 50,000 secrets).
#[derive(Clone, Copy)]
struct Pat {
    start: u32,
    len: u32,
    back: u32,
    fwd: u32,
    /// `id << FLAVOR_BITS | flavour`; the id is an index into
    /// `Matcher::ids`.
    tag: u32,
}

const FLAVOR_BITS: u32 = 2;

impl Pat {
    fn core_len(&self) -> usize {
        (self.len - self.back - self.fwd) as usize
    }

    fn tag(id: u32, flavor: Flavor) -> u32 {
        assert!(id < 1 << (32 - FLAVOR_BITS), "fewer than 2^30 secrets");
        id << FLAVOR_BITS
            | match flavor {
                Flavor::Exact => 0,
                Flavor::Hex => 1,
                Flavor::Base64 => 2,
            }
    }

    /// Index into `Matcher::ids`.
    #[inline(always)]
    fn id(&self) -> u32 {
        self.tag >> FLAVOR_BITS
    }

    #[inline(always)]
    fn flavor(&self) -> Flavor {
        match self.tag & ((1 << FLAVOR_BITS) - 1) {
            0 => Flavor::Exact,
            1 => Flavor::Hex,
            _ => Flavor::Base64,
        }
    }
}

/// The sampled q-gram index of one tier of patterns.
struct Tier {
    /// Indices into `Matcher::pats` of this tier's patterns, ordered by the
    /// folded first `sample` bytes of their cores.
    members: Vec<u32>,
    /// Where each group of `members` begins, and then where the last one
    /// ends (a group: members whose cores share their folded first
    /// `sample` bytes). Group `g` is `members[groups[g]..groups[g + 1]]`.
    groups: Vec<u32>,
    q: usize,
    sample: usize,
    step: usize,
    /// Longest backward extension of a member: an occurrence can start this
    /// many bytes before its core.
    back_max: usize,
    /// First test of a window: might its q-gram be indexed?
    probe: Probe,
    /// Bucket `b` holds entries `heads[b]..heads[b + 1]`.
    heads: Vec<u32>,
    bucket_shift: u32,
    /// Per entry, in one word: the ref `group << OFFSET_BITS | offset` in
    /// the low `ref_bits` bits, and as many bits of the q-gram's hash as
    /// the rest holds, to check before the bytes (derived, wiped on drop).
    entries: Zeroizing<Vec<u32>>,
    ref_bits: u32,
}

/// A blocked Bloom filter: each key sets 3 bits of one 64-bit word, so a
/// test costs one memory access. Derived from secrets, so wiped on drop.
/// The word is the hash's top bits scaled to the table (a multiply), so a
/// table can have any size: the probe's keeps a power of two (the scan's
/// speed was measured with those), the prefixes' is sized to its keys.
struct Bloom {
    words: Zeroizing<Vec<u64>>,
}

impl Bloom {
    /// `bits_per_key` bits a key, rounded up to a power of two in all.
    fn new(keys: usize, bits_per_key: usize) -> Bloom {
        Bloom::of_words((keys * bits_per_key / 64).next_power_of_two())
    }

    /// `bits_per_key` bits a key, to the word.
    fn exact(keys: usize, bits_per_key: usize) -> Bloom {
        Bloom::of_words((keys * bits_per_key).div_ceil(64))
    }

    fn of_words(words: usize) -> Bloom {
        let mut table = Zeroizing::new(vec![0; words.max(2)]);
        prefer_huge_pages(&mut table);
        Bloom { words: table }
    }

    /// The word of hash `h`: `h >> (64 - k)` for a table of `2^k` words.
    #[inline(always)]
    fn word(&self, h: u64) -> usize {
        ((u128::from(h) * self.words.len() as u128) >> 64) as usize
    }

    fn insert(&mut self, h: u64) {
        let w = self.word(h);
        self.words[w] |= bloom_bits(h);
    }

    /// Might `h` have been inserted?
    #[inline(always)]
    fn maybe(&self, h: u64) -> bool {
        let bits = bloom_bits(h);
        self.words[self.word(h)] & bits == bits
    }
}

/// The first test of a window. A tier with few keys uses one bit in a table
/// that stays in L1 cache, addressed by a single multiply, so a window costs
/// a few instructions; a large tier uses the blocked Bloom filter over the
/// full hash, whose false positives stay rare at any size.
enum Probe {
    /// One bit per hash in a table of at least `SMALL_PROBE_BITS_PER_KEY`
    /// bits per key, addressed by the top bits of a product (`shift`).
    Small {
        table: Zeroizing<Vec<u64>>,
        shift: u32,
    },
    Large(Bloom),
}

impl Probe {
    /// Adds a key (`h` is its [`hash`]).
    fn insert(&mut self, key: u64, h: u64) {
        match self {
            Probe::Small { table, shift } => set_bit(table, small_probe_index(key, *shift)),
            Probe::Large(bloom) => bloom.insert(h),
        }
    }

    /// The probe's table.
    fn words_mut(&mut self) -> &mut [u64] {
        match self {
            Probe::Small { table, .. } => table,
            Probe::Large(bloom) => &mut bloom.words,
        }
    }

    /// Prefetches the word [`Probe::insert`] of that key writes.
    fn prefetch(&self, key: u64, h: u64) {
        match self {
            Probe::Small { table, shift } => prefetch(table, small_probe_index(key, *shift) / 64),
            Probe::Large(bloom) => prefetch(&bloom.words, bloom.word(h)),
        }
    }
}

/// A single-bit table gets 64 bits per key (1/64 of the windows pass by
/// chance), at least 32 (1/32) when that keeps it within the largest size.
const SMALL_PROBE_BITS_PER_KEY: usize = 64;
const SMALL_PROBE_MIN_BITS_PER_KEY: usize = 32;
/// Largest single-bit table, in bits (1 MiB, a core's L2 here); larger key
/// sets use the Bloom filter. Measured faster up to about 1,000 secrets.
const SMALL_PROBE_MAX_BITS: usize = 1 << 23;

/// Index into a small probe table.
#[inline(always)]
fn small_probe_index(gram: u64, shift: u32) -> usize {
    (gram.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
}

/// Receives occurrences from [`Matcher::scan`].
pub(crate) trait Sink {
    /// An occurrence `[start, end)` of pattern `pat` (absolute positions).
    /// Calls come in order of `start`; for one start, the longest first.
    fn on_match(&mut self, start: u64, end: u64, pat: u32);
    /// Every occurrence starting before `upto` has been reported.
    fn progress(&mut self, upto: u64);
}

/// Every secret's patterns, compiled for scanning. Immutable once built;
/// share it between threads with `Arc`.
pub struct Matcher {
    /// Pattern bytes, concatenated in sorted order; derived secrets.
    arena: Zeroizing<Vec<u8>>,
    /// Patterns sorted by their bytes, no two equal.
    pats: Vec<Pat>,
    /// Every place an occurrence can start: `(pattern, j)` for each `j` in
    /// `0..=back`, ordered by the folded bytes of the pattern from `j`. For
    /// the hold rule.
    starts: StartList,
    /// Secret ids, each once, and the rendered mask of each.
    ids: Packed,
    masks: Packed,
    /// One or two tiers, by core length.
    tiers: Vec<Tier>,
    /// Shortest core.
    min_len: usize,
    /// Longest pattern, extensions included.
    max_len: usize,
    /// For the hold rule, over every start (folded): sets of the first byte
    /// and the first two bytes, and a Bloom filter of the first 4 and first
    /// 8 bytes. Derived from secrets, so wiped on drop.
    first1: Zeroizing<Vec<u64>>,
    first2: Zeroizing<Vec<u64>>,
    prefixes: Bloom,
    /// For the hold rule, tails longer than [`LONG_TAIL`] (see
    /// [`super::hold`]).
    long_ends: LongEnds,
}

/// A matcher being gathered: the forms of the secrets added so far, their
/// bytes one after another in one buffer (no allocation kept per form).
/// Secrets can be added in parts, so that the forms of the first
/// part are made while the rest is still being gathered.
#[derive(Default)]
pub struct Builder {
    /// Id of each secret added, in order (repeats included).
    ids: Packed,
    /// Form bytes; derived secrets.
    bytes: Zeroizing<Vec<u8>>,
    forms: Vec<FormAt>,
    scratch: Vec<Form>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("secrets", &self.ids.len())
            .field("forms", &self.forms.len())
            .finish()
    }
}

/// One form in [`Builder::bytes`]: where, its shape (see [`Form`]), and
/// which secret (in the order added) it comes from.
struct FormAt {
    start: u32,
    len: u32,
    back: u32,
    fwd: u32,
    flavor: Flavor,
    secret: u32,
}

impl Builder {
    /// Make the forms of `secrets` (those at least [`MIN_SECRET_LEN`]
    /// bytes long), after those of the secrets added before.
    pub fn add(&mut self, secrets: &[Secret<'_>]) {
        // Room for the usual forms (a 40-byte value makes 6 forms of ~320
        // bytes in all), so that the buffer seldom moves.
        let values: usize = secrets.iter().map(|s| s.value.len()).sum();
        reserve_wiped(&mut self.bytes, FORM_BYTES_PER_VALUE_BYTE * values);
        self.forms.reserve(FORMS_PER_VALUE * secrets.len());
        self.ids
            .reserve(secrets.len(), secrets.iter().map(|s| s.id.len()).sum());
        for secret in secrets {
            if secret.value.len() < MIN_SECRET_LEN {
                continue;
            }
            let index = index_u32(self.ids.len());
            self.ids.push(secret.id);
            encode::forms(secret.value, &mut self.scratch);
            for form in self.scratch.drain(..) {
                // A value's prefixes and suffixes have the same bytes.
                let start = match self.forms.last() {
                    Some(last)
                        if last.secret == index
                            && self.bytes
                                [last.start as usize..(last.start + last.len) as usize]
                                == form.bytes[..] =>
                    {
                        last.start
                    }
                    _ => {
                        extend_wiped(&mut self.bytes, &form.bytes);
                        index_u32(self.bytes.len() - form.bytes.len())
                    }
                };
                self.forms.push(FormAt {
                    start,
                    len: index_u32(form.bytes.len()),
                    back: index_u32(form.back),
                    fwd: index_u32(form.fwd),
                    flavor: form.flavor,
                    secret: index,
                });
            }
        }
    }

    /// The matcher of every secret added. When two secrets yield the same
    /// pattern, the first added names the mask.
    pub fn finish(self, mask: &Mask) -> Matcher {
        self.finish_settling(mask, || {})
    }

    /// [`Builder::finish`], calling `settle` once the forms gathered are
    /// dropped, before the index is built, and in each tier before its
    /// entries are made: the caller's chance to hand back memory freed
    /// until then (see `sys::release_free_memory`), so that the index's
    /// tables do not come on top of it.
    pub fn finish_settling(self, mask: &Mask, settle: fn()) -> Matcher {
        Matcher::from_forms(self, mask, PARALLEL_BUILD_FROM, settle)
    }

    #[cfg(test)]
    fn finish_with(self, mask: &Mask, parallel_from: usize) -> Matcher {
        Matcher::from_forms(self, mask, parallel_from, || {})
    }
}

/// Bytes of forms a byte of value makes, and forms a value makes, as a
/// guess (the truncated forms share their bytes; base64 is 4/3, hex 2).
const FORM_BYTES_PER_VALUE_BYTE: usize = 9;
const FORMS_PER_VALUE: usize = 6;

/// Appends `bytes` to `buf`, growing it by moving to a new buffer of twice
/// the size: a `Vec`'s own growth would free the old bytes unwiped.
fn extend_wiped(buf: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    if buf.capacity() - buf.len() < bytes.len() {
        let size = (buf.len() + bytes.len()).max(2 * buf.capacity());
        reserve_wiped(buf, size - buf.len());
    }
    buf.extend_from_slice(bytes);
}

/// Makes room for `additional` more bytes in `buf` (at least 4 KiB), by
/// moving it to a new buffer when it has less (see [`extend_wiped`]).
fn reserve_wiped(buf: &mut Zeroizing<Vec<u8>>, additional: usize) {
    if buf.capacity() - buf.len() < additional {
        let size = (buf.len() + additional).max(4096);
        let mut bigger = Zeroizing::new(Vec::with_capacity(size));
        prefer_huge_pages(bigger.spare_capacity_mut());
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
}

/// Strings one after another in one buffer, each found by where it ends:
/// one allocation for thousands of ids, not one each.
#[derive(Default)]
struct Packed {
    text: String,
    ends: Vec<u32>,
}

impl Packed {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(index_u32(self.text.len()));
    }

    fn reserve(&mut self, strings: usize, bytes: usize) {
        self.ends.reserve(strings);
        self.text.reserve(bytes);
    }

    fn shrink_to_fit(&mut self) {
        self.ends.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &str {
        let start = i.checked_sub(1).map_or(0, |k| self.ends[k] as usize);
        &self.text[start..self.ends[i] as usize]
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }

    fn heap_size(&self) -> usize {
        self.text.capacity() + 4 * self.ends.capacity()
    }
}

/// Starts `(pattern, j)` in order: two to a word, `pattern << j_bits | j`
/// in each half, when those fit in 32 bits; else one to a word,
/// `pattern << 32 | j`. `j` goes up to half the longest value (its
/// truncated copies start anywhere in its first half): with 40-byte values
/// 5 bits, leaving room for 2^27 patterns; a 100 KiB value takes 16.
struct StartList {
    words: Vec<u64>,
    len: usize,
    /// The bits of `j` in a half word; `None`: one start a word.
    j_bits: Option<u32>,
}

impl StartList {
    /// The start list from `words` sorted in order, each turned into its
    /// start by `start_of`, in place. `words` holds secret bytes until
    /// then: the words it no longer needs are wiped before it shrinks.
    fn pack(
        words: &mut Zeroizing<Vec<u64>>,
        start_of: impl Fn(u64) -> (u32, u32),
        p_bits: u32,
        j_bits: u32,
    ) -> StartList {
        let len = words.len();
        if p_bits + j_bits > 32 {
            for w in words.iter_mut() {
                let (p, j) = start_of(*w);
                *w = u64::from(p) << 32 | u64::from(j);
            }
            return StartList {
                words: std::mem::take(&mut **words),
                len,
                j_bits: None,
            };
        }
        // Word k/2 was read at step k/2 <= k: it is free to write at k.
        for k in 0..len {
            let (p, j) = start_of(words[k]);
            let half = u64::from(p) << j_bits | u64::from(j);
            if k % 2 == 0 {
                words[k / 2] = half;
            } else {
                words[k / 2] |= half << 32;
            }
        }
        let used = len.div_ceil(2);
        words[used..].fill(0);
        words.truncate(used);
        words.shrink_to_fit();
        StartList {
            words: std::mem::take(&mut **words),
            len,
            j_bits: Some(j_bits),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Start `k`: (pattern, j).
    #[inline]
    fn get(&self, k: usize) -> (u32, u32) {
        match self.j_bits {
            Some(j_bits) => {
                let half = (self.words[k / 2] >> (32 * (k % 2))) as u32;
                let j_mask = u32::MAX.checked_shr(32 - j_bits).unwrap_or(0);
                (half.checked_shr(j_bits).unwrap_or(0), half & j_mask)
            }
            None => {
                let w = self.words[k];
                ((w >> 32) as u32, w as u32)
            }
        }
    }

    /// The first `k` for which `before(start k)` is false (the list is
    /// partitioned by it).
    fn partition_point(&self, before: impl Fn((u32, u32)) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn heap_size(&self) -> usize {
        self.words.capacity() * 8
    }
}

/// The hold rule's tables (see [`Matcher`]'s fields of the same names).
struct Starts {
    starts: StartList,
    first1: Zeroizing<Vec<u64>>,
    first2: Zeroizing<Vec<u64>>,
    prefixes: Bloom,
}

impl Starts {
    /// Every place an occurrence of `pats` can start, sorted, and the sets
    /// of their first bytes.
    fn build(pats: &[Pat], arena: &[u8], max_len: usize) -> Starts {
        let full = |p: &Pat| &arena[p.start as usize..(p.start + p.len) as usize];
        let n_starts: usize = (0..pats.len())
            .map(|i| (pats[i].back as usize + 1).saturating_sub(first_start(pats, i)))
            .sum();
        // One word a start: as many of its first folded bytes as fit above
        // the start itself (pattern and offset), so that sorting the words
        // sorts the starts by those bytes; runs that agree on them are then
        // sorted by all their bytes, and the words become the starts in
        // place. The key bits are secret bytes: wiped on drop.
        let j_bits = bits_for(pats.iter().map(|p| p.back as usize).max().unwrap_or(0));
        let p_bits = bits_for(pats.len().saturating_sub(1));
        let id_bits = p_bits + j_bits;
        let key_mask = u64::MAX.checked_shl(id_bits).unwrap_or(0);
        let start_of = move |word: u64| -> (u32, u32) {
            let id = word & !key_mask;
            ((id >> j_bits) as u32, (id & ((1 << j_bits) - 1)) as u32)
        };
        let mut keyed: Zeroizing<Vec<u64>> = Zeroizing::new(Vec::with_capacity(n_starts));
        let mut first1 = Zeroizing::new(vec![0u64; 256 / 64]);
        let mut first2 = Zeroizing::new(vec![0u64; 65536 / 64]);
        // Tested only at the end of each chunk a stream is given, where a
        // false positive costs one binary search of `starts`: 8 bits a
        // key, not rounded up (a power of two was 1.4 MB more at 50,000
        // secrets).
        let mut prefixes = Bloom::exact(2 * n_starts, 8);
        // Each pattern folded once, with 8 zero bytes after it for keys.
        let mut folded: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(max_len + 8));
        for (i, p) in pats.iter().enumerate() {
            let bytes = full(p);
            folded.clear();
            folded.extend(bytes.iter().map(|&b| fold(b)));
            folded.extend_from_slice(&[0; 8]);
            for j in first_start(pats, i)..=p.back as usize {
                let word = |at: usize| {
                    let w: [u8; 8] = folded[at..at + 8].try_into().expect("8 bytes");
                    w
                };
                let key = word(j);
                let id = (i as u64) << j_bits | j as u64;
                keyed.push(u64::from_be_bytes(key) & key_mask | id);
                set_bit(&mut first1, usize::from(key[0]));
                set_bit(&mut first2, usize::from(key[0]) << 8 | usize::from(key[1]));
                let rest = bytes.len() - j;
                if rest > 4 {
                    let mut four = key;
                    four[4..].fill(0);
                    prefixes.insert(folded_prefix_hash(u64::from_le_bytes(four), 4));
                }
                if rest > 8 {
                    prefixes.insert(folded_prefix_hash(u64::from_le_bytes(key), 8));
                }
            }
        }
        keyed.sort_unstable();
        let rest = |word: u64| {
            let (p, j) = start_of(word);
            &full(&pats[p as usize])[j as usize..]
        };
        for_each_run_by(
            &mut keyed,
            |&w| w & key_mask,
            |run| run.sort_unstable_by(|&a, &b| folded_cmp(rest(a), rest(b))),
        );
        let starts = StartList::pack(&mut keyed, start_of, p_bits, j_bits);
        Starts {
            starts,
            first1,
            first2,
            prefixes,
        }
    }
}

impl fmt::Debug for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tier")
            .field("patterns", &self.members.len())
            .field("groups", &(self.groups.len() - 1))
            .field("q", &self.q)
            .field("step", &self.step)
            .field("small_probe", &matches!(self.probe, Probe::Small { .. }))
            .finish()
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts and sizes only: the patterns are derived secrets.
        f.debug_struct("Matcher")
            .field("ids", &self.ids.len())
            .field("patterns", &self.pats.len())
            .field("min_len", &self.min_len)
            .field("max_len", &self.max_len)
            .field("tiers", &self.tiers)
            .finish()
    }
}

/// An occurrence: the span `[start, end)` of the input and the id it masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span<'m> {
    pub start: usize,
    pub end: usize,
    pub id: &'m str,
}

impl Matcher {
    /// Builds the patterns of every secret at least [`MIN_SECRET_LEN`] bytes
    /// long (see [`Matcher::too_short`] for the others). When two secrets
    /// yield the same pattern, the first in `secrets` names the mask.
    pub fn new(secrets: &[Secret<'_>], mask: &Mask) -> Matcher {
        let mut builder = Builder::default();
        builder.add(secrets);
        builder.finish(mask)
    }

    /// [`Matcher::new`], on two threads from `parallel_from` patterns.
    #[cfg(test)]
    pub(super) fn build(secrets: &[Secret<'_>], mask: &Mask, parallel_from: usize) -> Matcher {
        let mut builder = Builder::default();
        builder.add(secrets);
        builder.finish_with(mask, parallel_from)
    }

    fn from_forms(built: Builder, mask: &Mask, parallel_from: usize, settle: fn()) -> Matcher {
        let Builder {
            ids: all_ids,
            bytes: gathered,
            forms,
            ..
        } = built;
        // A secret id that repeats names one mask: each form's secret
        // becomes the index of its id's first appearance.
        let mut first: HashMap<&str, u32> = HashMap::with_capacity(all_ids.len());
        let mut kept = vec![false; all_ids.len()];
        let remap: Vec<u32> = all_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let next = index_u32(first.len());
                let at = *first.entry(id).or_insert(next);
                kept[i] = at == next;
                at
            })
            .collect();
        drop(first);
        let mut ids = Packed::default();
        for (id, &keep) in all_ids.iter().zip(&kept) {
            if keep {
                ids.push(id);
            }
        }
        ids.shrink_to_fit();
        drop(all_ids);
        drop(kept);

        // Sort by bytes, then shape (the first secret wins a tie), and drop
        // repeats. The first 8 bytes as a number decide most comparisons:
        // sort (key, index) pairs, then order each run of equal keys.
        let bytes_of = |f: &FormAt| &gathered[f.start as usize..(f.start + f.len) as usize];
        let shape = |f: &FormAt| (f.back, f.fwd, f.flavor);
        let full_cmp = |a: u32, b: u32| {
            let (fa, fb) = (&forms[a as usize], &forms[b as usize]);
            // A value's prefix and suffix forms share their bytes (see
            // `Builder::add`): no need to read them.
            let same_place = fa.start == fb.start && fa.len == fb.len;
            let bytes = if same_place {
                std::cmp::Ordering::Equal
            } else {
                bytes_of(fa).cmp(bytes_of(fb))
            };
            bytes.then_with(|| shape(fa).cmp(&shape(fb)))
        };
        // Keys are the first bytes of forms: wiped on drop.
        let mut keyed: Zeroizing<Vec<(u64, u32)>> = Zeroizing::new(
            forms
                .iter()
                .enumerate()
                .map(|(i, f)| (key8(bytes_of(f), |b| b), index_u32(i)))
                .collect(),
        );
        keyed.sort_unstable();
        // Within a run the indices ascend, so a stable sort keeps the first
        // secret first among equal forms.
        for_each_run(&mut keyed, |run| run.sort_by(|a, b| full_cmp(a.1, b.1)));
        // Most neighbours differ in their first 8 bytes: no need to read
        // their forms (scattered over the gathered bytes) to tell.
        keyed.dedup_by(|b, a| a.0 == b.0 && full_cmp(a.1, b.1).is_eq());

        // The arena holds the patterns in sorted order, as the index and
        // the start list read them. A pattern with the same bytes as the
        // one before it (a value's prefixes and suffixes) shares its
        // bytes (the start list counts on it).
        let total: usize = keyed
            .iter()
            .map(|&(_, i)| forms[i as usize].len as usize)
            .sum();
        let mut sorted = Zeroizing::new(Vec::with_capacity(total));
        prefer_huge_pages(sorted.spare_capacity_mut());
        let mut pats: Vec<Pat> = Vec::with_capacity(keyed.len());
        let mut previous: Option<(u64, &[u8])> = None;
        for &(key, i) in keyed.iter() {
            let form = &forms[i as usize];
            let bytes = bytes_of(form);
            let start = match (previous, pats.last()) {
                (Some((prev_key, prev)), Some(last))
                    if prev_key == key && (std::ptr::eq(prev, bytes) || prev == bytes) =>
                {
                    last.start
                }
                _ => {
                    sorted.extend_from_slice(bytes);
                    index_u32(sorted.len() - bytes.len())
                }
            };
            previous = Some((key, bytes));
            pats.push(Pat {
                start,
                len: form.len,
                back: form.back,
                fwd: form.fwd,
                tag: Pat::tag(remap[form.secret as usize], form.flavor),
            });
        }
        drop(keyed);
        drop(forms);
        drop(gathered);
        let arena = sorted;
        settle();

        let mut masks = Packed::default();
        for id in ids.iter() {
            masks.push(&mask.render(id));
        }
        masks.shrink_to_fit();
        let min_len = pats.iter().map(Pat::core_len).min().unwrap_or(0);
        let max_len = pats.iter().map(|p| p.len as usize).max().unwrap_or(0);

        // The tiers' index and the hold rule's start list need only the
        // patterns: with many of them, the two are built side by side.
        let build_tiers = || -> Vec<Tier> {
            let (short, long): (Vec<u32>, Vec<u32>) = (0..index_u32(pats.len()))
                .partition(|&i| pats[i as usize].core_len() < SHORT_TIER_BELOW);
            [short, long]
                .into_iter()
                .filter(|members| !members.is_empty())
                .map(|members| Tier::build(members, &pats, &arena, settle))
                .collect()
        };
        let (tiers, starts) = if pats.len() >= parallel_from {
            std::thread::scope(|scope| {
                match std::thread::Builder::new()
                    .name("keywarden-index".into())
                    .spawn_scoped(scope, build_tiers)
                {
                    Ok(tiers) => {
                        let starts = Starts::build(&pats, &arena, max_len);
                        match tiers.join() {
                            Ok(tiers) => (tiers, starts),
                            Err(panic) => std::panic::resume_unwind(panic),
                        }
                    }
                    // No thread to be had: one after the other.
                    Err(_) => (build_tiers(), Starts::build(&pats, &arena, max_len)),
                }
            })
        } else {
            (build_tiers(), Starts::build(&pats, &arena, max_len))
        };
        let Starts {
            starts,
            first1,
            first2,
            prefixes,
        } = starts;
        let long_ends = LongEnds::build(
            pats.iter().map(|p| LongPattern {
                start: p.start,
                len: p.len,
                back: p.back,
                flavor: p.flavor(),
            }),
            &arena,
        );

        Matcher {
            arena,
            pats,
            starts,
            ids,
            masks,
            tiers,
            min_len,
            max_len,
            first1,
            first2,
            prefixes,
            long_ends,
        }
    }

    /// Every table of the index and the start list, for tests that compare
    /// two builds.
    #[cfg(test)]
    pub(super) fn tables(&self) -> Vec<Vec<u64>> {
        let mut out = vec![
            (0..self.starts.len())
                .map(|k| self.starts.get(k))
                .map(|(p, j)| u64::from(p) << 32 | u64::from(j))
                .collect(),
            self.first1.to_vec(),
            self.first2.to_vec(),
            self.prefixes.words.to_vec(),
        ];
        for t in &self.tiers {
            let probe = match &t.probe {
                Probe::Small { table, .. } => table.to_vec(),
                Probe::Large(bloom) => bloom.words.to_vec(),
            };
            out.push(probe);
            out.push(t.heads.iter().map(|&h| u64::from(h)).collect());
            out.push(t.entries.iter().map(|&e| u64::from(e)).collect());
            out.push(t.members.iter().map(|&m| u64::from(m)).collect());
        }
        out
    }

    /// Ids of the secrets too short to be masked (under [`MIN_SECRET_LEN`]
    /// bytes), in the order given, for `check` to warn about.
    pub fn too_short<'a>(secrets: &[Secret<'a>]) -> Vec<&'a str> {
        secrets
            .iter()
            .filter(|s| s.value.len() < MIN_SECRET_LEN)
            .map(|s| s.id)
            .collect()
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.pats.is_empty()
    }

    /// Length of the longest pattern (extensions included): a
    /// [`super::Stream`] holds back fewer bytes than this.
    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    /// Length of the shortest pattern core (0 when empty).
    pub fn min_pattern_len(&self) -> usize {
        self.min_len
    }

    /// Number of distinct patterns (values, lines and encoded forms).
    pub fn pattern_count(&self) -> usize {
        self.pats.len()
    }

    /// Approximate heap memory held, in bytes.
    pub fn heap_size(&self) -> usize {
        let tiers: usize = self.tiers.iter().map(Tier::heap_size).sum();
        let ids = self.ids.heap_size() + self.masks.heap_size();
        self.arena.capacity()
            + self.pats.capacity() * std::mem::size_of::<Pat>()
            + self.starts.heap_size()
            + 8 * (self.first1.capacity() + self.first2.capacity() + self.prefixes.words.capacity())
            + self.long_ends.heap_size()
            + ids
            + tiers
    }

    /// Appends `input` to `out` with every masked span replaced by its mask,
    /// and counts each mask under its id.
    pub fn redact_all(&self, input: &[u8], out: &mut Vec<u8>, counts: &mut Counts) {
        out.reserve(input.len());
        let mut emitter = Emitter::new(
            self,
            Source::one(input, 0),
            out,
            counts,
            0,
            input.len() as u64,
        );
        self.scan(input, 0, input.len(), &mut emitter);
        emitter.progress(input.len() as u64);
    }

    /// The spans that [`Matcher::redact_all`] would mask, in order; for
    /// reporting where a secret leaked without copying the input.
    pub fn find_spans(&self, input: &[u8]) -> Vec<Span<'_>> {
        struct Collect<'m> {
            m: &'m Matcher,
            end: u64,
            spans: Vec<Span<'m>>,
        }
        impl Sink for Collect<'_> {
            fn on_match(&mut self, start: u64, end: u64, pat: u32) {
                match self.spans.last_mut() {
                    Some(last) if start < self.end => {
                        self.end = self.end.max(end);
                        last.end = self.end as usize;
                    }
                    _ => {
                        self.end = end;
                        let id = self.m.pat_id(pat);
                        self.spans.push(Span {
                            start: start as usize,
                            end: end as usize,
                            id,
                        });
                    }
                }
            }
            fn progress(&mut self, _: u64) {}
        }
        let mut collect = Collect {
            m: self,
            end: 0,
            spans: Vec::new(),
        };
        self.scan(input, 0, input.len(), &mut collect);
        collect.spans
    }

    /// Where the tail of `scratch` that a stream must hold begins: the
    /// earliest place whose bytes could still become a match (see
    /// [`Matcher::could_begin`]), or `scratch.len()`. Tails longer than
    /// [`LONG_TAIL`] are decided all at once from their shared end (see
    /// [`super::hold`]), shorter ones one at a time.
    pub(crate) fn hold_at(&self, scratch: &[u8]) -> usize {
        let mut work = Work::default();
        let at = self.hold_at_counting(scratch, &mut work);
        // In tests every hold (of a scratch short enough to check this way)
        // is checked against the rule taken one place at a time: the same
        // place, or an earlier one when the check ran out of allowance.
        #[cfg(test)]
        if scratch.len() <= 8192 {
            let by_each = self.hold_by_each_place(scratch);
            assert!(
                at == by_each || work.gave_up && at < by_each,
                "held from {at}, the rule says {by_each} ({work:?})"
            );
        }
        at
    }

    /// [`Matcher::hold_at`], adding to `work` the bytes compared and the
    /// candidates looked at for long tails, and one for each short tail
    /// tried.
    pub(crate) fn hold_at_counting(&self, scratch: &[u8], work: &mut Work) -> usize {
        let k = scratch.len();
        if let Some(m) = self.long_ends.longest(&self.arena, scratch, work) {
            return k - m;
        }
        (k.saturating_sub(LONG_TAIL)..k)
            .find(|&i| {
                work.steps += 1;
                self.could_begin(&scratch[i..])
            })
            .unwrap_or(k)
    }

    /// The hold rule taken one place at a time: the earliest place whose
    /// bytes could still become a match.
    #[cfg(test)]
    pub(crate) fn hold_by_each_place(&self, scratch: &[u8]) -> usize {
        (0..scratch.len())
            .find(|&i| self.could_begin(&scratch[i..]))
            .unwrap_or(scratch.len())
    }

    /// True when `tail` is a proper prefix of some pattern: the bytes could
    /// still become a match, so a stream must hold them.
    pub(crate) fn could_begin(&self, tail: &[u8]) -> bool {
        match *tail {
            [] => return false,
            [a] => {
                if !get_bit(&self.first1, usize::from(fold(a))) {
                    return false;
                }
            }
            [a, b, ..] => {
                if tail.len() >= self.max_len
                    || !get_bit(
                        &self.first2,
                        usize::from(fold(a)) << 8 | usize::from(fold(b)),
                    )
                {
                    return false;
                }
            }
        }
        if tail.len() >= 4
            && !self
                .prefixes
                .maybe(prefix_hash(&tail[..tail.len().min(8) & !3]))
        {
            return false;
        }
        // Starts whose folded bytes begin with the folded tail sit together
        // in order; each is then checked with its own flavour.
        let lo = self
            .starts
            .partition_point(|(p, j)| folded_cmp(self.rest(p, j), tail).is_lt());
        for k in lo..self.starts.len() {
            let (p, j) = self.starts.get(k);
            let rest = self.rest(p, j);
            if rest.len() < tail.len() || folded_cmp(&rest[..tail.len()], tail).is_ne() {
                return false;
            }
            let flavor = self.pats[p as usize].flavor();
            if rest.len() > tail.len() && flavor.eq(&rest[..tail.len()], tail) {
                return true;
            }
        }
        false
    }

    /// The bytes of pattern `p` from `j` on.
    fn rest(&self, p: u32, j: u32) -> &[u8] {
        &self.full(&self.pats[p as usize])[j as usize..]
    }

    /// The id a pattern masks.
    pub(crate) fn pat_id(&self, pat: u32) -> &str {
        self.ids.get(self.pats[pat as usize].id() as usize)
    }

    /// All bytes of a pattern: back, core, fwd.
    fn full(&self, p: &Pat) -> &[u8] {
        &self.arena[p.start as usize..(p.start + p.len) as usize]
    }

    /// Reports to `sink` every occurrence lying wholly inside `hay` and
    /// starting before `start_limit`, with positions offset by `base`.
    pub(crate) fn scan<S: Sink>(&self, hay: &[u8], base: u64, start_limit: usize, sink: &mut S) {
        if self.pats.is_empty() || start_limit == 0 || hay.len() < self.min_len {
            return;
        }
        // Window w of a tier yields starts in (w - step, w]: a tier is done
        // once those are all past the limit, or the window runs off the end.
        let mut ends = [0usize; MAX_TIERS];
        for (end, t) in ends.iter_mut().zip(&self.tiers) {
            *end = (hay.len() + 1 - t.q).min(start_limit + t.step - 1 + t.back_max);
        }
        let mut next = [0usize; MAX_TIERS];
        // Occurrences found but not yet handed over: tiers find them out of
        // order, the sink takes them by start (few, so a sorted Vec).
        let mut pending: Vec<(usize, usize, u32)> = Vec::new();
        let mut block_end = 0;
        loop {
            block_end += FLUSH_BLOCK;
            let mut frontier = start_limit;
            for (t, tier) in self.tiers.iter().enumerate() {
                let stop = ends[t].min(block_end);
                next[t] = match tier.q {
                    4 => self.scan_tier::<4>(tier, hay, next[t], stop, start_limit, &mut pending),
                    _ => self.scan_tier::<8>(tier, hay, next[t], stop, start_limit, &mut pending),
                };
                if next[t] < ends[t] {
                    // Windows before next[t] cover every core starting up
                    // to next[t] - step, so every occurrence starting up to
                    // next[t] - step - back_max.
                    frontier =
                        frontier.min((next[t] + 1).saturating_sub(tier.step + tier.back_max));
                }
            }
            if !pending.is_empty() {
                pending
                    .sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
                let ready = pending.partition_point(|m| m.0 < frontier);
                for &(s, e, pat) in &pending[..ready] {
                    sink.on_match(base + s as u64, base + e as u64, pat);
                }
                pending.drain(..ready);
            }
            sink.progress(base + frontier as u64);
            if frontier == start_limit {
                debug_assert!(pending.is_empty());
                return;
            }
        }
    }

    /// Tests the windows `w, w + step, ...` below `stop` of one tier, adding
    /// what they find to `pending`; returns the next window.
    fn scan_tier<const Q: usize>(
        &self,
        tier: &Tier,
        hay: &[u8],
        w: usize,
        stop: usize,
        start_limit: usize,
        pending: &mut Vec<(usize, usize, u32)>,
    ) -> usize {
        match &tier.probe {
            Probe::Small { table, shift } => {
                let (table, shift): (&[u64], u32) = (table, *shift);
                let test = |gram: u64| {
                    let i = small_probe_index(gram, shift);
                    table[i / 64] >> (i % 64) & 1 != 0
                };
                self.scan_windows::<Q>(tier, hay, w, stop, start_limit, pending, test)
            }
            Probe::Large(bloom) => {
                let test = |gram: u64| bloom.maybe(hash(gram));
                self.scan_windows::<Q>(tier, hay, w, stop, start_limit, pending, test)
            }
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn scan_windows<const Q: usize>(
        &self,
        tier: &Tier,
        hay: &[u8],
        mut w: usize,
        stop: usize,
        start_limit: usize,
        pending: &mut Vec<(usize, usize, u32)>,
        test: impl Fn(u64) -> bool,
    ) -> usize {
        let step = tier.step;
        // Four windows per round: independent loads and tests overlap, and
        // one branch covers all four. One bounds check covers the four
        // loads.
        while w + 3 * step < stop {
            let block = &hay[w..w + 3 * step + Q];
            let (g0, g1, g2, g3) = (
                load_gram::<Q>(block, 0),
                load_gram::<Q>(block, step),
                load_gram::<Q>(block, 2 * step),
                load_gram::<Q>(&block[3 * step..], 0),
            );
            let (m0, m1, m2, m3) = (test(g0), test(g1), test(g2), test(g3));
            if m0 | m1 | m2 | m3 {
                self.verify_four(tier, hay, w, [m0, m1, m2, m3], start_limit, pending);
            }
            w += 4 * step;
        }
        while w < stop {
            let g = load_gram::<Q>(hay, w);
            if test(g) {
                self.verify(tier, hay, w, g, start_limit, pending);
            }
            w += step;
        }
        w
    }

    /// Verifies the windows `w + i * step` whose `hits[i]` is set.
    #[inline(never)]
    fn verify_four(
        &self,
        tier: &Tier,
        hay: &[u8],
        w: usize,
        hits: [bool; 4],
        start_limit: usize,
        pending: &mut Vec<(usize, usize, u32)>,
    ) {
        for (i, hit) in hits.into_iter().enumerate() {
            if hit {
                let at = w + i * tier.step;
                let gram = match tier.q {
                    4 => load_gram::<4>(hay, at),
                    _ => load_gram::<8>(hay, at),
                };
                self.verify(tier, hay, at, gram, start_limit, pending);
            }
        }
    }

    /// Checks the index candidates of window `w`, adding every pattern
    /// whose core matches there, extended as far as the input allows:
    /// (start, end, pattern).
    #[inline(never)]
    fn verify(
        &self,
        tier: &Tier,
        hay: &[u8],
        w: usize,
        gram: u64,
        start_limit: usize,
        pending: &mut Vec<(usize, usize, u32)>,
    ) {
        let h = hash(gram);
        let bucket = (h >> tier.bucket_shift) as usize;
        let fp = fingerprint(h, tier.ref_bits);
        let ref_mask = ((1u64 << tier.ref_bits) - 1) as u32;
        let (lo, hi) = (tier.heads[bucket] as usize, tier.heads[bucket + 1] as usize);
        for k in lo..hi {
            let entry = tier.entries[k];
            if entry & !ref_mask != fp {
                continue;
            }
            let r = entry & ref_mask;
            let o = (r & ((1 << OFFSET_BITS) - 1)) as usize;
            let Some(c) = w.checked_sub(o) else { continue };
            if c >= start_limit + tier.back_max || c + tier.sample > hay.len() {
                continue;
            }
            let members = group(&tier.groups, &tier.members, (r >> OFFSET_BITS) as usize);
            let sample = &self.core(&self.pats[members[0] as usize])[..tier.sample];
            if folded_cmp(&hay[c..c + tier.sample], sample).is_ne() {
                continue;
            }
            for &i in members {
                if let Some((s, e)) = self.extend(&self.pats[i as usize], hay, c) {
                    if s < start_limit {
                        pending.push((s, e, i));
                    }
                }
            }
        }
    }

    /// The core of `p`.
    fn core(&self, p: &Pat) -> &[u8] {
        let full = self.full(p);
        &full[p.back as usize..full.len() - p.fwd as usize]
    }

    /// If the core of `p` occurs at `c`, the occurrence extended over as
    /// much of its back and fwd bytes as `hay` holds next to it.
    #[inline]
    fn extend(&self, p: &Pat, hay: &[u8], c: usize) -> Option<(usize, usize)> {
        let full = self.full(p);
        let (back, rest) = full.split_at(p.back as usize);
        let (core, fwd) = rest.split_at(p.core_len());
        let end = c + core.len();
        let flavor = p.flavor();
        if end > hay.len() || !flavor.eq(&hay[c..end], core) {
            return None;
        }
        let canon = |b: u8| flavor.canon(b);
        let more = hay[end..]
            .iter()
            .zip(fwd)
            .take_while(|&(&h, &f)| canon(h) == canon(f))
            .count();
        let less = hay[..c]
            .iter()
            .rev()
            .zip(back.iter().rev())
            .take_while(|&(&h, &b)| canon(h) == canon(b))
            .count();
        Some((c - less, end + more))
    }
}

/// The first 8 bytes (fewer if shorter, then zeros) as a big-endian number,
/// each byte mapped by `f`: orders like the bytes themselves.
fn key8(bytes: &[u8], f: impl Fn(u8) -> u8) -> u64 {
    let mut key = [0u8; 8];
    for (k, &b) in key.iter_mut().zip(bytes) {
        *k = f(b);
    }
    u64::from_be_bytes(key)
}

/// Calls `f` on each run of two or more items with equal keys (the first
/// field) in a sorted slice.
fn for_each_run<K: PartialEq + Copy, T>(items: &mut [(K, T)], f: impl FnMut(&mut [(K, T)])) {
    for_each_run_by(items, |x| x.0, f)
}

/// Calls `f` on each run of two or more items with equal `key`s in a slice
/// sorted by them.
fn for_each_run_by<T, K: PartialEq>(
    items: &mut [T],
    key: impl Fn(&T) -> K,
    mut f: impl FnMut(&mut [T]),
) {
    let mut i = 0;
    while i < items.len() {
        let first = key(&items[i]);
        let n = items[i..].iter().take_while(|x| key(x) == first).count();
        if n > 1 {
            f(&mut items[i..i + n]);
        }
        i += n;
    }
}

/// Compares byte strings as their folded bytes.
fn folded_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter().map(|&x| fold(x)).cmp(b.iter().map(|&y| fold(y)))
}

impl Tier {
    fn heap_size(&self) -> usize {
        let probe = match &self.probe {
            Probe::Small { table, .. } => table.capacity(),
            Probe::Large(bloom) => bloom.words.capacity(),
        };
        4 * (self.members.capacity()
            + self.groups.capacity()
            + self.heads.capacity()
            + self.entries.capacity())
            + 8 * probe
    }

    /// Indexes the cores of the patterns `members` (indices into `pats`).
    /// `settle` is the caller's hook (see [`Builder::finish_settling`]),
    /// called before the largest table, the entries, is made.
    fn build(mut members: Vec<u32>, pats: &[Pat], arena: &[u8], settle: fn()) -> Tier {
        let core = |i: u32| {
            let p = &pats[i as usize];
            let start = (p.start + p.back) as usize;
            &arena[start..start + p.core_len()]
        };
        let min_len = members.iter().map(|&i| core(i).len()).min().unwrap_or(0);
        let back_max = members
            .iter()
            .map(|&i| pats[i as usize].back as usize)
            .max()
            .unwrap_or(0);
        let q = if min_len >= 16 { 8 } else { 4 };
        let sample = min_len.min(q + MAX_STEP - 1);
        let step = sample.saturating_sub(q) + 1;

        let sample_of = |i: u32| &core(i)[..sample];
        let mut keyed: Zeroizing<Vec<(u64, u32)>> = Zeroizing::new(
            members
                .iter()
                .map(|&i| (key8(sample_of(i), fold), i))
                .collect(),
        );
        keyed.sort_unstable();
        for_each_run(&mut keyed, |run| {
            run.sort_unstable_by(|a, b| folded_cmp(sample_of(a.1), sample_of(b.1)))
        });
        members.clear();
        members.extend(keyed.iter().map(|&(_, i)| i));
        members.shrink_to_fit();
        // At most one group a member (most groups have one).
        let mut groups: Vec<u32> = Vec::with_capacity(keyed.len() + 1);
        for (k, &(key, i)) in keyed.iter().enumerate() {
            let joins = groups.last().is_some_and(|&g| {
                keyed[k - 1].0 == key
                    && folded_cmp(sample_of(members[g as usize]), sample_of(i)).is_eq()
            });
            if !joins {
                groups.push(index_u32(k));
            }
        }
        groups.push(index_u32(keyed.len()));
        drop(keyed);
        groups.shrink_to_fit();
        let n_groups = groups.len() - 1;

        assert!(n_groups < 1 << (32 - OFFSET_BITS), "too many patterns");
        let ref_bits = u32::BITS - (index_u32(n_groups) << OFFSET_BITS).leading_zeros();
        // The keys (see `KeySource`) are made again for each pass: their
        // number, the count per bucket, the fill. No list of hashes is
        // kept, and counting costs little: most groups have one key an
        // offset, loaded, not hashed.
        let varies: Vec<u32> = (0..n_groups)
            .map(|g| variation(group(&groups, &members, g), pats, arena, sample))
            .collect();
        let source = KeySource {
            groups: &groups,
            varies: &varies,
            members: &members,
            pats,
            arena,
            step,
            q,
        };
        let n_keys = source.count();
        let small_bits = (n_keys * SMALL_PROBE_BITS_PER_KEY)
            .next_power_of_two()
            .clamp(1 << 12, SMALL_PROBE_MAX_BITS);
        let mut probe = if n_keys * SMALL_PROBE_MIN_BITS_PER_KEY <= small_bits {
            Probe::Small {
                table: Zeroizing::new(vec![0; small_bits / 64]),
                shift: 64 - small_bits.trailing_zeros(),
            }
        } else {
            Probe::Large(Bloom::new(n_keys, BLOOM_BITS_PER_ENTRY))
        };
        let buckets = (n_keys / KEYS_PER_BUCKET).next_power_of_two().max(2);
        let bucket_shift = 64 - buckets.trailing_zeros();
        // The tables are written at random places: past the caches' size
        // (tens of thousands of secrets) each write would wait for memory
        // on its own. Keys come in batches, and the places a batch writes
        // are prefetched before any of them is written.
        let each_key = |f: &mut dyn FnMut(u32, u64)| source.for_each_key(f);
        let mut heads = vec![0u32; buckets + 1];
        prefer_huge_pages(&mut heads);
        prefer_huge_pages(probe.words_mut());
        let mut hashes: Zeroizing<[u64; KEY_BATCH]> = Zeroizing::new([0; KEY_BATCH]);
        in_batches(each_key, |_, keys| {
            for (h, &key) in hashes.iter_mut().zip(keys) {
                *h = hash(key);
                probe.prefetch(key, *h);
                prefetch(&heads, (*h >> bucket_shift) as usize);
            }
            for (&h, &key) in hashes.iter().zip(keys) {
                probe.insert(key, h);
                heads[(h >> bucket_shift) as usize] += 1;
            }
        });
        // heads[b] becomes the end of bucket b; the fill moves it back to
        // the bucket's start, one slot a key (so a bucket's keys come in
        // reverse order, which the scan does not mind).
        for b in 1..buckets {
            heads[b] += heads[b - 1];
        }
        heads[buckets] = index_u32(n_keys);
        // What this build and the start list's (beside it) have freed so
        // far goes back before the entries: they fill their pages at once
        // (huge pages), the moment of the whole build's peak.
        settle();
        let mut entries = Zeroizing::new(vec![0u32; n_keys]);
        prefer_huge_pages(&mut entries);
        let mut slots = [0u32; KEY_BATCH];
        in_batches(each_key, |batch_refs, keys| {
            for (h, &key) in hashes.iter_mut().zip(keys) {
                *h = hash(key);
                prefetch(&heads, (*h >> bucket_shift) as usize);
            }
            for (slot, &h) in slots.iter_mut().zip(&hashes[..keys.len()]) {
                let end = &mut heads[(h >> bucket_shift) as usize];
                *end -= 1;
                *slot = *end;
                prefetch(&entries, *slot as usize);
            }
            for ((&slot, &h), &r) in slots.iter().zip(hashes.iter()).zip(batch_refs) {
                entries[slot as usize] = fingerprint(h, ref_bits) | r;
            }
        });
        Tier {
            members,
            groups,
            q,
            sample,
            step,
            back_max,
            probe,
            heads,
            bucket_shift,
            entries,
            ref_bits,
        }
    }
}

/// Group `g` of a tier's `members`, by the groups' boundaries.
#[inline(always)]
fn group<'m>(bounds: &[u32], members: &'m [u32], g: usize) -> &'m [u32] {
    &members[bounds[g] as usize..bounds[g + 1] as usize]
}

/// The three bits a hash sets in its Bloom word.
#[inline(always)]
fn bloom_bits(h: u64) -> u64 {
    1 << (h & 63) | 1 << ((h >> 6) & 63) | 1 << ((h >> 12) & 63)
}

/// The bits of hash `h` an index entry keeps above a ref of `ref_bits`
/// bits (none if the ref takes all 32): bits from 20 up, clear of the
/// Bloom filter's (0–17) and, at any size that leaves room for them, of
/// the bucket's (the top ones).
#[inline(always)]
fn fingerprint(h: u64, ref_bits: u32) -> u32 {
    ((h >> 20) << ref_bits) as u32
}

fn set_bit(words: &mut [u64], i: usize) {
    words[i / 64] |= 1 << (i % 64);
}

fn get_bit(words: &[u64], i: usize) -> bool {
    words[i / 64] & 1 << (i % 64) != 0
}

/// Key of a (folded) pattern prefix of 4 or 8 bytes in `Matcher::prefixes`.
fn prefix_hash(prefix: &[u8]) -> u64 {
    folded_prefix_hash(load_folded(prefix), prefix.len())
}

/// [`prefix_hash`] of a prefix already folded and loaded (little-endian,
/// zeros after it).
#[inline]
fn folded_prefix_hash(gram: u64, len: usize) -> u64 {
    hash(hash(gram) ^ len as u64)
}

/// The `Q`-byte window at `at`, little-endian, as the index keys it: each
/// byte ORed with 0x20 (ASCII lower case; see [`window_keys`]).
#[inline(always)]
fn load_gram<const Q: usize>(hay: &[u8], at: usize) -> u64 {
    let mut gram = [0u8; 8];
    gram[..Q].copy_from_slice(&hay[at..at + Q]);
    u64::from_le_bytes(gram) | case_bits(Q)
}

/// The key of the `q`-byte gram (4 or 8) at the start of `bytes`, as
/// [`load_gram`] loads it from a haystack: loads of a size known when
/// compiled (a copy of `q` bytes would call `memcpy` for each of millions
/// of keys).
#[inline(always)]
fn gram_key(bytes: &[u8], q: usize) -> u64 {
    debug_assert!(q == 4 || q == 8);
    match q {
        4 => load_gram::<4>(bytes, 0),
        _ => load_gram::<8>(bytes, 0),
    }
}

/// Bit 0x20 of each of the first `q` bytes of a little-endian word.
#[inline(always)]
const fn case_bits(q: usize) -> u64 {
    0x2020_2020_2020_2020 >> (64 - 8 * q)
}

/// Where of the first `sample` bytes (bit k for byte k) a key of `group`
/// may differ from the first member's gram: where members differ beyond
/// case, and at a base64 member's `+-/_`.
fn variation(group: &[u32], pats: &[Pat], arena: &[u8], sample: usize) -> u32 {
    let core = |i: u32| {
        let p = &pats[i as usize];
        let at = (p.start + p.back) as usize;
        &arena[at..at + sample]
    };
    let head = core(group[0]);
    let mut varies = 0u32;
    for &i in group {
        let bytes = core(i);
        let base64 = pats[i as usize].flavor() == Flavor::Base64;
        for (k, (&a, &b)) in head.iter().zip(bytes).enumerate() {
            if a | 0x20 != b | 0x20 || base64 && matches!(b, b'+' | b'-' | b'/' | b'_') {
                varies |= 1 << k;
            }
        }
    }
    varies
}

/// Keys [`in_batches`] hands over at once.
const KEY_BATCH: usize = 32;

/// Runs `each_key` and hands the `(ref, key)` pairs it yields to `f` in
/// order, up to [`KEY_BATCH`] at a time (refs and keys as two slices of
/// the same length). The keys are derived from secrets: the buffer is
/// wiped at the end.
fn in_batches(each_key: impl FnOnce(&mut dyn FnMut(u32, u64)), mut f: impl FnMut(&[u32], &[u64])) {
    let mut refs = [0u32; KEY_BATCH];
    let mut keys: Zeroizing<[u64; KEY_BATCH]> = Zeroizing::new([0; KEY_BATCH]);
    let mut n = 0;
    each_key(&mut |r, key| {
        refs[n] = r;
        keys[n] = key;
        n += 1;
        if n == KEY_BATCH {
            f(&refs, &keys[..]);
            n = 0;
        }
    });
    if n > 0 {
        f(&refs[..n], &keys[..n]);
    }
}

/// The keys of a tier's index: for each group of `members` and offset `o`
/// in `0..step`, every window the scan can load there (see
/// [`window_keys`]), under the ref `group << OFFSET_BITS | o`.
struct KeySource<'a> {
    groups: &'a [u32],
    /// Per group, from [`variation`]: where its gram can vary.
    varies: &'a [u32],
    members: &'a [u32],
    pats: &'a [Pat],
    arena: &'a [u8],
    step: usize,
    q: usize,
}

/// The keys of one group at one offset.
enum Keys<'s> {
    /// The gram cannot vary (most groups): the first member's.
    One(u64),
    Several(&'s [u64]),
}

impl KeySource<'_> {
    /// Calls `f(ref, keys)` for every group and offset.
    fn for_each_window(&self, mut f: impl FnMut(u32, Keys<'_>)) {
        let mut scratch: Zeroizing<Vec<u64>> = Zeroizing::new(Vec::new());
        let q_bits = (1u32 << self.q) - 1;
        for (g, &varies) in self.varies.iter().enumerate() {
            let group = group(self.groups, self.members, g);
            let p = &self.pats[group[0] as usize];
            let head = &self.arena[(p.start + p.back) as usize..];
            for o in 0..self.step {
                let r = index_u32(g) << OFFSET_BITS | index_u32(o);
                if varies >> o & q_bits == 0 {
                    f(r, Keys::One(gram_key(&head[o..], self.q)));
                } else {
                    window_keys(group, self.pats, self.arena, o, self.q, &mut scratch);
                    f(r, Keys::Several(&scratch));
                }
            }
        }
    }

    /// How many keys there are.
    fn count(&self) -> usize {
        let mut n = 0;
        self.for_each_window(|_, keys| {
            n += match keys {
                Keys::One(_) => 1,
                Keys::Several(keys) => keys.len(),
            }
        });
        n
    }

    /// Calls `f(ref, key)` for every key.
    fn for_each_key(&self, f: &mut dyn FnMut(u32, u64)) {
        self.for_each_window(|r, keys| match keys {
            Keys::One(key) => f(r, key),
            Keys::Several(keys) => keys.iter().for_each(|&key| f(r, key)),
        });
    }
}

/// Every key [`load_gram`] can give for a window at offset `o` of an
/// occurrence of a core in `group` (patterns whose samples fold alike),
/// sorted and each once, into `out`. The load's fold (OR 0x20) costs one
/// instruction and merges the cases of hex letters, but not the two base64
/// alphabets: a base64 pattern adds one key per mix of `+`/`-` and `/`/`_`
/// in its q-gram (none in most grams; 2^k for k such characters).
fn window_keys(group: &[u32], pats: &[Pat], arena: &[u8], o: usize, q: usize, out: &mut Vec<u64>) {
    out.clear();
    for &i in group {
        let p = &pats[i as usize];
        let at = (p.start + p.back) as usize + o;
        let gram = &arena[at..at + q];
        let first = out.len();
        out.push(gram_key(gram, q));
        if p.flavor() != Flavor::Base64 {
            continue;
        }
        for (k, &b) in gram.iter().enumerate() {
            let other = match b {
                b'+' => b'-',
                b'-' => b'+',
                b'/' => b'_',
                b'_' => b'/',
                _ => continue,
            };
            let shift = 8 * k;
            for j in first..out.len() {
                let swapped = out[j] & !(0xff << shift) | u64::from(other | 0x20) << shift;
                out.push(swapped);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
}

/// Little-endian load of up to 8 bytes, each folded.
pub(super) fn load_folded(bytes: &[u8]) -> u64 {
    let mut gram = [0u8; 8];
    for (g, &b) in gram.iter_mut().zip(bytes) {
        *g = fold(b);
    }
    u64::from_le_bytes(gram)
}

/// A folded multiply: one 64x64->128 product, halves xored, so every output
/// bit depends on every input bit.
#[inline(always)]
pub(super) fn hash(g: u64) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    const SEED: u64 = 0x2545_F491_4F6C_DD1D;
    let p = u128::from(g ^ SEED) * u128::from(K);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The first offset at which pattern `i` adds starts of its own: past the
/// starts of the pattern before it when the two share bytes and flavour
/// (those starts are the same), else 0.
fn first_start(pats: &[Pat], i: usize) -> usize {
    match i.checked_sub(1).map(|k| (&pats[k], &pats[i])) {
        Some((a, b)) if a.start == b.start && a.len == b.len && a.flavor() == b.flavor() => {
            a.back as usize + 1
        }
        _ => 0,
    }
}

/// How many bits hold the numbers `0..=n`.
fn bits_for(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

fn index_u32(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 4 GiB of patterns")
}

/// Where the bytes of the current scan come from: a stream's held tail
/// (`a`, from absolute position `a_base`) followed by the new input (`b`).
pub(crate) struct Source<'a> {
    a: &'a [u8],
    a_base: u64,
    b: &'a [u8],
}

impl<'a> Source<'a> {
    pub(crate) fn new(a: &'a [u8], a_base: u64, b: &'a [u8]) -> Self {
        Source { a, a_base, b }
    }

    fn one(bytes: &'a [u8], base: u64) -> Self {
        Source {
            a: bytes,
            a_base: base,
            b: &[],
        }
    }

    /// Appends the bytes at absolute positions `from..to` to `out`; with
    /// `pieces`, those of `b` are not copied but recorded as a range of
    /// `b`, and those of `a` as the range of `out` they were copied to.
    fn copy(&self, from: u64, to: u64, out: &mut Vec<u8>, mut pieces: Option<&mut Vec<Piece>>) {
        let split = self.a_base + self.a.len() as u64;
        if from < split {
            let stop = to.min(split);
            let at = out.len();
            out.extend_from_slice(
                &self.a[(from - self.a_base) as usize..(stop - self.a_base) as usize],
            );
            if let Some(p) = pieces.as_deref_mut() {
                push_piece(p, Piece::Out(at..out.len()));
            }
        }
        if to > split {
            let (start, end) = ((from.max(split) - split) as usize, (to - split) as usize);
            match pieces {
                Some(p) => push_piece(p, Piece::In(start..end)),
                None => out.extend_from_slice(&self.b[start..end]),
            }
        }
    }
}

/// Appends `piece`, merged into the last one when it continues it.
fn push_piece(pieces: &mut Vec<Piece>, piece: Piece) {
    match (pieces.last_mut(), &piece) {
        (Some(Piece::Out(last)), Piece::Out(next)) | (Some(Piece::In(last)), Piece::In(next))
            if last.end == next.start =>
        {
            last.end = next.end;
        }
        _ if piece.is_empty() => {}
        _ => pieces.push(piece),
    }
}

/// The merge rule, as a [`Sink`]. Occurrences arrive by start; `pos` is the
/// first byte not yet written or swallowed. An occurrence starting before
/// `pos` overlaps the span being masked and only extends it; one starting at
/// or after `pos` (adjacent counts as after) writes the plain bytes before
/// it, then one mask for its id, and opens a new span.
pub(crate) struct Emitter<'a> {
    m: &'a Matcher,
    src: Source<'a>,
    out: &'a mut Vec<u8>,
    /// Where each stretch of the output comes from, if the caller writes
    /// the source's new bytes itself (see [`Piece`]).
    pieces: Option<&'a mut Vec<Piece>>,
    counts: &'a mut Counts,
    pub(crate) pos: u64,
    /// Plain bytes are written only before this position.
    limit: u64,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(
        m: &'a Matcher,
        src: Source<'a>,
        out: &'a mut Vec<u8>,
        counts: &'a mut Counts,
        pos: u64,
        limit: u64,
    ) -> Self {
        Emitter {
            m,
            src,
            out,
            pieces: None,
            counts,
            pos,
            limit,
        }
    }

    /// Record the output's pieces in `pieces` instead of copying the
    /// source's new bytes.
    pub(crate) fn with_pieces(mut self, pieces: Option<&'a mut Vec<Piece>>) -> Self {
        self.pieces = pieces;
        self
    }
}

impl Sink for Emitter<'_> {
    fn on_match(&mut self, start: u64, end: u64, pat: u32) {
        if start < self.pos {
            self.pos = self.pos.max(end);
            return;
        }
        self.src
            .copy(self.pos, start, self.out, self.pieces.as_deref_mut());
        let id = self.m.pats[pat as usize].id() as usize;
        let at = self.out.len();
        self.out.extend_from_slice(self.m.masks.get(id).as_bytes());
        if let Some(p) = self.pieces.as_deref_mut() {
            push_piece(p, Piece::Out(at..self.out.len()));
        }
        self.counts.add(self.m.ids.get(id));
        self.pos = end;
    }

    fn progress(&mut self, upto: u64) {
        let upto = upto.min(self.limit);
        if self.pos < upto {
            self.src
                .copy(self.pos, upto, self.out, self.pieces.as_deref_mut());
            self.pos = upto;
        }
    }
}

#[cfg(test)]
impl Matcher {
    /// Whether the start list holds two starts to a word.
    pub(crate) fn starts_two_a_word(&self) -> bool {
        self.starts.j_bits.is_some()
    }

    /// The start list is in order of the folded bytes from each start, and
    /// holds each start of each pattern once (a pattern repeating the one
    /// before it, bytes and flavour, adds none of its own).
    pub(crate) fn check_starts(&self) {
        let starts: Vec<(u32, u32)> = (0..self.starts.len()).map(|k| self.starts.get(k)).collect();
        for pair in starts.windows(2) {
            let (a, b) = (
                self.rest(pair[0].0, pair[0].1),
                self.rest(pair[1].0, pair[1].1),
            );
            assert!(folded_cmp(a, b).is_le(), "start list out of order");
        }
        let mut want = Vec::new();
        for (i, p) in self.pats.iter().enumerate() {
            let from = first_start(&self.pats, i) as u32;
            want.extend((from..=p.back).map(|j| (i as u64) << 32 | u64::from(j)));
        }
        let mut have: Vec<u64> = starts
            .iter()
            .map(|&(p, j)| u64::from(p) << 32 | u64::from(j))
            .collect();
        have.sort_unstable();
        assert!(
            have == want,
            "start list: {} starts, {} wanted",
            have.len(),
            want.len()
        );
    }

    /// Every pattern (all its bytes, back, fwd, flavour) with the id it
    /// masks, for the reference matcher.
    pub(crate) fn patterns(&self) -> Vec<(&[u8], usize, usize, Flavor, &str)> {
        self.pats
            .iter()
            .map(|p| {
                (
                    self.full(p),
                    p.back as usize,
                    p.fwd as usize,
                    p.flavor(),
                    self.ids.get(p.id() as usize),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A power-of-two filter picks the word a shift of the hash's top bits
    /// picks (the probe's tables are what they were), any other size a
    /// word inside it; every key inserted is found.
    #[test]
    fn a_bloom_filter_of_any_size_finds_what_it_holds() {
        let hashes: Vec<u64> = (0..5000u64).map(hash).collect();
        for (keys, bits, pow2) in [
            (1, 8, true),
            (1000, 16, true),
            (3, 8, false),
            (1000, 8, false),
            (4097, 12, false),
        ] {
            let mut bloom = match pow2 {
                true => Bloom::new(keys, bits),
                false => Bloom::exact(keys, bits),
            };
            let words = bloom.words.len();
            let exact = (keys * bits).div_ceil(64).max(2);
            match pow2 {
                true => assert_eq!(words, exact.next_power_of_two(), "{keys} keys"),
                false => assert_eq!(words, exact, "{keys} keys"),
            }
            for &h in &hashes {
                assert!(bloom.word(h) < words);
                if pow2 {
                    assert_eq!(bloom.word(h), (h >> (64 - words.trailing_zeros())) as usize);
                }
            }
            for &h in &hashes[..keys] {
                bloom.insert(h);
            }
            assert!(
                hashes[..keys].iter().all(|&h| bloom.maybe(h)),
                "{keys} keys"
            );
        }
    }

    /// Starts packed two to a word or one, at every width and length,
    /// read back as they went in.
    #[test]
    fn the_start_list_gives_back_every_start() {
        // (pattern bits, j bits): two to a word up to 32 bits in all.
        let widths = [
            (0, 0),
            (0, 5),
            (1, 0),
            (19, 5),
            (16, 16),
            (27, 5),
            (20, 13),
            (31, 2),
        ];
        for (p_bits, j_bits) in widths {
            for len in [0usize, 1, 2, 3, 8, 101] {
                let max = |bits: u32| (1u64 << bits) - 1;
                let want: Vec<(u32, u32)> = (0..len as u64)
                    .map(|k| {
                        let p = (k * 2_654_435_761) & max(p_bits);
                        let j = (k * 40_503) & max(j_bits);
                        (p as u32, j as u32)
                    })
                    .collect();
                let mut words = Zeroizing::new(
                    want.iter()
                        .map(|&(p, j)| u64::from(p) << 32 | u64::from(j))
                        .collect::<Vec<u64>>(),
                );
                let start_of = |w: u64| ((w >> 32) as u32, w as u32);
                let list = StartList::pack(&mut words, start_of, p_bits, j_bits);
                assert_eq!(list.len(), len);
                let two_a_word = p_bits + j_bits <= 32;
                assert_eq!(list.j_bits.is_some(), two_a_word);
                if two_a_word {
                    assert_eq!(list.words.len(), len.div_ceil(2));
                }
                let have: Vec<(u32, u32)> = (0..len).map(|k| list.get(k)).collect();
                assert_eq!(have, want, "{p_bits} + {j_bits} bits, {len} starts");
            }
        }
    }
}
