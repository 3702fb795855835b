//! keywarden: a sidecar launcher that lets a command (an agent runtime, a
//! service) use credentials without holding more of them than it needs.
//!
//! The pipeline (see [`commands::run`]): configuration ([`config`]) → resolution of
//! refs by providers ([`secret`]) into locked, zeroized memory → the child's
//! environment ([`envfilter`]) → spawn and supervision ([`supervise`]) →
//! the output relay ([`relay`]) with streaming redaction ([`redact`]). Every libc call that std does not wrap
//! lives in [`sys`]. `kv://` refs are served by the embedded encrypted
//! [`store`].

pub mod api;
pub mod audit;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod duration;
pub mod envfilter;
pub mod error;
pub mod logging;
pub mod proxy;
pub mod redact;
pub mod relay;
pub mod resolve;
pub mod secret;
pub mod store;
pub mod supervise;
pub mod sys;
pub mod timefmt;
