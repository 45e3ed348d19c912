//! A private bpffs directory per test, removed on drop.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

use crate::id::{sweep_stale_once, TestId, BPFFS};

/// `/sys/fs/bpf/filter-test-<test>-<pid>-<n>`, created empty and removed
/// with everything pinned in it when dropped (unlinking a pin releases the
/// map, program or link unless something else still holds it).
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    pub fn new(id: &TestId) -> Result<Self> {
        crate::require_root()?;
        ensure_bpffs()?;
        sweep_stale_once();
        let path = id.pin_dir();
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/<name>`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "filter-tests: could not remove {}: {e}",
                self.path.display()
            ),
        }
    }
}

/// Whether a bpffs is mounted at `/sys/fs/bpf`.
pub fn bpffs_mounted() -> bool {
    statfs(BPFFS).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs at `/sys/fs/bpf` when it is not there (TOOLCHAIN.md: a
/// fresh machine has none).
pub fn ensure_bpffs() -> Result<()> {
    if bpffs_mounted() {
        return Ok(());
    }
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting bpffs at {BPFFS}"))?;
    if !bpffs_mounted() {
        bail!("{BPFFS} is still not a bpffs after mounting one");
    }
    Ok(())
}
