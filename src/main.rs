//! The keywarden binary: everything lives in the library.
//!
//! A C `main` of its own instead of std's start-up, which costs a start more
//! than keywarden needs of it: [`keywarden::sys::runtime_start`] does the
//! part that matters.

#![no_main]

use std::ffi::{c_char, c_int};

/// The process entry point (called by the C library's start-up).
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    keywarden::sys::runtime_start();
    let code = keywarden::cli::main();
    keywarden::sys::runtime_end();
    c_int::from(code)
}
