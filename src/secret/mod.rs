//! Secrets and references to them: the [`SecretBytes`] container, the
//! [`SecretRef`] syntax (`scheme://path[#field]`) and the providers that turn
//! one into the other.

mod bytes;
pub mod providers;
mod reference;

pub use bytes::SecretBytes;
pub use reference::{looks_like_ref, Scheme, SecretRef};
