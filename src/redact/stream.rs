//! Streaming redaction of one output stream (a child's stdout, stderr or
//! pty): bytes are pushed in chunks of any size, and each push writes every
//! byte whose fate is decided. The only bytes held back are a tail that is
//! still a proper prefix of some pattern, so memory stays under the longest
//! pattern and a prompt such as `Password: ` goes out at once.
//!
//! Why the output equals [`Matcher::redact_all`] of the whole input: no
//! occurrence that starts before the held tail can extend past the bytes
//! already seen (else that start would be held too), so each push reports
//! exactly the occurrences starting before the tail, in order, to the same
//! merge rule; the held bytes are scanned again with what follows them.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

use super::matcher::{Emitter, Sink, Source};
use super::{Counts, Matcher, Piece};

/// Redaction state of one output stream. `M` is how the stream reaches its
/// matcher: `&Matcher` or `Arc<Matcher>` (the default, for relay threads).
pub struct Stream<M: Deref<Target = Matcher> = Arc<Matcher>> {
    m: M,
    /// Held bytes: absolute positions `tail_base..tail_base + tail.len()`.
    /// Capacity fixed at creation, so the buffer never moves unwiped.
    tail: Zeroizing<Vec<u8>>,
    tail_base: u64,
    /// First byte not yet written or swallowed by a mask (absolute); can be
    /// past `tail_base` when a mask already covers part of the tail.
    pos: u64,
    counts: Counts,
    /// Work space for the junction of tail and input, same hygiene.
    scratch: Zeroizing<Vec<u8>>,
}

impl<M: Deref<Target = Matcher>> fmt::Debug for Stream<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("held", &self.tail.len())
            .field("position", &(self.tail_base + self.tail.len() as u64))
            .field("counts", &self.counts)
            .finish()
    }
}

impl<M: Deref<Target = Matcher>> Stream<M> {
    pub fn new(m: M) -> Self {
        let max = m.max_pattern_len();
        Stream {
            tail: Zeroizing::new(Vec::with_capacity(max)),
            scratch: Zeroizing::new(Vec::with_capacity(2 * max)),
            m,
            tail_base: 0,
            pos: 0,
            counts: Counts::default(),
        }
    }

    /// Appends redacted output for `input` to `out`. Bytes that cannot begin
    /// a pattern are emitted at once; only a tail that could still be the
    /// start of a pattern is held back.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        self.push_to(input, out, None);
    }

    /// As [`Stream::push`], without copying what passes unchanged: appends
    /// to `out` only masks and bytes held from earlier pushes, and to
    /// `pieces` where each stretch of the output comes from (ranges of
    /// `out`, ranges of `input`), in order. Writing the pieces in order
    /// writes what [`Stream::push`] would have appended.
    pub fn push_pieces(&mut self, input: &[u8], out: &mut Vec<u8>, pieces: &mut Vec<Piece>) {
        self.push_to(input, out, Some(pieces));
    }

    fn push_to(&mut self, input: &[u8], out: &mut Vec<u8>, pieces: Option<&mut Vec<Piece>>) {
        let n_old = self.tail_base + self.tail.len() as u64;
        if self.m.is_empty() {
            match pieces {
                Some(p) if !input.is_empty() => p.push(Piece::In(0..input.len())),
                Some(_) => {}
                None => out.extend_from_slice(input),
            }
            self.tail_base = n_old + input.len() as u64;
            self.pos = self.tail_base;
            return;
        }
        let n = n_old + input.len() as u64;
        let held = self.hold_from(input);
        let m = &*self.m;

        let src = Source::new(&self.tail, self.tail_base, input);
        let mut emitter =
            Emitter::new(m, src, out, &mut self.counts, self.pos, held).with_pieces(pieces);
        if !self.tail.is_empty() && held > self.tail_base {
            // Occurrences that start in the old tail end within the next
            // `max_len - 1` input bytes.
            let more = input.len().min(m.max_pattern_len() - 1);
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.tail);
            self.scratch.extend_from_slice(&input[..more]);
            let limit = (held - self.tail_base).min(self.tail.len() as u64) as usize;
            m.scan(&self.scratch, self.tail_base, limit, &mut emitter);
        }
        if held > n_old {
            m.scan(input, n_old, (held - n_old) as usize, &mut emitter);
        }
        emitter.progress(held);
        self.pos = emitter.pos;

        // Keep bytes `held..n` as the new tail.
        if held >= n_old {
            if !self.tail.is_empty() {
                self.tail.zeroize();
            }
            self.tail
                .extend_from_slice(&input[(held - n_old) as usize..]);
        } else {
            self.tail.drain(..(held - self.tail_base) as usize);
            self.tail.extend_from_slice(input);
        }
        self.tail_base = held;
        debug_assert!(self.tail.len() < m.max_pattern_len().max(1));
        debug_assert_eq!(self.tail_base + self.tail.len() as u64, n);
    }

    /// End of stream: writes the held tail, redacted. The stream can be
    /// pushed to again afterwards, as a fresh stream with the same counts.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let m = &*self.m;
        let n = self.tail_base + self.tail.len() as u64;
        let src = Source::new(&self.tail, self.tail_base, &[]);
        let mut emitter = Emitter::new(m, src, out, &mut self.counts, self.pos, n);
        m.scan(&self.tail, self.tail_base, self.tail.len(), &mut emitter);
        emitter.progress(n);
        self.pos = n;
        self.tail.zeroize();
        self.tail_base = n;
    }

    /// Masks written so far, per secret id.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Number of bytes held back, waiting for more input or [`Stream::finish`].
    pub fn held(&self) -> usize {
        self.tail.len()
    }

    /// The absolute position where the tail must start after appending
    /// `input`: the earliest position whose remaining bytes are a proper
    /// prefix of some pattern, or the end.
    fn hold_from(&mut self, input: &[u8]) -> u64 {
        let n = self.tail_base + (self.tail.len() + input.len()) as u64;
        let keep = (self.m.max_pattern_len() - 1).min(self.tail.len() + input.len());
        // The last `keep` bytes of tail + input.
        self.scratch.clear();
        if keep > input.len() {
            let from_tail = keep - input.len();
            self.scratch
                .extend_from_slice(&self.tail[self.tail.len() - from_tail..]);
            self.scratch.extend_from_slice(input);
        } else {
            self.scratch.extend_from_slice(&input[input.len() - keep..]);
        }
        let at = self.m.hold_at(&self.scratch);
        n - (keep - at) as u64
    }
}
