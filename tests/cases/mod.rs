//! Test cases by area.

mod api;
mod approvals;
mod check;
mod config_errors;
mod env;
mod hardening;
mod launch;
mod providers;
mod proxy;
mod pty;
mod redaction;
mod remote;
mod sidecar;
mod signals;
mod store;
