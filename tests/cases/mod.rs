//! Test cases by area.

mod api;
mod approvals;
mod check;
mod cli;
mod config_errors;
mod env;
mod hardening;
mod launch;
mod operator;
mod providers;
mod pty;
mod redaction;
mod remote;
mod sidecar;
mod signals;
mod store;
