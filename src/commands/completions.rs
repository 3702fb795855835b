//! `keywarden completions bash|zsh|fish` (a shell completion script on
//! stdout) and the hidden `keywarden man` (the manual page, roff, on
//! stdout), both generated from the command line's own definition.
//!
//! Installing them (a package does the same under its prefix):
//!
//! ```text
//! keywarden completions bash > /usr/share/bash-completion/completions/keywarden
//! keywarden completions zsh  > /usr/share/zsh/site-functions/_keywarden
//! keywarden completions fish > /usr/share/fish/vendor_completions.d/keywarden.fish
//! keywarden man | gzip > /usr/share/man/man1/keywarden.1.gz
//! ```

#![forbid(unsafe_code)]

use std::io::Write;

use crate::error::{Error, ErrorKind, Result};

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// Bash (bash-completion).
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

fn write_error(e: &std::io::Error) -> Error {
    Error::new(ErrorKind::Os, format!("cannot write stdout: {e}"))
}

/// Write the completion script of `command` for `shell` to `out`.
pub fn completions(shell: Shell, mut command: clap::Command, out: &mut dyn Write) -> Result<u8> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut command, name, &mut script);
    out.write_all(&script)
        .and_then(|_| out.flush())
        .map_err(|e| write_error(&e))?;
    Ok(0)
}

/// Write the manual page of `command` (section 1, roff) to `out`.
pub fn man(command: clap::Command, out: &mut dyn Write) -> Result<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| write_error(&e))?;
    out.write_all(&page)
        .and_then(|_| out.flush())
        .map_err(|e| write_error(&e))?;
    Ok(0)
}
