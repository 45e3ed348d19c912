//! The state directory: every applied generation, saved so that a restarted
//! daemon restores the newest and `rollback` can go back (SPEC §4).
//!
//! ```text
//! <state-dir>/generations/0000000007.json   one GenerationRecord per file
//! <state-dir>/detached                      present after `detach`: restore nothing
//! ```
//!
//! Every file is written whole or not at all: write a temporary file, fsync
//! it, rename it into place, fsync the directory. A process killed midway
//! leaves a `.<name>.tmp`, which the next [`StateStore::open`] removes.
//! Nothing here follows a symlink (`O_NOFOLLOW`): a link planted in the
//! directory cannot make the daemon read or write a file elsewhere.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::compile::SlotTable;

/// The format of a [`GenerationRecord`] file.
pub const RECORD_FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a generation record: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How a generation came to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// `apply`.
    Apply,
    /// `filterd --ruleset FILE`.
    Startup,
    /// `rollback` to the saved generation `from`.
    Rollback { from: u32 },
    /// Restored at start from the saved generation `from`, as a new number
    /// because the data plane no longer ran `from`.
    Restore { from: u32 },
    /// Built from etcd's keys as of this revision (SPEC §10).
    Fleet { revision: i64 },
}

/// One applied generation, as saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    pub generation: u32,
    /// Unix seconds.
    pub applied_at: u64,
    pub origin: Origin,
    /// The document, byte for byte as applied.
    pub document: String,
    /// The slot table after compiling this generation (`null`, as records
    /// of enforcers without one have it, reads as an empty table).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub slots: SlotTable,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SlotTable, D::Error> {
    Ok(Option::<SlotTable>::deserialize(d)?.unwrap_or_default())
}

/// The state directory's files. Only paths: a clone reads the same records.
#[derive(Clone, Debug)]
pub struct StateStore {
    root: PathBuf,
    generations: PathBuf,
}

impl StateStore {
    /// Opens (creating, mode 0700) the state directory, and removes the
    /// temporary files of writes that a killed process left unfinished.
    pub fn open(root: &Path) -> Result<StateStore, StoreError> {
        let generations = root.join("generations");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&generations)
            .map_err(io_error(&generations))?;
        for dir in [root, &generations] {
            remove_unfinished(dir);
        }
        Ok(StateStore {
            root: root.to_owned(),
            generations,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn record_path(&self, generation: u32) -> PathBuf {
        self.generations.join(format!("{generation:010}.json"))
    }

    /// Saves `record`, replacing any record of the same generation. The
    /// text goes straight to the file: at 100k rules a buffer of it was
    /// 20 MB more at the apply's peak.
    pub fn save(&self, record: &GenerationRecord) -> Result<(), StoreError> {
        write_atomic_with(&self.record_path(record.generation), |file| {
            let mut out = io::BufWriter::new(file);
            serde_json::to_writer_pretty(&mut out, record).map_err(io::Error::other)?;
            out.flush()
        })
    }

    /// The saved generations, oldest first.
    pub fn generations(&self) -> Result<Vec<u32>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.generations).map_err(io_error(&self.generations))? {
            let entry = entry.map_err(io_error(&self.generations))?;
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            out.push(number);
        }
        out.sort_unstable();
        Ok(out)
    }

    pub fn load(&self, generation: u32) -> Result<Option<GenerationRecord>, StoreError> {
        let path = self.record_path(generation);
        let bytes = match read_no_follow(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source })
    }

    /// The newest record that reads back, with the errors of newer ones
    /// that did not (a torn disk, a hand edit).
    pub fn newest(&self) -> Result<(Option<GenerationRecord>, Vec<StoreError>), StoreError> {
        self.newest_up_to(u32::MAX)
    }

    /// [`Self::newest`] among the generations up to `limit`.
    pub fn newest_up_to(
        &self,
        limit: u32,
    ) -> Result<(Option<GenerationRecord>, Vec<StoreError>), StoreError> {
        let mut skipped = Vec::new();
        for generation in self.generations()?.into_iter().rev() {
            if generation > limit {
                continue;
            }
            match self.load(generation) {
                Ok(Some(record)) => return Ok((Some(record), skipped)),
                Ok(None) => {}
                Err(e) => skipped.push(e),
            }
        }
        Ok((None, skipped))
    }

    pub fn remove(&self, generation: u32) -> Result<(), StoreError> {
        let path = self.record_path(generation);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.generations),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Keeps the newest `keep` records; returns the generations removed.
    pub fn prune(&self, keep: usize) -> Result<Vec<u32>, StoreError> {
        let all = self.generations()?;
        let excess = all.len().saturating_sub(keep);
        let removed = all[..excess].to_vec();
        for generation in &removed {
            self.remove(*generation)?;
        }
        Ok(removed)
    }

    fn detached_path(&self) -> PathBuf {
        self.root.join("detached")
    }

    /// Whether the last thing done was `detach`: a restarted daemon then
    /// restores nothing until the next apply or rollback.
    pub fn is_detached(&self) -> bool {
        self.detached_path().exists()
    }

    pub fn set_detached(&self, detached: bool) -> Result<(), StoreError> {
        let path = self.detached_path();
        if detached {
            write_atomic(
                &path,
                b"detached by `filterctl detach`; the next apply or rollback clears this\n",
            )
        } else {
            match fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.root),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(&path)(e)),
            }
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a mix: temporary file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_with(path, |mut file| file.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes into the file.
fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&File) -> io::Result<()>,
) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let attempt = || -> io::Result<()> {
        // Whatever is at `tmp` (a leftover, or a link planted there) goes:
        // the new file is created fresh, never opened through a link.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        write(&file)?;
        file.sync_all()
    };
    if let Err(e) = attempt() {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io_error(path))?;
    sync_dir(dir)
}

/// Reads a file, refusing a symlink (`ELOOP`).
fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// Removes the `.<name>.tmp` files of [`write_atomic`]s that never
/// finished (the process was killed between write and rename).
fn remove_unfinished(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    "removed {}, left by a write that never finished",
                    entry.path().display()
                ),
                Err(e) => tracing::warn!("{}: {e}", entry.path().display()),
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u32) -> GenerationRecord {
        GenerationRecord {
            format: RECORD_FORMAT,
            generation,
            applied_at: 1_700_000_000 + u64::from(generation),
            origin: Origin::Apply,
            document: format!("{{\"n\": {generation}}}"),
            slots: SlotTable::default(),
        }
    }

    #[test]
    fn save_load_prune() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = StateStore::open(dir.path())?;
        assert_eq!(store.newest()?.0, None);
        for g in 1..=12 {
            store.save(&record(g))?;
        }
        assert_eq!(store.generations()?, (1..=12).collect::<Vec<_>>());
        assert_eq!(store.prune(10)?, vec![1, 2]);
        assert_eq!(store.generations()?, (3..=12).collect::<Vec<_>>());
        assert_eq!(store.load(7)?, Some(record(7)));
        assert_eq!(store.load(1)?, None);
        // A corrupt newest record is skipped, and said so.
        fs::write(store.record_path(13), b"{not json")?;
        let (newest, skipped) = store.newest()?;
        assert_eq!(newest, Some(record(12)));
        assert_eq!(skipped.len(), 1);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&store.generations)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().starts_with('.')),
            "{names:?}"
        );
        assert!(!store.is_detached());
        store.set_detached(true)?;
        assert!(store.is_detached());
        store.set_detached(false)?;
        assert!(!store.is_detached());
        Ok(())
    }

    /// Links planted in the state directory lead nowhere: a record that
    /// is a link is refused, a link at a temporary file's name is
    /// replaced rather than written through, and leftovers of a killed
    /// write go at the next open.
    #[test]
    fn links_are_not_followed_and_leftovers_go() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let outside = dir.path().join("outside");
        fs::write(&outside, b"not the daemon's")?;
        let store = StateStore::open(&dir.path().join("state"))?;
        store.save(&record(1))?;
        std::os::unix::fs::symlink(&outside, store.record_path(2))?;
        let (newest, skipped) = store.newest()?;
        assert_eq!(newest, Some(record(1)));
        assert!(
            matches!(&skipped[..], [StoreError::Io { source, .. }] if source.raw_os_error() == Some(libc::ELOOP)),
            "{skipped:?}"
        );
        fs::remove_file(store.record_path(2))?;
        std::os::unix::fs::symlink(&outside, store.generations.join(".0000000003.json.tmp"))?;
        store.save(&record(3))?;
        assert_eq!(fs::read(&outside)?, b"not the daemon's");
        assert_eq!(store.load(3)?, Some(record(3)));
        assert_eq!(store.newest_up_to(2)?.0, Some(record(1)));

        fs::write(store.generations.join(".0000000004.json.tmp"), b"{\"torn")?;
        fs::write(store.root.join(".detached.tmp"), b"")?;
        let store = StateStore::open(&dir.path().join("state"))?;
        let leftovers = [store.generations.clone(), store.root.clone()]
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().filter_map(|e| e.ok()))
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
        assert_eq!(store.generations()?, [1, 3]);
        Ok(())
    }
}
