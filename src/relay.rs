//! The relay: the child's stdout and stderr arrive on pipes and are copied
//! to keywarden's own stdout and stderr as soon as they are read, each
//! stream in order, through an optional [`Filter`] stage (where redaction
//! plugs in). Until the first output the supervisor's loop polls the pipes
//! (a [`Watch`]): a child that writes nothing costs no thread. The first
//! data starts one thread that polls both pipes from then on, so a slow
//! reader of keywarden's output never holds up signal forwarding. When the
//! main child has exited, [`Relay::finish`] drains what is left in the
//! pipes without waiting for grandchildren that may still hold them open.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::redact::Piece;
use crate::supervise::Watch;

/// A transformation applied to one output stream.
pub trait Filter: Send {
    /// Append the transformed `input` to `out`.
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>);
    /// End of stream: append whatever was held back.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// As [`Filter::push`], but what passes unchanged may be left in
    /// `input`: appends to `out` the bytes it makes, and to `pieces` where
    /// each stretch of the output comes from, in order. By default all of
    /// it is made in `out`.
    fn push_pieces(&mut self, input: &[u8], out: &mut Vec<u8>, pieces: &mut Vec<Piece>) {
        let at = out.len();
        self.push(input, out);
        pieces.push(Piece::Out(at..out.len()));
    }
}

/// Most slices one `writev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

const BUF: usize = 1024 * 1024;
const PIPE_SIZE: i32 = 1024 * 1024;

struct Stream {
    src: Option<OwnedFd>,
    dst: OwnedFd,
    filter: Option<Box<dyn Filter>>,
    out: Vec<u8>,
    pieces: Vec<Piece>,
}

impl Stream {
    /// Read once; false at EOF or when the stream was closed.
    fn pump(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let Some(src) = &self.src else {
            return Ok(false);
        };
        let n = match nix::unistd::read(src, buf) {
            Ok(n) => n,
            Err(Errno::EINTR) => return Ok(true),
            Err(Errno::EAGAIN) => return Ok(false),
            // A pty master reads EIO once the last slave descriptor closed.
            Err(Errno::EIO) => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            self.close();
            return Ok(false);
        }
        let chunk = &buf[..n];
        match &mut self.filter {
            None => self.write(chunk),
            Some(f) => {
                let mut out = std::mem::take(&mut self.out);
                let mut pieces = std::mem::take(&mut self.pieces);
                out.clear();
                pieces.clear();
                // What passes unchanged is written from the read buffer
                // itself: no second copy of the bulk of the output.
                f.push_pieces(chunk, &mut out, &mut pieces);
                let mut slices: Vec<IoSlice<'_>> = pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Out(r) => IoSlice::new(&out[r.clone()]),
                        Piece::In(r) => IoSlice::new(&chunk[r.clone()]),
                    })
                    .collect();
                self.write_slices(&mut slices);
                drop(slices);
                self.out = out;
                self.pieces = pieces;
            }
        }
        Ok(true)
    }

    /// Write every byte of `slices`, in order.
    fn write_slices(&mut self, mut slices: &mut [IoSlice<'_>]) {
        while !slices.is_empty() {
            let batch = &slices[..slices.len().min(IOV_MAX)];
            match nix::sys::uio::writev(&self.dst, batch) {
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(self.dst.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::NONE);
                }
                Err(_) => {
                    // Our side is gone (EPIPE): close the pipe so the child
                    // sees the same broken pipe it would have seen directly.
                    self.src = None;
                    self.filter = None;
                    return;
                }
            }
        }
    }

    fn write(&mut self, data: &[u8]) {
        self.write_slices(&mut [IoSlice::new(data)]);
    }

    fn close(&mut self) {
        self.src = None;
        if let Some(mut f) = self.filter.take() {
            let mut out = Vec::new();
            f.finish(&mut out);
            self.write(&out);
        }
    }
}

/// One stream to relay: read `src`, write to keywarden's fd 1 or 2.
pub struct Source {
    /// The read end (a pipe, or a pty master).
    pub src: OwnedFd,
    /// 1 for stdout, 2 for stderr.
    pub to: i32,
    /// The filter stage, if any.
    pub filter: Option<Box<dyn Filter>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("src", &self.src)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// The relay: idle (its pipes polled by the supervisor, see
/// [`Watch`]) until the first output arrives, then a thread of its own.
#[derive(Debug)]
pub struct Relay {
    state: State,
}

enum State {
    /// Nothing read yet: the supervisor polls the sources. `inline`: the
    /// thread could not start, the supervisor's loop relays.
    Idle {
        streams: Vec<Stream>,
        buf: Vec<u8>,
        inline: bool,
    },
    /// The relay thread runs; `stop` tells it the main child is gone.
    Running {
        stop: std::sync::Arc<EventFd>,
        thread: JoinHandle<()>,
    },
    Done,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Idle { .. } => "Idle",
            State::Running { .. } => "Running",
            State::Done => "Done",
        })
    }
}

/// A close-on-exec duplicate of keywarden's fd 1 or 2.
fn stdio(fd: i32) -> io::Result<OwnedFd> {
    match fd {
        1 => io::stdout().as_fd().try_clone_to_owned(),
        _ => io::stderr().as_fd().try_clone_to_owned(),
    }
}

/// Start the relay thread on `streams`; on failure they come back.
fn spawn(streams: Vec<Stream>) -> std::result::Result<State, (io::Error, Vec<Stream>)> {
    let stop = match EventFd::from_flags(EfdFlags::EFD_CLOEXEC) {
        Ok(fd) => std::sync::Arc::new(fd),
        Err(e) => return Err((e.into(), streams)),
    };
    let stop2 = stop.clone();
    // Handed over once the thread exists, so a failed start loses nothing.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Stream>>(1);
    let started = std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            if let Ok(streams) = rx.recv() {
                run(streams, &stop2);
            }
        });
    match started {
        Ok(thread) => {
            let _ = tx.send(streams);
            Ok(State::Running { stop, thread })
        }
        Err(e) => Err((e, streams)),
    }
}

impl Relay {
    /// Prepare to relay every source to its destination. Nothing is read
    /// and no thread runs until the first output: poll [`Relay`] as a
    /// [`Watch`] in the supervisor's loop.
    pub fn new(sources: Vec<Source>) -> io::Result<Relay> {
        let mut streams = Vec::with_capacity(sources.len());
        for s in sources {
            // Fewer, larger reads when the child writes in bulk; a pty
            // master (or an old kernel) refuses and keeps its size.
            let _ = fcntl(&s.src, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
            streams.push(Stream {
                src: Some(s.src),
                dst: stdio(s.to)?,
                filter: s.filter,
                out: Vec::new(),
                pieces: Vec::new(),
            });
        }
        Ok(Relay {
            state: State::Idle {
                streams,
                buf: Vec::new(),
                inline: false,
            },
        })
    }

    /// Start relaying every source to its destination on a thread at once.
    pub fn start(sources: Vec<Source>) -> io::Result<Relay> {
        let mut relay = Relay::new(sources)?;
        if let State::Idle { streams, .. } = std::mem::replace(&mut relay.state, State::Done) {
            relay.state = spawn(streams).map_err(|(e, _)| e)?;
        }
        Ok(relay)
    }

    /// The main child has exited: drain what is buffered and stop.
    pub fn finish(self) {
        match self.state {
            State::Running { stop, thread } => {
                let _ = stop.write(1);
                let _ = thread.join();
            }
            State::Idle {
                mut streams,
                mut buf,
                ..
            } => drain(&mut streams, &mut buf),
            State::Done => {}
        }
    }
}

impl Watch for Relay {
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match &self.state {
            State::Idle { streams, .. } => streams
                .iter()
                .filter_map(|s| s.src.as_ref().map(AsFd::as_fd))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn ready(&mut self, events: &[PollFlags]) {
        let State::Idle {
            streams,
            buf,
            inline,
        } = &mut self.state
        else {
            return;
        };
        let open: Vec<usize> = (0..streams.len())
            .filter(|&i| streams[i].src.is_some())
            .collect();
        let data = events.iter().any(|e| e.contains(PollFlags::POLLIN));
        if data && !*inline {
            // Output: from here on the relay thread copies it, so a slow
            // reader of keywarden's output never holds up the supervisor.
            match spawn(std::mem::take(streams)) {
                Ok(running) => {
                    self.state = running;
                    return;
                }
                Err((e, back)) => {
                    // Relay from the supervisor's loop instead.
                    tracing::warn!("cannot start the output relay thread: {e}");
                    *streams = back;
                    *inline = true;
                }
            }
        }
        let mut small = [0u8; 512];
        for (&i, e) in open.iter().zip(events) {
            let pumped = if e.is_empty() {
                continue;
            } else if e.contains(PollFlags::POLLIN) {
                streams[i].pump(buffer(buf))
            } else {
                // Hang-up (the child closed its end): a read sees the end.
                streams[i].pump(&mut small)
            };
            if pumped.is_err() {
                streams[i].close();
            }
        }
    }
}

/// Copy `first` (input read before, e.g. while the terminal switched to
/// raw mode), then keywarden's stdin, to the pty master until stdin ends
/// (PTY mode). The thread is left behind at exit: a blocking read cannot
/// be cancelled.
pub fn pump_stdin(master: OwnedFd, first: Vec<u8>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            if !write_all_fd(&master, &first) {
                return;
            }
            let mut buf = vec![0u8; 16 * 1024];
            let stdin = io::stdin();
            loop {
                let n = match nix::unistd::read(stdin.as_fd(), &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !write_all_fd(&master, &buf[..n]) {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Write all of `data` to `fd`; false on an error.
pub fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(w) => data = &data[w..],
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// The read buffer, allocated on the first read that has data to fetch: a
/// child that writes nothing (or a relay that only sees end-of-file) never
/// pays for it. 1 MiB, so bulk output moves in few, large reads; and
/// page-aligned: the kernel copies a pipe's pages into it up to 1.6 times
/// as fast as into a buffer 16 bytes past a page's start (where the C
/// library puts a block it maps on its own).
fn buffer(buf: &mut Vec<u8>) -> &mut [u8] {
    const PAGE: usize = 4096;
    if buf.is_empty() {
        *buf = vec![0u8; BUF + PAGE];
    }
    let skip = buf.as_ptr().align_offset(PAGE).min(PAGE);
    &mut buf[skip..skip + BUF]
}

fn run(mut streams: Vec<Stream>, stop: &EventFd) {
    let mut buf = Vec::new();
    // Enough to see end-of-file (the usual event of a silent child) or a
    // few bytes that raced in after poll.
    let mut small = [0u8; 512];
    loop {
        let open: Vec<usize> = (0..streams.len())
            .filter(|&i| streams[i].src.is_some())
            .collect();
        if open.is_empty() {
            break;
        }
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .filter_map(|&i| {
                streams[i]
                    .src
                    .as_ref()
                    .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            })
            .collect();
        fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        let ready: Vec<Option<PollFlags>> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        // Unknown flags (None) count as ready, as everywhere below.
        let stopping = ready
            .last()
            .is_some_and(|r| r.is_none_or(|r| !r.is_empty()));
        for (k, &i) in open.iter().enumerate() {
            let pumped = match ready[k] {
                Some(r) if r.is_empty() => continue,
                // Data waiting: the full-size buffer.
                Some(r) if r.contains(PollFlags::POLLIN) => streams[i].pump(buffer(&mut buf)),
                // Hang-up or error only: a read sees end-of-file.
                _ => streams[i].pump(&mut small),
            };
            if pumped.is_err() {
                streams[i].close();
            }
        }
        if stopping {
            break;
        }
    }
    drain(&mut streams, &mut buf);
}

/// The main child has exited: everything it wrote is in the pipes. Read
/// what is there without waiting for grandchildren that may still hold them
/// open, then close every stream.
fn drain(streams: &mut [Stream], buf: &mut Vec<u8>) {
    for s in streams.iter_mut() {
        if let Some(src) = &s.src {
            let _ = fcntl(src, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        }
        while s.src.is_some() {
            match s.pump(buffer(buf)) {
                Ok(true) => {}
                _ => break,
            }
        }
        s.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Upper;
    impl Filter for Upper {
        fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
            out.extend(input.iter().map(u8::to_ascii_uppercase));
        }
        fn finish(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"<eof>");
        }
    }

    #[test]
    fn filter_applies_and_finish_flushes_on_eof() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let (r2, w2) = nix::unistd::pipe().expect("pipe");
        let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
        // A stream writing into our own pipe instead of fd 1.
        let mut s = Stream {
            src: Some(r),
            dst: out_w,
            filter: Some(Box::new(Upper)),
            out: Vec::new(),
            pieces: Vec::new(),
        };
        nix::unistd::write(&w, b"abc").expect("write");
        drop(w);
        let mut buf = vec![0u8; 16];
        assert!(s.pump(&mut buf).expect("pump"));
        assert!(!s.pump(&mut buf).expect("eof"));
        let mut got = vec![0u8; 64];
        let n = nix::unistd::read(&out_r, &mut got).expect("read");
        assert_eq!(&got[..n], b"ABC<eof>");
        drop((r2, w2));
    }

    fn poll_watch(relay: &Relay) -> Vec<PollFlags> {
        let mut fds: Vec<PollFd<'_>> = relay
            .fds()
            .into_iter()
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        poll(&mut fds, PollTimeout::from(1000u16)).expect("poll");
        fds.iter()
            .map(|f| f.revents().expect("known flags"))
            .collect()
    }

    fn read_all(fd: &OwnedFd) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match nix::unistd::read(fd, &mut buf).expect("read") {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn an_idle_relay_closes_on_hang_up_and_starts_its_thread_on_data() {
        let (silent_r, silent_w) = nix::unistd::pipe().expect("pipe");
        let (talk_r, talk_w) = nix::unistd::pipe().expect("pipe");
        let (out1_r, out1_w) = nix::unistd::pipe().expect("pipe");
        let (out2_r, out2_w) = nix::unistd::pipe().expect("pipe");
        let stream = |src, dst| Stream {
            src: Some(src),
            dst,
            filter: Some(Box::new(Upper) as Box<dyn Filter>),
            out: Vec::new(),
            pieces: Vec::new(),
        };
        let mut relay = Relay {
            state: State::Idle {
                streams: vec![stream(silent_r, out1_w), stream(talk_r, out2_w)],
                buf: Vec::new(),
                inline: false,
            },
        };
        // A hang-up alone is handled in place: no thread, no big buffer.
        drop(silent_w);
        let events = poll_watch(&relay);
        relay.ready(&events);
        assert!(matches!(&relay.state, State::Idle { buf, .. } if buf.is_empty()));
        assert_eq!(relay.fds().len(), 1, "the silent stream is closed");
        let mut got = [0u8; 16];
        let n = nix::unistd::read(&out1_r, &mut got).expect("read");
        assert_eq!(&got[..n], b"<eof>");
        // Data starts the thread, which relays from then on.
        nix::unistd::write(&talk_w, b"abc").expect("write");
        let events = poll_watch(&relay);
        relay.ready(&events);
        assert!(matches!(relay.state, State::Running { .. }));
        assert!(relay.fds().is_empty());
        drop(talk_w);
        relay.finish();
        assert_eq!(read_all(&out2_r), b"ABC<eof>");
    }
}
