//! Process hardening done once at start-up, before any secret is read.

use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};

use crate::error::{Error, ErrorKind, Result};

/// Make keywarden non-dumpable and disable core dumps.
///
/// `PR_SET_DUMPABLE=0` makes `/proc/<pid>/{environ,mem,maps}` owned by root
/// and refuses `ptrace` attach from same-uid processes, so a child running
/// as the same user cannot read keywarden's memory or environment.
pub fn harden_process() -> Result<()> {
    prctl::set_dumpable(false).map_err(|e| {
        Error::new(
            ErrorKind::Os,
            format!("cannot make the process non-dumpable: {e}"),
        )
    })?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| Error::new(ErrorKind::Os, format!("cannot disable core dumps: {e}")))?;
    Ok(())
}

/// Become a subreaper: orphaned descendants are re-parented to keywarden.
pub fn set_child_subreaper() -> Result<()> {
    prctl::set_child_subreaper(true)
        .map_err(|e| Error::new(ErrorKind::Os, format!("cannot become a subreaper: {e}")))
}

/// Whether keywarden is a subreaper already: a parent set
/// `PR_SET_CHILD_SUBREAPER` and exec'd it (the attribute survives exec), so
/// orphans are re-parented here and must be reaped. An error reads as no.
pub fn is_child_subreaper() -> bool {
    prctl::get_child_subreaper().unwrap_or(false)
}
