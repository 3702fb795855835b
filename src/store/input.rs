//! Reading the value `store set` stores: all of stdin (one trailing newline
//! trimmed), or one line typed at a no-echo prompt when stdin is a terminal.
//! Never from argv, where it would land in shell history and `ps`.
//!
//! The prompt puts the terminal in non-canonical mode with echo *and*
//! signal keys off, so Ctrl-C arrives as a byte: the saved mode is restored
//! by a guard on every path (value read, cancel, error, panic) instead of
//! by a signal handler, and a killed keywarden cannot leave it behind
//! half-set from inside a handler.

use std::io::{Read, Write};
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices as Cc, Termios};
use zeroize::{Zeroize, Zeroizing};

use super::format::MAX_VALUE_LEN;
use crate::error::{Error, ErrorKind, Result};
use crate::secret::SecretBytes;

/// The longest line the prompt takes; longer values are piped.
const MAX_TYPED_LEN: usize = 16 << 10;
const CHUNK: usize = 8 << 10;

fn too_large() -> Error {
    Error::new(
        ErrorKind::Data,
        format!(
            "the value is larger than {} MiB: nothing stored",
            MAX_VALUE_LEN >> 20
        ),
    )
}

fn empty() -> Error {
    Error::new(ErrorKind::Data, "the value is empty: nothing stored")
}

/// Read all of `r` as the value, one trailing newline (`\n` or `\r\n`)
/// trimmed. Buffers grow by copy into a fresh zeroized buffer, so no
/// reallocation leaves a stray copy of the value on the heap.
pub fn read_value(r: &mut dyn Read) -> Result<SecretBytes> {
    let mut buf = Zeroizing::new(Vec::with_capacity(CHUNK));
    let mut chunk = Zeroizing::new([0u8; CHUNK]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("cannot read the value from stdin: {e}"),
                ))
            }
        };
        // Two bytes of slack for the newline that is trimmed.
        if buf.len() + n > MAX_VALUE_LEN + 2 {
            return Err(too_large());
        }
        if buf.len() + n > buf.capacity() {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity((buf.capacity() * 2).max(buf.len() + n)));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.is_empty() {
        return Err(empty());
    }
    if buf.len() > MAX_VALUE_LEN {
        return Err(too_large());
    }
    Ok(SecretBytes::from_vec(std::mem::take(&mut *buf)))
}

/// Puts the saved terminal mode back when dropped.
struct Restore<'a> {
    tty: BorrowedFd<'a>,
    saved: Termios,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, SetArg::TCSANOW, &self.saved);
    }
}

fn tty_error(e: Errno) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("cannot read the value from the terminal: {}", e.desc()),
    )
}

/// Show `prompt` on `out` and read one line from the terminal `tty` with
/// echo off. Backspace and the kill key (Ctrl-U) edit; Ctrl-C or Ctrl-\
/// cancels (exit 130); Ctrl-D on an empty line cancels.
pub fn prompt_value(tty: BorrowedFd<'_>, out: &mut dyn Write, prompt: &str) -> Result<SecretBytes> {
    let saved = termios::tcgetattr(tty).map_err(tty_error)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(
        LocalFlags::ECHO
            | LocalFlags::ECHONL
            | LocalFlags::ICANON
            | LocalFlags::ISIG
            | LocalFlags::IEXTEN,
    );
    quiet.control_chars[Cc::VMIN as usize] = 1;
    quiet.control_chars[Cc::VTIME as usize] = 0;
    // A control character of 0 is disabled (_POSIX_VDISABLE on Linux).
    let cc = |i: Cc| Some(saved.control_chars[i as usize]).filter(|&c| c != 0);
    let (intr, quit, erase, kill, eof) = (
        cc(Cc::VINTR),
        cc(Cc::VQUIT),
        cc(Cc::VERASE),
        cc(Cc::VKILL),
        cc(Cc::VEOF),
    );
    let guard = Restore { tty, saved };
    // Flush: whatever was typed ahead was echoed, so it is not taken.
    termios::tcsetattr(tty, SetArg::TCSAFLUSH, &quiet).map_err(tty_error)?;
    // Only now, with echo off, invite typing.
    let _ = write!(out, "{prompt}").and_then(|_| out.flush());

    let cancelled = || {
        Error::new(
            ErrorKind::Interrupted(nix::libc::SIGINT as u8),
            "cancelled at the prompt: nothing stored",
        )
    };
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_TYPED_LEN));
    let outcome = loop {
        let mut byte = [0u8; 1];
        match nix::unistd::read(tty, &mut byte) {
            Ok(0) => break Err(tty_error(Errno::EIO)),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => break Err(tty_error(e)),
        }
        let b = byte[0];
        match b {
            b'\r' | b'\n' => break Ok(()),
            _ if Some(b) == intr || Some(b) == quit => break Err(cancelled()),
            _ if Some(b) == eof => {
                if line.is_empty() {
                    break Err(cancelled());
                }
                break Ok(());
            }
            0x08 | 0x7f => pop_char(&mut line),
            _ if Some(b) == erase => pop_char(&mut line),
            _ if Some(b) == kill => line.zeroize(),
            _ => {
                if line.len() == MAX_TYPED_LEN {
                    break Err(Error::new(
                        ErrorKind::Data,
                        "the value is too long to type: pipe it on stdin instead",
                    ));
                }
                line.push(b);
            }
        }
    };
    drop(guard);
    let _ = writeln!(out).and_then(|_| out.flush());
    outcome?;
    if line.is_empty() {
        return Err(empty());
    }
    Ok(SecretBytes::from_vec(std::mem::take(&mut *line)))
}

/// Remove the last UTF-8 character (its continuation bytes too).
fn pop_char(line: &mut Vec<u8>) {
    while let Some(b) = line.pop() {
        let continuation = b & 0xC0 == 0x80;
        // Bytes popped stay in the capacity, which is wiped on drop.
        if !continuation {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_value_trims_one_newline() {
        for (input, want) in [
            (&b"v\n"[..], &b"v"[..]),
            (b"v\r\n", b"v"),
            (b"v\n\n", b"v\n"),
            (b"v", b"v"),
            (b"\x00\xff\n", b"\x00\xff"),
        ] {
            let v = read_value(&mut &input[..]).expect("value");
            assert_eq!(v.expose(), want);
        }
    }

    #[test]
    fn empty_and_oversized_values_are_refused() {
        for input in [&b""[..], b"\n", b"\r\n"] {
            let e = read_value(&mut &input[..]).expect_err("empty");
            assert_eq!(e.exit_code(), 65);
        }
        let big = vec![b'x'; MAX_VALUE_LEN + 1];
        assert_eq!(read_value(&mut &big[..]).expect_err("big").exit_code(), 65);
        let mut exact = vec![b'y'; MAX_VALUE_LEN];
        exact.push(b'\n');
        assert_eq!(
            read_value(&mut &exact[..]).expect("max").len(),
            MAX_VALUE_LEN
        );
    }

    #[test]
    fn pop_char_removes_a_whole_character() {
        let mut line = "aé".as_bytes().to_vec();
        pop_char(&mut line);
        assert_eq!(line, b"a");
        pop_char(&mut line);
        pop_char(&mut line);
        assert!(line.is_empty());
    }
}
