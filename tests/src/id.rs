//! Unique names for everything one test creates, and the check that none of
//! it outlives the test.
//!
//! A [`TestId`] is the test's name, the process id and a per-process counter.
//! Every namespace, interface and pin directory made through it carries that
//! triple in its name, so parallel tests and concurrent runs never collide,
//! and what a crashed run left behind can be recognised and swept.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{ip, run};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";
/// The bpffs mount point.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Every namespace made by these helpers starts with this.
const NETNS_PREFIX: &str = "ft-";
/// Every pin directory made by these helpers starts with this.
const PIN_PREFIX: &str = "filter-test-";
/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static NEXT: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// The identity of one test's resources.
#[derive(Clone, Debug)]
pub struct TestId {
    test: String,
    pid: u32,
    n: u32,
}

impl TestId {
    /// A fresh identity for the test `name` (any string; it is sanitised).
    pub fn new(name: &str) -> Self {
        Self {
            test: sanitize(name),
            pid: std::process::id(),
            n: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn test(&self) -> &str {
        &self.test
    }

    /// `ft-<test>-<pid>-<n>-`: the start of this identity's namespace names.
    pub fn netns_prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}-{}-{}-", self.test, self.pid, self.n)
    }

    /// The name of the namespace labelled `label`.
    pub fn netns_name(&self, label: &str) -> String {
        format!("{}{label}", self.netns_prefix())
    }

    /// `<3 letters of the test><pid base 36>-<n base 36>-`: the start of
    /// this identity's interface names (short: interface names are ≤ 15).
    pub fn ifname_prefix(&self) -> String {
        let mut tag: String = self
            .test
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(3)
            .collect();
        while tag.len() < 3 {
            tag.push('x');
        }
        format!("{tag}{}-{}-", base36(self.pid), base36(self.n))
    }

    /// The `k`-th interface name of this identity.
    pub fn ifname(&self, k: u32) -> Result<String> {
        let name = format!("{}{}", self.ifname_prefix(), base36(k));
        if name.len() > IFNAME_MAX {
            bail!("interface name {name:?} is longer than {IFNAME_MAX} bytes");
        }
        Ok(name)
    }

    /// This identity's private bpffs directory.
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(BPFFS).join(format!("{PIN_PREFIX}{}-{}-{}", self.test, self.pid, self.n))
    }

    /// Everything this identity made that still exists: namespaces,
    /// interfaces in the current namespace, the pin directory.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let ns_prefix = self.netns_prefix();
        for ns in list_netns()? {
            if ns.starts_with(&ns_prefix) {
                found.push(format!("network namespace {ns}"));
            }
        }
        let if_prefix = self.ifname_prefix();
        for link in list_links()? {
            if link.starts_with(&if_prefix) {
                found.push(format!("interface {link}"));
            }
        }
        let pins = self.pin_dir();
        if pins.exists() {
            found.push(format!("pin directory {}", pins.display()));
        }
        Ok(found)
    }

    /// Fails, naming each one, when anything of this identity is left.
    pub fn assert_nothing_left(&self) -> Result<()> {
        let found = self.leftovers()?;
        if !found.is_empty() {
            let mut msg = format!("test {} left resources behind:", self.test);
            for f in &found {
                let _ = write!(msg, "\n  {f}");
            }
            bail!(msg);
        }
        Ok(())
    }
}

/// Every test namespace of this process with the test name `test` (all
/// identities) that still exists; for a test that wants to check more than
/// one identity at once.
pub fn leftovers_of_test(test: &str) -> Result<Vec<String>> {
    let (test, pid) = (sanitize(test), std::process::id());
    let start = format!("{NETNS_PREFIX}{test}-{pid}-");
    let pin_start = format!("{PIN_PREFIX}{test}-{pid}-");
    let mut found: Vec<String> = list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(&start))
        .collect();
    found.extend(
        list_dir(Path::new(BPFFS))?
            .into_iter()
            .filter(|n| n.starts_with(&pin_start)),
    );
    Ok(found)
}

/// Lower-case ASCII letters, digits and `_` (a `-` would break the names'
/// `-`-separated fields), at most 40 bytes.
fn sanitize(name: &str) -> String {
    let mut test: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    test.truncate(40);
    // A leading letter tells these names from other tools' `<prefix><pid>-<n>`.
    if !test.starts_with(|c: char| c.is_ascii_lowercase()) {
        test.insert(0, 't');
    }
    test
}

fn base36(mut v: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("listing {}", dir.display())),
    }
}

/// Names of the namespaces `ip netns` knows.
pub fn list_netns() -> Result<Vec<String>> {
    list_dir(Path::new(NETNS_DIR))
}

/// Names of the interfaces in the calling thread's network namespace.
pub fn list_links() -> Result<Vec<String>> {
    let out = run(ip().args(["-o", "link", "show"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
        .collect())
}

/// The pid inside a name these helpers made: `<prefix><test>-<pid>-<n>`,
/// then `-<label>` for a namespace. `None` for any other name.
fn pid_of(name: &str, prefix: &str) -> Option<u32> {
    let fields: Vec<&str> = name.strip_prefix(prefix)?.split('-').collect();
    let numeric = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit());
    let well_formed = match fields.as_slice() {
        [test, pid, n, rest @ ..] => {
            test.starts_with(|c: char| c.is_ascii_lowercase())
                && numeric(pid)
                && numeric(n)
                && (rest.is_empty() == (prefix == PIN_PREFIX))
        }
        _ => false,
    };
    if well_formed {
        fields[1].parse().ok()
    } else {
        None
    }
}

/// Once per process: [`sweep_stale`]. The guards call this before they
/// create anything.
pub(crate) fn sweep_stale_once() {
    SWEEP.call_once(sweep_stale);
}

/// Removes namespaces and pin directories of test processes that no longer
/// run (a test killed before its guards dropped).
pub fn sweep_stale() {
    let alive = |pid: u32| Path::new("/proc").join(pid.to_string()).exists();
    for ns in list_netns().unwrap_or_default() {
        if pid_of(&ns, NETNS_PREFIX).is_some_and(|pid| !alive(pid)) {
            let _ = run(ip().args(["netns", "delete", &ns]));
        }
    }
    for dir in list_dir(Path::new(BPFFS)).unwrap_or_default() {
        if pid_of(&dir, PIN_PREFIX).is_some_and(|pid| !alive(pid)) {
            let _ = fs::remove_dir_all(Path::new(BPFFS).join(dir));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_recognisable() {
        let a = TestId::new("e2e veth/attach");
        let b = TestId::new("e2e veth/attach");
        assert_eq!(a.test(), "e2e_veth_attach");
        assert_ne!(a.netns_prefix(), b.netns_prefix());
        assert_ne!(a.ifname_prefix(), b.ifname_prefix());
        assert!(a.netns_name("left").starts_with("ft-e2e_veth_attach-"));
        for k in [0, 35, 36, 1295] {
            let name = a.ifname(k).unwrap_or_default();
            assert!(!name.is_empty() && name.len() <= IFNAME_MAX, "{name}");
        }
        assert_eq!(
            pid_of(&a.netns_name("x"), NETNS_PREFIX),
            Some(std::process::id())
        );
        let pin = a.pin_dir();
        let pin = pin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert_eq!(pid_of(&pin, PIN_PREFIX), Some(std::process::id()));
    }

    #[test]
    fn sweep_only_recognises_its_own_names() {
        assert_eq!(pid_of("filter-test-e2e-12-3", PIN_PREFIX), Some(12));
        assert_eq!(pid_of("ft-e2e-12-3-left", NETNS_PREFIX), Some(12));
        // Other tools' names, and ours with a missing or extra field.
        assert_eq!(pid_of("filter-test-12-3", PIN_PREFIX), None);
        assert_eq!(pid_of("filter-test-e2e-12-3-x", PIN_PREFIX), None);
        assert_eq!(pid_of("ft-e2e-12-3", NETNS_PREFIX), None);
        assert_eq!(pid_of("fdp12-3", NETNS_PREFIX), None);
        assert_eq!(sanitize("42"), "t42");
    }

    #[test]
    fn worst_case_ifname_fits() {
        // pid_max is at most 2^22; 1295 is the last two-digit base-36 count.
        let id = TestId {
            test: "abcdef".into(),
            pid: 4_194_304,
            n: 1295,
        };
        assert_eq!(id.ifname(1295).ok().as_deref(), Some("abc2hwcg-zz-zz"));
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
