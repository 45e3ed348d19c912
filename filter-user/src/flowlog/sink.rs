//! The flow-log file: JSON lines, rotated by size with a bounded number of
//! old files (`flows.log`, `flows.log.1` the newest old one, ...), and
//! reading it back for `filterctl flows`.
use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::record::{self, FlowFilter};
use crate::api::FlowRecord;

/// Where the file is and how it rotates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileConfig {
    pub path: PathBuf,
    /// The file is rotated before a write would take it past this size.
    pub max_bytes: u64,
    /// How many rotated files are kept (`path.1` .. `path.<keep>`).
    pub keep: usize,
}

/// The path of rotated file `n` (`flows.log.3`).
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Appends records to the flow-log file, rotating it by size.
#[derive(Debug)]
pub struct FileSink {
    config: FileConfig,
    file: Option<File>,
    size: u64,
    /// Held while files are renamed, and by readers while they open them,
    /// so a reader never sees one file twice or misses one.
    rotation: Arc<Mutex<()>>,
}

impl FileSink {
    pub fn new(config: FileConfig, rotation: Arc<Mutex<()>>) -> Self {
        FileSink {
            config,
            file: None,
            size: 0,
            rotation,
        }
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.config.path.parent() {
                if !dir.as_os_str().is_empty() {
                    fs::create_dir_all(dir)?;
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&self.config.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the flow-log file is not open"))
    }

    /// Appends `records`, one JSON line each, rotating first when they
    /// would take the file past its size limit. One write per call.
    pub fn write<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a FlowRecord>,
    ) -> io::Result<()> {
        let mut buf = String::new();
        for r in records {
            buf.push_str(&record::json(r));
            buf.push('\n');
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.open()?;
        if self.size > 0 && self.size + buf.len() as u64 > self.config.max_bytes {
            self.rotate()?;
        }
        let file = self.open()?;
        let result = file.write_all(buf.as_bytes());
        if result.is_err() {
            // Start over with a fresh handle (the file may have been
            // removed or the disk replaced).
            self.file = None;
        } else {
            self.size += buf.len() as u64;
        }
        result
    }

    /// `path.<keep-1>` → `path.<keep>`, ..., `path` → `path.1`; the oldest
    /// falls off.
    fn rotate(&mut self) -> io::Result<()> {
        let _guard = self
            .rotation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.file = None;
        let path = &self.config.path;
        if self.config.keep == 0 {
            return remove_if_there(path);
        }
        remove_if_there(&rotated(path, self.config.keep))?;
        for n in (1..self.config.keep).rev() {
            rename_if_there(&rotated(path, n), &rotated(path, n + 1))?;
        }
        rename_if_there(path, &rotated(path, 1))
    }
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_there(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The newest `limit` records that pass `filter`, oldest first, from the
/// rotated files and the current one. Lines that are not records (a line
/// cut short by a crash) are skipped.
pub fn history(
    config: &FileConfig,
    rotation: &Mutex<()>,
    filter: &FlowFilter,
    limit: usize,
) -> io::Result<Vec<FlowRecord>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // Open every file at once under the rotation lock; renames after that
    // do not change what the open handles read.
    let files: Vec<File> = {
        let _guard = rotation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut paths: Vec<PathBuf> = (1..=config.keep)
            .rev()
            .map(|n| rotated(&config.path, n))
            .collect();
        paths.push(config.path.clone());
        let mut files = Vec::new();
        for path in paths {
            match File::open(&path) {
                Ok(f) => files.push(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        files
    };
    let mut out: VecDeque<FlowRecord> = VecDeque::new();
    for file in files {
        for line in BufReader::new(file).lines() {
            let line = line?;
            let Ok(r) = serde_json::from_str::<FlowRecord>(&line) else {
                continue;
            };
            if filter.matches(&r) {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(r);
            }
        }
    }
    Ok(out.into())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use crate::{api::FlowsParams, flowlog::record::tests::tcp_record};

    fn numbered(n: u64) -> FlowRecord {
        FlowRecord {
            packets: Some(n),
            ..tcp_record()
        }
    }

    fn packets(records: &[FlowRecord]) -> Vec<u64> {
        records.iter().map(|r| r.packets.unwrap()).collect()
    }

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = record::json(&numbered(10)).len() as u64 + 1;
        let config = FileConfig {
            // Two records of two digits per file.
            path: dir.path().join("sub/flows.log"),
            max_bytes: 2 * line_len,
            keep: 2,
        };
        let rotation = Arc::new(Mutex::new(()));
        let mut sink = FileSink::new(config.clone(), Arc::clone(&rotation));
        for n in 10..19 {
            sink.write(&[numbered(n)]).unwrap();
        }
        let read = |p: PathBuf| -> Vec<u64> {
            fs::read_to_string(&p)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<FlowRecord>(l)
                        .unwrap()
                        .packets
                        .unwrap()
                })
                .collect()
        };
        assert_eq!(read(config.path.clone()), vec![18]);
        assert_eq!(read(rotated(&config.path, 1)), vec![16, 17]);
        assert_eq!(read(rotated(&config.path, 2)), vec![14, 15]);
        assert!(!rotated(&config.path, 3).exists());
        for p in [config.path.clone(), rotated(&config.path, 1)] {
            assert!(fs::metadata(&p).unwrap().len() <= config.max_bytes);
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&config.path).unwrap().permissions().mode() & 0o777,
            0o640
        );

        // History: oldest first, across the files, the newest `limit`.
        let all = FlowFilter::default();
        let h = history(&config, &rotation, &all, 100).unwrap();
        assert_eq!(packets(&h), vec![14, 15, 16, 17, 18]);
        let h = history(&config, &rotation, &all, 3).unwrap();
        assert_eq!(packets(&h), vec![16, 17, 18]);
        assert!(history(&config, &rotation, &all, 0).unwrap().is_empty());
        let other = FlowFilter::new(&FlowsParams {
            eni: Some("eni-none".into()),
            ..FlowsParams::default()
        })
        .unwrap();
        assert!(history(&config, &rotation, &other, 10).unwrap().is_empty());

        // A restarted daemon appends to what is there.
        let mut sink = FileSink::new(config.clone(), Arc::clone(&rotation));
        sink.write(&[numbered(19)]).unwrap();
        assert_eq!(read(config.path.clone()), vec![18, 19]);
    }

    #[test]
    fn a_batch_is_one_write_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileConfig {
            path: dir.path().join("flows.log"),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let rotation = Arc::new(Mutex::new(()));
        let mut sink = FileSink::new(config.clone(), Arc::clone(&rotation));
        sink.write(&[numbered(1), numbered(2)]).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&config.path)
            .unwrap()
            .write_all(b"{\"cut short\n")
            .unwrap();
        sink.write(&[numbered(3)]).unwrap();
        let h = history(&config, &rotation, &FlowFilter::default(), 10).unwrap();
        assert_eq!(packets(&h), vec![1, 2, 3]);
        // No file at all is no history, not an error.
        let none = FileConfig {
            path: dir.path().join("none.log"),
            ..config
        };
        assert!(history(&none, &rotation, &FlowFilter::default(), 10)
            .unwrap()
            .is_empty());
    }
}
