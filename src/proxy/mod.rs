//! The credential proxy (SPEC "Credential proxy (secret-free agents)"): a
//! reverse proxy on loopback through which the child calls a vendor API
//! with a placeholder key; keywarden swaps in the real value on the way
//! out and redacts it from what comes back, so a proxied secret never
//! reaches the child in any form (invariant 8).
//!
//! Pure parts, without OS effects: [`route`] (the registry's `proxy:`, the
//! presets, the validated [`Route`]), [`glob`] (`allow` patterns),
//! [`request`] (refusals, placeholder checks, header rules, secrets found
//! in a request) and [`limit`] (`max_requests_per_minute`). The edge is
//! [`server`]: the listener, hyper on a tokio runtime of its own thread,
//! the rustls client to the upstreams, streaming bodies both ways, the
//! audit. `run` starts it as a service (`commands::run::services`).

pub mod glob;
pub mod limit;
pub mod request;
pub mod route;
pub mod server;

pub use route::{ProxySpec, Route};

/// Bytes of randomness in a placeholder (256 bits).
pub const PHANTOM_BYTES: usize = 32;
/// The placeholder's prefix.
pub const PHANTOM_PREFIX: &str = "kwp_";
/// Largest request body forwarded (413 beyond).
pub const MAX_BODY: u64 = 32 << 20;

/// A placeholder made of `random`: `kwp_` and its base64url text.
pub fn phantom_of(random: &[u8; PHANTOM_BYTES]) -> String {
    use base64::Engine;
    let mut s = String::from(PHANTOM_PREFIX);
    s.push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
    s
}

/// The public id of a placeholder for the audit log (`token_id`): the first
/// 16 hex digits of its SHA-256, never the placeholder.
pub fn phantom_id(phantom: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(phantom);
    format!("kwp-{}", crate::audit::hex(&digest[..8]))
}

/// `{url}` of route `id` for a proxy listening on `addr`.
pub fn route_url(addr: &Listen, id: &str) -> String {
    match addr {
        Listen::Tcp(a) => format!("http://{a}/{id}"),
        Listen::Unix(_) => format!("http://localhost/{id}"),
    }
}

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A loopback TCP address (port 0: ephemeral).
    Tcp(std::net::SocketAddr),
    /// A unix socket.
    Unix(std::path::PathBuf),
}

impl Listen {
    /// Parse `--proxy-listen`: `HOST:PORT` on loopback, `PORT`, or
    /// `unix:PATH`. A non-loopback address is an error (78).
    pub fn parse(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("--proxy-listen: unix: needs a path".into());
            }
            return Ok(Listen::Unix(path.into()));
        }
        let addr: std::net::SocketAddr = match text.parse() {
            Ok(a) => a,
            Err(_) => match text.rsplit_once(':') {
                Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
                    let port: u16 = port
                        .parse()
                        .map_err(|_| format!("--proxy-listen: '{text}': not a port"))?;
                    std::net::SocketAddr::from(([127, 0, 0, 1], port))
                }
                _ => {
                    return Err(format!(
                        "--proxy-listen: '{text}': expected HOST:PORT or unix:PATH"
                    ))
                }
            },
        };
        if !addr.ip().is_loopback() {
            return Err(format!(
                "--proxy-listen: '{text}' is not a loopback address (the proxy serves this host only)"
            ));
        }
        Ok(Listen::Tcp(addr))
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let ok = [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:9", "[::1]:9"),
            ("localhost:7", "127.0.0.1:7"),
        ];
        for (text, want) in ok {
            match Listen::parse(text) {
                Ok(Listen::Tcp(a)) => assert_eq!(a.to_string(), want),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(
            Listen::parse("unix:/tmp/p.sock"),
            Ok(Listen::Unix("/tmp/p.sock".into()))
        );
        for bad in [
            "0.0.0.0:8080",
            "10.1.2.3:1",
            "[::]:1",
            "example.com:80",
            "unix:",
            "8080",
        ] {
            assert!(Listen::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_and_their_ids() {
        let p = phantom_of(&[7u8; PHANTOM_BYTES]);
        assert!(p.starts_with("kwp_"));
        assert_eq!(p.len(), 4 + 43);
        let id = phantom_id(p.as_bytes());
        assert!(id.starts_with("kwp-") && id.len() == 20 && !id.contains(&p[4..]));
        assert_eq!(
            route_url(&Listen::Tcp("127.0.0.1:5".parse().expect("addr")), "openai"),
            "http://127.0.0.1:5/openai"
        );
    }
}
