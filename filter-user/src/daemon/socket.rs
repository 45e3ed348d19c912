//! The listening socket: created fresh, mode 0660, group `--socket-group`.
//!
//! The socket is bound under a temporary name, given its mode and group,
//! then renamed into place, so no client ever sees it with other
//! permissions. A stale socket file (a daemon that crashed) is replaced; a
//! live one (another daemon answers on it) is not.
use std::{
    fs, io,
    os::unix::{
        fs::{DirBuilderExt, MetadataExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
};

use nix::unistd::{Gid, Group};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("another filterd is serving {}: give each daemon its own --socket", path.display())]
    InUse { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("socket group {0:?}: no such group")]
    NoSuchGroup(String),
}

/// Resolves `--socket-group` (a name or a numeric gid).
pub fn resolve_group(group: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(SocketError::NoSuchGroup(group.to_owned())),
    }
}

/// A bound socket; dropping it removes the socket file if it is still the
/// one this daemon created.
#[derive(Debug)]
pub struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
    inode: u64,
}

impl BoundSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listener, for `tokio::net::UnixListener::from_std` (set to
    /// non-blocking already). The file stays until the `BoundSocket` drops.
    pub fn try_clone_listener(&self) -> io::Result<UnixListener> {
        self.listener.try_clone()
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds `path` fresh with mode 0660 and, when given, group `gid`.
pub fn bind(path: &Path, gid: Option<u32>) -> Result<BoundSocket, SocketError> {
    let io_err = |p: &Path| {
        let p = p.to_owned();
        move |source| SocketError::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(io_err(&dir))?;

    if fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse {
                path: path.to_owned(),
            });
        }
        fs::remove_file(path).map_err(io_err(path))?;
    }

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_err(&tmp))?;
    let finish = || -> io::Result<u64> {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o660))?;
        if let Some(gid) = gid {
            nix::unistd::chown(&tmp, None, Some(Gid::from_raw(gid))).map_err(io::Error::from)?;
        }
        listener.set_nonblocking(true)?;
        let inode = fs::metadata(&tmp)?.ino();
        fs::rename(&tmp, path)?;
        Ok(inode)
    };
    match finish() {
        Ok(inode) => Ok(BoundSocket {
            listener,
            path: path.to_owned(),
            inode,
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io_err(path)(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_socket_mode_and_stale_replacement() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run/filterd.sock");
        let first = bind(&path, None)?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o660);
        // A live socket is not taken over.
        assert!(matches!(bind(&path, None), Err(SocketError::InUse { .. })));
        drop(first);
        assert!(!path.exists());
        // A stale one (nobody listening) is replaced.
        drop(UnixListener::bind(&path)?);
        assert!(path.exists());
        let second = bind(&path, None)?;
        assert!(path.exists());
        drop(second);
        assert!(!path.exists());
        Ok(())
    }
}
