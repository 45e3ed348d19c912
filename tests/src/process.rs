//! What `/proc` says about a process (the daemon under load): its memory,
//! its open descriptors, its open-file limit.
use std::fs;

use anyhow::{bail, Context as _, Result};

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// How many descriptors `pid` has open.
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd"))?
        .count())
}

/// The soft and hard open-file limits of `pid`.
pub fn open_file_limit(pid: u32) -> Result<(u64, u64)> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits"))
        .with_context(|| format!("reading /proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .with_context(|| format!("no open-file limit in /proc/{pid}/limits"))?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers.as_slice() {
        [soft, hard, ..] => Ok((*soft, *hard)),
        _ => bail!("cannot read {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() -> Result<()> {
        let pid = std::process::id();
        assert!(rss_kib(pid)? > 0);
        assert!(open_fds(pid)? >= 3);
        let (soft, hard) = open_file_limit(pid)?;
        assert!(soft <= hard);
        Ok(())
    }
}
