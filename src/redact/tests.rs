//! Tests of the redaction semantics: tables of generated cases (every secret
//! is made at run time from a seeded generator, so no secret-looking literal
//! lives in the source) and property tests that compare one-shot, streaming
//! and a naive reference matcher.

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

/// The definition in the module doc, computed the slow way.
fn reference(m: &Matcher, input: &[u8]) -> Vec<u8> {
    let patterns = m.patterns();
    let mut occurrences = Vec::new();
    for start in 0..input.len() {
        let longest = patterns
            .iter()
            .filter(|(p, _)| input[start..].starts_with(p))
            .max_by_key(|(p, _)| p.len());
        if let Some((p, id)) = longest {
            occurrences.push((start, start + p.len(), *id));
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
            if form.len() < MIN_ENCODED_LEN {
                continue;
            }
            let input = cat(&[b"value=", &form, b";\n"]);
            assert_eq!(
                redact_everyway(&m, &input),
                cat(&[b"value=", &masked("s"), b";\n"]),
                "{name}"
            );
        }
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
    // An 8-byte value's unpadded base64 has 11 characters: too short an
    // encoded form to mask; the padded one has 12.
    let padded = base64_of(&eight, encode::BASE64_STD, true);
    assert_eq!(one_shot(&m, &padded).0, masked("eight"));
    let unpadded = base64_of(&eight, encode::BASE64_STD, false);
    assert_eq!(unpadded.len(), 11);
    assert_eq!(
        one_shot(&m, &cat(&[&unpadded, b" "])).0,
        cat(&[&unpadded, b" "])
    );
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
                    _ => input.extend_from_slice(&encode::encoded_forms(s)[k % 20 % 9]),
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
    // No value and no encoded form survives in the bytes between masks (a
    // random secret may end with `[` and so be completed by a mask's text).
    let segments = unmasked_segments(&out, &ids);
    for (pattern, _) in m.patterns() {
        prop_assert!(!segments.iter().any(|seg| contains(seg, pattern)));
    }
    for secret in secrets {
        for (name, form) in printed_forms(secret) {
            if form.len() >= MIN_ENCODED_LEN || name == "raw" {
                prop_assert!(
                    !segments.iter().any(|seg| contains(seg, &form)),
                    "{} survived",
                    name
                );
            }
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

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

/// Inputs long enough to cross the scanner's flush blocks, with secrets at
/// every offset around them, for each filter shape (short and long grams, one tier or two).
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
