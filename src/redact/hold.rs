//! The hold rule for long tails. At the end of each chunk a [`super::Stream`]
//! holds back the longest tail that could still begin an occurrence: a
//! proper prefix of some pattern's bytes from one of its starts. Tails up to
//! [`LONG_TAIL`] bytes are tried one at a time against the sorted start list
//! (see `Matcher::could_begin`). Tried that way, a long tail costs its own
//! length: a long value printed whole agrees with its own truncated copies
//! up to the chunk's end, at each of thousands of places, and the check
//! grows with the square of the value's length.
//!
//! So tails longer than [`LONG_TAIL`] are decided from their *end*, which
//! they all share. A tail of length `m` that begins pattern `P` at `j` ends
//! at `e = j + m < len(P)`, and its last bytes are `P`'s bytes before `e`.
//! [`LongEnds`] indexes one folded 8-byte gram every [`SAMPLE`] bytes of each
//! pattern long enough for such a tail (those that can end one). The last
//! `SAMPLE + 7` bytes of the scratch hold `SAMPLE` grams, and one of them
//! is an indexed gram of `P` for every such `(P, e)`. Each candidate
//! `(P, e)` found that way is measured by how far the scratch and `P` agree
//! backwards from there: linear in the scratch, short of a value that
//! repeats itself (see `WORK_PER_BYTE`).
//!
//! Pure: no I/O.

use zeroize::Zeroizing;

use super::encode::Flavor;
use super::matcher::{hash, load_folded};

/// Tails up to this long go through the start list, one at a time; longer
/// ones through [`LongEnds`].
pub(crate) const LONG_TAIL: usize = 128;
/// Bytes of an indexed gram.
const GRAM: usize = 8;
/// One gram is indexed every this many bytes of a pattern.
const SAMPLE: usize = 32;
const _: () = assert!(
    LONG_TAIL >= SAMPLE + GRAM - 1,
    "a long tail holds a sampled gram"
);
/// The first gram worth indexing: one at `q` ends tails at `q + GRAM +
/// SAMPLE - 1` at the most, which must be longer than [`LONG_TAIL`].
const FIRST_GRAM: usize = (LONG_TAIL + 1 - (GRAM + SAMPLE - 1)).next_multiple_of(SAMPLE);
/// Work a check may do (bytes compared and candidates looked at), per
/// byte of the scratch: past it, candidates are held without being
/// measured (more is held back than needed, never less). Only a value
/// that repeats itself many times over (`abab...`) has that many
/// candidates that agree for long.
const WORK_PER_BYTE: usize = 8;
const WORK_MIN: usize = 64 * 1024;

/// A pattern long enough to begin a tail of more than [`LONG_TAIL`] bytes:
/// its bytes in the arena, the last place an occurrence can start in them,
/// and how it compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LongPattern {
    pub(crate) start: u32,
    pub(crate) len: u32,
    pub(crate) back: u32,
    pub(crate) flavor: Flavor,
}

/// What a hold check cost: bytes compared and candidates looked at, and
/// whether it ran out of its allowance (and so may hold more than needed).
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub(crate) steps: usize,
    pub(crate) gave_up: bool,
}

/// The sampled grams of the long patterns (see the module doc).
#[derive(Default)]
pub(crate) struct LongEnds {
    pats: Vec<LongPattern>,
    /// One bit per hash prefix of the indexed grams, tested before the
    /// sorted keys: most of a check's 32 grams stop here. Wiped on drop.
    filter: Zeroizing<Vec<u64>>,
    filter_shift: u32,
    /// `hash << 32 | k` for spot `k`, sorted. The hashes are of secret
    /// bytes: wiped on drop.
    keys: Zeroizing<Vec<u64>>,
    /// Spot `k`: `pattern << 32 | offset` of its gram.
    spots: Vec<u64>,
}

impl LongEnds {
    /// Indexes `pats` (bytes in `arena`); those too short for a long tail
    /// are left out, and of patterns with the same bytes and flavour only
    /// the one that starts latest is kept (its starts include the others').
    pub(crate) fn build(pats: impl IntoIterator<Item = LongPattern>, arena: &[u8]) -> LongEnds {
        let mut pats: Vec<LongPattern> = pats
            .into_iter()
            .filter(|p| p.len as usize > LONG_TAIL + 1)
            .collect();
        if pats.is_empty() {
            return LongEnds::default();
        }
        // Latest start first within the same bytes and flavour.
        pats.sort_unstable_by_key(|p| (p.start, p.len, p.flavor, u32::MAX - p.back));
        pats.dedup_by_key(|p| (p.start, p.len, p.flavor));
        let n: usize = pats.iter().map(|p| grams(p.len as usize).len()).sum();
        let mut keys = Zeroizing::new(Vec::with_capacity(n));
        let mut spots = Vec::with_capacity(n);
        for (i, p) in pats.iter().enumerate() {
            let bytes = &arena[p.start as usize..(p.start + p.len) as usize];
            for q in grams(bytes.len()) {
                let k = u32::try_from(spots.len()).expect("fewer than 2^32 grams");
                keys.push(u64::from(gram_hash(&bytes[q..q + GRAM])) << 32 | u64::from(k));
                spots.push((i as u64) << 32 | q as u64);
            }
        }
        keys.sort_unstable();
        let bits = (16 * n).next_power_of_two().clamp(1 << 12, 1 << 24);
        let filter_shift = 32 - bits.trailing_zeros();
        let mut filter = Zeroizing::new(vec![0u64; bits / 64]);
        for &w in keys.iter() {
            let bit = ((w >> 32) as u32 >> filter_shift) as usize;
            filter[bit / 64] |= 1 << (bit % 64);
        }
        LongEnds {
            pats,
            filter,
            filter_shift,
            keys,
            spots,
        }
    }

    pub(crate) fn heap_size(&self) -> usize {
        self.pats.capacity() * std::mem::size_of::<LongPattern>()
            + 8 * (self.filter.capacity() + self.keys.capacity() + self.spots.capacity())
    }

    /// Might a gram of this hash be indexed?
    fn maybe(&self, h: u32) -> bool {
        let bit = (h >> self.filter_shift) as usize;
        self.filter[bit / 64] >> (bit % 64) & 1 != 0
    }

    /// The length of the longest tail of `scratch`, longer than
    /// [`LONG_TAIL`], that is a proper prefix of a long pattern's bytes
    /// from a place `j <= back` (compared in the pattern's flavour); `None`
    /// if there is none. Past the work allowance the answer may be longer
    /// than that (never shorter), and `work` says so.
    pub(crate) fn longest(&self, arena: &[u8], scratch: &[u8], work: &mut Work) -> Option<usize> {
        let k = scratch.len();
        if k <= LONG_TAIL || self.keys.is_empty() {
            return None;
        }
        let allowance = WORK_PER_BYTE * k + WORK_MIN;
        let mut best = LONG_TAIL;
        for d in 0..SAMPLE {
            if best == k {
                break;
            }
            // The gram that ends `d` bytes before the scratch's end.
            let at = k - GRAM - d;
            let h = gram_hash(&scratch[at..at + GRAM]);
            if !self.maybe(h) {
                continue;
            }
            let lo = self.keys.partition_point(|&w| ((w >> 32) as u32) < h);
            let run = self.keys[lo..]
                .iter()
                .take_while(|&&w| (w >> 32) as u32 == h)
                .count();
            // Latest grams first: in a value that repeats itself, the first
            // candidate tried is then the longest.
            for &w in self.keys[lo..lo + run].iter().rev() {
                work.steps += 1;
                let spot = self.spots[w as u32 as usize];
                let p = &self.pats[(spot >> 32) as usize];
                // The tail would end at `e` in the pattern, with a byte after.
                let e = (spot as u32 as usize) + GRAM + d;
                if e >= p.len as usize {
                    continue;
                }
                // It is at most `reach` long, and at least `need` (to start
                // at or before `back`).
                let reach = e.min(k);
                let need = e.saturating_sub(p.back as usize);
                if reach <= best || reach < need {
                    continue;
                }
                let bytes = &arena[p.start as usize..p.start as usize + e];
                let m = if work.steps + reach <= allowance {
                    let m = common_suffix(p.flavor, scratch, bytes, reach);
                    work.steps += m;
                    m
                } else {
                    work.gave_up = true;
                    reach
                };
                if m > best && m >= need {
                    best = m;
                }
            }
        }
        (best > LONG_TAIL).then_some(best)
    }
}

/// The offsets of a pattern's grams worth indexing: every `SAMPLE`th from
/// 0 (so that any `SAMPLE` places in a row hold one), from [`FIRST_GRAM`],
/// and with at least one byte after the gram (a tail ends before the
/// pattern does).
fn grams(len: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
    (FIRST_GRAM..len.saturating_sub(GRAM)).step_by(SAMPLE)
}

/// The hash of a gram as the index keys it: folded (see
/// [`super::encode::fold`]), so that every flavour's equal bytes hash
/// alike.
fn gram_hash(gram: &[u8]) -> u32 {
    (hash(load_folded(gram)) >> 32) as u32
}

/// How many of the last bytes of `a` and `b` agree in `flavor`, up to
/// `cap`.
fn common_suffix(flavor: Flavor, a: &[u8], b: &[u8], cap: usize) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take(cap)
        .take_while(|&(&x, &y)| flavor.canon(x) == flavor.canon(y))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(start: usize, len: usize, back: usize, flavor: Flavor) -> LongPattern {
        LongPattern {
            start: start as u32,
            len: len as u32,
            back: back as u32,
            flavor,
        }
    }

    /// The answer by definition: every tail longer than `LONG_TAIL`, every
    /// pattern, every start.
    fn by_definition(pats: &[LongPattern], arena: &[u8], scratch: &[u8]) -> Option<usize> {
        (LONG_TAIL + 1..=scratch.len()).rev().find(|&m| {
            let tail = &scratch[scratch.len() - m..];
            pats.iter().any(|p| {
                let bytes = &arena[p.start as usize..(p.start + p.len) as usize];
                (0..=p.back as usize)
                    .any(|j| bytes.len() > j + m && p.flavor.eq(&bytes[j..j + m], tail))
            })
        })
    }

    fn letters(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
                    [(x % 64) as usize]
            })
            .collect()
    }

    #[test]
    fn long_tails_agree_with_the_definition() {
        let v = letters(7, 700);
        let periodic: Vec<u8> = b"abcabcab".iter().cycle().take(400).copied().collect();
        let upper = v.to_ascii_uppercase();
        let arena = [v.as_slice(), &periodic, &upper].concat();
        let pats = [
            // A value's suffixes from anywhere in its first half.
            pat(0, 700, 350, Flavor::Exact),
            // The same bytes, starting only at 0.
            pat(0, 700, 0, Flavor::Exact),
            pat(700, 400, 200, Flavor::Exact),
            pat(1100, 700, 3, Flavor::Hex),
            // Too short to be indexed.
            pat(0, LONG_TAIL + 1, 0, Flavor::Exact),
        ];
        let ends = LongEnds::build(pats, &arena);
        let lower = v.to_ascii_lowercase();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for (from, to) in [
            (0, 699),
            (0, 700),
            (10, 600),
            (349, 699),
            (351, 699),
            (100, 300),
        ] {
            cases.push(v[from..to].to_vec());
            cases.push([b"xyz".as_slice(), &v[from..to]].concat());
            cases.push([&v[from..to], b"after".as_slice()].concat());
            cases.push(lower[from..to].to_vec());
        }
        for (from, to) in [(0, 399), (0, 400), (5, 399), (201, 399), (0, 250)] {
            cases.push(periodic[from..to].to_vec());
            cases.push([b"Q".as_slice(), &periodic[from..to]].concat());
        }
        for case in &cases {
            let mut work = Work::default();
            assert_eq!(
                ends.longest(&arena, case, &mut work),
                by_definition(&pats, &arena, case),
                "case of {} bytes",
                case.len()
            );
            assert!(!work.gave_up);
        }
    }

    #[test]
    fn a_long_value_printed_whole_costs_its_length() {
        for n in [4 * 1024, 64 * 1024, 256 * 1024] {
            let v = letters(n as u64, n);
            let pats = [pat(0, n, n / 2, Flavor::Exact)];
            let ends = LongEnds::build(pats, &v);
            for scratch in [
                [&v[..n - 1], b"\n".as_slice()].concat(),
                v[..n - 1].to_vec(),
                v[n / 3..n - 7].to_vec(),
            ] {
                let mut work = Work::default();
                let m = ends.longest(&v, &scratch, &mut work);
                assert_eq!(m.is_some(), !scratch.ends_with(b"\n"));
                assert!(work.steps <= 2 * scratch.len() + 64, "{work:?} for {n}");
            }
        }
    }

    #[test]
    fn past_the_allowance_more_is_held_never_less() {
        let n = 256 * 1024;
        let v: Vec<u8> = b"ab".iter().cycle().take(n).copied().collect();
        let ends = LongEnds::build([pat(0, n, n / 2, Flavor::Exact)], &v);
        // Agrees backwards with every other place, for all but its first byte.
        let scratch = [b"b".as_slice(), &v[..n - 2]].concat();
        let mut work = Work::default();
        let m = ends.longest(&v, &scratch, &mut work).expect("held");
        assert!(m >= scratch.len() - 1);
        assert!(work.gave_up);
    }
}
