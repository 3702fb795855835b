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
