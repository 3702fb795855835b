//! Tests of the redaction semantics: tables of generated cases (every secret
//! is made at run time from a seeded generator, so no secret-looking literal
//! lives in the source) and property tests that compare one-shot, streaming
//! and a naive reference matcher.
//!
//! Over 900 lines of tests only: one table per encoding family and the
//! property tests that hold stream, one-shot and reference together.

use proptest::prelude::*;

use super::encode;
use super::*;

/// splitmix64: a small seeded generator for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn alnum(&mut self, len: usize) -> Vec<u8> {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len).map(|_| CHARS[self.below(CHARS.len())]).collect()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn matcher(secrets: &[(&str, &[u8])]) -> Matcher {
    let secrets: Vec<Secret<'_>> = secrets
        .iter()
        .map(|&(id, value)| Secret { id, value })
        .collect();
    Matcher::new(&secrets, &Mask::default())
}

/// `prefix0`, `prefix1`, ...: ids for `n` secrets.
fn numbered_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Each value with the id at its place.
fn listed<'a>(ids: &'a [String], values: &'a [Vec<u8>]) -> Vec<Secret<'a>> {
    ids.iter()
        .zip(values)
        .map(|(id, value)| Secret { id, value })
        .collect()
}

fn one_shot(m: &Matcher, input: &[u8]) -> (Vec<u8>, Counts) {
    let mut out = Vec::new();
    let mut counts = Counts::default();
    m.redact_all(input, &mut out, &mut counts);
    (out, counts)
}

/// Streams `input` in chunks that end at the given cut points.
fn streamed(m: &Matcher, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Counts) {
    let mut stream = Stream::new(m);
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let cut = cut.clamp(at, input.len());
        stream.push(&input[at..cut], &mut out);
        assert!(
            stream.held() < m.max_pattern_len().max(1),
            "held tail too long"
        );
        at = cut;
    }
    stream.push(&input[at..], &mut out);
    stream.finish(&mut out);
    (out, stream.counts().clone())
}

/// As [`streamed`], through [`Stream::push_pieces`]: the output put
/// together from its pieces, each push with a fresh `out` (as the relay
/// does) that must hold nothing but the pieces' own bytes.
fn streamed_pieces(m: &Matcher, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut stream = Stream::new(m);
    let mut whole = Vec::new();
    let mut at = 0;
    let mut push = |stream: &mut Stream<&Matcher>, chunk: &[u8]| {
        let (mut out, mut pieces) = (Vec::new(), Vec::new());
        stream.push_pieces(chunk, &mut out, &mut pieces);
        let mut made = 0;
        for piece in &pieces {
            match piece {
                Piece::Out(r) => {
                    made += r.len();
                    whole.extend_from_slice(&out[r.clone()]);
                }
                Piece::In(r) => whole.extend_from_slice(&chunk[r.clone()]),
            }
        }
        assert_eq!(made, out.len(), "out holds bytes no piece names");
    };
    for &cut in cuts {
        let cut = cut.clamp(at, input.len());
        push(&mut stream, &input[at..cut]);
        at = cut;
    }
    push(&mut stream, &input[at..]);
    stream.finish(&mut whole);
    whole
}

/// The definition in the module doc, computed the slow way: every pattern
/// stands for each `back[j..] + core + fwd[..i]`, compared in its flavour;
/// at each start the longest one that occurs.
fn reference(m: &Matcher, input: &[u8]) -> Vec<u8> {
    let patterns = m.patterns();
    let mut occurrences = Vec::new();
    for start in 0..input.len() {
        let mut longest: Option<(usize, &str)> = None;
        for &(full, back, fwd, flavor, id) in &patterns {
            let at = |k: usize, b: u8| {
                input
                    .get(start + k)
                    .is_some_and(|&h| flavor.canon(h) == flavor.canon(b))
            };
            for j in 0..=back {
                let fixed = &full[j..full.len() - fwd];
                if !fixed.iter().enumerate().all(|(k, &b)| at(k, b)) {
                    continue;
                }
                let more = full[full.len() - fwd..]
                    .iter()
                    .enumerate()
                    .take_while(|&(i, &b)| at(fixed.len() + i, b))
                    .count();
                let len = fixed.len() + more;
                if longest.is_none_or(|(l, _)| len > l) {
                    longest = Some((len, id));
                }
            }
        }
        if let Some((len, id)) = longest {
            occurrences.push((start, start + len, id));
        }
    }
    let mut out = Vec::new();
    let mut pos = 0;
    for (start, end, id) in occurrences {
        if start < pos {
            pos = pos.max(end);
        } else {
            out.extend_from_slice(&input[pos..start]);
            out.extend_from_slice(Mask::default().render(id).as_bytes());
            pos = end;
        }
    }
    out.extend_from_slice(&input[pos..]);
    out
}

/// Redacts one-shot, then streamed in every two-piece split and in 1-byte
/// pushes; all must agree. Returns the output.
fn redact_everyway(m: &Matcher, input: &[u8]) -> Vec<u8> {
    let (out, counts) = one_shot(m, input);
    assert_eq!(
        out,
        reference(m, input),
        "one-shot differs from the reference"
    );
    for cut in 0..=input.len() {
        let (s, c) = streamed(m, input, &[cut]);
        assert_eq!(s, out, "split at {cut}");
        assert_eq!(c, counts, "counts, split at {cut}");
    }
    let ones: Vec<usize> = (1..input.len()).collect();
    assert_eq!(streamed(m, input, &ones).0, out, "1-byte pushes");
    out
}

fn masked(id: &str) -> Vec<u8> {
    Mask::default().render(id).into_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn prefix_secret_masks_the_whole_longer_one() {
    let mut rng = Rng(1);
    let short = rng.alnum(12);
    let long = cat(&[&short, &rng.alnum(9)]);
    let m = matcher(&[("short", &short), ("long", &long)]);
    for (input, want) in [
        (
            cat(&[b"x ", &long, b" y"]),
            cat(&[b"x ", &masked("long"), b" y"]),
        ),
        (
            cat(&[b"x ", &short, b" y"]),
            cat(&[b"x ", &masked("short"), b" y"]),
        ),
        (
            cat(&[&long, &long[..15]]),
            cat(&[&masked("long"), &masked("short"), &long[12..15]]),
        ),
    ] {
        assert_eq!(redact_everyway(&m, &input), want);
    }
    // The order the secrets are given in does not matter.
    let m = matcher(&[("long", &long), ("short", &short)]);
    assert_eq!(redact_everyway(&m, &long), masked("long"));
}

#[test]
fn overlapping_and_chained_occurrences_mask_the_union() {
    let mut rng = Rng(2);
    let text = rng.alnum(40);
    let a = &text[0..16];
    let b = &text[10..28];
    let c = &text[24..40];
    let m = matcher(&[("a", a), ("b", b), ("c", c)]);
    // a overlaps b overlaps c: one span, named by a (leftmost), counted once.
    let input = cat(&[b"<", &text, b">"]);
    assert_eq!(
        redact_everyway(&m, &input),
        cat(&[b"<", &masked("a"), b">"])
    );
    let (_, counts) = one_shot(&m, &input);
    assert_eq!(
        (counts.get("a"), counts.get("b"), counts.get("c")),
        (1, 0, 0)
    );
    // b alone, then the part of a that overlaps nothing.
    let input = cat(&[&text[10..28], b" ", &text[0..16]]);
    assert_eq!(
        redact_everyway(&m, &input),
        cat(&[&masked("b"), b" ", &masked("a")])
    );
    // A secret inside another is swallowed by it.
    let inner = &text[4..14];
    let m = matcher(&[("outer", a), ("inner", inner)]);
    assert_eq!(redact_everyway(&m, a), masked("outer"));
    // The longest at the span start names the span, even if shorter than the
    // union.
    let m = matcher(&[
        ("ab", &text[0..20]),
        ("a", &text[0..12]),
        ("tail", &text[15..40]),
    ]);
    assert_eq!(redact_everyway(&m, &text), masked("ab"));
}

#[test]
fn adjacent_occurrences_get_one_mask_each() {
    let mut rng = Rng(3);
    let a = rng.alnum(10);
    let b = rng.alnum(11);
    let m = matcher(&[("a", &a), ("b", &b)]);
    let input = cat(&[&a, &b, &a, &a]);
    let want = cat(&[&masked("a"), &masked("b"), &masked("a"), &masked("a")]);
    assert_eq!(redact_everyway(&m, &input), want);
    let (_, counts) = one_shot(&m, &input);
    assert_eq!(
        (counts.get("a"), counts.get("b"), counts.total()),
        (3, 1, 4)
    );
    assert_eq!(counts.iter().collect::<Vec<_>>(), [("a", 3), ("b", 1)]);
}

/// Independent, simple encoders for the forms a program would print.
fn base64_of(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> Vec<u8> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out: Vec<u8> = bits
        .chunks(6)
        .map(|c| {
            let v = c
                .iter()
                .chain(std::iter::repeat(&0))
                .take(6)
                .fold(0usize, |v, &bit| v << 1 | bit as usize);
            alphabet[v]
        })
        .collect();
    while pad && out.len() % 4 != 0 {
        out.push(b'=');
    }
    out
}

fn printed_forms(value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let hex_lower: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let percent = |upper: bool| -> Vec<u8> {
        let mut out = String::new();
        for &b in value {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                _ if upper => out.push_str(&format!("%{b:02X}")),
                _ => out.push_str(&format!("%{b:02x}")),
            }
        }
        out.into_bytes()
    };
    vec![
        ("raw", value.to_vec()),
        ("base64", base64_of(value, encode::BASE64_STD, true)),
        (
            "base64 unpadded",
            base64_of(value, encode::BASE64_STD, false),
        ),
        ("base64url", base64_of(value, encode::BASE64_URL, true)),
        (
            "base64url unpadded",
            base64_of(value, encode::BASE64_URL, false),
        ),
        ("hex", hex_lower.clone().into_bytes()),
        ("HEX", hex_lower.to_uppercase().into_bytes()),
        ("percent", percent(true)),
        ("percent lower", percent(false)),
    ]
}

#[test]
fn every_encoding_is_masked() {
    let mut rng = Rng(4);
    for round in 0..20 {
        // Random bytes: every byte value, invalid UTF-8, encodings with + / -.
        let value = rng.bytes(8 + round * 3);
        let m = matcher(&[("s", &value)]);
        for (name, form) in printed_forms(&value) {
            let input = cat(&[b"value=", &form, b";\n"]);
            assert_eq!(
                redact_everyway(&m, &input),
                cat(&[b"value=", &masked("s"), b";\n"]),
                "{name}"
            );
        }
    }
}

/// The index keys a base64 window by its bytes (only ASCII case folded), so
/// a base64 pattern holds one key per mix of the two alphabets in each
/// gram: a value whose base64 is nearly all `+/` (or `-_`), written with
/// the alphabets mixed character by character, must still be found.
#[test]
fn base64_with_both_alphabets_mixed_in_every_window_is_masked() {
    let mut rng = Rng(23);
    for round in 0..20 {
        // 0xfbefbe is `++++` in base64, 0xffffff `////`.
        let value: Vec<u8> = (0..10)
            .flat_map(|_| match rng.below(3) {
                0 => [0xfb, 0xef, 0xbe],
                1 => [0xff, 0xff, 0xff],
                _ => [rng.next() as u8, 0xff, 0xff],
            })
            .collect();
        let m = matcher(&[("mix", &value)]);
        let std = base64_of(&value, encode::BASE64_STD, true);
        let url = base64_of(&value, encode::BASE64_URL, true);
        let mixed: Vec<u8> = std
            .iter()
            .zip(&url)
            .map(|(&a, &b)| if rng.below(2) == 0 { a } else { b })
            .collect();
        assert_masked(&m, &mixed, "mix", &format!("round {round}"));
    }
}

#[test]
fn json_escaped_values_are_masked() {
    let mut rng = Rng(5);
    let value = cat(&[&rng.alnum(6), b"\"q\\b\n\t/x<", &rng.alnum(6), b"\x01\x7f"]);
    let m = matcher(&[("s", &value)]);
    let mut escaped = Vec::new();
    for &b in &value {
        match b {
            b'"' => escaped.extend_from_slice(b"\\\""),
            b'\\' => escaped.extend_from_slice(b"\\\\"),
            b'\n' => escaped.extend_from_slice(b"\\n"),
            b'\t' => escaped.extend_from_slice(b"\\t"),
            0..0x20 => escaped.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => escaped.push(b),
        }
    }
    let doc = cat(&[b"{\"key\":\"", &escaped, b"\"}"]);
    assert_eq!(
        redact_everyway(&m, &doc),
        cat(&[b"{\"key\":\"", &masked("s"), b"\"}"])
    );
    // With `\/` as some encoders write it.
    let slashed: Vec<u8> = escaped
        .iter()
        .flat_map(|&b| if b == b'/' { b"\\/".to_vec() } else { vec![b] })
        .collect();
    assert_eq!(redact_everyway(&m, &slashed), masked("s"));
}

#[test]
fn base64_inside_a_larger_blob_is_masked_at_every_alignment() {
    let mut rng = Rng(6);
    let value = rng.bytes(30);
    let m = matcher(&[("s", &value)]);
    for alphabet in [encode::BASE64_STD, encode::BASE64_URL] {
        for before in 0..6 {
            for after in 0..3 {
                let blob = cat(&[&rng.bytes(before), &value, &rng.bytes(after)]);
                let text = base64_of(&blob, alphabet, true);
                let out = redact_everyway(&m, &text);
                assert!(
                    contains(&out, &masked("s")),
                    "before={before} after={after}"
                );
                // At most the 2 characters on each side that mix in
                // neighbouring bytes survive, plus the neighbours' own.
                let unmasked = out.len() - masked("s").len();
                assert!(unmasked <= text.len() - 36, "before={before} after={after}");
            }
        }
    }
}

#[test]
fn each_line_of_a_multi_line_secret_is_masked() {
    let mut rng = Rng(7);
    let lines: Vec<Vec<u8>> = (0..5)
        .map(|_| base64_of(&rng.bytes(48), encode::BASE64_STD, true))
        .collect();
    let body = lines.join(&b'\n');
    let pem = cat(&[
        b"-----BEGIN TEST BLOCK-----\n",
        &body,
        b"\n-----END TEST BLOCK-----\n",
    ]);
    let m = matcher(&[("pem", &pem)]);
    // The whole value, as written.
    assert_eq!(redact_everyway(&m, &pem), masked("pem"));
    // Each line alone, in any order, with CRLF endings.
    let mut input = Vec::new();
    let mut want = Vec::new();
    for line in lines.iter().rev() {
        input.extend_from_slice(&cat(&[b"> ", line, b"\r\n"]));
        want.extend_from_slice(&cat(&[b"> ", &masked("pem"), b"\r\n"]));
    }
    assert_eq!(redact_everyway(&m, &input), want);
    // The armor lines are no secret and stay.
    let armor = b"-----BEGIN TEST BLOCK-----\n".to_vec();
    assert_eq!(redact_everyway(&m, &armor), armor);
    // The JSON form of the whole value (newlines as \n).
    let json: Vec<u8> = pem
        .iter()
        .flat_map(|&b| if b == b'\n' { b"\\n".to_vec() } else { vec![b] })
        .collect();
    assert_eq!(redact_everyway(&m, &json), masked("pem"));
}

#[test]
fn binary_input_without_secrets_passes_unchanged() {
    let mut rng = Rng(8);
    let secrets: Vec<Vec<u8>> = (0..50).map(|i| rng.bytes(8 + i)).collect();
    let named: Vec<(String, &[u8])> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("s{i}"), &s[..]))
        .collect();
    let named: Vec<(&str, &[u8])> = named.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    let m = matcher(&named);
    let mut input = rng.bytes(4000);
    input.extend_from_slice(b"\xff\xfe\xc0\x80 invalid \xed\xa0\x80 utf-8\0\0");
    assert!(std::str::from_utf8(&input).is_err());
    assert!(one_shot(&m, &input).1.is_empty());
    assert_eq!(one_shot(&m, &input).0, input);
    let cuts: Vec<usize> = (0..input.len()).step_by(7).collect();
    assert_eq!(streamed(&m, &input, &cuts).0, input);
}

#[test]
fn mask_format() {
    let mut rng = Rng(9);
    let value = rng.alnum(16);
    let input = cat(&[b"a ", &value, b" b"]);
    for (format, want) in [
        ("[REDACTED:{id}]", "a [REDACTED:token] b"),
        ("<{id}:{id}>", "a <token:token> b"),
        ("***", "a *** b"),
        ("", "a  b"),
    ] {
        let secrets = [Secret {
            id: "token",
            value: &value,
        }];
        let m = Matcher::new(&secrets, &Mask::new(format));
        assert_eq!(one_shot(&m, &input).0, want.as_bytes(), "{format}");
    }
    assert_eq!(Mask::default().format(), Mask::DEFAULT_FORMAT);
}

#[test]
fn too_short_values_are_reported_and_not_masked() {
    let mut rng = Rng(10);
    let seven = rng.alnum(MIN_SECRET_LEN - 1);
    let eight = rng.alnum(MIN_SECRET_LEN);
    let secrets = [
        Secret {
            id: "seven",
            value: &seven,
        },
        Secret {
            id: "empty",
            value: b"",
        },
        Secret {
            id: "eight",
            value: &eight,
        },
    ];
    assert_eq!(Matcher::too_short(&secrets), ["seven", "empty"]);
    let m = Matcher::new(&secrets, &Mask::default());
    assert_eq!(one_shot(&m, &seven).0, seven);
    assert_eq!(one_shot(&m, &eight).0, masked("eight"));
    // Only short values make an empty matcher.
    let m = Matcher::new(&secrets[..2], &Mask::default());
    assert!(m.is_empty());
    assert_eq!(redact_everyway(&m, b"anything"), b"anything");
}

#[test]
fn same_pattern_from_two_ids_is_named_by_the_first() {
    let mut rng = Rng(11);
    let value = rng.alnum(20);
    let m = matcher(&[("first", &value), ("second", &value)]);
    assert_eq!(one_shot(&m, &value).0, masked("first"));
}

#[test]
fn stream_holds_only_a_possible_prefix() {
    let mut rng = Rng(12);
    let secret = cat(&[b"Pa", &rng.alnum(14)]);
    let m = matcher(&[("s", &secret)]);
    let mut stream = Stream::new(&m);
    let mut out = Vec::new();
    // "Password: " shares "Pa" with the secret but cannot begin it.
    stream.push(b"Password: ", &mut out);
    assert_eq!((out.as_slice(), stream.held()), (&b"Password: "[..], 0));
    // A prefix of the secret is held, byte by byte.
    for (i, b) in secret[..10].iter().enumerate() {
        stream.push(&[*b], &mut out);
        assert_eq!(stream.held(), i + 1);
    }
    assert_eq!(out, b"Password: ");
    // Once it cannot be the secret any more, it goes out.
    stream.push(b"!", &mut out);
    assert_eq!(stream.held(), 0);
    assert_eq!(out, cat(&[b"Password: ", &secret[..10], b"!"]));
    // Split anywhere, the secret is caught.
    out.clear();
    stream.push(&secret[..7], &mut out);
    stream.push(&secret[7..], &mut out);
    stream.push(b"\n", &mut out);
    assert_eq!(out, cat(&[&masked("s"), b"\n"]));
    // finish writes a held prefix unchanged.
    out.clear();
    stream.push(&secret[..5], &mut out);
    assert!(out.is_empty());
    stream.finish(&mut out);
    assert_eq!(out, &secret[..5]);
    assert_eq!(stream.counts().get("s"), 1);
}

#[test]
fn stream_with_an_arc_matcher_moves_to_another_thread() {
    let mut rng = Rng(13);
    let secret = rng.alnum(24);
    let m = std::sync::Arc::new(matcher(&[("s", &secret)]));
    let input = cat(&[b"x", &secret, b"y"]);
    let handle = std::thread::spawn(move || {
        let mut stream: Stream = Stream::new(m);
        let mut out = Vec::new();
        for b in &input {
            stream.push(std::slice::from_ref(b), &mut out);
        }
        stream.finish(&mut out);
        out
    });
    assert_eq!(
        handle.join().expect("thread"),
        cat(&[b"x", &masked("s"), b"y"])
    );
}

#[test]
fn debug_prints_no_secret() {
    let mut rng = Rng(14);
    let value = rng.alnum(20);
    let text = String::from_utf8(value.clone()).expect("alnum");
    let m = matcher(&[("s", &value)]);
    let mut stream = Stream::new(&m);
    stream.push(&value[..10], &mut Vec::new());
    let printed = format!(
        "{m:?} {:?} {stream:?} {:?}",
        Secret {
            id: "s",
            value: &value
        },
        m.find_spans(&value)
    );
    assert!(!printed.contains(&text[..8]), "{printed}");
    assert!(printed.contains("patterns"));
}

#[test]
fn find_spans_reports_merged_spans() {
    let mut rng = Rng(15);
    let text = rng.alnum(30);
    let m = matcher(&[("a", &text[0..12]), ("b", &text[8..20])]);
    let input = cat(&[b"..", &text, b"..", &text[8..20]]);
    let spans = m.find_spans(&input);
    assert_eq!(
        spans,
        [
            Span {
                start: 2,
                end: 22,
                id: "a"
            },
            Span {
                start: 34,
                end: 46,
                id: "b"
            }
        ]
    );
}

/// A secret set for the property tests: random values, plus values that are
/// prefixes of others and values that overlap others.
fn secret_set(min_len: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let value = prop_oneof![
        proptest::collection::vec(b'a'..=b'f', min_len..min_len + 30),
        proptest::collection::vec(any::<u8>(), min_len..min_len + 30),
    ];
    (
        proptest::collection::vec(value, 1..5),
        proptest::collection::vec((any::<usize>(), any::<usize>(), 0..3u8), 0..4),
    )
        .prop_map(move |(mut base, derive)| {
            for (i, j, kind) in derive {
                let a = base[i % base.len()].clone();
                let b = base[j % base.len()].clone();
                let derived = match kind {
                    // A prefix of another secret.
                    0 => a[..min_len + (j % (a.len() - min_len + 1))].to_vec(),
                    // The end of one and the start of another.
                    1 => cat(&[&a[a.len() / 2..], &b[..b.len() / 2]]),
                    // One secret extended by another.
                    _ => cat(&[&a, &b[..min_len.min(b.len())]]),
                };
                if derived.len() >= min_len {
                    base.push(derived);
                }
            }
            base
        })
}

/// Input pieces: noise, raw values, encoded values, values inside base64
/// blobs, and starts of values (to make streams hold tails).
fn input_for(secrets: Vec<Vec<u8>>) -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<u8>, Vec<usize>)> {
    let n = secrets.len();
    let piece = (
        0..6u8,
        0..n,
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 0..12),
    );
    (
        proptest::collection::vec(piece, 0..12),
        proptest::collection::vec(any::<usize>(), 0..8),
    )
        .prop_map(move |(pieces, cuts)| {
            let mut input = Vec::new();
            for (kind, i, k, noise) in pieces {
                let s = &secrets[i];
                match kind {
                    0 => input.extend_from_slice(&noise),
                    1 => input.extend_from_slice(s),
                    2 => {
                        let forms = printed_forms(s);
                        input.extend_from_slice(&forms[k % forms.len()].1);
                    }
                    3 => {
                        let blob = cat(&[&noise[..k % (noise.len() + 1)], s, &noise]);
                        let alphabet = if k % 2 == 0 {
                            encode::BASE64_STD
                        } else {
                            encode::BASE64_URL
                        };
                        input.extend_from_slice(&base64_of(&blob, alphabet, k % 3 == 0));
                    }
                    4 => input.extend_from_slice(&s[..k % s.len()]),
                    _ => {
                        let mut forms = Vec::new();
                        encode::forms(s, &mut forms);
                        let form = &forms[k % forms.len()];
                        // The form cut anywhere around its core.
                        let from = k % (form.back + 1);
                        let to = form.bytes.len() - (k / 7) % (form.fwd + 1);
                        input.extend_from_slice(&form.bytes[from..to]);
                    }
                }
            }
            let len = input.len().max(1);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % len).collect();
            cuts.sort_unstable();
            (secrets.clone(), input, cuts)
        })
}

fn check_property(secrets: &[Vec<u8>], input: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let ids: Vec<String> = (0..secrets.len()).map(|i| format!("s{i}")).collect();
    let list: Vec<Secret<'_>> = secrets
        .iter()
        .zip(&ids)
        .map(|(v, id)| Secret { id, value: v })
        .collect();
    let m = Matcher::new(&list, &Mask::default());
    let (out, counts) = one_shot(&m, input);
    prop_assert_eq!(&out, &reference(&m, input));
    let (s, c) = streamed(&m, input, cuts);
    prop_assert_eq!(&s, &out);
    prop_assert_eq!(&c, &counts);
    prop_assert_eq!(&streamed_pieces(&m, input, cuts), &out);
    // No value and no encoded form survives in the bytes between masks (a
    // random secret may end with `[` and so be completed by a mask's text).
    let segments = unmasked_segments(&out, &ids);
    for (pattern, ..) in m.patterns() {
        prop_assert!(!segments.iter().any(|seg| contains(seg, pattern)));
    }
    for secret in secrets {
        for (name, form) in printed_forms(secret) {
            prop_assert!(
                !segments.iter().any(|seg| contains(seg, &form)),
                "{} survived",
                name
            );
        }
    }
    Ok(())
}

/// The parts of `out` between masks.
fn unmasked_segments<'o>(out: &'o [u8], ids: &[String]) -> Vec<&'o [u8]> {
    let masks: Vec<Vec<u8>> = ids.iter().map(|id| masked(id)).collect();
    let mut segments = Vec::new();
    let (mut from, mut at) = (0, 0);
    while at < out.len() {
        match masks.iter().find(|mask| out[at..].starts_with(mask)) {
            Some(mask) => {
                segments.push(&out[from..at]);
                at += mask.len();
                from = at;
            }
            None => at += 1,
        }
    }
    segments.push(&out[from..]);
    segments
}

/// `cases` cases a property. A failing case is written beside this file
/// (git-ignored: its seed hashes look like secrets); add it to
/// `shrunk_property_cases_still_hold`.
fn property_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::with_cases(cases)
    }
}

proptest! {
    #![proptest_config(property_config(200))]

    /// Short patterns: the 4-byte-gram filter.
    #[test]
    fn streaming_equals_one_shot_short(
        (secrets, input, cuts) in secret_set(MIN_SECRET_LEN).prop_flat_map(input_for)
    ) {
        check_property(&secrets, &input, &cuts)?;
    }

    /// Long patterns: the 8-byte-gram filter with a long step.
    #[test]
    fn streaming_equals_one_shot_long(
        (secrets, input, cuts) in secret_set(20).prop_flat_map(input_for)
    ) {
        check_property(&secrets, &input, &cuts)?;
    }

    /// Many pushes of a few bytes each.
    #[test]
    fn streaming_in_tiny_chunks(
        (secrets, input, _) in secret_set(MIN_SECRET_LEN).prop_flat_map(input_for),
        size in 1..5usize,
    ) {
        let cuts: Vec<usize> = (size..input.len()).step_by(size).collect();
        check_property(&secrets, &input, &cuts)?;
    }
}

proptest! {
    #![proptest_config(property_config(48))]

    /// Values long enough that a stream's tail can pass `LONG_TAIL` bytes:
    /// the hold rule's index of long patterns, cut anywhere.
    #[test]
    fn streaming_equals_one_shot_with_long_tails(
        (secrets, input, cuts) in secret_set(super::hold::LONG_TAIL + 10).prop_flat_map(input_for)
    ) {
        check_property(&secrets, &input, &cuts)?;
    }
}

/// Inputs long enough to cross the scanner's flush blocks, with secrets at
/// every offset around them, for each filter shape (short and long grams, one tier or two).
/// Cases the property tests once shrank to, replayed on every run.
#[test]
fn shrunk_property_cases_still_hold() {
    let first: Vec<Vec<u8>> = vec![
        vec![108, 41, 220, 227, 217, 200, 19, 228, 7],
        vec![
            81, 128, 158, 139, 125, 168, 151, 10, 148, 13, 234, 27, 201, 135, 55, 4, 31,
        ],
        vec![108, 41, 220, 227, 217, 200, 19, 228],
    ];
    let input = [
        81, 65, 66, 115, 75, 100, 122, 106, 50, 99, 103, 84, 53, 65, 100, 65, 65, 65,
    ];
    check_property(&first, &input, &[]).expect("first case");
    let second: Vec<Vec<u8>> = vec![
        b"eafebccabdccfffef".to_vec(),
        b"bcbbecbcebe".to_vec(),
        vec![
            151, 197, 152, 108, 15, 131, 226, 174, 253, 63, 47, 66, 5, 2, 98, 171, 72, 236, 68,
            107, 197, 235, 237, 132, 40, 117, 91, 18,
        ],
        b"eafebccabdccfffe".to_vec(),
        b"eafebccabdcc".to_vec(),
    ];
    let input = b"eafebccabdccfffe";
    let cuts: Vec<usize> = (3..input.len()).step_by(3).collect();
    check_property(&second, input, &cuts).expect("second case");
}

#[test]
fn long_inputs_with_dense_secrets() {
    let mut rng = Rng(16);
    for len in [8, 12, 17, 32, 45] {
        // Mixed with long secrets, so both tiers find matches.
        let secrets: Vec<Vec<u8>> = (0..8)
            .map(|i| rng.alnum(if i % 2 == 0 { len } else { 40 }))
            .collect();
        let ids: Vec<String> = (0..secrets.len()).map(|i| format!("k{i}")).collect();
        let list: Vec<(&str, &[u8])> = ids
            .iter()
            .map(String::as_str)
            .zip(secrets.iter().map(Vec::as_slice))
            .collect();
        let m = matcher(&list);
        let mut input = Vec::new();
        let mut want = Vec::new();
        let mut placed = 0;
        while input.len() < 1_200_000 {
            // Lower-case noise and spaces never form the upper/lower/digit mix
            // of a secret by chance.
            let gap: Vec<u8> = (0..rng.below(23))
                .map(|_| b" .:abcdefghij"[rng.below(13)])
                .collect();
            input.extend_from_slice(&gap);
            want.extend_from_slice(&gap);
            let k = rng.below(secrets.len());
            input.extend_from_slice(&secrets[k]);
            want.extend_from_slice(&masked(&ids[k]));
            placed += 1;
        }
        let (out, counts) = one_shot(&m, &input);
        assert!(out == want, "len {len}");
        assert_eq!(counts.total(), placed);
        let cuts: Vec<usize> = (0..input.len()).step_by(65_521).collect();
        assert!(streamed(&m, &input, &cuts).0 == want, "len {len}, streamed");
    }
}

/// From a few thousand patterns the index and the start list are built on
/// two threads: the result must mask exactly as one built on one thread.
#[test]
fn a_matcher_built_on_two_threads_masks_as_one_built_on_one() {
    let mut rng = Rng(31);
    let secrets: Vec<Vec<u8>> = (0..1500)
        .map(|i| {
            let len = 8 + rng.below(50);
            match i % 3 {
                0 => rng.alnum(len),
                1 => rng.bytes(len),
                _ => rng.alnum(40),
            }
        })
        .collect();
    let ids = numbered_ids("k", secrets.len());
    let list = listed(&ids, &secrets);
    let one = Matcher::build(&list, &Mask::default(), usize::MAX);
    let two = Matcher::build(&list, &Mask::default(), 0);
    assert_eq!(one.pattern_count(), two.pattern_count());
    assert!(one.tables() == two.tables(), "the two builds differ");
    one.check_starts();
    let mut input = Vec::new();
    let mut want = Vec::new();
    for k in (0..secrets.len()).step_by(7) {
        for (_, form) in printed_forms(&secrets[k]) {
            input.extend_from_slice(b" x=");
            input.extend_from_slice(&form);
            want.extend_from_slice(b" x=");
            want.extend_from_slice(&masked(&ids[k]));
        }
    }
    assert!(one_shot(&two, &input).0 == want);
    assert!(one_shot(&one, &input).0 == want);
    let spans = |m: &Matcher| -> Vec<(usize, usize, String)> {
        m.find_spans(&input)
            .iter()
            .map(|s| (s.start, s.end, s.id.to_string()))
            .collect()
    };
    assert_eq!(spans(&one), spans(&two));
}

/// A short secret (its own tier) inside a long one, at every distance from
/// the scanner's block edges: the tiers find the two out of order, and the
/// long one must still name the span.
#[test]
fn short_secret_inside_long_one_across_block_edges() {
    let mut rng = Rng(17);
    let long = rng.alnum(40);
    for k in 1..10 {
        let short = long[k..k + 10].to_vec();
        let m = matcher(&[("long", &long), ("short", &short)]);
        for pad in 0..700 {
            let input = cat(&[&vec![b' '; pad], &long, b"."]);
            let want = cat(&[&vec![b' '; pad], &masked("long"), b"."]);
            assert!(one_shot(&m, &input).0 == want, "k {k}, pad {pad}");
            assert!(
                streamed(&m, &input, &[pad / 2, pad + 20]).0 == want,
                "k {k}, pad {pad}, streamed"
            );
        }
    }
}

#[test]
fn matcher_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Matcher>();
    assert_send_sync::<Stream>();
    assert_send_sync::<Counts>();
}

/// Percent-encodes every byte outside ASCII letters, digits and `keep`;
/// with `plus`, a space becomes `+`.
fn percent_with(value: &[u8], keep: &[u8], plus: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Asserts that `form`, between two words, is masked as `id` whole.
fn assert_masked(m: &Matcher, form: &[u8], id: &str, what: &str) {
    let input = cat(&[b"at <", form, b">"]);
    let (out, _) = one_shot(m, &input);
    assert!(
        out == cat(&[b"at <", &masked(id), b">"]),
        "{what}: {}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn review_06_percent_encoding_as_python_and_javascript_write_it() {
    let mut rng = Rng(20);
    // An AWS-style secret: `/` and `+`, plus the characters encoders differ
    // on.
    let value = cat(&[&rng.alnum(12), b"/+ ~!'()*", &rng.alnum(12)]);
    let m = matcher(&[("aws", &value)]);
    for (what, form) in [
        ("quote(s)", percent_with(&value, b"-._~/", false)),
        ("quote(s, safe='')", percent_with(&value, b"-._~", false)),
        ("quote_plus", percent_with(&value, b"-._~", true)),
        (
            "encodeURIComponent",
            percent_with(&value, b"-._~!'()*", false),
        ),
        ("RFC 3986", percent_with(&value, b"-._~", false)),
        ("form encoding", percent_with(&value, b"-._*", true)),
        ("PHP urlencode", percent_with(&value, b"-._", true)),
    ] {
        assert_masked(&m, &form, "aws", what);
        redact_everyway(&m, &form);
    }
}

#[test]
fn review_07_value_with_trailing_whitespace_is_masked_without_it() {
    let mut rng = Rng(21);
    for ending in [&b" "[..], b"  ", b"\t", b"\r", b" \t\r\n"] {
        let core = rng.alnum(24);
        let value = cat(&[&core, ending]);
        let m = matcher(&[("file", &value)]);
        // What a child that strip()s the value prints, and its encodings.
        assert_masked(&m, &core, "file", "stripped");
        assert_masked(
            &m,
            &base64_of(&core, encode::BASE64_STD, true),
            "file",
            "base64 of stripped",
        );
        assert_masked(&m, &value, "file", "as read");
    }
    // Leading whitespace too (strip() removes both ends).
    let core = rng.alnum(20);
    let m = matcher(&[("both", &cat(&[b" \t", &core, b"\r"]))]);
    assert_masked(&m, &core, "both", "strip()");
}

#[test]
fn review_10_wrapped_base64_is_masked() {
    let mut rng = Rng(22);
    for len in [49, 57, 100, 300] {
        let value = rng.bytes(len);
        let m = matcher(&[("pem", &value)]);
        let flat = base64_of(&value, encode::BASE64_STD, true);
        for (width, eol) in [(64, &b"\n"[..]), (76, b"\r\n"), (76, b"\n"), (64, b"\r\n")] {
            let wrapped: Vec<u8> = flat.chunks(width).collect::<Vec<_>>().join(eol);
            let input = cat(&[
                b"-----BEGIN DATA-----\n",
                &wrapped,
                b"\n-----END DATA-----\n",
            ]);
            let out = redact_everyway(&m, &input);
            assert_eq!(
                out,
                cat(&[
                    b"-----BEGIN DATA-----\n",
                    &masked("pem"),
                    b"\n-----END DATA-----\n"
                ]),
                "len {len} width {width}"
            );
        }
    }
}

#[test]
fn review_11_every_encoded_form_of_a_short_value_is_masked() {
    let mut rng = Rng(23);
    let eight = rng.alnum(8);
    let m = matcher(&[("eight", &eight)]);
    let unpadded = base64_of(&eight, encode::BASE64_STD, false);
    assert_eq!(unpadded.len(), 11);
    assert_masked(&m, &unpadded, "eight", "unpadded base64");
    assert_masked(
        &m,
        &base64_of(&eight, encode::BASE64_URL, false),
        "eight",
        "base64url",
    );
    // A 9-byte value inside a base64 blob, at each of the 3 alignments:
    // every character that depends on the value alone is masked.
    let nine = rng.bytes(9);
    let m = matcher(&[("nine", &nine)]);
    for before in 0..3 {
        let blob = cat(&[&rng.bytes(3 + before), &nine, &rng.bytes(5)]);
        let text = base64_of(&blob, encode::BASE64_STD, true);
        let out = redact_everyway(&m, &text);
        assert!(contains(&out, &masked("nine")), "alignment {before}");
        // The characters wholly inside the value's bits are gone.
        let first = (8 * (3 + before)).div_ceil(6);
        let last = (8 * (12 + before)) / 6;
        assert!(!contains(&out, &text[first..last]), "alignment {before}");
    }
    // Values under 8 bytes stay unmasked, and so do their forms.
    let seven = rng.alnum(7);
    let m = matcher(&[("seven", &seven)]);
    assert!(m.is_empty());
}

#[test]
fn review_12_json_nested_in_a_json_string_is_masked() {
    let mut rng = Rng(24);
    let value = cat(&[&rng.alnum(10), b"\"q\\b\n", &rng.alnum(10)]);
    let m = matcher(&[("k", &value)]);
    let text = std::str::from_utf8(&value).expect("ASCII");
    let inner = serde_json::json!({ "k": text }).to_string();
    let outer = serde_json::json!({ "a": inner }).to_string();
    let out = redact_everyway(&m, outer.as_bytes());
    assert_eq!(
        String::from_utf8(out).expect("ASCII"),
        r#"{"a":"{\"k\":\"[REDACTED:k]\"}"}"#
    );
}

#[test]
fn review_23_truncated_copies_are_masked() {
    let mut rng = Rng(25);
    let value = rng.alnum(40);
    let m = matcher(&[("t", &value)]);
    // Prefixes and suffixes of at least 20 bytes (half of 40) are masked.
    for len in 20..40 {
        assert_masked(&m, &value[..len], "t", "prefix");
        assert_masked(&m, &value[40 - len..], "t", "suffix");
    }
    // Shorter ones, and a middle piece, are not.
    for piece in [&value[..19], &value[21..], &value[5..35]] {
        let input = cat(&[b"at ", piece, b" end"]);
        assert_eq!(one_shot(&m, &input).0, input);
    }
    // A log line cut at N characters, split across writes anywhere.
    let line = cat(&[b"token=", &value[..27]]);
    assert_eq!(redact_everyway(&m, &line), cat(&[b"token=", &masked("t")]));
    let line = cat(&[b"...", &value[13..], b"\n"]);
    assert_eq!(
        redact_everyway(&m, &line),
        cat(&[b"...", &masked("t"), b"\n"])
    );
    // 16 bytes is the floor: for a 24-byte value, 16-byte pieces count.
    let short = rng.alnum(24);
    let m = matcher(&[("s", &short)]);
    assert_masked(&m, &short[..16], "s", "16-byte prefix");
    assert_masked(&m, &short[8..], "s", "16-byte suffix");
    let input = cat(&[b"at ", &short[..15], b" end"]);
    assert_eq!(one_shot(&m, &input).0, input);
}

/// The masking cases of GitHub Actions' runner (its L0 tests of the secret
/// masker and of `ValueEncoders`), with values generated here: each row is
/// a secret and what a program prints; the secret's part must be masked.
#[test]
fn review_17_every_form_the_github_runner_masks() {
    let mut rng = Rng(26);
    let mut a = || String::from_utf8(rng.alnum(6)).expect("alnum");
    let (p1, p2, p3) = (a(), a(), a());
    let base = format!("{p1}{p2}!");
    let quoted_inner = format!("{p1}{p2}!!");
    let json_value = format!("{p1}\r_{p2}\n_{p3}\t_\\_\"");
    let amp = format!("{p1}{p2}&+{p3}{p1}x");
    let sections = format!("{p1}{p2}&{p2}{p3}&{p3}{p1}");
    // (value, printed, expected); `*` in expected is the mask.
    let rows: Vec<(String, String, String)> = vec![
        // DefaultSecretMaskers: the value itself.
        (base.clone(), format!("123{base}123"), "123*123".into()),
        // CommandLineArgumentEscape: `"` as `\"`.
        (
            format!("{p1}\"{p2}\"123!"),
            format!("123{p1}\\\"{p2}\\\"123!123"),
            "123*123".into(),
        ),
        // UriDataEscape.
        (
            format!("{p1} {p2} 123!"),
            format!("123{p1}%20{p2}%20123%21123"),
            "123*123".into(),
        ),
        (format!("hello {p1}"), format!("hello%20{p1}"), "*".into()),
        // XmlDataEscape.
        (
            format!("{p1}<{p2}>123!"),
            format!("123{p1}&lt;{p2}&gt;123!123"),
            "123*123".into(),
        ),
        (
            format!("{p1}\"{p2}'&"),
            format!("{p1}&quot;{p2}&apos;&amp;"),
            "*".into(),
        ),
        // ExpressionStringEscape: `'` doubled.
        (
            format!("{p1}'{p2}'123!"),
            format!("123{p1}''{p2}''123!123"),
            "123*123".into(),
        ),
        // TrimDoubleQuotes: the inner value of a quoted secret.
        (
            format!("\"{quoted_inner}\""),
            format!("123{quoted_inner}123"),
            "123*123".into(),
        ),
        // JsonStringEscape: carriage return, newline, tab, backslash, quote.
        (
            json_value.clone(),
            serde_json::to_string(&json_value).expect("json"),
            "\"*\"".into(),
        ),
        (json_value.clone(), json_value.clone(), "*".into()),
        // PowerShellPreAmpersandEscape / PostAmpersandEscape: a colour code
        // splits the value after `&+` and the character it colours.
        (
            amp.clone(),
            format!(
                "\x1b[31m{p1}{p2}&+\x1b[0m{}\x1b[32m{}{p1}x\x1b[0m",
                &p3[..1],
                &p3[1..]
            ),
            format!("\x1b[31m*\x1b[0m{}\x1b[32m*\x1b[0m", &p3[..1]),
        ),
        // Each `&`-separated section on its own.
        (
            sections.clone(),
            format!("<{p1}{p2}> <{p2}{p3}> <{p3}{p1}> <{p1}{p2}&{p2}{p3}&>"),
            "<*> <*> <*> <*>".into(),
        ),
    ];
    for (value, printed, expected) in rows {
        let m = matcher(&[("s", value.as_bytes())]);
        let out = redact_everyway(&m, printed.as_bytes());
        let want = expected.replace('*', "[REDACTED:s]");
        assert_eq!(String::from_utf8_lossy(&out), want, "value {value:?}");
    }
    // The runner's own PowerShell post section only counts the characters
    // after the coloured one: `&+` and one more are not part of it.
    let m = matcher(&[("s", amp.as_bytes())]);
    let post = &amp[amp.find("&+").expect("&+") + 3..];
    assert_eq!(one_shot(&m, post.as_bytes()).0, masked("s"));

    // Base64 after a prefix of 1 to 6 bytes (`user:password`): the runner
    // masks base64 of the value and of the value without its first one or
    // two bytes, and leaves the characters of the prefix (at most the 8 it
    // leaves). Here every character that depends on the value alone is
    // masked too.
    let value = format!(":{base}");
    let m = matcher(&[("s", &value.as_bytes()[1..])]);
    for (prefix, runner_kept) in [
        ("", 4),
        ("a", 4),
        ("ab", 4),
        ("abc", 8),
        ("abcd", 8),
        ("abcde", 8),
    ] {
        let text = base64_of(
            format!("{prefix}{value}").as_bytes(),
            encode::BASE64_STD,
            true,
        );
        let out = redact_everyway(&m, &text);
        let kept = out.len() - masked("s").len();
        assert!(out.ends_with(&masked("s")), "prefix {prefix:?}");
        assert!(kept <= runner_kept, "prefix {prefix:?}: kept {kept}");
        assert_eq!(&out[..kept], &text[..kept]);
    }

    // Where SPEC differs: values under 8 bytes are not masked, so the
    // runner's `"short"` (5 inside the quotes) stays.
    let short = format!("\"{}\"", &p1[..5]);
    let m = matcher(&[("s", short.as_bytes())]);
    assert!(m.is_empty());
}

/// Starts that agree on their first bytes, in any case, are ordered by all
/// of their bytes: values sharing long prefixes that differ in case only
/// after them, and their truncated copies, which share the same starts.
#[test]
fn starts_sharing_their_first_bytes_are_ordered_by_all_of_them() {
    let mut rng = Rng(77);
    let stem = rng.alnum(30);
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for k in 0..40 {
        let mut v = stem.clone();
        if k % 2 == 1 {
            v.make_ascii_uppercase();
        }
        v.extend_from_slice(&rng.alnum(4 + k % 9));
        secrets.push(v);
    }
    let ids = numbered_ids("p", secrets.len());
    let list = listed(&ids, &secrets);
    for parallel_from in [usize::MAX, 0] {
        let m = Matcher::build(&list, &Mask::default(), parallel_from);
        m.check_starts();
        // A chunk ending inside any of them holds its start back until the
        // rest arrives: streamed as one shot.
        for v in &secrets {
            let input = [b"x=".as_slice(), v].concat();
            let whole = one_shot(&m, &input).0;
            for cut in [2 + 5, 2 + 10, 2 + 20, 2 + 32] {
                assert!(streamed(&m, &input, &[cut]).0 == whole, "cut at {cut}");
            }
        }
    }
}

/// A value so long that its truncated copies start at 300,000 places, beside
/// enough patterns that a start no longer fits in 32 bits: the start list
/// holds one a word, in order, and finds the starts of the long value and
/// of a short one.
#[test]
fn a_long_value_among_many_keeps_one_start_a_word() {
    let mut rng = Rng(91);
    let mut secrets: Vec<Vec<u8>> = (0..3000).map(|_| rng.alnum(24)).collect();
    secrets.push(rng.alnum(600 * 1024));
    let ids = numbered_ids("w", secrets.len());
    let list = listed(&ids, &secrets);
    let m = Matcher::new(&list, &Mask::default());
    assert!(!m.starts_two_a_word());
    m.check_starts();
    let big = &secrets[3000];
    assert!(m.could_begin(&big[1000..6000]), "a truncated copy's start");
    assert!(m.could_begin(&big[..20]));
    assert!(m.could_begin(&secrets[7][..10]));
    assert!(!m.could_begin(&rng.alnum(20)));
    let input = [b"x=".as_slice(), &big[1000..], b" y=", &secrets[7]].concat();
    let (out, counts) = one_shot(&m, &input);
    assert_eq!(counts.total(), 2);
    assert!(out.len() < 100, "{} bytes left", out.len());
    assert!(matcher(&[("s", &secrets[7])]).starts_two_a_word());
}

/// Values long enough for tails past `LONG_TAIL`: one of random letters, one
/// of lines that repeat (as a PEM key's do), one of bytes, one that repeats
/// itself throughout.
fn long_values(rng: &mut Rng) -> Vec<Vec<u8>> {
    let line = rng.alnum(40);
    let pem = [
        b"-----BEGIN K-----\n".as_slice(),
        &line,
        b"\n",
        &line,
        b"\n",
        &rng.alnum(300),
        b"\n-----END K-----\n",
    ]
    .concat();
    let periodic: Vec<u8> = rng.alnum(5).iter().cycle().take(333).copied().collect();
    vec![rng.alnum(500), pem, rng.bytes(260), periodic]
}

/// [`long_values`] made with seed `seed`, and their matcher.
fn long_values_matcher(seed: u64) -> (Vec<Vec<u8>>, Matcher) {
    let values = long_values(&mut Rng(seed));
    let ids = numbered_ids("l", values.len());
    let m = Matcher::new(&listed(&ids, &values), &Mask::default());
    (values, m)
}

/// Long tails, decided from their end, are held from where the start list
/// holds them taken one at a time: in every printed form of long values,
/// ending at many places, with and without bytes after.
#[test]
fn long_tails_are_held_where_each_place_would_hold_them() {
    let (values, m) = long_values_matcher(101);
    let keep = m.max_pattern_len() - 1;
    assert!(keep > super::hold::LONG_TAIL);
    let mut long_holds = 0;
    for v in &values {
        for (what, form) in printed_forms(v) {
            for cut in (0..=form.len()).step_by(47).chain([form.len() - 1]) {
                for after in [&b""[..], b"!", b"\n"] {
                    let text = [b"junk ".as_slice(), &form[..cut], after].concat();
                    let scratch = &text[text.len().saturating_sub(keep)..];
                    let at = m.hold_at(scratch);
                    assert_eq!(at, m.hold_by_each_place(scratch), "{what}, cut at {cut}");
                    long_holds += usize::from(scratch.len() - at > super::hold::LONG_TAIL);
                }
            }
        }
    }
    assert!(long_holds > 20, "only {long_holds} long holds");
}

/// Streamed in chunks that end anywhere in long values and their forms,
/// the output is the one-shot output.
#[test]
fn long_values_streamed_in_chunks_are_masked_as_in_one_shot() {
    let (values, m) = long_values_matcher(102);
    let mut input = Vec::new();
    for v in &values {
        for (_, form) in printed_forms(v) {
            input.extend_from_slice(b"x=");
            input.extend_from_slice(&form);
            input.extend_from_slice(b" y=");
            input.extend_from_slice(&form[..form.len() * 2 / 3]);
            input.push(b'\n');
        }
    }
    let whole = one_shot(&m, &input);
    // Each form whole, and the raw values cut short.
    assert!(whole.1.total() >= 4 * 9 + 4, "{} masks", whole.1.total());
    for step in [61, 500, 4093] {
        let cuts: Vec<usize> = (step..input.len()).step_by(step).collect();
        assert!(streamed(&m, &input, &cuts) == whole, "chunks of {step}");
    }
}

/// A long value printed whole costs the hold rule about its length, not its
/// square, wherever the chunk ends.
#[test]
fn the_hold_rule_costs_a_long_value_its_length() {
    let mut rng = Rng(103);
    for n in [16 * 1024, 64 * 1024] {
        let v = rng.alnum(n);
        let m = matcher(&[("big", &v)]);
        let keep = m.max_pattern_len() - 1;
        for text in [
            [v.as_slice(), b"after\n"].concat(),
            v.clone(),
            v[..n - 100].to_vec(),
            [b"x=".as_slice(), &v[n / 4..n * 3 / 4]].concat(),
        ] {
            let scratch = &text[text.len().saturating_sub(keep)..];
            let mut work = super::hold::Work::default();
            m.hold_at_counting(scratch, &mut work);
            assert!(
                work.steps <= 2 * scratch.len() + 2 * super::hold::LONG_TAIL,
                "{work:?} for {} bytes",
                scratch.len()
            );
        }
    }
}

/// Values around the long-tail threshold (129 to 140 bytes), as they are,
/// in upper-case hex and in unpadded base64url: tails of 127 to 130 bytes
/// and longer, starting at the first and the last place a truncated copy
/// can start and one place past it. Under test, `Matcher::hold_at` checks
/// each hold against the rule taken one place at a time.
#[test]
fn holds_around_the_long_tail_threshold() {
    let mut rng = Rng(104);
    let mut long_holds = 0;
    for len in [129, 130, 131, 140] {
        let v = rng.alnum(len);
        let m = matcher(&[("t", &v)]);
        let keep = m.max_pattern_len() - 1;
        // Truncated copies are at least half the value: they start up to
        // `back` bytes in.
        let back = len - len.div_ceil(2);
        let hex: Vec<u8> = v
            .iter()
            .flat_map(|b| format!("{b:02X}").into_bytes())
            .collect();
        let forms = [v.clone(), hex, base64_of(&v, encode::BASE64_URL, false)];
        for form in &forms {
            for j in [0, 1, back, back + 1] {
                let rest = form.len() - j;
                for tail in [127, 128, 129, 130, rest - 1, rest] {
                    if tail > rest {
                        continue;
                    }
                    let text = [b"x=".as_slice(), &form[j..j + tail]].concat();
                    let scratch = &text[text.len().saturating_sub(keep)..];
                    let at = m.hold_at(scratch);
                    long_holds += usize::from(scratch.len() - at > super::hold::LONG_TAIL);
                }
            }
        }
    }
    assert!(long_holds >= 40, "only {long_holds} long holds");
}
