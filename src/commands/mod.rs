//! One room per subcommand (or family): what each does once [`crate::cli`]
//! has parsed its arguments. Each returns keywarden's exit code.
//!
//! - [`run`]: the main job, a pipeline of stages;
//! - [`check`]: validate the configuration and resolve every ref;
//! - [`redact`]: `redact` (stdin to stdout);
//! - [`scan`]: `scan` (files; text, JSON or SARIF);
//! - [`clients`]: the socket API's clients: `get` for the child, `revoke`,
//!   `inventory` and `approve` for the operator;
//! - [`reload`]: `reload`, the running sidecars re-read their configuration;
//! - [`completions`]: `completions` and the hidden `man`, generated from
//!   the command line's definition;
//! - [`store`]: `keywarden store init|set|get|rm|list|rotate-key`.
//!
//! Commands take the shared options as a
//! [`crate::config::Common`]; nothing below them imports the command line.

pub mod check;
pub mod clients;
pub mod completions;
pub mod redact;
pub mod reload;
pub mod run;
pub mod scan;
pub mod store;
