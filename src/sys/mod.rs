//! Every call into the operating system that needs more than std offers:
//! process hardening, memory locking, signal plumbing, the child's set-up
//! between the clone and exec, user lookup and random bytes.
//!
//! This is the only module with `unsafe`; each block carries a `// SAFETY:`
//! line. Everything above it works with safe wrappers from here.

mod cache;
mod child;
mod harden;
mod heap;
mod memlock;
mod pty;
pub mod random;
mod signals;
mod start;
mod user;

pub use cache::prefetch;
pub use child::{arg_max, Credentials, ExecPlan, StartError, Step};
pub use harden::{harden_process, is_child_subreaper, set_child_subreaper};
pub use heap::{map_large_allocations, prefer_huge_pages, release_free_memory};
pub use memlock::{lock_memory, unlock_memory};
pub use pty::{has_controlling_tty, open_pty, set_window_size, window_size, Pty, RawMode};
pub use signals::{block_signals, signal_name, Signals, FORWARDED_SIGNALS, STOP_SIGNALS};
pub use start::{runtime_end, runtime_start};
pub use user::{lookup_user, TargetUser};
