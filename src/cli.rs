//! The command line (clap) in two stages: raw arguments with no I/O, then
//! the validated options each subcommand runs with. `main` calls [`main`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

use crate::commands::check::{self, Format};
use crate::commands::clients::{self, ApproveArgs, GetArgs, InventoryArgs, RevokeArgs};
use crate::commands::completions::{self, Shell};
use crate::commands::redact;
use crate::commands::reload::{self, ReloadArgs};
use crate::commands::run::{self, OnRotate, PtyMode, RunOptions};
use crate::commands::scan::{self, ScanFormat};
use crate::commands::store::{self as store_command, StoreCommand};
use crate::config::{parse_signal, Common, Environment};
use crate::error::Result;
use crate::logging::{self, LogFormat};
use crate::redact::Mask;
use crate::store::StoreOptions;
use nix::sys::signal::Signal;

const ABOUT: &str = "Run a command with the secrets it needs and no more: refs resolved into \
                     locked memory, a filtered environment, supervised like tini.";
const AFTER_HELP: &str = "Exit codes: the command's own; 128+N if it was killed by signal N; \
                          64 usage, 65 bad data, 69 provider unavailable, 77 permission denied, \
                          78 configuration error, 126 not executable, 127 not found.";

/// keywarden: run a command with secrets it needs, and no more.
#[derive(Debug, Parser)]
#[command(name = "keywarden", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// The same command line with `run` as its only subcommand: what
/// `keywarden run ...` is parsed with, so that starting a command does not
/// build every other subcommand's arguments first (clap builds the whole
/// tree before it parses). A test holds its `run` to `Cli`'s.
#[derive(Debug, Parser)]
#[command(name = "keywarden", version, about = ABOUT, after_help = AFTER_HELP)]
struct RunCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Debug, Subcommand)]
enum RunOnly {
    /// Resolve secrets and run COMMAND with them; its output is relayed with every secret masked
    Run(RunArgs),
}

impl Cli {
    /// Parse `args`, through [`RunCli`] when the subcommand comes first and
    /// is `run`.
    fn parse_args(args: Vec<OsString>) -> std::result::Result<Cli, clap::Error> {
        if args.get(1).is_some_and(|a| a == "run") {
            let RunCli {
                global,
                command: RunOnly::Run(run),
            } = RunCli::try_parse_from(args)?;
            return Ok(Cli {
                global,
                command: Command::Run(Box::new(run)),
            });
        }
        Cli::try_parse_from(args)
    }
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// The secret registry [default: configs/secrets-registry.yaml if present]
    #[arg(long, global = true, env = "KEYWARDEN_REGISTRY", value_name = "FILE")]
    registry: Option<PathBuf>,
    /// The policy [default: configs/secrets-policy.json if present]
    #[arg(long, global = true, env = "KEYWARDEN_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Which registry environment to use [default: ci when CI=true, else dev]
    #[arg(long, global = true, env = "KEYWARDEN_ENV", value_enum)]
    env: Option<Environment>,
    /// Format of keywarden's own log lines on stderr
    #[arg(
        long,
        global = true,
        env = "KEYWARDEN_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// More log output (-v info, -vv debug)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// How long each provider may take to resolve a ref
    #[arg(long, global = true, env = "KEYWARDEN_RESOLVE_TIMEOUT", value_name = "DURATION",
          default_value = "10s", value_parser = crate::duration::parse)]
    resolve_timeout: Duration,
    #[command(flatten)]
    store: StoreOptions,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Resolve secrets and run COMMAND with them; its output is relayed with every secret masked
    Run(Box<RunArgs>),
    /// Validate the configuration and resolve every ref; print a table, never values
    Check(CheckArgs),
    /// Copy stdin to stdout with every secret (and its encodings) masked
    Redact(MaskArgs),
    /// Find secrets (and their encodings) in files; exit 1 if any
    Scan(ScanArgs),
    /// Print one secret from the running sidecar (for scripts inside the child)
    Get(GetArgs),
    /// Revoke a secret in the running sidecar and in the revocation list
    Revoke(RevokeArgs),
    /// Metadata of every secret served by the running sidecar (never values)
    Inventory(InventoryArgs),
    /// Answer a human-in-the-loop challenge (the code is read without echo)
    Approve(ApproveArgs),
    /// Re-read registry and policy in the running sidecar(s) and resolve again
    Reload(ReloadArgs),
    /// Print a shell completion script
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the manual page (roff)
    #[command(hide = true)]
    Man,
    /// The embedded encrypted store (the default kv:// backend)
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Start the command with only keep_env variables (plus injected secrets)
    #[arg(long)]
    clean_env: bool,
    /// Keep this variable with --clean-env (repeatable)
    #[arg(long = "keep-env", value_name = "NAME")]
    keep_env: Vec<String>,
    /// Run the command as USER[:GROUP] (keywarden must be root)
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// How long a stopping command gets before SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::duration::parse)]
    grace: Duration,
    /// Reap every orphaned descendant (automatic as PID 1)
    #[arg(long)]
    subreaper: bool,
    /// Run the command on a pseudo-terminal: auto = when stdout is a terminal
    #[arg(long, value_enum, default_value = "auto")]
    pty: PtyMode,
    /// Relay the command's output unchanged (secrets are not masked)
    #[arg(long)]
    no_redact: bool,
    #[command(flatten)]
    mask: MaskArgs,
    /// Serve no socket API (the child gets no KEYWARDEN_SOCKET/KEYWARDEN_TOKEN)
    #[arg(long)]
    no_socket: bool,
    /// The child's socket [default: a fresh 0700 folder under $XDG_RUNTIME_DIR or the temp folder]
    #[arg(long, value_name = "PATH", conflicts_with = "no_socket")]
    socket: Option<PathBuf>,
    /// The admin socket (revoke, reload, inventory), never told to the child
    #[arg(long, env = "KEYWARDEN_ADMIN_SOCKET", value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Append audit events (JSON lines, 0600) to FILE
    #[arg(long, env = "KEYWARDEN_AUDIT", value_name = "FILE")]
    audit: Option<PathBuf>,
    /// The revocation list [default: $XDG_STATE_HOME/keywarden/revocations.json]
    #[arg(long, env = "KEYWARDEN_REVOCATION_LIST", value_name = "FILE")]
    revocation_list: Option<PathBuf>,
    /// Re-read registry and policy and re-resolve on this signal (e.g. SIGHUP)
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    reload_signal: Option<Signal>,
    /// Poll every source this often and reload when a value changed
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_interval)]
    watch: Option<Duration>,
    /// Add the KEY=value lines of FILE to the command's environment; values may be refs (repeatable)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Forward signals to the command's whole process group (like tini -g)
    #[arg(long)]
    signal_group: bool,
    /// When a reload changes a value injected into the command: none, restart (stop it, start it again with the new values), or signal:SIG (e.g. signal:HUP)
    #[arg(long, value_name = "ACTION", default_value = "none", value_parser = OnRotate::parse)]
    on_rotate: OnRotate,
    /// Where the credential proxy listens: a loopback HOST:PORT, or unix:PATH [default: 127.0.0.1:0, an ephemeral port]
    #[arg(long, value_name = "ADDR")]
    proxy_listen: Option<String>,
    /// Also trust these CA certificates (PEM) for the credential proxy's upstreams
    #[arg(long, env = "KEYWARDEN_PROXY_CA", value_name = "FILE")]
    proxy_ca: Option<PathBuf>,
    /// The command and its arguments, passed verbatim
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct MaskArgs {
    /// What replaces a secret; {id} is the secret's id
    #[arg(long, value_name = "FORMAT", default_value = Mask::DEFAULT_FORMAT)]
    mask: String,
}

#[derive(Debug, Args)]
struct ScanArgs {
    /// Files or folders (walked; symbolic links are not followed)
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: ScanFormat,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn nonempty(p: Option<PathBuf>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
}

/// clap's multi-line error as one line: the message, its details and the
/// usage, without the `--help` tip.
fn one_line(rendered: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for line in rendered.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("For more information") {
            continue;
        }
        let line = line.strip_prefix("error: ").unwrap_or(line);
        let line = line
            .strip_prefix("Usage: ")
            .map_or_else(|| line.to_string(), |usage| format!("usage: {usage}"));
        parts.push(line);
    }
    let mut text = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            text.push_str(if text.ends_with(':') { " " } else { "; " });
        }
        text.push_str(part);
    }
    text
}

/// Parse `args` (the whole command line, program name first), run, and
/// turn the outcome into an exit code.
pub fn main(args: Vec<OsString>) -> u8 {
    let cli = match Cli::parse_args(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 64,
                _ => 64,
            };
            match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                }
                // Every failure is one line on stderr.
                _ => eprintln!("keywarden: error: {}", one_line(&e.to_string())),
            }
            return code;
        }
    };
    let g = &cli.global;
    logging::init(g.log_format, g.verbose, g.quiet);
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            e.exit_code()
        }
    }
}

fn dispatch(cli: &Cli) -> Result<u8> {
    // Before any secret is read.
    crate::sys::harden_process()?;
    let g = &cli.global;
    let ci = std::env::var("CI").ok();
    let common = Common {
        registry: nonempty(g.registry.clone()),
        policy: nonempty(g.policy.clone()),
        env: g
            .env
            .unwrap_or_else(|| Environment::default_for(ci.as_deref())),
        timeout: g.resolve_timeout,
        store: g.store.clone(),
    };
    match &cli.command {
        Command::Run(a) => run::run(
            &common,
            &RunOptions {
                clean_env: a.clean_env,
                keep_env: a.keep_env.clone(),
                user: a.user.clone(),
                grace: a.grace,
                subreaper: a.subreaper,
                pty: a.pty,
                no_redact: a.no_redact,
                no_socket: a.no_socket,
                socket: a.socket.clone(),
                admin_socket: a.admin_socket.clone(),
                audit: a.audit.clone(),
                revocation_list: a.revocation_list.clone(),
                reload_signal: a.reload_signal,
                on_rotate: a.on_rotate,
                watch: a.watch,
                env_files: a.env_file.clone(),
                signal_group: a.signal_group,
                mask: a.mask.mask.clone(),
                proxy_listen: a.proxy_listen.clone(),
                proxy_ca: a.proxy_ca.clone(),
                command: a.command.clone(),
            },
        ),
        Command::Check(a) => check::check(&common, a.format),
        Command::Scan(a) => scan::scan_command(&common, &a.paths, a.format),
        Command::Redact(a) => redact::redact_command(&common, &Mask::new(&a.mask)),
        Command::Get(a) => clients::get_command(a),
        Command::Revoke(a) => clients::revoke_command(a, &common),
        Command::Inventory(a) => clients::inventory_command(a, &common),
        Command::Approve(a) => clients::approve_command(a),
        Command::Reload(a) => reload::reload_command(a),
        Command::Completions { shell } => {
            completions::completions(*shell, Cli::command(), &mut std::io::stdout())
        }
        Command::Man => completions::man(Cli::command(), &mut std::io::stdout()),
        Command::Store { command } => {
            let env: Vec<_> = std::env::vars_os().collect();
            store_command::run_store(command, &common.store, &env)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_run_fast_path_is_the_same_command_line() {
        RunCli::command().debug_assert();
        // What a user sees from `run` (help, a missing command) is the same
        // through either parser.
        for argv in [
            &["keywarden", "run", "--help"][..],
            &["keywarden", "run", "-h"],
            &["keywarden", "run"],
            &["keywarden", "run", "--pty", "sometimes", "x"],
        ] {
            let full = Cli::try_parse_from(argv).expect_err("stops");
            let fast = RunCli::try_parse_from(argv).expect_err("stops");
            assert_eq!(full.kind(), fast.kind(), "{argv:?}");
            assert_eq!(full.to_string(), fast.to_string(), "{argv:?}");
        }
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let fast = Cli::parse_args(args(&["kw", "run", "--env", "prod", "-q", "--", "x"]))
            .expect("parses");
        assert_eq!(fast.global.env, Some(Environment::Prod));
        assert!(fast.global.quiet);
        let Command::Run(a) = fast.command else {
            panic!("run")
        };
        assert_eq!(a.command, [OsString::from("x")]);
        // Options before the subcommand take the full parser.
        let full = Cli::parse_args(args(&["kw", "--env", "ci", "run", "x"])).expect("parses");
        assert_eq!(full.global.env, Some(Environment::Ci));
        let err =
            Cli::parse_args(args(&["kw", "run", "--grace", "soon", "x"])).expect_err("bad value");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        // An unknown option before the command is a usage error, not the
        // command; after `--` (or after the command) anything goes.
        for argv in [
            &["kw", "run", "--bogus", "--", "x"][..],
            &["kw", "run", "-x", "y"],
        ] {
            let err = Cli::parse_args(args(argv)).expect_err("unknown option");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{argv:?}"
            );
        }
        for (argv, command) in [
            (
                &["kw", "run", "--", "-x", "--bogus"][..],
                &["-x", "--bogus"][..],
            ),
            (
                &["kw", "run", "sh", "-c", "--bogus"],
                &["sh", "-c", "--bogus"],
            ),
        ] {
            let Command::Run(a) = Cli::parse_args(args(argv)).expect("parses").command else {
                panic!("run")
            };
            assert_eq!(a.command, args(command), "{argv:?}");
        }
    }

    #[test]
    fn usage_errors_are_one_line() {
        let e = Cli::try_parse_from(["keywarden", "--env", "staging", "check"]).expect_err("bad");
        let line = one_line(&e.to_string());
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("invalid value 'staging' for '--env <ENV>'"),
            "{line}"
        );
        assert!(line.contains("dev, ci, prod"), "{line}");
        let e = Cli::try_parse_from(["keywarden", "run"]).expect_err("no command");
        let line = one_line(&e.to_string());
        assert!(
            line.starts_with("the following required arguments were not provided: <COMMAND>"),
            "{line}"
        );
        assert!(line.contains("usage: keywarden run"), "{line}");
    }

    #[test]
    fn run_takes_the_command_verbatim() {
        let cli = Cli::try_parse_from([
            "keywarden",
            "run",
            "--grace",
            "2s",
            "--",
            "sh",
            "-c",
            "echo a  b",
            "--user",
        ])
        .expect("parses");
        let Command::Run(a) = cli.command else {
            panic!("run")
        };
        assert_eq!(a.grace, Duration::from_secs(2));
        assert_eq!(
            a.command,
            ["sh", "-c", "echo a  b", "--user"].map(OsString::from)
        );
    }
}
