//! What every subcommand shares once the command line is parsed: the
//! validated [`Common`] options, and the parsing of signal names that
//! several options take. Below the commands, so that no command imports
//! the command line.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::Environment;
use crate::store::StoreOptions;

/// Options every subcommand shares, validated.
#[derive(Debug, Clone)]
pub struct Common {
    /// Registry file, if named.
    pub registry: Option<PathBuf>,
    /// Policy file, if named.
    pub policy: Option<PathBuf>,
    /// The environment.
    pub env: Environment,
    /// Per-provider timeout.
    pub timeout: Duration,
    /// Where the embedded store is and how to unlock it.
    pub store: StoreOptions,
}

/// Parse a signal name (`SIGHUP`, `HUP`, `hup`) or number.
pub fn parse_signal(text: &str) -> std::result::Result<Signal, String> {
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .or_else(|_| {
            text.parse::<i32>()
                .map_err(|_| ())
                .and_then(|n| Signal::try_from(n).map_err(|_| ()))
        })
        .map_err(|_| format!("'{text}' is not a signal name (e.g. SIGHUP, USR1)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        for (text, want) in [
            ("SIGHUP", Some(Signal::SIGHUP)),
            ("hup", Some(Signal::SIGHUP)),
            ("USR1", Some(Signal::SIGUSR1)),
            ("15", Some(Signal::SIGTERM)),
            ("SIGNOPE", None),
            ("999", None),
        ] {
            assert_eq!(parse_signal(text).ok(), want, "{text}");
        }
    }
}
