//! What std's runtime start-up does that keywarden needs, without the rest.
//!
//! The binary has its own C `main` (`src/main.rs`), so std's `lang_start`
//! does not run: it would read `/proc/self/maps` to place the main thread's
//! stack guard and set up an alternate signal stack for its stack-overflow
//! message, a measurable share of a start (see docs/PERFORMANCE.md). A
//! stack overflow still ends keywarden (SIGSEGV on the guard page; the
//! child then gets its parent-death SIGKILL), only without the message.

use std::io::Write;

/// At the start of `main`: make sure descriptors 0, 1 and 2 are open (a
/// closed one is opened on `/dev/null`, so no pipe or socket of keywarden's
/// takes its number and is mistaken for stdio), and ignore SIGPIPE, so a
/// closed reader is a write error and not death.
pub fn runtime_start() {
    for fd in 0..=2 {
        // SAFETY: fcntl(F_GETFD) and open take integers and a NUL-terminated
        // literal; they only query or create descriptors. Checked in order,
        // so the lowest free number open returns is `fd` itself.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1
                && *libc::__errno_location() == libc::EBADF
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) != fd
            {
                libc::abort();
            }
        }
    }
    // SAFETY: SIG_IGN installs no handler code; nothing else changes
    // SIGPIPE's disposition concurrently (no other thread exists yet).
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
}

/// At the end of `main`: flush stdout (std's runtime would).
pub fn runtime_end() {
    let _ = std::io::stdout().flush();
}
