//! Random bytes from the kernel's `getrandom` system call, and only from it.
//!
//! A static glibc build cannot find libc's `getrandom` wrapper at run time,
//! and the usual crates then fall back to reading `/dev/urandom`, which a
//! scratch container image or a sandbox without `/dev` does not have. The
//! system call needs no file and has been in every kernel since 3.17.

use std::io;

/// Fill `buf` with random bytes from the kernel's pool. Blocks only until
/// the pool is first initialised after boot.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, writable buffer of exactly `rest.len()`
        // bytes, and the kernel writes at most that many into it.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getrandom,
                rest.as_mut_ptr().cast::<libc::c_void>(),
                rest.len(),
                0 as libc::c_uint,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // n > 0 and n <= rest.len(): the kernel never reports more than asked.
        done += usize::try_from(n).unwrap_or(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn fills_every_byte_of_large_and_empty_buffers() {
        fill(&mut []).expect("empty");
        // Larger than the 256 bytes one call is guaranteed to return whole,
        // so the loop's resume path runs too; 1 MiB of zeros by chance is
        // impossible in practice.
        let mut big = vec![0u8; 1 << 20];
        fill(&mut big).expect("big");
        assert!(big.chunks(64).all(|c| c.iter().any(|&b| b != 0)));
    }

    #[test]
    fn two_draws_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill(&mut a).expect("a");
        fill(&mut b).expect("b");
        assert_ne!(a, b);
    }
}
