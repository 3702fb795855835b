//! `file://path` and `cred://NAME` (a file in systemd's
//! `$CREDENTIALS_DIRECTORY`): the file's contents, one trailing newline
//! trimmed. Relative paths are taken from the request's base folder.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{
    non_empty, trim_newline, Context, Provider, Request, ResolveError, ResolveFuture, MAX_SOURCE,
};
use crate::secret::SecretBytes;

pub(super) struct FileProvider;
pub(super) struct CredProvider;

/// Read a whole file into a buffer sized up front, so no reallocation leaves
/// a stray copy of the secret on the heap. More than [`MAX_SOURCE`] bytes
/// (a device like `/dev/zero` says it has none) is `FileTooLarge`, and
/// nothing past them is read.
pub(super) fn read_secret_file(path: &Path) -> Result<Vec<u8>, std::io::Error> {
    read_dated(path).map(|(bytes, _)| bytes)
}

/// [`read_secret_file`], and the file's last modification (from the same
/// `fstat` that gave its size).
pub(super) fn read_dated(
    path: &Path,
) -> Result<(Vec<u8>, Option<std::time::SystemTime>), std::io::Error> {
    use zeroize::Zeroize;
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    if size > MAX_SOURCE {
        return Err(std::io::ErrorKind::FileTooLarge.into());
    }
    let mut buf = Vec::with_capacity(size.saturating_add(1).max(64));
    (&mut file)
        .take(MAX_SOURCE as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > MAX_SOURCE {
        buf.zeroize();
        return Err(std::io::ErrorKind::FileTooLarge.into());
    }
    Ok((buf, meta.modified().ok()))
}

async fn read_trimmed(path: PathBuf) -> Result<SecretBytes, ResolveError> {
    let shown = path.display().to_string();
    let read = tokio::task::spawn_blocking(move || read_secret_file(&path))
        .await
        .map_err(|e| ResolveError::unavailable(format!("{shown}: {e}")))?;
    let mut bytes = read.map_err(|e| ResolveError::io(&shown, &e))?;
    trim_newline(&mut bytes);
    non_empty(bytes, &shown)
}

impl Provider for FileProvider {
    fn resolve<'a>(&'a self, req: &'a Request, _ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(read_trimmed(req.base_dir.join(req.reference.path())))
    }
}

impl Provider for CredProvider {
    fn resolve<'a>(&'a self, req: &'a Request, ctx: &'a Context) -> ResolveFuture<'a> {
        Box::pin(async move {
            let dir = ctx.var("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                ResolveError::unavailable(
                    "$CREDENTIALS_DIRECTORY is not set (cred:// reads systemd credentials: \
                     LoadCredential= or SetCredentialEncrypted= in the unit)",
                )
            })?;
            read_trimmed(PathBuf::from(dir).join(req.reference.path())).await
        })
    }
}
