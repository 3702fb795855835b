//! Unix sockets that only their owner can use: a fresh 0700 folder (or a
//! path the user chose), the socket 0600, a stale socket from a crashed run
//! replaced only when nothing listens on it, and a [`SocketGuard`] that
//! removes what was created — on shutdown, on drop, on every exit path
//! short of SIGKILL — and never a socket that is no longer ours.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Where fresh socket folders go: `$XDG_RUNTIME_DIR` when set to an
/// absolute path, else the temp dir.
pub fn runtime_dir(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    var("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(std::env::temp_dir)
}

/// Another user a socket is made for: the child's, in separate-uid mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Every group it is in (supplementary ones included).
    pub groups: Vec<u32>,
}

/// Whether a folder with this owner, group and mode can be passed through
/// (searched) by `who`, by its mode bits as the kernel checks them: the
/// owner's bits for its owner, the group's for a member, the others' for
/// the rest. Root passes everywhere.
pub fn passable(uid: u32, gid: u32, mode: u32, who: &Owner) -> bool {
    let bit = if who.uid == 0 {
        return true;
    } else if who.uid == uid {
        0o100
    } else if who.gid == gid || who.groups.contains(&gid) {
        0o010
    } else {
        0o001
    };
    mode & bit != 0
}

/// The first folder on the way to `dir` (`dir` included) that `who`
/// cannot pass through, if any. A folder that cannot be inspected counts
/// as closed.
pub fn first_closed(dir: &Path, who: &Owner) -> Option<PathBuf> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    chain.into_iter().find_map(|p| {
        let open = std::fs::metadata(p)
            .is_ok_and(|m| m.is_dir() && passable(m.uid(), m.gid(), m.mode(), who));
        (!open).then(|| p.to_path_buf())
    })
}

/// Removes a socket (and the folder made for it) when dropped.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    /// (device, inode, mtime in ns): inode numbers are reused at once, the
    /// creation time tells a later socket at the same path apart.
    identity: Option<(u64, u64, i128)>,
    dir: Option<PathBuf>,
}

impl SocketGuard {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the socket if it is still the one bound here, and the folder
    /// made for it. Idempotent.
    pub fn remove(&mut self) {
        if let Some(id) = self.identity.take() {
            if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
                if identity_of(&meta) == id {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.remove();
    }
}

fn os_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::new(
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => ErrorKind::Permission,
            _ => ErrorKind::Os,
        },
        format!("{}: cannot {what}: {e}", path.display()),
    )
}

fn random_suffix() -> Result<String> {
    let mut b = [0u8; 8];
    crate::sys::random::fill(&mut b).map_err(|e| {
        Error::new(
            ErrorKind::Os,
            format!("no randomness for a socket name: {e}"),
        )
    })?;
    Ok(crate::audit::hex(&b))
}

/// Run `f` with the process umask set to `mask`, then restore it: a folder
/// or socket made inside gets its final mode at once, with no `chmod`
/// (which costs a metadata write on a disk file system) and no moment at a
/// wider mode. keywarden makes no other files meanwhile; one made by
/// another thread would only come out narrower.
fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    use nix::sys::stat::{umask, Mode};
    // Two threads swapping the umask at once could restore each other's
    // temporary value for good.
    static SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SWAP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let old = umask(Mode::from_bits_truncate(mask));
    let out = f();
    umask(old);
    out
}

/// Make a fresh 0700 folder `<base>/<prefix>-<random>`.
fn fresh_dir(base: &Path, prefix: &str) -> Result<PathBuf> {
    for _ in 0..8 {
        let dir = base.join(format!("{prefix}-{}", random_suffix()?));
        match with_umask(0o077, || DirBuilder::new().mode(0o700).create(&dir)) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(os_err(&dir, "create a socket folder", e)),
        }
    }
    Err(Error::new(
        ErrorKind::Os,
        format!("{}: cannot find a free socket folder name", base.display()),
    ))
}

/// Bind a listening socket at `path`, created 0600.
fn bind_private(path: &Path, shown: &Path) -> Result<UnixListener> {
    with_umask(0o177, || UnixListener::bind(path)).map_err(|e| os_err(shown, "bind the socket", e))
}

/// Refuse to replace anything but a socket nobody listens on.
fn check_replaceable(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(os_err(path, "inspect the socket path", e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{}: exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "{}: another process is listening on this socket",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!("replacing the stale socket {}", path.display());
            Ok(())
        }
        Err(e) => Err(os_err(path, "check the existing socket", e)),
    }
}

fn identity_of(meta: &std::fs::Metadata) -> (u64, u64, i128) {
    (
        meta.dev(),
        meta.ino(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    )
}

fn finish(path: &Path, owner: Option<&Owner>) -> Result<(u64, u64, i128)> {
    if let Some(o) = owner {
        std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))
            .map_err(|e| os_err(path, "give the socket to the child's user", e))?;
    }
    let mut meta =
        std::fs::symlink_metadata(path).map_err(|e| os_err(path, "inspect the socket", e))?;
    if meta.permissions().mode() & 0o7777 != 0o600 {
        // Bound under a 0177 umask, so only on a file system that ignores
        // it.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| os_err(path, "set the socket's mode", e))?;
        meta =
            std::fs::symlink_metadata(path).map_err(|e| os_err(path, "inspect the socket", e))?;
    }
    Ok(identity_of(&meta))
}

/// Bind a private socket.
///
/// With `path`, the socket goes there: bound in a private temp folder
/// beside it, set to 0600, then renamed into place, so it is never
/// reachable with a wider mode. Without, it is `<base>/<prefix>-<random>/
/// <file_name>` in a fresh 0700 folder. `owner` hands the socket (and a
/// fresh folder) to another user: the child's, in separate-uid mode.
pub fn bind(
    path: Option<&Path>,
    base: &Path,
    prefix: &str,
    file_name: &str,
    owner: Option<&Owner>,
) -> Result<(UnixListener, SocketGuard)> {
    match path {
        None => {
            let dir = fresh_dir(base, prefix)?;
            let mut guard = SocketGuard {
                path: dir.join(file_name),
                identity: None,
                dir: Some(dir.clone()),
            };
            let listener = bind_private(&guard.path, &guard.path)?;
            guard.identity = Some(finish(&guard.path, owner)?);
            // Handed over last: until then nobody else can put anything in
            // the folder.
            if let Some(o) = owner {
                std::os::unix::fs::chown(&dir, Some(o.uid), Some(o.gid))
                    .map_err(|e| os_err(&dir, "give the socket folder to the child's user", e))?;
            }
            Ok((listener, guard))
        }
        Some(path) => {
            check_replaceable(path)?;
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "socket".into());
            let tmp_dir = fresh_dir(parent, &format!(".{name}.kw"))?;
            // Removes the temp folder whatever happens below.
            let mut tmp_guard = SocketGuard {
                path: tmp_dir.join("s"),
                identity: None,
                dir: Some(tmp_dir),
            };
            let listener = bind_private(&tmp_guard.path, path)?;
            let identity = finish(&tmp_guard.path, owner)?;
            std::fs::rename(&tmp_guard.path, path)
                .map_err(|e| os_err(path, "move the socket into place", e))?;
            tmp_guard.remove();
            Ok((
                listener,
                SocketGuard {
                    path: path.to_path_buf(),
                    identity: Some(identity),
                    dir: None,
                },
            ))
        }
    }
}

/// Make the admin socket at a path the user chose findable by `revoke`,
/// `inventory`, `approve` and `reload` run without `--admin-socket`: a
/// symbolic link `<base>/keywarden-admin-<random>/admin.sock` to it, in a
/// fresh 0700 folder, removed (with its folder) when the guard drops.
pub fn announce(admin: &Path, base: &Path) -> Result<SocketGuard> {
    let target = match (admin.parent(), admin.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
        .map_err(|e| os_err(admin, "find the socket's folder", e))?
        .join(name),
        _ => admin.to_path_buf(),
    };
    let dir = fresh_dir(base, "keywarden-admin")?;
    let mut guard = SocketGuard {
        path: dir.join("admin.sock"),
        identity: None,
        dir: Some(dir),
    };
    std::os::unix::fs::symlink(&target, &guard.path)
        .map_err(|e| os_err(&guard.path, "link the admin socket", e))?;
    let meta = std::fs::symlink_metadata(&guard.path)
        .map_err(|e| os_err(&guard.path, "inspect the link", e))?;
    guard.identity = Some(identity_of(&meta));
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn passable_by_mode_bits() {
        let who = Owner {
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
        };
        let root = Owner {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        // (owner uid, group, mode, passable by `who`)
        let table = [
            (0, 0, 0o700, false),
            (0, 0, 0o711, true),
            (0, 0, 0o755, true),
            (1000, 0, 0o700, true),
            (1000, 0, 0o070, false),
            (0, 100, 0o710, true),
            (0, 27, 0o750, true),
            (0, 27, 0o701, false),
            (0, 5, 0o1777, true),
        ];
        for (uid, gid, mode, want) in table {
            assert_eq!(passable(uid, gid, mode, &who), want, "{uid} {gid} {mode:o}");
            assert!(passable(uid, gid, mode, &root));
        }
    }

    #[test]
    fn fresh_folder_modes_and_removal() {
        let base = tempfile::tempdir().expect("tmp");
        let (listener, mut guard) = bind(None, base.path(), "kw", "api.sock", None).expect("bind");
        let path = guard.path().to_path_buf();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        assert!(UnixStream::connect(&path).is_ok());
        drop(listener);
        guard.remove();
        assert!(!path.exists());
        assert!(!path.parent().expect("dir").exists());
    }

    #[test]
    fn chosen_path_replaces_only_a_dead_socket() {
        let base = tempfile::tempdir().expect("tmp");
        let path = base.path().join("kw.sock");
        let (live, guard) = bind(Some(&path), base.path(), "kw", "x", None).expect("bind");
        assert_eq!(mode(&path), 0o600);
        let err = bind(Some(&path), base.path(), "kw", "x", None).expect_err("in use");
        assert!(
            err.to_string().contains("another process is listening"),
            "{err}"
        );
        // A crashed run: the listener is gone, the file stays.
        drop(live);
        std::mem::forget(guard);
        assert!(path.exists());
        let (_l, mut g) = bind(Some(&path), base.path(), "kw", "x", None).expect("rebind");
        assert!(UnixStream::connect(&path).is_ok());
        let left: Vec<_> = std::fs::read_dir(base.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "no temp folder left");
        g.remove();
        assert!(!path.exists());

        let file = base.path().join("plain");
        std::fs::write(&file, "x").expect("write");
        let err = bind(Some(&file), base.path(), "kw", "x", None).expect_err("not a socket");
        assert_eq!(err.exit_code(), 78);
        assert!(file.exists());
    }

    #[test]
    fn never_removes_a_socket_that_is_not_ours() {
        let base = tempfile::tempdir().expect("tmp");
        let path = base.path().join("kw.sock");
        let (l, mut g) = bind(Some(&path), base.path(), "kw", "x", None).expect("bind");
        drop(l);
        std::fs::remove_file(&path).expect("rm");
        // Past the timestamp granularity, so the new socket is told apart
        // even when it gets the same inode number.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let _other = UnixListener::bind(&path).expect("another");
        g.remove();
        assert!(path.exists());
    }
}
