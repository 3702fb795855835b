//! Test cases by area.

mod api;
mod api_records;
mod approvals;
mod check;
mod cli;
mod clients;
mod config_errors;
mod env;
mod hardening;
mod launch;
mod operator;
mod providers;
mod proxy;
mod proxy_hardening;
mod pty;
mod redaction;
mod remote;
mod review_env;
mod sidecar;
mod signals;
mod store;
