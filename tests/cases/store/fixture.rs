//! Fixtures for the store tests: a scratch folder, random keys and values
//! (drawn at run time, never written in code), the `store` command run in
//! process with an env vector, and the same command as a real process.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;
use keywarden::commands::store::{run_store_with, Input, StoreCommand, StoreIo};
use keywarden::store::StoreOptions;

/// The process-level stand-in for `keywarden store`.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keywarden")
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("urandom");
    buf
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh key as `ENCRYPTION_KEY` takes it.
pub fn new_key() -> String {
    hex(&random_bytes(32))
}

/// A value no test output could contain by chance.
pub fn canary(tag: &str) -> String {
    format!("canary-{tag}-{}", hex(&random_bytes(12)))
}

/// Every encoding of `value` that must never appear where it is not meant
/// to: raw, base64 (standard and URL-safe, padded or not), hex (both cases).
pub fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let mut out = vec![value.to_vec()];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(engine.encode(value).into_bytes());
    }
    out.push(hex(value).into_bytes());
    out.push(hex(value).to_uppercase().into_bytes());
    out
}

/// True when `haystack` holds `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Assert no encoding of `secret` is in `haystack`.
pub fn assert_absent(haystack: &[u8], secret: &[u8], where_: &str) {
    for enc in encodings(secret) {
        assert!(
            !contains(haystack, &enc),
            "{where_} holds an encoding of a secret: {}",
            String::from_utf8_lossy(&enc)
        );
    }
}

/// A scratch folder; the store goes in a sub-folder not created yet.
pub struct Fx {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
}

impl Fx {
    pub fn new() -> Fx {
        let tmp = tempfile::Builder::new()
            .prefix("kw-store-")
            .tempdir()
            .expect("tempdir");
        let store = tmp.path().join("data/keywarden/store");
        Fx { tmp, store }
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.store).expect("read store")
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// What a command did.
#[derive(Debug)]
pub struct Out {
    pub code: u8,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    /// Both streams, for "never in any output" checks.
    pub fn all(&self) -> Vec<u8> {
        let mut v = self.stdout.clone();
        v.extend_from_slice(self.stderr.as_bytes());
        v
    }

    #[track_caller]
    pub fn ok(&self) -> &Out {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }

    #[track_caller]
    pub fn fails(&self, code: u8, says: &str) -> &Out {
        assert_eq!(self.code, code, "stderr: {}", self.stderr);
        assert!(
            self.stderr.contains(says),
            "stderr lacks {says:?}: {}",
            self.stderr
        );
        self
    }
}

pub fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    vars.iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    opts: StoreOptions,
    #[command(subcommand)]
    cmd: StoreCommand,
}

/// `keywarden store ARGS` in process: `--store` is the fixture's, the
/// environment is exactly `vars`, stdin is `stdin`.
pub fn store(fx: &Fx, args: &[&str], vars: &[(&str, &str)], stdin: &[u8]) -> Out {
    let argv = ["store", "--store", fx.store.to_str().expect("utf-8 path")]
        .into_iter()
        .chain(args.iter().copied());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            return Out {
                code: 64,
                stdout: Vec::new(),
                stderr: e.to_string(),
            }
        }
    };
    let mut input = stdin;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let result = {
        let mut io = StoreIo {
            input: Input::Stream(&mut input),
            stdout: &mut stdout,
            stdout_is_terminal: false,
            stderr: &mut stderr,
        };
        run_store_with(&cli.cmd, &cli.opts, &env(vars), &mut io)
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            stderr.extend_from_slice(format!("keywarden: error: {e}\n").as_bytes());
            e.exit_code()
        }
    };
    Out {
        code,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// `keywarden store ARGS` as a process with exactly `vars` as environment.
pub fn store_process(fx: &Fx, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    c.arg("store")
        .arg("--store")
        .arg(&fx.store)
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Run a process to the end, feeding `stdin`.
pub fn run_process(mut c: Command, stdin: &[u8]) -> Out {
    use std::io::Write;
    c.stdin(Stdio::piped());
    let mut child = c.spawn().expect("spawn store-cli");
    let mut pipe = child.stdin.take().expect("stdin");
    let _ = pipe.write_all(stdin);
    drop(pipe);
    let out = child.wait_with_output().expect("wait");
    Out {
        code: out.status.code().map_or(255, |c| c as u8),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
