//! A proxied route as configured: the registry's `proxy:` (a preset name or
//! a block), the presets, and the validated [`Route`] they give. Pure: no
//! I/O, errors are configuration errors naming the field, never a value.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use super::glob;

/// The registry's `proxy:` as written: a preset name alone is a block with
/// only `preset`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySpec {
    /// `openai`, `anthropic`, `openrouter`, `litellm`, `slack` or `bearer`.
    pub preset: Option<String>,
    /// Where requests go, `https://host[:port][/base]`.
    pub upstream: Option<String>,
    /// `header:NAME:TEMPLATE` (`{}` is the value) or `query:NAME`.
    pub inject: Option<String>,
    /// `METHOD /path` patterns (`*` matches any run of characters).
    pub allow: Option<Vec<String>>,
    /// Variables the child gets: name → template with `{url}`, `{phantom}`.
    pub env: Option<Vec<(String, String)>>,
    /// Requests per minute before 429.
    pub max_requests_per_minute: Option<u64>,
}

/// The names of the presets.
pub const PRESETS: [&str; 6] = [
    "openai",
    "anthropic",
    "openrouter",
    "litellm",
    "slack",
    "bearer",
];

/// What a preset fills in.
struct Preset {
    upstream: Option<&'static str>,
    inject: &'static str,
    allow: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const BEARER: &str = "header:Authorization:Bearer {}";

fn preset(name: &str) -> Option<Preset> {
    Some(match name {
        "openai" => Preset {
            upstream: Some("https://api.openai.com/v1"),
            inject: BEARER,
            allow: &[
                "POST /chat/completions",
                "POST /responses",
                "POST /embeddings",
                "GET /models*",
            ],
            env: &[
                ("OPENAI_BASE_URL", "{url}"),
                ("OPENAI_API_KEY", "{phantom}"),
            ],
        },
        "anthropic" => Preset {
            upstream: Some("https://api.anthropic.com"),
            inject: "header:x-api-key:{}",
            allow: &[
                "POST /v1/messages",
                "POST /v1/messages/count_tokens",
                "GET /v1/models*",
            ],
            env: &[
                ("ANTHROPIC_BASE_URL", "{url}"),
                ("ANTHROPIC_API_KEY", "{phantom}"),
            ],
        },
        "openrouter" => Preset {
            upstream: Some("https://openrouter.ai/api/v1"),
            inject: BEARER,
            allow: &[
                "POST /chat/completions",
                "POST /completions",
                "POST /responses",
                "POST /embeddings",
                "GET /models*",
            ],
            env: &[
                ("OPENROUTER_BASE_URL", "{url}"),
                ("OPENROUTER_API_KEY", "{phantom}"),
            ],
        },
        "litellm" => Preset {
            upstream: None,
            inject: BEARER,
            allow: &["*"],
            env: &[
                ("LITELLM_PROXY_API_BASE", "{url}"),
                ("LITELLM_PROXY_API_KEY", "{phantom}"),
            ],
        },
        // slack_sdk joins method names onto the base URL: it must end in '/'.
        "slack" => Preset {
            upstream: Some("https://slack.com/api"),
            inject: BEARER,
            allow: &["GET /*", "POST /*"],
            env: &[
                ("SLACK_API_URL", "{url}/"),
                ("SLACK_BOT_TOKEN", "{phantom}"),
            ],
        },
        "bearer" => Preset {
            upstream: None,
            inject: BEARER,
            allow: &["*"],
            env: &[],
        },
        _ => return None,
    })
}

/// Where the real value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inject {
    /// A header: the template's `{}` replaced by the value.
    Header {
        /// Header name, lower case.
        name: String,
        /// Text before the value.
        prefix: String,
        /// Text after the value.
        suffix: String,
    },
    /// A query parameter.
    Query(String),
}

impl Inject {
    /// Parse `header:NAME:TEMPLATE` or `query:NAME`.
    pub fn parse(text: &str) -> Result<Inject, String> {
        if let Some(rest) = text.strip_prefix("header:") {
            let (name, template) = rest
                .split_once(':')
                .ok_or("inject: expected header:NAME:TEMPLATE")?;
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err("inject: not a valid header name".into());
            }
            let (prefix, suffix) = template
                .split_once("{}")
                .filter(|(_, s)| !s.contains("{}"))
                .ok_or("inject: the template must hold '{}' once")?;
            if !(prefix.bytes().chain(suffix.bytes())).all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err("inject: the template must be printable ASCII".into());
            }
            let name = name.to_ascii_lowercase();
            if is_never_injected(&name) {
                return Err(format!("inject: header {name} cannot carry a credential"));
            }
            return Ok(Inject::Header {
                name,
                prefix: prefix.to_string(),
                suffix: suffix.to_string(),
            });
        }
        if let Some(name) = text.strip_prefix("query:") {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            {
                return Err("inject: not a valid query parameter name".into());
            }
            return Ok(Inject::Query(name.to_string()));
        }
        Err("inject: expected header:NAME:TEMPLATE or query:NAME".into())
    }

    /// The header name, for a header inject.
    pub fn header(&self) -> Option<&str> {
        match self {
            Inject::Header { name, .. } => Some(name),
            Inject::Query(_) => None,
        }
    }
}

/// Headers that keywarden sets or removes itself.
fn is_never_injected(name: &str) -> bool {
    matches!(
        name,
        "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te"
    )
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An upstream base URL, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `https` or `http` (loopback only).
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The base path, without a trailing '/' (may be empty).
    pub base: String,
}

impl Upstream {
    /// Parse and check an upstream URL: https, or http on loopback only;
    /// no user info, query or fragment.
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("upstream: expected an https:// URL")?;
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err("upstream: expected a host (no user info)".into());
        }
        if path.contains(['?', '#']) || rest.contains(char::is_whitespace) {
            return Err("upstream: no query, fragment or spaces".into());
        }
        let host = host_of(authority);
        match scheme.as_str() {
            "https" => {}
            "http" if is_loopback_host(host) => {}
            "http" => return Err("upstream: http:// is allowed on loopback only".into()),
            _ => return Err("upstream: expected an https:// URL".into()),
        }
        if authority.parse::<hyper::http::uri::Authority>().is_err() {
            return Err("upstream: not a valid host".into());
        }
        Ok(Upstream {
            scheme,
            authority: authority.to_string(),
            base: path.trim_end_matches('/').to_string(),
        })
    }

    /// The URL for `rest` (a path starting with '/') and an optional query.
    pub fn url(&self, rest: &str, query: Option<&str>) -> String {
        let mut u = format!("{}://{}{}{}", self.scheme, self.authority, self.base, rest);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            u.push('?');
            u.push_str(q);
        }
        u
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base)
    }
}

/// The host of `host[:port]` (brackets of an IPv6 literal removed).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One `env` template of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvTemplate {
    /// The variable.
    pub name: String,
    /// Its text, `{url}` and `{phantom}` still in it.
    pub template: String,
}

impl EnvTemplate {
    /// The text with `{url}` and `{phantom}` filled in.
    pub fn render(&self, url: &str, phantom: &str) -> String {
        self.template
            .replace("{url}", url)
            .replace("{phantom}", phantom)
    }

    /// Whether it holds the placeholder (then the relay masks it).
    pub fn has_phantom(&self) -> bool {
        self.template.contains("{phantom}")
    }
}

/// A route, validated: what the proxy serves under `/<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The secret id (the first path segment).
    pub id: String,
    /// The preset it started from, if any.
    pub preset: Option<String>,
    /// Where requests go.
    pub upstream: Upstream,
    /// Where the real value goes (and where the placeholder is accepted).
    pub inject: Inject,
    /// Where else the placeholder is accepted (and stripped): where the
    /// preset's SDK may send a key besides `inject` (the Anthropic SDK
    /// sends `Authorization: Bearer` in recent versions, `x-api-key` in
    /// older ones). Empty when `inject` is given.
    pub also_accept: Vec<Inject>,
    /// Allowed `METHOD /path` patterns.
    pub allow: Vec<String>,
    /// What the child gets.
    pub env: Vec<EnvTemplate>,
    /// Requests per minute before 429 (`None`: no limit).
    pub max_requests_per_minute: Option<u64>,
}

impl Route {
    /// The route for secret `id` from `spec`: the preset's fields, each
    /// replaced by the one given. Errors name the field, never a value.
    pub fn build(id: &str, spec: &ProxySpec) -> Result<Route, String> {
        let p = match spec.preset.as_deref() {
            Some(name) => Some(preset(name).ok_or_else(|| {
                format!(
                    "proxy: unknown preset '{name}' (expected {})",
                    PRESETS.join(", ")
                )
            })?),
            None => None,
        };
        let upstream = spec
            .upstream
            .as_deref()
            .or(p.as_ref().and_then(|p| p.upstream))
            .ok_or("proxy: upstream is required (the preset has none)")?;
        let inject = spec
            .inject
            .as_deref()
            .or(p.as_ref().map(|p| p.inject))
            .unwrap_or(BEARER);
        let allow: Vec<String> = match &spec.allow {
            Some(a) => a.clone(),
            None => p
                .as_ref()
                .map_or(&["*"][..], |p| p.allow)
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        for a in &allow {
            glob::check_pattern(a).map_err(|e| format!("proxy: allow: {e}"))?;
        }
        let env: Vec<EnvTemplate> = match &spec.env {
            Some(e) => e
                .iter()
                .map(|(k, v)| EnvTemplate {
                    name: k.clone(),
                    template: v.clone(),
                })
                .collect(),
            None => p
                .as_ref()
                .map_or(&[][..], |p| p.env)
                .iter()
                .map(|(k, v)| EnvTemplate {
                    name: k.to_string(),
                    template: v.to_string(),
                })
                .collect(),
        };
        for e in &env {
            if !crate::config::is_valid_env_name(&e.name) {
                return Err("proxy: env: not a valid variable name".into());
            }
            if e.name.to_ascii_uppercase().starts_with("KEYWARDEN_") {
                return Err(format!(
                    "proxy: env: {} is keywarden's own variable",
                    e.name
                ));
            }
        }
        if spec.max_requests_per_minute == Some(0) {
            return Err("proxy: max_requests_per_minute: expected a positive integer".into());
        }
        let also_accept = match (spec.preset.as_deref(), &spec.inject) {
            (Some("anthropic"), None) => vec![Inject::parse(BEARER)?],
            _ => Vec::new(),
        };
        Ok(Route {
            id: id.to_string(),
            preset: spec.preset.clone(),
            upstream: Upstream::parse(upstream)?,
            inject: Inject::parse(inject)?,
            also_accept,
            allow,
            env,
            max_requests_per_minute: spec.max_requests_per_minute,
        })
    }

    /// Every place the placeholder is accepted: `inject` first.
    pub fn accepted(&self) -> impl Iterator<Item = &Inject> {
        std::iter::once(&self.inject).chain(&self.also_accept)
    }

    /// Whether `method` and `path` (no query) are allowed.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        let line = format!("{method} {path}");
        self.allow.iter().any(|p| glob::matches(p, &line))
    }

    /// The settings (registry field names) in which `other` differs.
    pub fn changed_fields(&self, other: &Route) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.upstream != other.upstream {
            changed.push("upstream");
        }
        if self.inject != other.inject || self.also_accept != other.also_accept {
            changed.push("inject");
        }
        if self.allow != other.allow {
            changed.push("allow");
        }
        if self.env != other.env {
            changed.push("env");
        }
        if self.max_requests_per_minute != other.max_requests_per_minute {
            changed.push("max_requests_per_minute");
        }
        changed
    }
}

/// What a reload from registry routes `before` to `after` (by secret id)
/// changes that the running proxy does not follow (it serves the routes
/// it started with): one warning per route, naming settings, never values.
pub fn reload_warnings(
    before: &[(&str, Option<&Route>)],
    after: &[(&str, Option<&Route>)],
) -> Vec<String> {
    const RESTART: &str = "restart keywarden to apply it";
    let mut out = Vec::new();
    for (id, new) in after {
        let old = before.iter().find(|(i, _)| i == id).and_then(|(_, r)| *r);
        match (old, new) {
            (Some(old), Some(new)) => {
                let changed = old.changed_fields(new);
                if !changed.is_empty() {
                    out.push(format!(
                        "reload: the proxy settings of route '{id}' changed ({}); the running proxy keeps the ones it started with (the new value is used): {RESTART}",
                        changed.join(", ")
                    ));
                }
            }
            (Some(_), None) => out.push(format!(
                "reload: secret '{id}' is no longer proxied in the registry; the running proxy still serves route '{id}' with its old settings, and the socket goes on refusing its value: {RESTART}"
            )),
            (None, Some(_)) => out.push(format!(
                "reload: secret '{id}' is proxied in the registry, but the running proxy has no route for it (the socket refuses it from now on): {RESTART}"
            )),
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(preset: &str) -> ProxySpec {
        ProxySpec {
            preset: Some(preset.into()),
            ..ProxySpec::default()
        }
    }

    #[test]
    fn presets_fill_what_the_sdks_read() {
        let table: &[(&str, &str, Option<&str>, &[&str])] = &[
            (
                "openai",
                "https://api.openai.com/v1",
                Some("authorization"),
                &["OPENAI_BASE_URL", "OPENAI_API_KEY"],
            ),
            (
                "anthropic",
                "https://api.anthropic.com",
                Some("x-api-key"),
                &["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"],
            ),
            (
                "openrouter",
                "https://openrouter.ai/api/v1",
                Some("authorization"),
                &["OPENROUTER_BASE_URL", "OPENROUTER_API_KEY"],
            ),
            (
                "slack",
                "https://slack.com/api",
                Some("authorization"),
                &["SLACK_API_URL", "SLACK_BOT_TOKEN"],
            ),
        ];
        for (name, upstream, header, vars) in table {
            let r = Route::build("x", &spec(name)).expect(name);
            assert_eq!(r.upstream.to_string(), *upstream, "{name}");
            assert_eq!(r.inject.header(), *header, "{name}");
            let names: Vec<&str> = r.env.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, *vars, "{name}");
        }
        for needs_upstream in ["litellm", "bearer"] {
            let e = Route::build("x", &spec(needs_upstream)).expect_err(needs_upstream);
            assert!(e.contains("upstream is required"), "{e}");
        }
        assert!(Route::build("x", &spec("nope"))
            .expect_err("unknown")
            .contains("unknown preset"));
    }

    #[test]
    fn a_field_given_overrides_the_preset() {
        let r = Route::build(
            "o",
            &ProxySpec {
                preset: Some("openai".into()),
                upstream: Some("http://127.0.0.1:9/v1/".into()),
                inject: Some("query:key".into()),
                allow: Some(vec!["GET /x".into()]),
                env: Some(vec![("BASE".into(), "{url}".into())]),
                max_requests_per_minute: Some(5),
            },
        )
        .expect("route");
        assert_eq!(
            r.upstream.url("/a", Some("b=1")),
            "http://127.0.0.1:9/v1/a?b=1"
        );
        assert_eq!(r.inject, Inject::Query("key".into()));
        assert!(r.allows("GET", "/x") && !r.allows("POST", "/chat/completions"));
        assert_eq!(r.env.len(), 1);
        assert_eq!(r.max_requests_per_minute, Some(5));
    }

    #[test]
    fn upstreams_are_https_or_loopback_http() {
        let table = [
            ("https://api.example.com/v1", true),
            ("https://api.example.com:8443", true),
            ("http://127.0.0.1:8080/v1", true),
            ("http://localhost:8080", true),
            ("http://[::1]:8080", true),
            ("http://api.example.com/v1", false),
            ("http://10.0.0.1/v1", false),
            ("ftp://api.example.com", false),
            ("https://user:pw@api.example.com", false),
            ("https://api.example.com/v1?key=x", false),
            ("api.example.com", false),
            ("https://", false),
        ];
        for (url, ok) in table {
            assert_eq!(Upstream::parse(url).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn inject_forms() {
        assert_eq!(
            Inject::parse("header:Authorization:Bearer {}"),
            Ok(Inject::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
                suffix: String::new()
            })
        );
        assert_eq!(Inject::parse("query:key"), Ok(Inject::Query("key".into())));
        for bad in [
            "header:x-api-key",
            "header::{}",
            "header:a b:{}",
            "header:x:{}{}",
            "query:",
            "cookie:x",
            "header:Host:{}",
        ] {
            assert!(Inject::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reloads_that_change_a_route_are_named() {
        let base = Route::build("o", &spec("openai")).expect("route");
        let other_upstream = Route::build(
            "o",
            &ProxySpec {
                upstream: Some("https://eu.api.example.com/v1".into()),
                allow: Some(vec!["GET /models".into()]),
                ..spec("openai")
            },
        )
        .expect("route");
        let limited = Route::build(
            "o",
            &ProxySpec {
                max_requests_per_minute: Some(5),
                ..spec("openai")
            },
        )
        .expect("route");
        assert!(base.changed_fields(&base.clone()).is_empty());
        assert_eq!(base.changed_fields(&other_upstream), ["upstream", "allow"]);
        assert_eq!(base.changed_fields(&limited), ["max_requests_per_minute"]);
        type Case<'a> = (Option<&'a Route>, Option<&'a Route>, Option<&'a str>);
        let table: [Case<'_>; 5] = [
            (Some(&base), Some(&base), None),
            (
                Some(&base),
                Some(&other_upstream),
                Some("changed (upstream, allow)"),
            ),
            (Some(&base), None, Some("no longer proxied")),
            (None, Some(&base), Some("has no route")),
            (None, None, None),
        ];
        for (before, after, want) in table {
            let got = reload_warnings(&[("o", before)], &[("o", after)]);
            match want {
                None => assert!(got.is_empty(), "{got:?}"),
                Some(w) => {
                    assert_eq!(got.len(), 1, "{got:?}");
                    assert!(got[0].contains(w) && got[0].contains("restart"), "{got:?}");
                    assert!(
                        !got[0].contains("example.com"),
                        "names settings, not values"
                    );
                }
            }
        }
        // A secret new to the registry, or gone from it: nothing to say.
        assert!(reload_warnings(&[], &[("n", None)]).is_empty());
        assert!(reload_warnings(&[("o", Some(&base))], &[]).is_empty());
    }

    #[test]
    fn env_templates() {
        let t = EnvTemplate {
            name: "U".into(),
            template: "{url}/".into(),
        };
        assert_eq!(
            t.render("http://127.0.0.1:1/s", "kwp_x"),
            "http://127.0.0.1:1/s/"
        );
        assert!(!t.has_phantom());
        let bad = ProxySpec {
            preset: Some("openai".into()),
            env: Some(vec![("KEYWARDEN_TOKEN".into(), "{phantom}".into())]),
            ..ProxySpec::default()
        };
        assert!(Route::build("o", &bad).is_err());
    }
}
