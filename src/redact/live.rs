//! Glue between resolved secrets and the redactor (`run`'s relay,
//! `keywarden redact`, `keywarden scan`): which values are masked
//! (every resolved secret, and the values of always-denied variables found
//! in keywarden's own environment, which the child never gets but might
//! still find elsewhere), and the relay [`Filter`] that applies it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use crate::config::LaunchPlan;
use crate::envfilter::DenyList;
use crate::redact::{Builder, Counts, Mask, Matcher, Piece, Secret, Stream};
use crate::relay::Filter;
use crate::secret::SecretBytes;

/// Build the matcher for a plan's resolved values (in plan order) plus the
/// denied variables of `process_env`.
pub fn matcher_for(
    plan: &LaunchPlan,
    values: &[SecretBytes],
    process_env: &[(OsString, OsString)],
    extra: &[(&str, &[u8])],
    mask: &Mask,
) -> Matcher {
    Matcher::new(&secrets_for(plan, values, process_env, extra), mask)
}

/// What [`matcher_for`] masks, copied out to build the matcher elsewhere,
/// in two parts: the plan's values, then `extra` and the denied variables
/// of `process_env` (see [`MatcherCell::build_in_parts`]).
pub fn owned_plan_secrets(plan: &LaunchPlan, values: &[SecretBytes]) -> OwnedSecrets {
    OwnedSecrets::new(&secrets_for(plan, values, &[], &[]))
}

/// The second part of [`owned_plan_secrets`].
pub fn owned_other_secrets(
    plan: &LaunchPlan,
    process_env: &[(OsString, OsString)],
    extra: &[(&str, &[u8])],
) -> OwnedSecrets {
    OwnedSecrets::new(&secrets_for(plan, &[], process_env, extra))
}

fn secrets_for<'a>(
    plan: &'a LaunchPlan,
    values: &'a [SecretBytes],
    process_env: &'a [(OsString, OsString)],
    extra: &[(&'a str, &'a [u8])],
) -> Vec<Secret<'a>> {
    let deny = DenyList::new(&plan.policy.deny_env);
    let mut secrets: Vec<Secret<'a>> = plan
        .secrets
        .iter()
        .zip(values)
        .map(|(s, v)| Secret {
            id: &s.id,
            value: v.expose(),
        })
        .collect();
    secrets.extend(extra.iter().map(|&(id, value)| Secret { id, value }));
    for (name, value) in process_env {
        let Some(name) = name.to_str() else { continue };
        if deny.is_denied(name) && !value.is_empty() {
            secrets.push(Secret {
                id: name,
                value: value.as_bytes(),
            });
        }
    }
    secrets
}

/// Masks every form of known values in messages that quote what a provider
/// printed (its stderr, a server's reason): the values resolved so far and
/// those of keywarden's always-denied variables.
pub struct Scrubber<'a> {
    matcher: Matcher,
    raw: Vec<&'a [u8]>,
}

impl std::fmt::Debug for Scrubber<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("values", &self.raw.len())
            .finish()
    }
}

impl<'a> Scrubber<'a> {
    /// Over `known` (id, value) pairs and the always-denied variables of
    /// `process_env`.
    pub fn new(known: &[(&'a str, &'a [u8])], process_env: &'a [(OsString, OsString)]) -> Self {
        let mut secrets: Vec<Secret<'a>> = known
            .iter()
            .map(|&(id, value)| Secret { id, value })
            .collect();
        for (name, value) in process_env {
            let Some(name) = name.to_str() else { continue };
            if crate::envfilter::is_always_denied(name) && !value.is_empty() {
                secrets.push(Secret {
                    id: name,
                    value: value.as_bytes(),
                });
            }
        }
        Scrubber {
            matcher: Matcher::new(&secrets, &Mask::default()),
            raw: secrets.iter().map(|s| s.value).collect(),
        }
    }

    /// `text` with every form of every value masked (and raw values too
    /// short for the matcher replaced as well).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = Vec::with_capacity(text.len());
        self.matcher
            .redact_all(text.as_bytes(), &mut out, &mut Counts::default());
        crate::secret::providers::scrub(&String::from_utf8_lossy(&out), &self.raw)
    }
}

/// Ids whose values are too short to mask safely.
pub fn too_short(plan: &LaunchPlan, values: &[SecretBytes]) -> Vec<String> {
    let secrets: Vec<Secret<'_>> = plan
        .secrets
        .iter()
        .zip(values)
        .map(|(s, v)| Secret {
            id: &s.id,
            value: v.expose(),
        })
        .collect();
    Matcher::too_short(&secrets)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The matcher the relay uses, replaceable while it runs: a reload that
/// brings new values installs a matcher that masks them too. The first
/// one may still be building (see [`MatcherCell::build_in_parts`]):
/// whoever needs it then waits for it.
#[derive(Debug)]
pub struct MatcherCell {
    generation: std::sync::atomic::AtomicU64,
    current: Mutex<Option<Arc<Matcher>>>,
    ready: std::sync::Condvar,
}

impl MatcherCell {
    /// A cell holding `matcher`.
    pub fn new(matcher: Matcher) -> Self {
        MatcherCell {
            generation: std::sync::atomic::AtomicU64::new(0),
            current: Mutex::new(Some(Arc::new(matcher))),
            ready: std::sync::Condvar::new(),
        }
    }

    /// A cell whose first matcher is built on a thread of its own, so that
    /// nothing waits for it but what needs it: the relay's first output, a
    /// proxied response, a record to scrub. A command that writes nothing
    /// and exits never waits for it. The secrets come in two parts: the
    /// forms of `first` are made while the caller gathers the rest, which
    /// it hands over with [`Rest::send`]; the rest come after `first` in
    /// the order that names masks. If the [`Rest`] is dropped unsent (the
    /// caller failed), no matcher is ever installed. If the thread cannot
    /// start, the matcher is built in [`Rest::send`]. `settle` runs once
    /// the secrets are gathered, during the build (see
    /// [`Builder::finish_settling`]) and once the matcher is built: the
    /// caller's chance to hand back memory freed meanwhile (see
    /// `sys::release_free_memory`), which the build would otherwise add
    /// to the peak.
    pub fn build_in_parts(
        first: OwnedSecrets,
        mask: Mask,
        settle: fn(),
    ) -> (Arc<MatcherCell>, Rest) {
        let cell = Arc::new(MatcherCell {
            generation: std::sync::atomic::AtomicU64::new(0),
            current: Mutex::new(None),
            ready: std::sync::Condvar::new(),
        });
        let (rest_tx, rest_rx) = std::sync::mpsc::sync_channel::<OwnedSecrets>(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(OwnedSecrets, Mask)>(1);
        let target = cell.clone();
        let spawned = std::thread::Builder::new()
            .name("matcher".into())
            .spawn(move || {
                if let Ok((first, mask)) = rx.recv() {
                    target.build_first(first, || rest_rx.recv().ok(), &mask, settle);
                }
            });
        let rest = match spawned {
            // Handed over once the thread exists, so a failed start keeps
            // the work here.
            Ok(_) => match tx.send((first, mask)) {
                Ok(()) => Rest::Thread(rest_tx),
                Err(back) => Rest::Here(cell.clone(), back.0, settle),
            },
            Err(_) => Rest::Here(cell.clone(), (first, mask), settle),
        };
        (cell, rest)
    }

    /// Builds the first matcher from `first` and what `rest` gives, and
    /// installs it (nothing when `rest` gives nothing).
    fn build_first(
        &self,
        first: OwnedSecrets,
        rest: impl FnOnce() -> Option<OwnedSecrets>,
        mask: &Mask,
        settle: fn(),
    ) {
        // Waiters would wait for ever, and nothing may be relayed
        // unmasked: a build that fails ends keywarden, as it did when the
        // matcher was built on the main thread.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut builder = Builder::default();
            first.add_to(&mut builder);
            drop(first);
            let rest = rest()?;
            rest.add_to(&mut builder);
            // The secrets' own copies (and what the caller freed while
            // they were gathered) go before the tables are built.
            drop(rest);
            settle();
            let matcher = builder.finish_settling(mask, settle);
            settle();
            Some(matcher)
        }));
        match built {
            Ok(Some(matcher)) => self.install_first(matcher),
            Ok(None) => {}
            Err(_) => std::process::abort(),
        }
    }

    /// Install the first matcher, unless a reload already installed a newer
    /// one.
    fn install_first(&self, matcher: Matcher) {
        let mut m = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_none() {
            *m = Some(Arc::new(matcher));
        }
        self.ready.notify_all();
    }

    /// Install a new matcher; streams switch to it at their next write.
    pub fn replace(&self, matcher: Matcher) {
        let mut m = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *m = Some(Arc::new(matcher));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.ready.notify_all();
    }

    /// The matcher now (waiting for the first one to be built).
    pub fn current(&self) -> Arc<Matcher> {
        self.get().1
    }

    fn get(&self) -> (u64, Arc<Matcher>) {
        let mut m = self.current.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(matcher) = m.as_ref() {
                return (self.generation(), matcher.clone());
            }
            m = self.ready.wait(m).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The second part of the secrets of a matcher being built (see
/// [`MatcherCell::build_in_parts`]).
#[derive(Debug)]
pub enum Rest {
    /// The building thread waits for them.
    Thread(std::sync::mpsc::SyncSender<OwnedSecrets>),
    /// No thread could start: the matcher is built on [`Rest::send`].
    Here(Arc<MatcherCell>, (OwnedSecrets, Mask), fn()),
}

impl Rest {
    /// Hand over the rest of the secrets.
    pub fn send(self, rest: OwnedSecrets) {
        match self {
            Rest::Thread(tx) => {
                let _ = tx.send(rest);
            }
            Rest::Here(cell, (first, mask), settle) => {
                cell.build_first(first, || Some(rest), &mask, settle)
            }
        }
    }
}

/// Secrets copied out for a matcher built on another thread: ids and
/// values, the values wiped on drop.
#[derive(Default)]
pub struct OwnedSecrets {
    ids: Vec<Box<str>>,
    values: Vec<zeroize::Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for OwnedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedSecrets")
            .field("values", &self.values.len())
            .finish()
    }
}

impl OwnedSecrets {
    fn new(secrets: &[Secret<'_>]) -> Self {
        OwnedSecrets {
            ids: secrets.iter().map(|s| s.id.into()).collect(),
            values: secrets
                .iter()
                .map(|s| zeroize::Zeroizing::new(s.value.to_vec()))
                .collect(),
        }
    }

    fn add_to(&self, builder: &mut Builder) {
        let secrets: Vec<Secret<'_>> = self
            .ids
            .iter()
            .zip(&self.values)
            .map(|(id, value)| Secret { id, value })
            .collect();
        builder.add(&secrets);
    }
}

impl MatcherCell {
    /// `text` with every masked value replaced by its mask, or `None` when
    /// it holds none (the common case costs one scan and no copy).
    pub fn scrub(&self, text: &str) -> Option<String> {
        let (_, matcher) = self.get();
        if matcher.find_spans(text.as_bytes()).is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(text.len());
        matcher.redact_all(text.as_bytes(), &mut out, &mut Counts::default());
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The matcher keywarden's own records (audit lines, log lines, the socket
/// API's error replies) are run through, as a defence in depth behind the
/// rule that they never quote what a request sent: the relay's, once `run`
/// has built it. One per process.
static RECORDS: std::sync::OnceLock<Arc<MatcherCell>> = std::sync::OnceLock::new();

/// Run keywarden's records through `cell` from now on (the first call
/// wins; the cell itself follows reloads).
pub fn scrub_records_with(cell: Arc<MatcherCell>) {
    let _ = RECORDS.set(cell);
}

/// `text` masked by the records' matcher, or `None` when there is none
/// yet or it masks nothing.
pub fn scrub_record(text: &str) -> Option<String> {
    RECORDS.get()?.scrub(text)
}

/// [`scrub_record`] in place.
pub fn scrub_record_in(text: &mut String) {
    if let Some(clean) = scrub_record(text) {
        let mut old = std::mem::replace(text, clean);
        zeroize::Zeroize::zeroize(&mut old);
    }
}

/// The relay stage that masks secrets in one stream; its counts are added
/// to a shared total when the stream ends (or switches matcher). It takes
/// the cell's matcher at its first write, so that setting up the relay
/// never waits for a matcher still being built.
pub struct RedactFilter {
    cell: Arc<MatcherCell>,
    /// The generation and stream in use, from the first write on.
    stream: Option<(u64, Stream)>,
    total: Arc<Mutex<Counts>>,
}

impl RedactFilter {
    /// A filter over the cell's matcher adding its counts to `total`.
    pub fn new(cell: Arc<MatcherCell>, total: Arc<Mutex<Counts>>) -> Self {
        RedactFilter {
            cell,
            stream: None,
            total,
        }
    }

    /// Ends the current stream: its held tail to `out`, its counts to the
    /// total.
    fn end_stream(&mut self, out: &mut Vec<u8>) {
        if let Some((_, mut stream)) = self.stream.take() {
            stream.finish(out);
            if let Ok(mut t) = self.total.lock() {
                t.merge(stream.counts());
            }
        }
    }
}

impl std::fmt::Debug for RedactFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactFilter")
            .field("stream", &self.stream.as_ref().map(|(_, s)| s))
            .finish()
    }
}

impl RedactFilter {
    /// The stream to push to: the current one, or a new one over the
    /// cell's matcher (at the first write, or after a reload installed a
    /// new matcher: then the old stream's held tail is flushed to `out`
    /// through the old one first).
    fn stream(&mut self, out: &mut Vec<u8>) -> &mut Stream {
        if let Some((generation, _)) = &self.stream {
            if self.cell.generation() != *generation {
                self.end_stream(out);
            }
        }
        let cell = &self.cell;
        let (_, stream) = self.stream.get_or_insert_with(|| {
            let (generation, matcher) = cell.get();
            (generation, Stream::new(matcher))
        });
        stream
    }
}

impl Filter for RedactFilter {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.stream(out).push(input, out);
    }

    fn push_pieces(&mut self, input: &[u8], out: &mut Vec<u8>, pieces: &mut Vec<Piece>) {
        let flushed = out.len();
        let stream = self.stream(out);
        if out.len() > flushed {
            pieces.push(Piece::Out(flushed..out.len()));
        }
        stream.push_pieces(input, out, pieces);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.end_stream(out);
    }
}

/// Report how often each secret was masked (ids and counts, never values).
pub fn log_counts(counts: &Counts) {
    for (id, n) in counts.iter() {
        tracing::info!("masked {id} {n} time{}", if n == 1 { "" } else { "s" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value made at run time: 32 hex digits.
    fn value() -> String {
        let mut bytes = [0u8; 16];
        crate::sys::random::fill(&mut bytes).expect("random");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn secrets(value: &[u8]) -> OwnedSecrets {
        OwnedSecrets::new(&[Secret { id: "k", value }])
    }

    fn matcher_of(secrets: OwnedSecrets) -> Matcher {
        let mut builder = Builder::default();
        secrets.add_to(&mut builder);
        builder.finish(&Mask::default())
    }

    fn masked(cell: &MatcherCell, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        cell.current()
            .redact_all(text, &mut out, &mut Counts::default());
        out
    }

    #[test]
    fn a_cell_built_in_the_background_masks_once_ready() {
        let value = value();
        let (cell, rest) =
            MatcherCell::build_in_parts(secrets(value.as_bytes()), Mask::default(), || {});
        rest.send(OwnedSecrets::default());
        let text = format!("key={value}");
        assert_eq!(masked(&cell, text.as_bytes()), b"key=[REDACTED:k]");
    }

    /// The caller's settle hook runs four times in the build of one tier:
    /// once the secrets are in, once their forms are sorted, before the
    /// tier's entries are made, once the matcher is built (before it is
    /// installed).
    #[test]
    fn the_build_settles_four_times_before_the_matcher_is_ready() {
        static SETTLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let value = value();
        let (cell, rest) =
            MatcherCell::build_in_parts(secrets(value.as_bytes()), Mask::default(), || {
                SETTLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        assert_eq!(
            SETTLED.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "not before the rest"
        );
        rest.send(OwnedSecrets::default());
        let text = format!("key={value}");
        assert_eq!(masked(&cell, text.as_bytes()), b"key=[REDACTED:k]");
        assert_eq!(SETTLED.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[test]
    fn a_reload_before_the_first_build_wins() {
        let old = value();
        let new = value();
        let cell = Arc::new(MatcherCell {
            generation: std::sync::atomic::AtomicU64::new(0),
            current: Mutex::new(None),
            ready: std::sync::Condvar::new(),
        });
        // A waiter blocks until a matcher is there.
        let waiter = {
            let cell = cell.clone();
            let text = format!("{old} {new}");
            std::thread::spawn(move || masked(&cell, text.as_bytes()))
        };
        cell.replace(matcher_of(secrets(new.as_bytes())));
        cell.install_first(matcher_of(secrets(old.as_bytes())));
        let want = format!("{old} [REDACTED:k]");
        assert_eq!(waiter.join().expect("waiter"), want.as_bytes());
        assert_eq!(
            masked(&cell, format!("{old} {new}").as_bytes()),
            want.as_bytes()
        );
    }

    /// `run` starts the build on the plan's values and hands over the
    /// services' masked variables and the denied environment after: both
    /// parts are masked, and the first part names a value both hold.
    #[test]
    fn a_cell_built_in_parts_masks_both_parts() {
        let (shared, first_only, rest_only) = (value(), value(), value());
        let first = OwnedSecrets::new(&[
            Secret {
                id: "plan",
                value: shared.as_bytes(),
            },
            Secret {
                id: "first",
                value: first_only.as_bytes(),
            },
        ]);
        let (cell, rest) = MatcherCell::build_in_parts(first, Mask::default(), || {});
        rest.send(OwnedSecrets::new(&[
            Secret {
                id: "rest",
                value: rest_only.as_bytes(),
            },
            Secret {
                id: "again",
                value: shared.as_bytes(),
            },
        ]));
        let text = format!("{shared} {first_only} {rest_only}");
        assert_eq!(
            masked(&cell, text.as_bytes()),
            b"[REDACTED:plan] [REDACTED:first] [REDACTED:rest]"
        );
    }

    /// A rest never sent (`run` failed setting up its services) leaves the
    /// cell empty: no matcher that lacks the services' values is installed.
    #[test]
    fn a_cell_whose_rest_is_dropped_gets_no_matcher() {
        let v = value();
        let (cell, rest) =
            MatcherCell::build_in_parts(secrets(v.as_bytes()), Mask::default(), || {});
        drop(rest);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(cell.current.lock().expect("lock").is_none());
        // A matcher installed later still reaches waiters.
        cell.replace(matcher_of(secrets(v.as_bytes())));
        assert_eq!(masked(&cell, v.as_bytes()), b"[REDACTED:k]");
    }
}
