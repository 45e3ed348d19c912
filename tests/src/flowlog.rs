//! Reading what `filterd` wrote to its flow-log file (SPEC §7).
use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{ensure, Context as _, Result};
use filter::api::FlowRecord;

/// The Unix second now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every record of the flow-log file (and its rotated files, oldest first),
/// as far as it is written.
pub fn read_log(path: &Path) -> Result<Vec<FlowRecord>> {
    let mut files: Vec<PathBuf> = (1..=10)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_owned());
    let mut out = Vec::new();
    for file in files {
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        // A window being written may end in a partial line: not yet.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in complete.lines() {
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{}: not a record: {line}", file.display()))?,
            );
        }
    }
    Ok(out)
}

/// Waits until the file has a record of a window that ended at or after
/// `unix` (every earlier window is then closed).
pub fn wait_for_window_end(path: &Path, unix: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if read_log(path)?.iter().any(|r| r.end >= unix) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no capture window ending at {unix} or later reached {}",
            path.display()
        );
        thread::sleep(Duration::from_millis(200));
    }
}
