//! `keywarden store init | set REF | get REF | rm REF | list | rotate-key`.
//!
//! `set` reads the value from stdin, or from a no-echo prompt when stdin is
//! a terminal, and refuses one on the command line. `get` is the one
//! deliberate reveal: the value goes to stdout, unbuffered (a newline is
//! added only when stdout is a terminal). `list` prints refs and metadata,
//! never values. Confirmations go to stderr; errors are returned for the
//! caller to print once.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::store::format::rfc3339;
use crate::store::key::KeyRing;
use crate::store::{input, load_keys, store_path, SetOutcome, Store, StoreOptions};

/// Output format of `store list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ListFormat {
    /// An aligned table.
    #[default]
    Table,
    /// One JSON document.
    Json,
}

/// `keywarden store …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Create an empty store, bound to the current key
    Init,
    /// Store a value read from stdin, or typed at a no-echo prompt (never from the command line)
    Set {
        /// The ref: kv://PATH or PATH, e.g. openai/dev/api_key
        reference: String,
        /// Refused: a value on the command line shows in shell history and `ps`
        #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
        value_on_argv: Vec<OsString>,
    },
    /// Print a value on stdout (the one command that reveals one)
    Get {
        /// The ref: kv://PATH or PATH
        reference: String,
    },
    /// Remove an entry
    Rm {
        /// The ref: kv://PATH or PATH
        reference: String,
    },
    /// List refs, key versions and dates (never values)
    List {
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Re-encrypt every entry under the current key (ENCRYPTION_KEY / ENCRYPTION_KEY_VERSION)
    RotateKey,
}

/// Where `set` reads the value from.
pub enum Input<'a> {
    /// A pipe or file: all of it.
    Stream(&'a mut dyn Read),
    /// A terminal: one line at a no-echo prompt.
    Terminal(BorrowedFd<'a>),
}

/// The streams a store command uses.
pub struct StoreIo<'a> {
    /// The value for `set`.
    pub input: Input<'a>,
    /// Values (`get`) and listings.
    pub stdout: &'a mut dyn Write,
    /// Whether `get` ends the value with a newline for a person.
    pub stdout_is_terminal: bool,
    /// Prompts and confirmations.
    pub stderr: &'a mut dyn Write,
}

impl fmt::Debug for StoreIo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = match self.input {
            Input::Stream(_) => "stream",
            Input::Terminal(_) => "terminal",
        };
        f.debug_struct("StoreIo")
            .field("input", &input)
            .field("stdout_is_terminal", &self.stdout_is_terminal)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::Stream(_) => "Input::Stream",
            Input::Terminal(_) => "Input::Terminal",
        })
    }
}

fn dup(fd: BorrowedFd<'_>, what: &str) -> Result<File> {
    fd.try_clone_to_owned()
        .map(File::from)
        .map_err(|e| Error::new(ErrorKind::Os, format!("cannot use {what}: {e}")))
}

/// Run a store command on the process's stdin/stdout/stderr. The value and
/// listings are written to a duplicate of fd 1, unbuffered, so no copy of a
/// value lingers in a stdio buffer.
pub fn run_store(
    cmd: &StoreCommand,
    opts: &StoreOptions,
    env: &[(OsString, OsString)],
) -> Result<u8> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out: Box<dyn Write> = match cmd {
        StoreCommand::Get { .. } | StoreCommand::List { .. } => {
            Box::new(dup(stdout.as_fd(), "stdout")?)
        }
        _ => Box::new(std::io::sink()),
    };
    let mut err = std::io::stderr();
    let mut raw_in;
    let mut nothing = std::io::empty();
    let input = match cmd {
        StoreCommand::Set { .. } if stdin.is_terminal() => Input::Terminal(stdin.as_fd()),
        StoreCommand::Set { .. } => {
            raw_in = dup(stdin.as_fd(), "stdin")?;
            Input::Stream(&mut raw_in)
        }
        _ => Input::Stream(&mut nothing),
    };
    let mut io = StoreIo {
        input,
        stdout: &mut *out,
        stdout_is_terminal: stdout.is_terminal(),
        stderr: &mut err,
    };
    run_store_with(cmd, opts, env, &mut io)
}

/// Run a store command on the given streams; returns the exit code (0), or
/// the error to print.
pub fn run_store_with(
    cmd: &StoreCommand,
    opts: &StoreOptions,
    env: &[(OsString, OsString)],
    io: &mut StoreIo<'_>,
) -> Result<u8> {
    let path = store_path(opts, env)?;
    match cmd {
        StoreCommand::Init => {
            let keys = load_keys(opts, env)?;
            let (store, created) = Store::init(&path, keys)?;
            let version = store.keys().require_current()?.version();
            if created {
                say(
                    io,
                    &format!(
                        "created the store {} (key version {version})",
                        path.display()
                    ),
                );
            } else {
                say(
                    io,
                    &format!(
                        "the store {} already exists ({}); nothing to do",
                        path.display(),
                        entries(store.list().len())
                    ),
                );
            }
        }
        StoreCommand::Set {
            reference,
            value_on_argv,
        } => {
            if !value_on_argv.is_empty() {
                return Err(Error::usage(
                    "store set takes no value on the command line (it would be kept in shell \
                     history and shown by ps; the argument is not shown here): pipe it on stdin, \
                     e.g. `keywarden store set REF < file`, or run it on a terminal to be prompted",
                ));
            }
            let reference = crate::store::normalize(reference)?;
            // Everything that can fail without the value fails first, so
            // nobody types a secret for nothing.
            let mut store = Store::open(&path, load_keys(opts, env)?)?;
            store.check_writable()?;
            let value = match &mut io.input {
                Input::Stream(r) => input::read_value(*r)?,
                Input::Terminal(tty) => {
                    input::prompt_value(*tty, io.stderr, &format!("Value for {reference}: "))?
                }
            };
            let outcome = store.set(&reference, &value)?;
            drop(value);
            let version = store.keys().require_current()?.version();
            let what = match outcome {
                SetOutcome::Created => "stored",
                SetOutcome::Updated => "updated",
                SetOutcome::Unchanged => "re-stored (same value)",
            };
            say(io, &format!("{what} {reference} (key version {version})"));
        }
        StoreCommand::Get { reference } => {
            let store = Store::open(&path, load_keys(opts, env)?)?;
            let value = store.get(reference)?;
            let written = io.stdout.write_all(value.expose()).and_then(|_| {
                if io.stdout_is_terminal {
                    io.stdout.write_all(b"\n")?;
                }
                io.stdout.flush()
            });
            drop(value);
            written.map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("cannot write the value to stdout: {e}"),
                )
            })?;
        }
        StoreCommand::Rm { reference } => {
            let mut store = Store::open(&path, KeyRing::default())?;
            store.rm(reference)?;
            say(
                io,
                &format!("removed {}", crate::store::normalize(reference)?),
            );
        }
        StoreCommand::List { format } => {
            let store = Store::open(&path, KeyRing::default())?;
            let text = listing(&store, *format)?;
            io.stdout
                .write_all(text.as_bytes())
                .and_then(|_| io.stdout.flush())
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!("cannot write to stdout: {e}"),
                    )
                })?;
        }
        StoreCommand::RotateKey => {
            let mut store = Store::open(&path, load_keys(opts, env)?)?;
            let report = store.rotate_key()?;
            say(
                io,
                &format!(
                    "re-encrypted {} under key version {} ({} already were); \
                     older keys are no longer needed by {}",
                    entries(report.reencrypted),
                    report.version,
                    report.already_current,
                    path.display()
                ),
            );
        }
    }
    Ok(0)
}

fn entries(n: usize) -> String {
    match n {
        1 => "1 entry".into(),
        n => format!("{n} entries"),
    }
}

fn say(io: &mut StoreIo<'_>, line: &str) {
    let _ = writeln!(io.stderr, "keywarden: {line}");
}

#[derive(Serialize)]
struct Listing {
    store: String,
    entries: Vec<Row>,
}

#[derive(Serialize)]
struct Row {
    #[serde(rename = "ref")]
    reference: String,
    key_version: u32,
    created: String,
    updated: String,
}

fn listing(store: &Store, format: ListFormat) -> Result<String> {
    let rows: Vec<Row> = store
        .list()
        .into_iter()
        .map(|m| Row {
            reference: m.reference,
            key_version: m.key_version,
            created: rfc3339(m.created),
            updated: rfc3339(m.updated),
        })
        .collect();
    match format {
        ListFormat::Json => {
            let doc = Listing {
                store: store.path().display().to_string(),
                entries: rows,
            };
            serde_json::to_string_pretty(&doc)
                .map(|s| s + "\n")
                .map_err(|e| {
                    Error::new(ErrorKind::Software, format!("cannot encode the list: {e}"))
                })
        }
        ListFormat::Table => {
            let header = ["REF", "KEY VERSION", "CREATED", "UPDATED"].map(String::from);
            let mut lines = vec![header];
            for r in rows {
                lines.push([r.reference, r.key_version.to_string(), r.created, r.updated]);
            }
            let mut widths = [0usize; 4];
            for l in &lines {
                for (w, c) in widths.iter_mut().zip(l) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let mut out = String::new();
            for l in &lines {
                let cells: Vec<String> = l
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                out.push_str(cells.join("  ").trim_end());
                out.push('\n');
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        opts: StoreOptions,
        #[command(subcommand)]
        cmd: StoreCommand,
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn set_catches_values_on_argv() {
        let cli = Cli::try_parse_from(["kw", "set", "openai/dev/api_key", "--value=x", "y"])
            .expect("parses");
        let StoreCommand::Set { value_on_argv, .. } = cli.cmd else {
            panic!("set")
        };
        assert_eq!(value_on_argv, ["--value=x", "y"].map(OsString::from));
    }

    #[test]
    fn options_and_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "kw",
            "--store",
            "/s",
            "--key-file",
            "/k",
            "list",
            "--format",
            "json",
        ])
        .expect("parses");
        assert_eq!(cli.opts.store.as_deref(), Some(std::path::Path::new("/s")));
        assert!(matches!(
            cli.cmd,
            StoreCommand::List {
                format: ListFormat::Json
            }
        ));
        let cli = Cli::try_parse_from(["kw", "rotate-key"]).expect("parses");
        assert!(matches!(cli.cmd, StoreCommand::RotateKey));
    }
}
