//! The one error type of keywarden and the exit code each kind maps to.
//!
//! Messages name the file, key, variable or ref at fault — never a secret
//! value. Constructors take the message as already written so call sites
//! decide, in one place, what is safe to show.

use std::fmt;

/// What went wrong, as far as the exit code is concerned (sysexits.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 64: the command line was wrong.
    Usage,
    /// 65: input data was malformed.
    Data,
    /// 69: a provider or service could not be reached or had no answer.
    Unavailable,
    /// 70: an internal failure of keywarden itself.
    Software,
    /// 71: the operating system refused something keywarden needs.
    Os,
    /// 77: permission denied.
    Permission,
    /// 78: configuration error.
    Config,
    /// 126: the command exists but cannot be executed.
    NotExecutable,
    /// 127: the command was not found.
    NotFound,
    /// 128+N: keywarden itself was stopped by signal N before the child ran.
    Interrupted(u8),
}

impl ErrorKind {
    /// The process exit code for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => 64,
            ErrorKind::Data => 65,
            ErrorKind::Unavailable => 69,
            ErrorKind::Software => 70,
            ErrorKind::Os => 71,
            ErrorKind::Permission => 77,
            ErrorKind::Config => 78,
            ErrorKind::NotExecutable => 126,
            ErrorKind::NotFound => 127,
            ErrorKind::Interrupted(sig) => 128u8.saturating_add(sig),
        }
    }
}

/// An error with a message that is safe to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of `kind` with a message that must already be free of secrets.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// A configuration error (exit 78).
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// A usage error (exit 64).
    pub fn usage(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Usage, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The message, for callers that add context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `prefix: ` put in front of the message.
    pub fn context(self, prefix: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{prefix}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// keywarden's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An I/O error as a short lower-case reason without the OS error number
/// (`no such file or directory`, `permission denied`), for one-line
/// messages that name the path themselves.
pub fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_string(),
        std::io::ErrorKind::InvalidData => "not UTF-8 text".to_string(),
        _ => {
            let text = err.to_string();
            let text = match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

/// The error for a file named on the command line (a `scan` PATH, an
/// `--env-file`) that cannot be read: `PATH: REASON`; 64 when it does not
/// exist (the argument names nothing), 77 when it may not be read, else 71.
pub fn named_file_error(path: &std::path::Path, err: &std::io::Error) -> Error {
    let kind = match err.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::Usage,
        std::io::ErrorKind::PermissionDenied => ErrorKind::Permission,
        _ => ErrorKind::Os,
    };
    Error::new(kind, format!("{}: {}", path.display(), io_reason(err)))
}

/// Map an I/O error kind to an exit-code kind: permission problems are 77,
/// a missing file is "unavailable" (69), everything else is an OS error.
pub fn io_kind(err: &std::io::Error) -> ErrorKind {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => ErrorKind::Permission,
        std::io::ErrorKind::NotFound => ErrorKind::Unavailable,
        _ => ErrorKind::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_sysexits() {
        let table = [
            (ErrorKind::Usage, 64),
            (ErrorKind::Data, 65),
            (ErrorKind::Unavailable, 69),
            (ErrorKind::Permission, 77),
            (ErrorKind::Config, 78),
            (ErrorKind::NotExecutable, 126),
            (ErrorKind::NotFound, 127),
        ];
        for (kind, code) in table {
            assert_eq!(kind.exit_code(), code, "{kind:?}");
        }
    }

    #[test]
    fn context_prefixes_the_message() {
        let e = Error::config("unknown field 'x'").context("reg.yaml:3");
        assert_eq!(e.to_string(), "reg.yaml:3: unknown field 'x'");
        assert_eq!(e.exit_code(), 78);
    }
}
