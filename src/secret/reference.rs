//! Secret references: `scheme://path[#field]`. Pure parsing, no I/O.
//!
//! A reference names where a secret lives, never the secret itself, so it is
//! safe to print. Parsing errors still never echo the input: a string that
//! fails to parse may be a raw key pasted by mistake.

#![forbid(unsafe_code)]

use std::fmt;

/// The providers keywarden knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `kv://path`: the configured KV backend.
    Kv,
    /// `env://NAME`: keywarden's own environment.
    Env,
    /// `file://path`: a file's contents.
    File,
    /// `dotenv://path#KEY`: one key of a `.env` file.
    Dotenv,
    /// `cred://NAME`: a systemd credential.
    Cred,
    /// `exec://PROGRAM?PATH`: a Summon-style provider program.
    Exec,
    /// `vault://mount/path#field`: Vault / OpenBao KV.
    Vault,
    /// `aws-sm://secret-id[#key]`: AWS Secrets Manager.
    AwsSm,
    /// `op://vault/item/field`: 1Password.
    Op,
    /// `pass://path`: the standard unix password manager.
    Pass,
}

impl Scheme {
    /// Every scheme, in the order of the contract.
    pub const ALL: [Scheme; 10] = [
        Scheme::Kv,
        Scheme::Env,
        Scheme::File,
        Scheme::Dotenv,
        Scheme::Cred,
        Scheme::Exec,
        Scheme::Vault,
        Scheme::AwsSm,
        Scheme::Op,
        Scheme::Pass,
    ];

    /// The scheme as written in a ref.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Kv => "kv",
            Scheme::Env => "env",
            Scheme::File => "file",
            Scheme::Dotenv => "dotenv",
            Scheme::Cred => "cred",
            Scheme::Exec => "exec",
            Scheme::Vault => "vault",
            Scheme::AwsSm => "aws-sm",
            Scheme::Op => "op",
            Scheme::Pass => "pass",
        }
    }

    /// Parse a scheme name.
    pub fn from_name(name: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether `#field` is split off the path for this scheme.
    fn takes_field(self) -> bool {
        matches!(self, Scheme::Dotenv | Scheme::Vault | Scheme::AwsSm)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed reference. Displays as the original text.
///
/// The text is held once and shared: a registry of thousands of refs is
/// cloned into the plan, the resolver's requests and the socket API's
/// state, and each clone is a reference count, not three strings. The path
/// and field are ranges of the text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    text: std::sync::Arc<str>,
    /// `text[field..]`, when the scheme takes a field and one was given
    /// (0: none; the path ends at the `#` just before it).
    field: u32,
    /// Where the path starts: past `scheme://`.
    path_start: u8,
    scheme: Scheme,
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRef")
            .field("scheme", &self.scheme)
            .field("path", &self.path())
            .field("field", &self.field())
            .field("text", &self.as_str())
            .finish()
    }
}

/// Why a string is not a valid reference. Never contains the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefError {
    /// No `scheme://` prefix: possibly a raw secret.
    NotARef,
    /// `scheme://` with a scheme keywarden does not know.
    UnknownScheme(String),
    /// A known scheme with a malformed rest.
    Malformed(&'static str),
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefError::NotARef => f.write_str(
                "not a secret reference (value not shown): expected scheme://path, e.g. kv://vendor/env/key",
            ),
            RefError::UnknownScheme(s) => write!(
                f,
                "unknown scheme '{s}' (known: {})",
                Scheme::ALL.map(Scheme::as_str).join(", ")
            ),
            RefError::Malformed(why) => f.write_str(why),
        }
    }
}

/// True when `value` starts with `known-scheme://`: env values are only
/// treated as refs then, so `HTTP_PROXY=http://...` stays a plain value.
pub fn looks_like_ref(value: &str) -> bool {
    value
        .split_once("://")
        .is_some_and(|(scheme, _)| Scheme::from_name(scheme).is_some())
}

fn is_scheme_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'+')
}

impl SecretRef {
    /// The same ref, its text in an allocation of its own rather than
    /// shared with this one.
    pub fn detached(&self) -> SecretRef {
        SecretRef {
            text: std::sync::Arc::from(&*self.text),
            ..*self
        }
    }

    /// Parse `scheme://path[#field]`.
    pub fn parse(text: &str) -> Result<SecretRef, RefError> {
        let Some((scheme_text, rest)) = text.split_once("://") else {
            return Err(RefError::NotARef);
        };
        if !is_scheme_like(scheme_text) {
            return Err(RefError::NotARef);
        }
        let scheme = Scheme::from_name(scheme_text)
            .ok_or_else(|| RefError::UnknownScheme(scheme_text.to_string()))?;
        if rest.chars().any(char::is_control) {
            return Err(RefError::Malformed("reference contains control characters"));
        }
        let (path, field) = match (scheme.takes_field(), rest.split_once('#')) {
            (true, Some((p, f))) => {
                if f.is_empty() {
                    return Err(RefError::Malformed("empty #field"));
                }
                (p, Some(f))
            }
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err(RefError::Malformed("empty path"));
        }
        match scheme {
            Scheme::Dotenv if field.is_none() => {
                return Err(RefError::Malformed(
                    "dotenv refs need a key: dotenv://path#KEY",
                ))
            }
            Scheme::Env | Scheme::Cred if path.contains('/') => {
                return Err(RefError::Malformed("the name must not contain '/'"))
            }
            Scheme::Cred if path == "." || path == ".." => {
                return Err(RefError::Malformed("the name must not be '.' or '..'"))
            }
            Scheme::Exec => match path.split_once('?') {
                Some((prog, arg)) if !prog.is_empty() && !arg.is_empty() => {}
                _ => {
                    return Err(RefError::Malformed(
                        "exec refs look like exec://PROGRAM?PATH",
                    ))
                }
            },
            _ => {}
        }
        // Offsets of the slices into `text` (ranges of it, by construction).
        let offset = |part: &str| part.as_ptr() as usize - text.as_ptr() as usize;
        let too_long = || RefError::Malformed("reference longer than 4 GiB");
        let path_start = u8::try_from(offset(path)).expect("a known scheme's name is short");
        let field = match field {
            Some(f) => u32::try_from(offset(f)).map_err(|_| too_long())?,
            None => 0,
        };
        Ok(SecretRef {
            text: text.into(),
            field,
            path_start,
            scheme,
        })
    }

    /// The provider scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Everything between `://` and `#` (for `exec`, `PROGRAM?PATH`).
    pub fn path(&self) -> &str {
        let end = match self.field {
            0 => self.text.len(),
            field => field as usize - 1,
        };
        &self.text[usize::from(self.path_start)..end]
    }

    /// The `#field`, for schemes that take one.
    pub fn field(&self) -> Option<&str> {
        (self.field != 0).then(|| &self.text[self.field as usize..])
    }

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detached ref reads the same in every part, and its text is an
    /// allocation of its own.
    #[test]
    fn a_detached_ref_is_the_same_ref_in_text_of_its_own() {
        for text in ["kv://openai/dev#api_key", "file://keys/a", "env://X"] {
            let shared = SecretRef::parse(text).expect("parse");
            let own = shared.detached();
            assert_eq!(own, shared);
            assert_eq!(
                (own.scheme(), own.path(), own.field(), own.as_str()),
                (
                    shared.scheme(),
                    shared.path(),
                    shared.field(),
                    shared.as_str()
                )
            );
            assert!(!std::sync::Arc::ptr_eq(&own.text, &shared.text), "{text}");
        }
    }

    #[test]
    fn parses_each_scheme() {
        let table: &[(&str, Scheme, &str, Option<&str>)] = &[
            (
                "kv://openai/dev/api_key",
                Scheme::Kv,
                "openai/dev/api_key",
                None,
            ),
            ("env://OPENAI_KEY", Scheme::Env, "OPENAI_KEY", None),
            ("file:///run/k", Scheme::File, "/run/k", None),
            ("file://rel/k#x", Scheme::File, "rel/k#x", None),
            (
                "dotenv://.env#API_KEY",
                Scheme::Dotenv,
                ".env",
                Some("API_KEY"),
            ),
            ("cred://slack", Scheme::Cred, "slack", None),
            ("exec://prov?a/b", Scheme::Exec, "prov?a/b", None),
            (
                "vault://secret/app#token",
                Scheme::Vault,
                "secret/app",
                Some("token"),
            ),
            (
                "aws-sm://prod/db#password",
                Scheme::AwsSm,
                "prod/db",
                Some("password"),
            ),
            ("op://v/item/field", Scheme::Op, "v/item/field", None),
            ("pass://web/site", Scheme::Pass, "web/site", None),
            ("aws-sm://prod/db", Scheme::AwsSm, "prod/db", None),
            ("vault://a#b#c", Scheme::Vault, "a", Some("b#c")),
            ("vault://a/b#c/d", Scheme::Vault, "a/b", Some("c/d")),
        ];
        for (text, scheme, path, field) in table {
            let r = SecretRef::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.scheme(), *scheme, "{text}");
            assert_eq!(r.path(), *path, "{text}");
            assert_eq!(r.field(), *field, "{text}");
            assert_eq!(r.to_string(), *text);
        }
        // Held by the plan and by the socket API's entry of every secret.
        assert_eq!(std::mem::size_of::<SecretRef>(), 24);
    }

    #[test]
    fn rejects_without_echoing_the_input() {
        let raw = format!("sk{}", "x".repeat(30));
        let table = [
            (raw.clone(), RefError::NotARef),
            ("Bearer://abc".to_string(), RefError::NotARef),
            (
                "gopher://x".to_string(),
                RefError::UnknownScheme("gopher".into()),
            ),
            (
                "dotenv://.env".to_string(),
                RefError::Malformed("dotenv refs need a key: dotenv://path#KEY"),
            ),
            ("kv://".to_string(), RefError::Malformed("empty path")),
            (
                "exec://prog".to_string(),
                RefError::Malformed("exec refs look like exec://PROGRAM?PATH"),
            ),
            (
                "cred://../x".to_string(),
                RefError::Malformed("the name must not contain '/'"),
            ),
        ];
        for (text, want) in table {
            let got = SecretRef::parse(&text).expect_err(&text);
            assert_eq!(got, want, "{text}");
            assert!(!got.to_string().contains(&raw));
        }
    }

    #[test]
    fn only_known_schemes_look_like_refs() {
        assert!(looks_like_ref("kv://a/b"));
        assert!(looks_like_ref("file:///x"));
        assert!(!looks_like_ref("http://proxy:3128"));
        assert!(!looks_like_ref("plain value"));
        assert!(!looks_like_ref("postgres://u@h/db"));
    }
}
