//! Starting the child: a `vfork`-style clone that shares keywarden's memory
//! and suspends it until the command has been exec'd (or failed to), the
//! way `posix_spawn` works. In between the child drops privileges, arms the
//! parent-death signal, puts its stdio in place and makes sure no
//! descriptor of keywarden's but stdin, stdout and stderr survives `exec`.
//!
//! No page tables are copied and no copy-on-write fault follows (a full
//! `fork` costs both, in both processes), and a failure before `exec` is
//! known as soon as the clone returns, with no pipe to wait on.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::unistd::{Gid, Pid, Uid};
use zeroize::Zeroizing;

/// The identity the child switches to (separate-uid mode).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user id.
    pub uid: Uid,
    /// The primary group id.
    pub gid: Gid,
    /// Supplementary groups (computed before the clone: lookups allocate).
    pub groups: Vec<Gid>,
}

/// Where a start failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Placing stdin, stdout and stderr.
    Stdio,
    /// `setpgid`: a process group of its own.
    ProcessGroup,
    /// `setgroups`, `setgid` or `setuid`.
    Credentials,
    /// `setsid` and `TIOCSCTTY` on fd 1 (on a pty).
    Terminal,
    /// `PR_SET_PDEATHSIG`.
    DeathSignal,
    /// keywarden was gone before the death signal was armed.
    ParentGone,
    /// `execve` itself.
    Exec,
    /// The clone (no child was made).
    Clone,
}

impl Step {
    fn code(self) -> i32 {
        self as i32 + 1
    }

    fn from_code(code: i32) -> Step {
        [
            Step::Stdio,
            Step::ProcessGroup,
            Step::Credentials,
            Step::Terminal,
            Step::DeathSignal,
            Step::ParentGone,
            Step::Exec,
        ]
        .into_iter()
        .find(|s| s.code() == code)
        .unwrap_or(Step::Exec)
    }

    /// What the step does, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Stdio => "placing stdin, stdout and stderr",
            Step::ProcessGroup => "making its process group",
            Step::Credentials => "switching to the user",
            Step::Terminal => "taking the terminal",
            Step::DeathSignal => "arming the parent-death signal",
            Step::ParentGone => "keywarden exited before the command started",
            Step::Exec => "exec",
            Step::Clone => "clone",
        }
    }
}

/// A failed start: the step and its `errno`.
#[derive(Debug)]
pub struct StartError {
    /// Where it failed.
    pub step: Step,
    /// The operating system's error.
    pub error: std::io::Error,
}

/// Everything the child needs between the clone and `exec`, built by the
/// parent beforehand: the child shares keywarden's memory, so it must not
/// allocate, lock or unwind; it only reads this and makes system calls.
///
/// The environment's `NAME=value` strings hold secrets: they are wiped when
/// the plan is dropped (the child's copy lives in its own memory after
/// `exec`).
pub struct ExecPlan {
    program: Vec<u8>,
    argv: Vec<Vec<u8>>,
    envp: Vec<Zeroizing<Vec<u8>>>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    stdio: [Option<RawFd>; 3],
    groups: Vec<libc::gid_t>,
    ids: Option<(libc::uid_t, libc::gid_t)>,
    controlling_tty: bool,
    own_group: bool,
    /// Make the child's group the terminal's foreground group (stdin).
    foreground: bool,
    parent: libc::pid_t,
    /// Set by the child on failure: the step's code, then its errno.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
}

impl std::fmt::Debug for ExecPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the environment's values.
        f.debug_struct("ExecPlan")
            .field("program", &String::from_utf8_lossy(&self.program))
            .field("args", &self.argv.len())
            .field("env_vars", &self.envp.len())
            .field("stdio", &self.stdio)
            .finish_non_exhaustive()
    }
}

fn c_string(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.contains(&0) {
        return None;
    }
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.extend_from_slice(bytes);
    v.push(0);
    Some(v)
}

/// A NUL inside the program, an argument or the environment.
#[derive(Debug)]
pub struct NulInArgument;

impl ExecPlan {
    /// Prepare a start of `program` with `argv` (its first element is the
    /// name the command sees) and `env` (`NAME`, value pairs). `stdio`
    /// holds the descriptor to put at 0, 1 and 2, or `None` to inherit.
    /// `controlling_tty`: a new session on the pty at fd 1; `own_group`: a
    /// process group of its own (ignored with `controlling_tty`, whose
    /// session has one).
    pub fn new<'a>(
        program: &[u8],
        argv: impl IntoIterator<Item = &'a [u8]>,
        env: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        stdio: [Option<RawFd>; 3],
        credentials: Option<&Credentials>,
        controlling_tty: bool,
        own_group: bool,
    ) -> Result<ExecPlan, NulInArgument> {
        let program = c_string(program).ok_or(NulInArgument)?;
        let argv = argv
            .into_iter()
            .map(c_string)
            .collect::<Option<Vec<_>>>()
            .ok_or(NulInArgument)?;
        let mut envp = Vec::new();
        for (name, value) in env {
            if name.contains(&0) || value.contains(&0) {
                return Err(NulInArgument);
            }
            let mut entry = Zeroizing::new(Vec::with_capacity(name.len() + value.len() + 2));
            entry.extend_from_slice(name);
            entry.push(b'=');
            entry.extend_from_slice(value);
            entry.push(0);
            envp.push(entry);
        }
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr().cast::<c_char>())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|e| e.as_ptr().cast::<c_char>())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Ok(ExecPlan {
            program,
            argv,
            envp,
            argv_ptrs,
            envp_ptrs,
            stdio,
            groups: credentials
                .map(|c| c.groups.iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default(),
            ids: credentials.map(|c| (c.uid.as_raw(), c.gid.as_raw())),
            controlling_tty,
            own_group: own_group && !controlling_tty,
            foreground: false,
            parent: nix::unistd::getpid().as_raw(),
            failed_step: AtomicI32::new(0),
            failed_errno: AtomicI32::new(0),
        })
    }

    /// With a process group of its own: make that group the foreground
    /// group of the terminal on stdin when keywarden's group is it now (so
    /// the command can read the terminal; the terminal's signals then reach
    /// the command's group, as with `tini -g`). A no-op otherwise.
    pub fn take_foreground(mut self) -> ExecPlan {
        let stdin = std::io::stdin();
        let ours = nix::unistd::tcgetpgrp(&stdin).is_ok_and(|fg| fg == nix::unistd::getpgrp());
        self.foreground = self.own_group && ours;
        self
    }

    /// Start the child; call from the main thread (the parent-death signal
    /// is tied to the thread that starts it). Returns once the command has
    /// been exec'd; a failure before that is reaped here and returned.
    pub fn start(&self) -> Result<Pid, StartError> {
        const STACK: usize = 64 * 1024;
        self.failed_step.store(0, Ordering::SeqCst);
        self.failed_errno.store(0, Ordering::SeqCst);
        // The child's stack: only the child writes it, before it reads it.
        let mut stack: Vec<u8> = Vec::with_capacity(STACK);
        let all = nix::sys::signal::SigSet::all();
        let mut previous = nix::sys::signal::SigSet::empty();
        // Every signal blocked across the clone, so no handler of
        // keywarden's runs in the child on the shared memory; the child
        // resets the handlers, then unblocks.
        let blocked = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&all),
            Some(&mut previous),
        );
        let top = (stack.as_mut_ptr() as usize + STACK) & !15;
        // SAFETY: clone with CLONE_VM | CLONE_VFORK runs `child_main` on
        // `stack` (owned here, 16-byte aligned top, large enough for a few
        // system calls) in this address space, and suspends this thread
        // until the child has called execve or exited, so `self` and the
        // stack outlive every use the child makes of them. The child only
        // reads `self` and writes its two atomics.
        let pid = unsafe {
            libc::clone(
                child_main,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (self as *const ExecPlan).cast_mut().cast::<c_void>(),
            )
        };
        let clone_error = std::io::Error::last_os_error();
        if blocked.is_ok() {
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&previous),
                None,
            );
        }
        drop(stack);
        if pid < 0 {
            return Err(StartError {
                step: Step::Clone,
                error: clone_error,
            });
        }
        let pid = Pid::from_raw(pid);
        let step = self.failed_step.load(Ordering::SeqCst);
        if step == 0 {
            return Ok(pid);
        }
        let errno = self.failed_errno.load(Ordering::SeqCst);
        // The child has exited already (CLONE_VFORK): reap it.
        let _ = nix::sys::wait::waitpid(pid, None);
        Err(StartError {
            step: Step::from_code(step),
            error: std::io::Error::from_raw_os_error(errno),
        })
    }
}

/// The child, from the clone to `exec`. Returns only by `_exit`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ExecPlan` whose `start` made this clone; that
    // call is suspended until this process execs or exits, so the plan is
    // alive and unchanged. Everything below is a plain system call on
    // integers or on pointers into the plan (NUL-terminated strings and
    // NULL-terminated arrays built by `ExecPlan::new`); nothing allocates,
    // locks or unwinds, and credentials are changed with raw system calls
    // (glibc's wrappers would signal keywarden's other threads).
    unsafe {
        let plan = &*(arg as *const ExecPlan);
        let fail = |step: Step| -> ! {
            plan.failed_errno
                .store(*libc::__errno_location(), Ordering::SeqCst);
            plan.failed_step.store(step.code(), Ordering::SeqCst);
            libc::_exit(127)
        };
        // Handlers do not survive exec, but one could run before it once
        // signals are unblocked. keywarden catches no signal (it reads them
        // from a signalfd; a test holds it to that) but glibc's internal
        // set*id one, which glibc sends only to keywarden's own threads by
        // id, never to this clone; it ignores SIGPIPE;
        // std's runtime, where it runs (the library's tests), catches
        // SIGSEGV and SIGBUS. All three back to the default.
        for sig in [libc::SIGPIPE, libc::SIGSEGV, libc::SIGBUS] {
            libc::signal(sig, libc::SIG_DFL);
        }
        for (target, source) in plan.stdio.iter().enumerate() {
            let target = target as c_int;
            let placed = match *source {
                None => true,
                // Already in place: only clear its close-on-exec flag.
                Some(fd) if fd == target => libc::fcntl(fd, libc::F_SETFD, 0) == 0,
                Some(fd) => libc::dup2(fd, target) >= 0,
            };
            if !placed {
                fail(Step::Stdio);
            }
        }
        if plan.own_group && libc::setpgid(0, 0) != 0 {
            fail(Step::ProcessGroup);
        }
        if plan.foreground {
            // A background group's tcsetpgrp raises SIGTTOU unless it is
            // blocked (it is, until the mask is cleared before exec).
            let mut ttou: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut ttou);
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
            if libc::tcsetpgrp(0, libc::getpid()) != 0 {
                fail(Step::ProcessGroup);
            }
        }
        if let Some((uid, gid)) = plan.ids {
            if libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, gid) != 0
                || libc::syscall(libc::SYS_setuid, uid) != 0
            {
                fail(Step::Credentials);
            }
        }
        // On a pty the slave is at fd 1 (and at 0 when stdin is a terminal).
        if plan.controlling_tty && (libc::setsid() < 0 || libc::ioctl(1, libc::TIOCSCTTY, 0) != 0) {
            fail(Step::Terminal);
        }
        // After the uid change: changing credentials clears the setting.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            fail(Step::DeathSignal);
        }
        if libc::getppid() != plan.parent {
            *libc::__errno_location() = libc::ESRCH;
            fail(Step::ParentGone);
        }
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            for fd in 3..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            plan.program.as_ptr().cast::<c_char>(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        fail(Step::Exec)
    }
}

/// How many bytes of arguments and environment `execve` accepts
/// (`sysconf(_SC_ARG_MAX)`: a quarter of the stack limit on Linux), at
/// least the kernel's floor of 32 pages.
pub fn arg_max() -> usize {
    // SAFETY: sysconf reads a system setting; it takes no pointer and has
    // no precondition.
    let n = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    usize::try_from(n).unwrap_or(0).max(32 * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_refused_before_any_start() {
        let none = [None, None, None];
        assert!(ExecPlan::new(b"/bin/tr\0ue", [], [], none, None, false, false).is_err());
        assert!(ExecPlan::new(b"/bin/true", [&b"a\0b"[..]], [], none, None, false, false).is_err());
        assert!(ExecPlan::new(
            b"/bin/true",
            [],
            [(&b"K"[..], &b"v\0"[..])],
            none,
            None,
            false,
            false,
        )
        .is_err());
        let plan = ExecPlan::new(
            b"/bin/true",
            [&b"true"[..]],
            [(&b"K"[..], &b"v"[..])],
            none,
            None,
            false,
            false,
        )
        .expect("plan");
        assert_eq!(plan.argv_ptrs.len(), 2);
        assert!(plan.argv_ptrs[1].is_null());
        assert_eq!(&plan.envp[0][..], b"K=v\0");
    }

    #[test]
    fn a_missing_program_is_reported_with_its_errno() {
        let plan = ExecPlan::new(
            b"/nonexistent/keywarden-test",
            [&b"x"[..]],
            [],
            [None, None, None],
            None,
            false,
            false,
        )
        .expect("plan");
        let err = plan.start().expect_err("no such program");
        assert_eq!(err.step, Step::Exec);
        assert_eq!(err.error.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn a_started_program_gets_its_arguments_and_exit_status() {
        let plan = ExecPlan::new(
            b"/bin/sh",
            [&b"sh"[..], &b"-c"[..], &b"exit $K"[..]],
            [(&b"K"[..], &b"7"[..])],
            [None, None, None],
            None,
            false,
            true,
        )
        .expect("plan");
        let pid = plan.start().expect("started");
        // A process group of its own (`own_group`), made before exec.
        let group = nix::unistd::getpgid(Some(pid));
        match nix::sys::wait::waitpid(pid, None).expect("wait") {
            nix::sys::wait::WaitStatus::Exited(_, code) => assert_eq!(code, 7),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(group.ok(), Some(pid));
    }
}
