//! keywarden: a sidecar launcher that lets a command (an agent runtime, a
//! service) use credentials without holding more of them than it needs.
//!
//! The pipeline (see [`run`]): configuration ([`config`]) → resolution of
//! refs by providers ([`secret`]) into locked, zeroized memory → the child's
//! environment ([`envfilter`]) → spawn and supervision ([`supervise`]) →
//! the output relay ([`relay`]). Every libc call that std does not wrap
//! lives in [`sys`].

pub mod check;
pub mod cli;
pub mod config;
pub mod duration;
pub mod envfilter;
pub mod error;
pub mod logging;
pub mod relay;
pub mod resolve;
pub mod run;
pub mod secret;
pub mod supervise;
pub mod sys;
