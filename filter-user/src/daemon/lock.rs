//! Exclusive locks on the state and pin directories, so two daemons never
//! write the same saved generations or the same pinned maps (the
//! xdp-filter way: `flock` on the directory itself, released by the kernel
//! when the daemon exits however it exits).
use std::{
    fs::{self, File},
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("{} is in use by another filterd (it holds the lock); give each daemon its own --state-dir and --pin-dir", path.display())]
    Held { path: PathBuf },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// An exclusive lock on one directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl DirLock {
    /// Creates `dir` if needed (mode 0700) and locks it, without waiting.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io_err = |source| LockError::Io {
            path: dir.to_owned(),
            source,
        };
        // Mode 0700: the state directory holds every applied document.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        let file = File::open(dir).map_err(io_err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DirLock {
                path: dir.to_owned(),
                _lock: lock,
            }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Held {
                path: dir.to_owned(),
            }),
            Err((_, errno)) => Err(io_err(io::Error::from(errno))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The locks a daemon holds for its whole life: state dir and pin dir
/// (one lock when they are the same directory).
#[derive(Debug)]
pub struct DirLocks {
    pub state: DirLock,
    pub pins: Option<DirLock>,
}

impl DirLocks {
    /// Locks only the state directory, for an enforcer that locks its pin
    /// directory itself (the kernel enforcer: `dataplane::pins`).
    pub fn state_only(state_dir: &Path) -> Result<DirLocks, LockError> {
        Ok(DirLocks {
            state: DirLock::acquire(state_dir)?,
            pins: None,
        })
    }

    /// Locks both directories (one lock when they are the same).
    pub fn acquire(state_dir: &Path, pin_dir: &Path) -> Result<DirLocks, LockError> {
        let state = DirLock::acquire(state_dir)?;
        let same = match (fs::canonicalize(state_dir), fs::canonicalize(pin_dir)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        let pins = if same {
            None
        } else {
            Some(DirLock::acquire(pin_dir)?)
        };
        Ok(DirLocks { state, pins })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_goes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let pins = dir.path().join("pins");
        let first = DirLocks::acquire(&state, &pins)?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&state)?.permissions());
        assert_eq!(mode & 0o777, 0o700);
        assert!(matches!(
            DirLocks::acquire(&state, &dir.path().join("other")),
            Err(LockError::Held { .. })
        ));
        assert!(matches!(
            DirLocks::acquire(&dir.path().join("other2"), &pins),
            Err(LockError::Held { .. })
        ));
        drop(first);
        let _again = DirLocks::acquire(&state, &pins)?;
        Ok(())
    }
}
