//! Giving the heap's free memory back to the system.

/// Return the allocator's free pages to the system. glibc keeps freed
/// memory for reuse and gives back only the top of its heap; after
/// start-up that leaves the registry's, the resolution's and the matcher's
/// build structures resident for the whole run. Does nothing where the C
/// library has no `malloc_trim`.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes an integer and only hands free pages of the
    // allocator's own arenas back to the kernel (madvise), locking each
    // arena as it goes; no live allocation is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Large allocations (from 4 MiB) get pages of their own, handed back to
/// the system when freed, instead of heap memory glibc keeps for reuse
/// (its default raises that threshold as large blocks are freed, so that
/// start-up's build tables stay resident). Fresh pages also start out
/// zeroed and untouched, which [`prefer_huge_pages`] needs. Not from
/// 1 MiB: the relay's 1 MiB read buffer measured ~20 % slower at 10,000
/// secrets as a mapping of its own. Does nothing where the C library is
/// not glibc.
pub fn map_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator tunables; it is called before
    // any other thread exists and touches no allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        // Twice the mapping threshold, the ratio glibc's own adjustment
        // keeps. Left at its 128 KiB default, freeing the relay's buffer
        // would shrink a thread's heap, and glibc then reads
        // /proc/sys/vm/overcommit_memory, which the systemd unit's
        // ProcSubset=pid hides.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

/// Asks the kernel to back the whole 2 MiB stretches of `items` with huge
/// pages when they are first touched: tables read and written at random
/// places then cost far fewer TLB misses. Only a hint; the contents do
/// not change.
pub fn prefer_huge_pages<T>(items: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let start = items.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(items);
    let (first, last) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if last <= first {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: [first, last) lies inside `items`, memory this process owns
    // and keeps mapped while the borrow lasts; MADV_HUGEPAGE changes only
    // how the kernel backs those pages, never what they hold.
    unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_HUGEPAGE,
        );
    }
}
