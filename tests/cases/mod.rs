//! Test cases by area.

mod check;
mod config_errors;
mod env;
mod hardening;
mod launch;
mod providers;
mod pty;
mod redaction;
mod signals;
mod store;
