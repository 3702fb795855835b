//! The keywarden binary: everything lives in the library.
//!
//! A C `main` of its own instead of std's start-up, which costs a start more
//! than keywarden needs of it: [`keywarden::sys::runtime_start`] does the
//! part that matters.

#![no_main]

// `argc`/`argv` are left unused: `std::env::args_os` still works without
// std's start-up, because std registers an `.init_array` hook that glibc
// calls with (argc, argv, envp) before `main`, for dynamic and static
// (static-pie) binaries alike. Other C libraries need not pass them to
// that hook (musl does not), so the binary is refused there rather than
// started with an empty command line.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
compile_error!("keywarden's C main relies on glibc handing argv to std's .init_array hook");

use std::ffi::{c_char, c_int};

/// The process entry point (called by the C library's start-up).
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    keywarden::sys::runtime_start();
    let code = keywarden::cli::main(std::env::args_os().collect());
    keywarden::sys::runtime_end();
    c_int::from(code)
}
