//! The forms a secret value takes in a child's output besides its raw bytes:
//! each line of a multi-line value and the encodings named in invariant 1
//! (base64 and base64url at every byte alignment, hex, percent-encoding and
//! JSON string escaping). Every function here is a pure byte transform; each
//! result is a derived secret, so it is returned in a `Zeroizing` buffer whose
//! capacity is reserved up front (a growing `Vec` would free unwiped copies).

use zeroize::Zeroizing;

/// The RFC 4648 base64 alphabet.
pub(crate) const BASE64_STD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// The RFC 4648 "URL and filename safe" alphabet.
pub(crate) const BASE64_URL: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// A derived secret: bytes wiped when dropped.
pub(crate) type Form = Zeroizing<Vec<u8>>;

/// Lines of a multi-line value: split on `\n`, one trailing `\r` trimmed from
/// each. A value without `\n` has no lines apart from itself (not returned).
/// PEM armor lines (`-----BEGIN ...`, `-----END ...`) are left out: they are
/// the same in every key of a kind, so masking them would only hide
/// innocent output.
pub(crate) fn lines(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let multi = value.contains(&b'\n');
    value
        .split(|&b| b == b'\n')
        .filter(move |_| multi)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.starts_with(b"-----BEGIN ") && !line.starts_with(b"-----END "))
}

/// Every encoded form of `value`, in a fixed order. Forms may repeat each
/// other or the raw value (for example percent-encoding of an alphanumeric
/// value); the caller removes duplicates.
pub(crate) fn encoded_forms(value: &[u8]) -> Vec<Form> {
    let mut forms = Vec::with_capacity(20);
    for alphabet in [BASE64_STD, BASE64_URL] {
        base64_forms(value, alphabet, &mut forms);
    }
    forms.push(hex(value, HEX_LOWER));
    forms.push(hex(value, HEX_UPPER));
    forms.push(percent(value, HEX_UPPER, false));
    forms.push(percent(value, HEX_LOWER, false));
    if value.contains(&b' ') {
        forms.push(percent(value, HEX_UPPER, true));
        forms.push(percent(value, HEX_LOWER, true));
    }
    json_forms(value, &mut forms);
    forms
}

/// Base64 of `value` as a whole (padded and unpadded) and as a piece of a
/// larger encoded blob, where it may start at byte offset 0, 1 or 2 of a
/// 3-byte group. Inside a blob the characters whose 6 bits straddle a
/// neighbouring byte are unknown, so each aligned form keeps only the
/// characters that depend on the value alone.
fn base64_forms(value: &[u8], alphabet: &[u8; 64], forms: &mut Vec<Form>) {
    let n = value.len();
    // Standalone: characters [0, ceil(8n/6)), then padding to a multiple of 4.
    let chars = (8 * n).div_ceil(6);
    let unpadded = base64_range(value, 0, 0, chars, alphabet);
    let mut padded = Zeroizing::new(Vec::with_capacity(chars.next_multiple_of(4)));
    padded.extend_from_slice(&unpadded);
    padded.resize(chars.next_multiple_of(4), b'=');
    forms.push(padded);
    forms.push(unpadded);
    // Inside a blob: the value occupies bits [8k, 8k + 8n) of the stream;
    // character i covers bits [6i, 6i + 6).
    for k in 0..3usize {
        let first = (8 * k).div_ceil(6);
        let last = (8 * k + 8 * n) / 6;
        if last > first {
            forms.push(base64_range(value, k, first, last, alphabet));
        }
    }
}

/// Characters `first..last` of the base64 encoding of `k` zero bytes, then
/// `value`, then zero bytes.
fn base64_range(value: &[u8], k: usize, first: usize, last: usize, alphabet: &[u8; 64]) -> Form {
    let byte = |t: usize| -> u16 {
        match t.checked_sub(k) {
            Some(i) if i < value.len() => u16::from(value[i]),
            _ => 0,
        }
    };
    let mut out = Zeroizing::new(Vec::with_capacity(last.saturating_sub(first)));
    for i in first..last {
        let bit = 6 * i;
        let pair = byte(bit / 8) << 8 | byte(bit / 8 + 1);
        let six = (pair >> (10 - bit % 8)) & 63;
        out.push(alphabet[usize::from(six)]);
    }
    out
}

fn hex(value: &[u8], digits: &[u8; 16]) -> Form {
    let mut out = Zeroizing::new(Vec::with_capacity(2 * value.len()));
    for &b in value {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 15)]);
    }
    out
}

/// RFC 3986 percent-encoding of every byte that is not unreserved. With
/// `plus`, a space becomes `+` as in `application/x-www-form-urlencoded`.
fn percent(value: &[u8], digits: &[u8; 16], plus: bool) -> Form {
    let mut out = Zeroizing::new(Vec::with_capacity(3 * value.len()));
    for &b in value {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b),
            b' ' if plus => out.push(b'+'),
            _ => out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]),
        }
    }
    out
}

/// Which optional escapes a JSON encoder applies on top of the minimal set.
#[derive(Clone, Copy)]
struct JsonStyle {
    /// `/` as `\/` (PHP, some Java encoders).
    slash: bool,
    /// `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026` (Go's encoding/json).
    html: bool,
    /// Everything outside printable ASCII as `\uXXXX` (Python's default,
    /// PHP's default); only for values that are valid UTF-8.
    ascii: bool,
}

/// The JSON string bodies (without quotes) that common encoders write for
/// `value`: first the minimal escaping serde_json does, then variants.
fn json_forms(value: &[u8], forms: &mut Vec<Form>) {
    let none = JsonStyle {
        slash: false,
        html: false,
        ascii: false,
    };
    forms.push(json(value, none));
    if value.contains(&b'/') {
        forms.push(json(
            value,
            JsonStyle {
                slash: true,
                ..none
            },
        ));
    }
    if value.iter().any(|b| matches!(b, b'<' | b'>' | b'&')) {
        forms.push(json(value, JsonStyle { html: true, ..none }));
    }
    if value.iter().any(|&b| b >= 0x7f) && std::str::from_utf8(value).is_ok() {
        forms.push(json(
            value,
            JsonStyle {
                ascii: true,
                ..none
            },
        ));
        if value.contains(&b'/') {
            forms.push(json(
                value,
                JsonStyle {
                    ascii: true,
                    slash: true,
                    ..none
                },
            ));
        }
    }
}

fn json(value: &[u8], style: JsonStyle) -> Form {
    // `\uXXXX` is the longest escape: 6 bytes for one input byte, or 12 for a
    // surrogate pair from a 4-byte sequence.
    let mut out = Zeroizing::new(Vec::with_capacity(6 * value.len()));
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..0x20 => push_u_escape(&mut out, u16::from(b)),
            b'/' if style.slash => out.extend_from_slice(b"\\/"),
            b'<' | b'>' | b'&' if style.html => push_u_escape(&mut out, u16::from(b)),
            0x7f if style.ascii => push_u_escape(&mut out, 0x7f),
            0x80.. if style.ascii => {
                // The caller checked that the value is UTF-8, so this decodes
                // one whole character.
                let len = utf8_len(b);
                let ch = std::str::from_utf8(&value[i..i + len])
                    .ok()
                    .and_then(|s| s.chars().next());
                if let Some(ch) = ch {
                    let mut units = [0u16; 2];
                    for &unit in ch.encode_utf16(&mut units).iter() {
                        push_u_escape(&mut out, unit);
                    }
                    i += len;
                    continue;
                }
                out.push(b);
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xf0.. => 4,
        0xe0.. => 3,
        _ => 2,
    }
}

fn push_u_escape(out: &mut Vec<u8>, unit: u16) {
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX_LOWER[usize::from((unit >> shift) & 15)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(form: &Form) -> &str {
        std::str::from_utf8(form).expect("encodings are ASCII")
    }

    fn b64(value: &[u8], alphabet: &[u8; 64]) -> Vec<String> {
        let mut forms = Vec::new();
        base64_forms(value, alphabet, &mut forms);
        forms.iter().map(|f| s(f).to_owned()).collect()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        // RFC 4648 section 10 test vectors.
        for (plain, enc) in [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let forms = b64(plain.as_bytes(), BASE64_STD);
            assert_eq!(forms[0], enc, "padded {plain}");
            assert_eq!(forms[1], enc.trim_end_matches('='), "unpadded {plain}");
        }
    }

    #[test]
    fn base64_url_alphabet() {
        let forms = b64(&[0xfb, 0xff, 0xbf], BASE64_URL);
        assert_eq!(forms[0], "-_-_");
        let forms = b64(&[0xfb, 0xff, 0xbf], BASE64_STD);
        assert_eq!(forms[0], "+/+/");
    }

    /// Every aligned form must occur in the encoding of any blob that holds
    /// the value at that alignment, whatever the neighbouring bytes.
    #[test]
    fn base64_aligned_forms_occur_inside_blobs() {
        let value = b"0123456789abcdefXYZ";
        for before in 0..6usize {
            for after in 0..4usize {
                for fill in [0x00u8, 0xff, 0x5a] {
                    let mut blob = vec![fill; before];
                    blob.extend_from_slice(value);
                    blob.extend(std::iter::repeat_n(fill, after));
                    let whole = b64(&blob, BASE64_STD).swap_remove(1);
                    let aligned = &b64(value, BASE64_STD)[2 + before % 3];
                    assert!(
                        whole.contains(aligned.as_str()),
                        "before={before} after={after} fill={fill}: {aligned} not in {whole}"
                    );
                }
            }
        }
    }

    #[test]
    fn base64_aligned_form_lengths() {
        // 8 bytes = 64 bits: offset 0 keeps 10 whole characters, offset 1
        // (bits 8..72) keeps characters 2..12, offset 2 (bits 16..80) 3..13.
        let forms = b64(&[7u8; 8], BASE64_STD);
        let lens: Vec<usize> = forms.iter().map(String::len).collect();
        assert_eq!(lens, [12, 11, 10, 10, 10]);
    }

    #[test]
    fn hex_both_cases() {
        assert_eq!(s(&hex(&[0x00, 0xab, 0x7f], HEX_LOWER)), "00ab7f");
        assert_eq!(s(&hex(&[0x00, 0xab, 0x7f], HEX_UPPER)), "00AB7F");
    }

    #[test]
    fn percent_encoding() {
        let v = b"a b/c~d-e.f_g+h\xff";
        assert_eq!(s(&percent(v, HEX_UPPER, false)), "a%20b%2Fc~d-e.f_g%2Bh%FF");
        assert_eq!(s(&percent(v, HEX_LOWER, false)), "a%20b%2fc~d-e.f_g%2bh%ff");
        assert_eq!(s(&percent(v, HEX_UPPER, true)), "a+b%2Fc~d-e.f_g%2Bh%FF");
    }

    #[test]
    fn json_escaping_like_serde_json() {
        let v = b"q\"b\\n\nr\rt\tb\x08f\x0cu\x01\x1fd\x7f/<&";
        let minimal = json(
            v,
            JsonStyle {
                slash: false,
                html: false,
                ascii: false,
            },
        );
        assert_eq!(
            s(&minimal),
            r#"q\"b\\n\nr\rt\tb\bf\fu\u0001\u001fd"#.to_owned() + "\x7f/<&"
        );
        // serde_json is the reference for the minimal form.
        let text = std::str::from_utf8(v).expect("ASCII");
        let quoted = serde_json::to_string(text).expect("a str serializes");
        assert_eq!(s(&minimal), &quoted[1..quoted.len() - 1]);
    }

    #[test]
    fn json_variants() {
        let v = "a/b<c>&d\u{e9}\u{1F600}".as_bytes();
        let mut forms = Vec::new();
        json_forms(v, &mut forms);
        let forms: Vec<&str> = forms.iter().map(s).collect();
        assert_eq!(
            forms,
            [
                "a/b<c>&d\u{e9}\u{1F600}",
                "a\\/b<c>&d\u{e9}\u{1F600}",
                "a/b\\u003cc\\u003e\\u0026d\u{e9}\u{1F600}",
                "a/b<c>&d\\u00e9\\ud83d\\ude00",
                "a\\/b<c>&d\\u00e9\\ud83d\\ude00",
            ]
        );
        // Invalid UTF-8 gets no ASCII-only form (no encoder could write one).
        let mut forms = Vec::new();
        json_forms(b"ab\xffcd", &mut forms);
        assert_eq!(forms.len(), 1);
    }

    #[test]
    fn lines_of_multi_line_values() {
        let got: Vec<&[u8]> = lines(b"one\r\ntwo\nthree\r").collect();
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);
        let got: Vec<&[u8]> = lines(b"-----BEGIN X-----\nbody\n-----END X-----\n").collect();
        assert_eq!(got, [&b"body"[..], b""]);
        assert_eq!(lines(b"single line\r").count(), 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The minimal JSON form is exactly what serde_json writes.
        #[test]
        fn json_minimal_form_is_serde_json(text in any::<String>()) {
            let none = JsonStyle { slash: false, html: false, ascii: false };
            let quoted = serde_json::to_string(&text).expect("a str serializes");
            let body = &quoted.as_bytes()[1..quoted.len() - 1];
            prop_assert_eq!(&json(text.as_bytes(), none)[..], body);
        }

        /// The ASCII-only form decodes back to the text.
        #[test]
        fn json_ascii_form_round_trips(text in any::<String>()) {
            let ascii = JsonStyle { slash: true, html: true, ascii: true };
            let body = json(text.as_bytes(), ascii);
            prop_assert!(body.iter().all(|b| (0x20..0x7f).contains(b)));
            let quoted = format!("\"{}\"", std::str::from_utf8(&body).expect("ASCII"));
            let back: String = serde_json::from_str(&quoted).expect("valid JSON");
            prop_assert_eq!(back, text);
        }
    }
}
