//! The state directory: every applied generation, saved so that a restarted
//! daemon restores the newest and `rollback` can go back (SPEC §4).
//!
//! ```text
//! <state-dir>/generations/0000000007.json   one GenerationRecord per file
//! <state-dir>/detached                      present after `detach`: restore nothing
//! ```
//!
//! Every file is written whole or not at all: write a temporary file, fsync
//! it, rename it into place, fsync the directory.
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

pub struct StateStore {
    root: PathBuf,
    generations: PathBuf,
}

impl StateStore {
    /// Opens (creating, mode 0700) the state directory.
    pub fn open(root: &Path) -> Result<StateStore, StoreError> {
        let generations = root.join("generations");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&generations)
            .map_err(io_error(&generations))?;
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

    /// Saves `record`, replacing any record of the same generation.
    pub fn save(&self, record: &GenerationRecord) -> Result<(), StoreError> {
        let path = self.record_path(record.generation);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        write_atomic(&path, &bytes)
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
        let bytes = match fs::read(&path) {
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
        let mut skipped = Vec::new();
        for generation in self.generations()?.into_iter().rev() {
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
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io_error(path))?;
    sync_dir(dir)
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
}
