//! JSON bodies for the socket API. Pure.
//!
//! Bodies are [`Zeroizing`] buffers: a body that carries a value (or a new
//! token) is built into one buffer sized up front, so no reallocation
//! leaves a copy behind, and is wiped when hyper drops it after writing.

#![forbid(unsafe_code)]

use serde::Serialize;
use zeroize::Zeroizing;

/// A response body, wiped on drop.
pub type Body = Zeroizing<Vec<u8>>;

/// A piece of a JSON document.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// Already JSON (punctuation, numbers, serialized non-secret values).
    Raw(&'a str),
    /// A string to quote and escape.
    Str(&'a str),
}

fn escape_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f | 0x7f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn push_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for b in s.bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Concatenate `parts` into one exactly-sized, wiped-on-drop buffer.
pub fn build(parts: &[Part<'_>]) -> Body {
    let len = parts
        .iter()
        .map(|p| match p {
            Part::Raw(s) => s.len(),
            Part::Str(s) => escape_len(s),
        })
        .sum();
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    for p in parts {
        match p {
            Part::Raw(s) => out.extend_from_slice(s.as_bytes()),
            Part::Str(s) => push_escaped(&mut out, s),
        }
    }
    debug_assert_eq!(out.len(), len, "the size computed up front is exact");
    out
}

/// A non-secret value serialized.
pub fn to_body<T: Serialize>(value: &T) -> Body {
    Zeroizing::new(
        serde_json::to_vec(value).unwrap_or_else(|_| b"{\"error\":\"internal error\"}".to_vec()),
    )
}

/// `{"error": message}`.
pub fn error(message: &str) -> Body {
    build(&[Part::Raw("{\"error\":"), Part::Str(message), Part::Raw("}")])
}

/// What is wrong with a request body, by class only: serde's message
/// quotes the input (a value sent by mistake would reach the reply and the
/// audit log), so it is never shown.
pub fn error_class(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "JSON without the expected fields and types",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

/// A non-secret value as a JSON fragment, for [`Part::Raw`].
pub fn fragment<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json_and_sizes_exactly() {
        for s in [
            "",
            "plain",
            "quote\" back\\slash",
            "nl\ncr\rtab\tbs\x08ff\x0c",
            "ctl\x01\x1f\x7f",
            "ünïcødé ✓ 🔑",
        ] {
            let body = build(&[Part::Raw("{\"v\":"), Part::Str(s), Part::Raw("}")]);
            assert_eq!(body.capacity(), body.len());
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid json");
            assert_eq!(v["v"], s);
        }
        let e = error("no such secret 'x'");
        assert_eq!(&e[..], br#"{"error":"no such secret 'x'"}"#);
    }
}
