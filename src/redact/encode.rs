//! The forms a secret value takes in a child's output besides its raw bytes:
//! each line of a multi-line value and the encodings named in invariant 1
//! (base64 and base64url at every byte alignment, hex, percent-encoding and
//! JSON string escaping). Every function here is a pure byte transform; each
//! result is a derived secret, so it is returned in a `Zeroizing` buffer whose
//! capacity is reserved up front (a growing `Vec` would free unwiped copies).

use zeroize::Zeroizing;

/// The RFC 4648 base64 alphabet.
#[cfg(test)]
pub(crate) const BASE64_STD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// The RFC 4648 "URL and filename safe" alphabet.
#[cfg(test)]
pub(crate) const BASE64_URL: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// A derived secret: bytes wiped when dropped.
pub(crate) type Bytes = Zeroizing<Vec<u8>>;

/// How a pattern's bytes compare with the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Flavor {
    /// Byte for byte.
    Exact,
    /// ASCII letters in either case (hex digits).
    Hex,
    /// `+` and `-`, `/` and `_` are the same (base64 and base64url).
    Base64,
}

impl Flavor {
    /// The byte as this flavour compares it.
    #[inline(always)]
    pub(crate) fn canon(self, b: u8) -> u8 {
        match self {
            Flavor::Exact => b,
            Flavor::Hex => b.to_ascii_lowercase(),
            Flavor::Base64 => match b {
                b'+' => b'-',
                b'/' => b'_',
                _ => b,
            },
        }
    }

    /// Do `a` and `b` (the same length) compare equal?
    #[inline]
    pub(crate) fn eq(self, a: &[u8], b: &[u8]) -> bool {
        match self {
            Flavor::Exact => a == b,
            _ => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(&x, &y)| self.canon(x) == self.canon(y))
            }
        }
    }
}

/// The byte as every flavour's index sees it: ASCII lower case, `+` as `-`
/// and `/` as `_`. Patterns are indexed and the input is probed through this
/// fold, so that one index entry serves hex in both cases and both base64
/// alphabets; candidates are then checked with their own [`Flavor`].
#[inline(always)]
pub(crate) fn fold(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b | 0x20,
        b'+' => b'-',
        b'/' => b'_',
        _ => b,
    }
}

/// One pattern: `bytes` = `back` bytes, then the core, then `fwd` bytes.
/// The core must occur in full; an occurrence then extends over as many of
/// the last bytes of `back` and the first bytes of `fwd` as the input holds
/// next to it. So one form stands for every `back[j..] + core + fwd[..i]`:
/// a value and all its long prefixes (core = the shortest prefix masked), all
/// its long suffixes (core = the shortest suffix), or base64 with and without
/// its last character and padding and with the characters that straddle
/// the bytes before it.
pub(crate) struct Form {
    pub(crate) bytes: Bytes,
    pub(crate) back: usize,
    pub(crate) fwd: usize,
    pub(crate) flavor: Flavor,
}

impl Form {
    fn exact(bytes: Bytes) -> Form {
        Form {
            bytes,
            back: 0,
            fwd: 0,
            flavor: Flavor::Exact,
        }
    }
}

fn copy(bytes: &[u8]) -> Bytes {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    out.extend_from_slice(bytes);
    out
}

/// Every form of one secret value of at least `MIN_SECRET_LEN` bytes, in a
/// fixed order: the value (with its truncated copies), each line of a
/// multi-line value, and its encodings; then the same for each value derived
/// from it (the value without surrounding whitespace, the inner value of a
/// quoted one). Forms may repeat each other; the caller removes duplicates.
pub(crate) fn forms(value: &[u8], out: &mut Vec<Form>) {
    value_forms(value, out);
    for derived in derived_values(value) {
        value_forms(derived, out);
    }
}

/// Values derived from `value` that a program is likely to print instead:
/// without trailing whitespace (a `rstrip()`), without whitespace at either
/// end (a `strip()`), and the inner value of one wrapped in double or single
/// quotes. Each at least `MIN_SECRET_LEN` bytes and different from `value`.
pub(crate) fn derived_values(value: &[u8]) -> Vec<&[u8]> {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c);
    let end = value.len() - value.iter().rev().take_while(|b| space(b)).count();
    let start = value[..end].iter().take_while(|b| space(b)).count();
    let mut out: Vec<&[u8]> = vec![&value[..end], &value[start..end]];
    if let [q @ (b'"' | b'\''), inner @ .., last] = value {
        if last == q {
            out.push(inner);
        }
    }
    let mut kept: Vec<&[u8]> = Vec::new();
    for d in out {
        if d.len() >= super::MIN_SECRET_LEN && d != value && !kept.contains(&d) {
            kept.push(d);
        }
    }
    kept
}

/// The forms of one value (no derived values).
fn value_forms(value: &[u8], out: &mut Vec<Form>) {
    truncated_forms(value, out);
    for line in lines(value) {
        if line.len() >= super::MIN_SECRET_LEN {
            out.push(Form::exact(copy(line)));
        }
    }
    for shift in 0..3 {
        base64_shifted(value, shift, out);
    }
    base64_wrapped(value, out);
    out.push(Form {
        bytes: hex(value, HEX_LOWER),
        back: 0,
        fwd: 0,
        flavor: Flavor::Hex,
    });
    let before = out.len();
    text_forms(value, out);
    // A text escape that changes nothing repeats the value.
    let mut i = before;
    while i < out.len() {
        if &out[i].bytes[..] == value {
            out.swap_remove(i);
        } else {
            i += 1;
        }
    }
}

/// Bytes a truncated copy must keep: 16, or half the value if longer.
pub(crate) const TRUNCATED_MIN: usize = 16;

/// The value itself, every prefix and every suffix of it that is at least
/// [`TRUNCATED_MIN`] bytes and at least half its length: one form whose
/// core is the shortest such prefix (extending forward over the rest), one
/// whose core is the shortest such suffix (extending back). A value shorter
/// than 17 bytes is one plain form.
fn truncated_forms(value: &[u8], out: &mut Vec<Form>) {
    let n = value.len();
    let min = TRUNCATED_MIN.max(n.div_ceil(2));
    if n <= min {
        out.push(Form::exact(copy(value)));
        return;
    }
    out.push(Form {
        bytes: copy(value),
        back: 0,
        fwd: n - min,
        flavor: Flavor::Exact,
    });
    out.push(Form {
        bytes: copy(value),
        back: n - min,
        fwd: 0,
        flavor: Flavor::Exact,
    });
}

/// Base64 of `value[shift..]` as it appears on its own or inside a larger
/// encoded blob. The core is the characters that depend on those bytes
/// alone; forward it extends over the last character (its low bits zero, as
/// at the end of a blob) and the `=` padding; back over the one or two
/// characters that the bytes `value[..shift]` fill when the value starts at
/// byte offset 1 or 2 of a 3-byte group. So the three shifts cover the value
/// at every alignment inside a blob, and the standalone encodings of the
/// value with its first one or two bytes cut off (the runner's offset
/// trimming). The standard alphabet stands for base64url too
/// ([`Flavor::Base64`]).
fn base64_shifted(value: &[u8], shift: usize, out: &mut Vec<Form>) {
    let n = value.len();
    if n <= shift {
        return;
    }
    // The value at byte offset k of the stream, so that value[shift] starts
    // a 3-byte group (character 4 when k > 0).
    let k = (3 - shift) % 3;
    let first = (8 * k).div_ceil(6);
    let boundary = if k == 0 { 0 } else { 4 };
    let bits = 8 * (k + n);
    let whole = bits / 6;
    let last = bits.div_ceil(6);
    let m = n - shift;
    let pad = (3 - m % 3) % 3;
    let mut bytes = base64_range(value, k, first, last, pad);
    let len = bytes.len();
    bytes.resize(len + pad, b'=');
    out.push(Form {
        bytes,
        back: boundary - first,
        fwd: last - whole + pad,
        flavor: Flavor::Base64,
    });
}

/// Standalone base64 of the whole value wrapped at 64 (PEM, `openssl`) and
/// 76 (MIME, the `base64` tool) columns, with `\n` and `\r\n` line ends;
/// only when it is longer than one line. The padding may be left out.
fn base64_wrapped(value: &[u8], out: &mut Vec<Form>) {
    let chars = (8 * value.len()).div_ceil(6);
    let padded = chars.next_multiple_of(4);
    let pad = padded - chars;
    for width in [64, 76] {
        if padded <= width {
            continue;
        }
        let plain = base64_range(value, 0, 0, chars, 0);
        for eol in [&b"\n"[..], b"\r\n"] {
            let lines = padded.div_ceil(width);
            let mut bytes = Zeroizing::new(Vec::with_capacity(padded + lines * eol.len()));
            for (i, &c) in plain.iter().chain(&[b'=', b'='][..pad]).enumerate() {
                if i > 0 && i % width == 0 {
                    bytes.extend_from_slice(eol);
                }
                bytes.push(c);
            }
            out.push(Form {
                bytes,
                back: 0,
                fwd: pad,
                flavor: Flavor::Base64,
            });
        }
    }
}

/// Text escapes: JSON (also nested once), percent-encoding as common
/// encoders write it, XML/HTML entities, quote doubling, the runner's
/// command-line escape, and the sections of a value that PowerShell colour
/// codes split at `&`. Each is plain bytes ([`Flavor::Exact`]).
fn text_forms(value: &[u8], out: &mut Vec<Form>) {
    // Printable ASCII that no JSON encoder escapes: every JSON form (nested
    // too) is the value itself.
    let plain_json = value
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && !b"\"\\/<>&".contains(&b));
    if !plain_json {
        let mut json_bodies = Vec::new();
        json_forms(value, &mut json_bodies);
        let nested = json(&json_bodies[0], JSON_MINIMAL);
        if nested[..] != json_bodies[0][..] {
            json_bodies.push(nested);
        }
        out.extend(json_bodies.into_iter().map(Form::exact));
    }
    if value.iter().any(|&b| !is_unreserved(b)) {
        for style in PERCENT_STYLES {
            out.push(Form::exact(percent(value, style)));
        }
    }
    if value.iter().any(|b| b"<>&\"'".contains(b)) {
        for style in ENTITY_STYLES {
            out.push(Form::exact(entities(value, style)));
        }
    }
    for (quote, escaped) in [(b'\'', &b"''"[..]), (b'"', b"\"\""), (b'"', b"\\\"")] {
        if value.contains(&quote) {
            out.push(Form::exact(replace(value, quote, escaped)));
        }
    }
    for section in ampersand_sections(value) {
        if section.len() >= super::MIN_SECRET_LEN {
            out.push(Form::exact(copy(section)));
        }
    }
}

fn replace(value: &[u8], from: u8, to: &[u8]) -> Bytes {
    let extra = value.iter().filter(|&&b| b == from).count() * (to.len() - 1);
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + extra));
    for &b in value {
        if b == from {
            out.extend_from_slice(to);
        } else {
            out.push(b);
        }
    }
    out
}

/// The pieces PowerShell prints of a value holding `&` when colour codes
/// split it: each `&`-separated section, and the runner's two sections
/// (everything up to the last `&`, or up to the first `&+`; everything
/// after the last `&`, or after `&+` and the one character it colours).
pub(crate) fn ampersand_sections(value: &[u8]) -> Vec<&[u8]> {
    if !value.contains(&b'&') {
        return Vec::new();
    }
    let mut out: Vec<&[u8]> = value.split(|&b| b == b'&').collect();
    let plus = value.windows(2).position(|w| w == b"&+");
    let last = value.iter().rposition(|&b| b == b'&').unwrap_or(0);
    match plus {
        Some(i) => {
            out.push(&value[..i + 2]);
            out.push(&value[(i + 3).min(value.len())..]);
        }
        None => {
            out.push(&value[..last + 1]);
            out.push(&value[last + 1..]);
        }
    }
    out
}

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

/// Characters `first..last` of the base64 encoding (standard alphabet) of
/// `k` zero bytes, then `value`, then zero bytes; with room for `spare`
/// more bytes (a derived secret must not grow and leave an unwiped copy
/// behind). `last` is at most the unpadded length of that encoding.
fn base64_range(value: &[u8], k: usize, first: usize, last: usize, spare: usize) -> Bytes {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use base64::Engine;
    let mut input = Zeroizing::new(Vec::with_capacity(k + value.len()));
    input.resize(k, 0);
    input.extend_from_slice(value);
    let len = (8 * input.len()).div_ceil(6);
    let mut full = Zeroizing::new(vec![0u8; len]);
    let written = STANDARD_NO_PAD
        .encode_slice(&input[..], &mut full[..])
        .expect("the buffer holds the unpadded encoding");
    debug_assert_eq!(written, len);
    let mut out = Zeroizing::new(Vec::with_capacity(last.saturating_sub(first) + spare));
    out.extend_from_slice(&full[first.min(last)..last]);
    out
}

fn hex(value: &[u8], digits: &[u8; 16]) -> Bytes {
    let mut out = Zeroizing::new(Vec::with_capacity(2 * value.len()));
    for &b in value {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 15)]);
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~')
}

/// Which bytes a percent-encoder leaves as they are, and how it writes the
/// others.
#[derive(Clone, Copy)]
struct PercentStyle {
    /// Bytes besides ASCII letters and digits left unescaped.
    keep: &'static [u8],
    /// A space becomes `+` (form encoding).
    plus: bool,
    digits: &'static [u8; 16],
}

/// RFC 3986 unreserved only (Python `quote(s, safe='')`, .NET
/// `Uri.EscapeDataString`, PHP `rawurlencode`), also with lower-case hex;
/// Python `quote` (keeps `/`); `quote_plus` and Go `QueryEscape`;
/// JavaScript `encodeURIComponent` (keeps `!'()*`); form encoding as the
/// WHATWG URL standard and Java write it (keeps `*`, escapes `~`); PHP
/// `urlencode` (escapes `~` and `*`).
const PERCENT_STYLES: [PercentStyle; 7] = [
    PercentStyle {
        keep: b"-._~",
        plus: false,
        digits: HEX_UPPER,
    },
    PercentStyle {
        keep: b"-._~",
        plus: false,
        digits: HEX_LOWER,
    },
    PercentStyle {
        keep: b"-._~/",
        plus: false,
        digits: HEX_UPPER,
    },
    PercentStyle {
        keep: b"-._~",
        plus: true,
        digits: HEX_UPPER,
    },
    PercentStyle {
        keep: b"-._~!'()*",
        plus: false,
        digits: HEX_UPPER,
    },
    PercentStyle {
        keep: b"-._*",
        plus: true,
        digits: HEX_UPPER,
    },
    PercentStyle {
        keep: b"-._",
        plus: true,
        digits: HEX_UPPER,
    },
];

fn percent(value: &[u8], style: PercentStyle) -> Bytes {
    let mut out = Zeroizing::new(Vec::with_capacity(3 * value.len()));
    for &b in value {
        if b.is_ascii_alphanumeric() || style.keep.contains(&b) {
            out.push(b);
        } else if b == b' ' && style.plus {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[
                b'%',
                style.digits[usize::from(b >> 4)],
                style.digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

/// How an XML/HTML escaper writes `"` and `'` (`&`, `<`, `>` are always
/// `&amp;`, `&lt;`, `&gt;`); `None` leaves the character as it is.
type EntityStyle = (Option<&'static [u8]>, Option<&'static [u8]>);

/// .NET `SecurityElement.Escape` (the runner's XmlDataEscape); text content
/// only (XML writers, `xml.sax.saxutils.escape`); Python `html.escape`; Go
/// `html.EscapeString`; PHP `htmlspecialchars` with `ENT_QUOTES`.
const ENTITY_STYLES: [EntityStyle; 5] = [
    (Some(b"&quot;"), Some(b"&apos;")),
    (None, None),
    (Some(b"&quot;"), Some(b"&#x27;")),
    (Some(b"&#34;"), Some(b"&#39;")),
    (Some(b"&quot;"), Some(b"&#039;")),
];

fn entities(value: &[u8], (dq, sq): EntityStyle) -> Bytes {
    let mut out = Zeroizing::new(Vec::with_capacity(6 * value.len()));
    for &b in value {
        match (b, dq, sq) {
            (b'&', _, _) => out.extend_from_slice(b"&amp;"),
            (b'<', _, _) => out.extend_from_slice(b"&lt;"),
            (b'>', _, _) => out.extend_from_slice(b"&gt;"),
            (b'"', Some(e), _) | (b'\'', _, Some(e)) => out.extend_from_slice(e),
            _ => out.push(b),
        }
    }
    out
}

const JSON_MINIMAL: JsonStyle = JsonStyle {
    slash: false,
    html: false,
    ascii: false,
};

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
fn json_forms(value: &[u8], forms: &mut Vec<Bytes>) {
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

fn json(value: &[u8], style: JsonStyle) -> Bytes {
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

    fn s(form: &[u8]) -> &str {
        std::str::from_utf8(form).expect("encodings are ASCII")
    }

    fn b64(value: &[u8], shift: usize) -> Form {
        let mut forms = Vec::new();
        base64_shifted(value, shift, &mut forms);
        forms.pop().expect("one form")
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
            let form = b64(plain.as_bytes(), 0);
            assert_eq!(s(&form.bytes), enc, "padded {plain}");
            assert_eq!(form.back, 0);
            // Forward: the last character (when partial) and the padding.
            let unpadded = enc.trim_end_matches('=');
            let core = &enc[..enc.len() - form.fwd];
            assert!(unpadded.starts_with(core), "{plain}");
            assert_eq!(core.len(), 8 * plain.len() / 6, "{plain}");
        }
        // Shifted: the standalone encoding of the value without its first
        // one or two bytes, as the runner's offset trimming writes it.
        let form = b64(b"xfoobar", 1);
        assert_eq!(s(&form.bytes[form.back..]), "Zm9vYmFy");
        let form = b64(b"xyfooba", 2);
        assert_eq!(s(&form.bytes[form.back..]), "Zm9vYmE=");
    }

    #[test]
    fn base64_flavor_covers_the_url_alphabet() {
        let form = b64(&[0xfb, 0xff, 0xbf], 0);
        assert_eq!(s(&form.bytes), "+/+/");
        assert!(Flavor::Base64.eq(&form.bytes, b"-_-_"));
        assert!(Flavor::Base64.eq(&form.bytes, b"-/+_"));
        assert!(!Flavor::Base64.eq(&form.bytes, b"+/+0"));
    }

    /// Back and core of every shift must occur in the encoding of any blob
    /// that holds the value at the matching alignment, whatever the
    /// neighbouring bytes.
    #[test]
    fn base64_shifted_forms_occur_inside_blobs() {
        let value = b"0123456789abcdefXYZ";
        for before in 0..6usize {
            for after in 0..4usize {
                for fill in [0x00u8, 0xff, 0x5a] {
                    let mut blob = vec![fill; before];
                    blob.extend_from_slice(value);
                    blob.extend(std::iter::repeat_n(fill, after));
                    let whole = base64_range(&blob, 0, 0, (8 * blob.len()).div_ceil(6), 0);
                    let form = b64(value, (3 - before % 3) % 3);
                    let inner = s(&form.bytes[..form.bytes.len() - form.fwd]);
                    assert!(
                        s(&whole).contains(inner),
                        "before={before} after={after} fill={fill}: {inner} not in {}",
                        s(&whole)
                    );
                }
            }
        }
    }

    #[test]
    fn base64_shifted_form_shapes() {
        // 8 bytes = 64 bits. Shift 0: 10 whole characters, then the partial
        // one and one `=`. Shift 1 (value at offset 2 of a group): one
        // character straddles, then 7 bytes = 9 whole characters, a partial
        // one, two `=`. Shift 2: two straddle, 6 bytes = 8 characters.
        let shapes: Vec<(usize, usize, usize)> = (0..3)
            .map(|shift| {
                let f = b64(&[7u8; 8], shift);
                (f.back, f.bytes.len() - f.back - f.fwd, f.fwd)
            })
            .collect();
        assert_eq!(shapes, [(0, 10, 2), (1, 9, 3), (2, 8, 0)]);
    }

    #[test]
    fn base64_wrapped_at_64_and_76_columns() {
        let value: Vec<u8> = (0..100u8).collect();
        let mut forms = Vec::new();
        base64_wrapped(&value, &mut forms);
        assert_eq!(forms.len(), 4);
        let flat = b64(&value, 0);
        for (form, (width, eol)) in
            forms
                .iter()
                .zip([(64, "\n"), (64, "\r\n"), (76, "\n"), (76, "\r\n")])
        {
            let text = s(&form.bytes);
            assert_eq!(text.replace(eol, ""), s(&flat.bytes));
            assert!(text.split(eol).all(|l| l.len() <= width));
            assert_eq!(text.split(eol).next().map(str::len), Some(width));
        }
        let mut forms = Vec::new();
        base64_wrapped(&value[..48], &mut forms);
        assert!(forms.is_empty(), "one line needs no wrapped form");
    }

    #[test]
    fn hex_both_cases() {
        assert_eq!(s(&hex(&[0x00, 0xab, 0x7f], HEX_LOWER)), "00ab7f");
        assert_eq!(s(&hex(&[0x00, 0xab, 0x7f], HEX_UPPER)), "00AB7F");
    }

    #[test]
    fn percent_encoding_as_common_encoders_write_it() {
        let v = b"a b/c~d-e.f_g+h!'()*\xff";
        let got: Vec<String> = PERCENT_STYLES
            .iter()
            .map(|&style| s(&percent(v, style)).to_owned())
            .collect();
        assert_eq!(
            got,
            [
                // RFC 3986, Python quote(s, safe=''), encodeURIComponent
                // without its extra characters.
                "a%20b%2Fc~d-e.f_g%2Bh%21%27%28%29%2A%FF",
                "a%20b%2fc~d-e.f_g%2bh%21%27%28%29%2a%ff",
                // Python quote(s): `/` stays.
                "a%20b/c~d-e.f_g%2Bh%21%27%28%29%2A%FF",
                // Python quote_plus.
                "a+b%2Fc~d-e.f_g%2Bh%21%27%28%29%2A%FF",
                // JavaScript encodeURIComponent.
                "a%20b%2Fc~d-e.f_g%2Bh!'()*%FF",
                // WHATWG form encoding.
                "a+b%2Fc%7Ed-e.f_g%2Bh%21%27%28%29*%FF",
                // PHP urlencode.
                "a+b%2Fc%7Ed-e.f_g%2Bh%21%27%28%29%2A%FF",
            ]
        );
    }

    #[test]
    fn entity_escaping() {
        let v = b"a<b>&\"c'";
        let got: Vec<String> = ENTITY_STYLES
            .iter()
            .map(|&style| s(&entities(v, style)).to_owned())
            .collect();
        assert_eq!(
            got,
            [
                "a&lt;b&gt;&amp;&quot;c&apos;",
                "a&lt;b&gt;&amp;\"c'",
                "a&lt;b&gt;&amp;&quot;c&#x27;",
                "a&lt;b&gt;&amp;&#34;c&#39;",
                "a&lt;b&gt;&amp;&quot;c&#039;",
            ]
        );
    }

    #[test]
    fn ampersand_sections_as_the_runner_splits_them() {
        let sections = |v: &str| -> Vec<String> {
            ampersand_sections(v.as_bytes())
                .into_iter()
                .map(|b| s(b).to_owned())
                .collect()
        };
        assert_eq!(
            sections("abcdef&ghijkl&mnop"),
            ["abcdef", "ghijkl", "mnop", "abcdef&ghijkl&", "mnop"]
        );
        assert_eq!(
            sections("abc&+ghijklm"),
            ["abc", "+ghijklm", "abc&+", "hijklm"]
        );
        assert!(sections("no ampersand").is_empty());
    }

    #[test]
    fn derived_values_trim_whitespace_and_quotes() {
        let d = |v: &[u8]| -> Vec<Vec<u8>> {
            derived_values(v).into_iter().map(<[u8]>::to_vec).collect()
        };
        assert_eq!(
            d(b"  value123 \t\r"),
            [b"  value123".to_vec(), b"value123".to_vec()]
        );
        assert_eq!(d(b"value123\r"), [b"value123".to_vec()]);
        assert_eq!(d(b"\"value123\""), [b"value123".to_vec()]);
        assert_eq!(d(b"'value123'"), [b"value123".to_vec()]);
        assert!(d(b"value123").is_empty());
        // The trimmed value would be under 8 bytes: nothing derived.
        assert!(d(b"short   ").is_empty());
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
        let forms: Vec<&str> = forms.iter().map(|f| s(f)).collect();
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
