//! What the proxy decides about a request before anything is forwarded,
//! and what it changes in the headers both ways. Pure: requests come in as
//! values (method, path, query, a header map), answers go out as values.

#![forbid(unsafe_code)]

use hyper::header::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use super::route::{Inject, Route};
use crate::redact::Matcher;

/// A refusal: status and the message of its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Why (free of values).
    pub message: String,
}

impl Refusal {
    /// A refusal with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// `CONNECT`, absolute-form (forward-proxy) targets and protocol upgrades
/// (WebSocket) are not served.
pub fn refuse_form(method: &str, absolute_form: bool, headers: &HeaderMap) -> Option<Refusal> {
    if method.eq_ignore_ascii_case("CONNECT") {
        return Some(Refusal::new(
            405,
            "CONNECT is not supported: this is a reverse proxy",
        ));
    }
    if absolute_form {
        return Some(Refusal::new(
            501,
            "forward-proxy requests are not supported: call {url}/PATH",
        ));
    }
    let upgrade = headers.contains_key(hyper::header::UPGRADE)
        || headers
            .get_all(hyper::header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"upgrade"));
    upgrade.then(|| Refusal::new(501, "protocol upgrades (WebSocket) are not supported"))
}

/// Whether a comma-separated header value lists `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// `/<id>/rest` → (`id`, `/rest`); `/<id>` → (`id`, `/`).
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (id, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!id.is_empty()).then_some((id, tail))
}

/// Whether a path has a `.` or `..` segment, written plainly or
/// percent-encoded: an upstream that resolves them would reach a path the
/// allow list did not see.
pub fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|seg| {
        let lower = seg.to_ascii_lowercase().replace("%2e", ".");
        lower == "." || lower == ".."
    }) || path.to_ascii_lowercase().contains("%2f")
}

/// The placeholder as the client sent it, where the route's `inject` puts
/// the key: the header's value inside the template's text, or the query
/// parameter.
pub fn presented<'a>(
    inject: &Inject,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<Vec<u8>> {
    match inject {
        Inject::Header {
            name,
            prefix,
            suffix,
        } => {
            let v = headers.get(name.as_str())?.as_bytes().trim_ascii();
            let v = strip_prefix_ci(v, prefix.trim_ascii_end().as_bytes())
                .map(|r| r.trim_ascii_start())
                .unwrap_or(v);
            let v = v.strip_suffix(suffix.as_bytes()).unwrap_or(v);
            Some(v.to_vec())
        }
        Inject::Query(name) => query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.as_bytes().to_vec())
        }),
    }
}

fn strip_prefix_ci<'a>(v: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&v[prefix.len()..])
    } else {
        None
    }
}

/// What the placeholder check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The route's own placeholder, where it belongs.
    Valid,
    /// None, or a wrong one: 401.
    Invalid,
    /// Another route's placeholder: 403.
    OtherRoute,
}

/// Check the placeholder of route `own` among `phantoms` (one per route, in
/// route order). `presented` is what the inject location held; `elsewhere`
/// the rest of the request (header values, query) where another route's
/// placeholder would show up.
pub fn check_placeholder(
    own: usize,
    phantoms: &[&[u8]],
    presented: Option<&[u8]>,
    elsewhere: &[&[u8]],
) -> Placeholder {
    let eq = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
    if let Some(p) = presented {
        if eq(p, phantoms[own]) {
            return Placeholder::Valid;
        }
    }
    let other = phantoms.iter().enumerate().any(|(i, ph)| {
        i != own
            && (presented.is_some_and(|p| eq(p, ph))
                || elsewhere.iter().any(|text| contains(text, ph)))
    });
    if other {
        Placeholder::OtherRoute
    } else {
        Placeholder::Invalid
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The placeholder as the client sent it in the first of the route's
/// accepted places that has one.
pub fn presented_on(route: &Route, headers: &HeaderMap, query: Option<&str>) -> Option<Vec<u8>> {
    route.accepted().find_map(|i| presented(i, headers, query))
}

/// Remove from a request what must not reach the upstream: hop-by-hop
/// headers (and those `Connection` names), `Host` (set again), the client's
/// copy of the inject header (and of every header the placeholder is
/// accepted in), `Proxy-*`, `Forwarded` and `X-Forwarded-*`.
pub fn strip_request_headers(headers: &mut HeaderMap, route: &Route) {
    strip_hop_by_hop(headers);
    headers.remove(hyper::header::HOST);
    for h in route.accepted().filter_map(Inject::header) {
        headers.remove(h);
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n.starts_with("proxy-") || n == "forwarded" || n.starts_with("x-forwarded-")
        })
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), and those named by
/// `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(n);
    }
}

/// Remove the response headers keywarden sets itself: hop-by-hop ones,
/// and `Content-Length` (redaction may change the length; the body is sent
/// chunked).
pub fn strip_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(hyper::header::CONTENT_LENGTH);
}

/// The query without parameter `name` (the client's placeholder).
pub fn query_without(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .collect::<Vec<_>>()
        .join("&")
}

/// The id of a secret whose value (or an encoded form) is in `text`,
/// ignoring the masked ids in `ignore` (the placeholders, the child's
/// token: not secrets of the upstream's).
pub fn secret_in<'m>(matcher: &'m Matcher, text: &[u8], ignore: &[String]) -> Option<&'m str> {
    matcher
        .find_spans(text)
        .into_iter()
        .map(|s| s.id)
        .find(|id| !ignore.iter().any(|i| i == id))
}

/// Whether a route answers `method` `path`: 403 otherwise.
pub fn check_allowed(route: &Route, method: &str, path: &str) -> Result<(), Refusal> {
    if route.allows(method, path) {
        Ok(())
    } else {
        Err(Refusal::new(
            403,
            format!("{method} {path} is not allowed on route '{}'", route.id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{Mask, Secret};
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn forms_refused() {
        let none = HeaderMap::new();
        let table = [
            ("CONNECT", false, headers(&[]), Some(405)),
            ("GET", true, headers(&[]), Some(501)),
            (
                "GET",
                false,
                headers(&[("upgrade", "websocket"), ("connection", "Upgrade")]),
                Some(501),
            ),
            (
                "GET",
                false,
                headers(&[("connection", "keep-alive, upgrade")]),
                Some(501),
            ),
            ("POST", false, none, None),
        ];
        for (m, abs, h, want) in table {
            assert_eq!(refuse_form(m, abs, &h).map(|r| r.status), want, "{m} {abs}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            split_path("/openai/chat/completions"),
            Some(("openai", "/chat/completions"))
        );
        assert_eq!(split_path("/openai"), Some(("openai", "/")));
        assert_eq!(split_path("/openai/"), Some(("openai", "/")));
        assert_eq!(split_path("/"), None);
        assert_eq!(split_path("openai"), None);
        for (p, dots) in [
            ("/models", false),
            ("/models/../admin", true),
            ("/models/%2e%2E/admin", true),
            ("/./x", true),
            ("/a%2fb", true),
            ("/v1.2/x..y", false),
        ] {
            assert_eq!(has_dot_segments(p), dots, "{p}");
        }
    }

    #[test]
    fn placeholders_are_read_where_inject_puts_the_key() {
        let bearer = Inject::parse("header:Authorization:Bearer {}").expect("inject");
        let xkey = Inject::parse("header:x-api-key:{}").expect("inject");
        let query = Inject::parse("query:key").expect("inject");
        let h = headers(&[("authorization", "Bearer kwp_a"), ("x-api-key", "kwp_b")]);
        assert_eq!(presented(&bearer, &h, None).as_deref(), Some(&b"kwp_a"[..]));
        let lower = headers(&[("authorization", "bearer   kwp_a ")]);
        assert_eq!(
            presented(&bearer, &lower, None).as_deref(),
            Some(&b"kwp_a"[..])
        );
        assert_eq!(presented(&xkey, &h, None).as_deref(), Some(&b"kwp_b"[..]));
        assert_eq!(
            presented(&query, &h, Some("a=1&key=kwp_c")).as_deref(),
            Some(&b"kwp_c"[..])
        );
        assert_eq!(presented(&query, &h, Some("a=1")), None);
        assert_eq!(presented(&xkey, &HeaderMap::new(), None), None);
        let anthropic = Route::build(
            "a",
            &super::super::ProxySpec {
                preset: Some("anthropic".into()),
                ..Default::default()
            },
        )
        .expect("route");
        let sdk_bearer = headers(&[("authorization", "Bearer kwp_a")]);
        let sdk_key = headers(&[("x-api-key", "kwp_b")]);
        assert_eq!(
            presented_on(&anthropic, &sdk_bearer, None).as_deref(),
            Some(&b"kwp_a"[..])
        );
        assert_eq!(
            presented_on(&anthropic, &sdk_key, None).as_deref(),
            Some(&b"kwp_b"[..])
        );
    }

    #[test]
    fn placeholder_verdicts() {
        let phantoms: [&[u8]; 2] = [b"kwp_own", b"kwp_other"];
        type Case<'a> = (Option<&'a [u8]>, &'a [&'a [u8]], Placeholder);
        let table: [Case<'_>; 6] = [
            (Some(b"kwp_own"), &[], Placeholder::Valid),
            (None, &[], Placeholder::Invalid),
            (Some(b"kwp_wrong"), &[], Placeholder::Invalid),
            (Some(b"kwp_ow"), &[], Placeholder::Invalid),
            (Some(b"kwp_other"), &[], Placeholder::OtherRoute),
            (None, &[b"x-api-key: kwp_other"], Placeholder::OtherRoute),
        ];
        for (p, elsewhere, want) in table {
            assert_eq!(check_placeholder(0, &phantoms, p, elsewhere), want, "{p:?}");
        }
    }

    #[test]
    fn request_headers_stripped() {
        let mut h = headers(&[
            ("authorization", "Bearer kwp_a"),
            ("host", "127.0.0.1:1"),
            ("proxy-authorization", "x"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("connection", "close, x-drop"),
            ("x-drop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("content-type", "application/json"),
            ("openai-beta", "assistants=v2"),
        ]);
        let route = Route::build(
            "o",
            &super::super::ProxySpec {
                preset: Some("openai".into()),
                ..Default::default()
            },
        )
        .expect("route");
        strip_request_headers(&mut h, &route);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "openai-beta"]);
        let mut r = headers(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
            ("location", "/x"),
        ]);
        strip_response_headers(&mut r);
        assert_eq!(
            r.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["location"]
        );
    }

    #[test]
    fn query_placeholder_removed() {
        assert_eq!(query_without("key=kwp_x&a=1", "key"), "a=1");
        assert_eq!(query_without("a=1&key=kwp_x&b=2", "key"), "a=1&b=2");
        assert_eq!(query_without("keyx=1", "key"), "keyx=1");
    }

    #[test]
    fn secrets_in_requests_are_found_in_every_form() {
        let value = "a-real-vendor-key-0123456789";
        let m = Matcher::new(
            &[
                Secret {
                    id: "openai",
                    value: value.as_bytes(),
                },
                Secret {
                    id: "OPENAI_API_KEY",
                    value: b"kwp_placeholder_text",
                },
            ],
            &Mask::new("[REDACTED:{id}]"),
        );
        let ignore = vec!["OPENAI_API_KEY".to_string()];
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value);
        let hex = crate::audit::hex(value.as_bytes());
        for text in [
            format!("{{\"prompt\":\"{value}\"}}"),
            format!("Basic {b64}"),
            format!("/x?k={hex}"),
        ] {
            assert_eq!(
                secret_in(&m, text.as_bytes(), &ignore),
                Some("openai"),
                "{text}"
            );
        }
        assert_eq!(secret_in(&m, b"Bearer kwp_placeholder_text", &ignore), None);
        assert_eq!(secret_in(&m, b"nothing here", &ignore), None);
    }
}
