//! Cache hints for loops that touch memory at random.

/// Asks the CPU to start loading the cache line that holds `items[i]`, so
/// that a later access finds it there. Only a hint: an index out of range
/// is ignored, and nothing is read or written. Does nothing on CPUs other
/// than x86-64.
#[inline(always)]
pub fn prefetch<T>(items: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(item) = items.get(i) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never faults and changes no memory; the
        // address is that of a live element of `items`, and SSE (which
        // the instruction needs) is part of every x86-64 CPU.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(item).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (items, i);
}
