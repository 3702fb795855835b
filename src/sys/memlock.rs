//! Locking secret buffers into RAM (`mlock`) so they are never swapped out.
//!
//! Locks do not stack in the kernel: unlocking one buffer would unlock every
//! other buffer on the same page. So every page is reference-counted here and
//! only unlocked when no live secret uses it any more.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::sys::mman::{mlock, munlock};
use nix::unistd::{sysconf, SysconfVar};

static PAGES: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());
static WARNED: AtomicBool = AtomicBool::new(false);

fn page_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| {
        sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(4096)
    })
}

fn pages(bytes: &[u8]) -> std::ops::Range<usize> {
    let page = page_size();
    let start = bytes.as_ptr() as usize / page;
    let end = (bytes.as_ptr() as usize + bytes.len()).div_ceil(page);
    start..end
}

/// Lock the pages holding `bytes`. Returns false (and warns once per
/// process) when the system refuses, e.g. `RLIMIT_MEMLOCK` is exhausted.
pub fn lock_memory(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let page = page_size();
    let range = pages(bytes);
    let mut table = PAGES.lock().unwrap_or_else(|p| p.into_inner());
    // Only the pages no live secret has locked yet: small secrets share
    // pages, and each mlock is a system call that splits a mapping.
    let mut p = range.start;
    while p < range.end {
        if table.contains_key(&p) {
            p += 1;
            continue;
        }
        let run_start = p;
        while p < range.end && !table.contains_key(&p) {
            p += 1;
        }
        let Some(addr) = NonNull::new((run_start * page) as *mut libc::c_void) else {
            return false;
        };
        // SAFETY: the run covers whole pages that contain part of `bytes`,
        // a live allocation; mlock only changes residency, never contents.
        let locked = unsafe { mlock(addr, (p - run_start) * page) };
        if let Err(e) = locked {
            // Undo the runs locked above: no count was taken for them yet.
            for q in range.start..run_start {
                if !table.contains_key(&q) {
                    if let Some(a) = NonNull::new((q * page) as *mut libc::c_void) {
                        // SAFETY: locked just above by this call; munlock
                        // only changes residency.
                        let _ = unsafe { munlock(a, page) };
                    }
                }
            }
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cannot lock secret memory ({e}); secrets may be swapped to disk. \
                     Raise RLIMIT_MEMLOCK (LimitMEMLOCK= in systemd) to lock them"
                );
            }
            return false;
        }
    }
    for p in range {
        *table.entry(p).or_insert(0) += 1;
    }
    true
}

/// Release the lock taken by [`lock_memory`] for `bytes`; pages still used by
/// another locked secret stay locked.
pub fn unlock_memory(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let page = page_size();
    let mut table = PAGES.lock().unwrap_or_else(|p| p.into_inner());
    for p in pages(bytes) {
        let Some(count) = table.get_mut(&p) else {
            continue;
        };
        *count -= 1;
        if *count == 0 {
            table.remove(&p);
            if let Some(addr) = NonNull::new((p * page) as *mut libc::c_void) {
                // SAFETY: the page was locked by lock_memory and no live
                // secret uses it any more; munlock only changes residency.
                let _ = unsafe { munlock(addr, page) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_pages_stay_locked_until_the_last_user_goes() {
        let buf = [7u8; 64];
        let (a, b) = buf.split_at(32);
        if !lock_memory(a) {
            return; // the sandbox forbids mlock: nothing to count
        }
        assert!(lock_memory(b));
        let first = pages(a).start;
        assert_eq!(
            PAGES.lock().map(|t| t.get(&first).copied()).ok().flatten(),
            Some(2)
        );
        unlock_memory(a);
        assert_eq!(
            PAGES.lock().map(|t| t.get(&first).copied()).ok().flatten(),
            Some(1)
        );
        unlock_memory(b);
        assert_eq!(
            PAGES.lock().map(|t| t.get(&first).copied()).ok().flatten(),
            None
        );
    }
}
