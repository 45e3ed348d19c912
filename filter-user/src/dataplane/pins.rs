//! bpffs: mounting it, the layout of a pin directory, its lock, and
//! removing everything (`filterctl detach`).
//!
//! Layout of a pin directory (default `/sys/fs/bpf/filterd`, SPEC §4):
//!
//! ```text
//! <pin>/FILTER_ACTIVE, FILTER_ENIS, ...   every state map, by its name
//! <pin>/FILTER_EVENTS                     the flow-log ring of this process
//! <pin>/progs/filter_xdp, filter_tc       the programs last loaded
//! <pin>/links/<ifname>-xdp                XDP link of a guarded interface
//! <pin>/links/<ifname>-tc                 TC (tcx) egress link
//! ```
//!
//! The links keep the programs attached (and the programs keep the maps
//! alive) after the daemon exits: enforcement goes on, fail closed. A
//! restarted daemon adopts the maps by name, so the running generation and
//! the conntrack table survive, and swaps its freshly loaded programs into
//! the pinned links atomically (`BPF_LINK_UPDATE`).
//!
//! The directory is locked (`flock`, exclusive) by the process that owns it,
//! the way xdp-tools does: two writers never interleave generations.
use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
    mount::MsFlags,
    sys::statfs::{statfs, BPF_FS_MAGIC},
};
use std::os::fd::AsFd as _;

use super::{
    error::{DataplaneError, Result},
    sys,
};

/// Where bpffs is mounted by default.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Subdirectory of a pin directory holding the pinned links.
pub const LINKS_DIR: &str = "links";
/// Subdirectory of a pin directory holding the pinned programs.
pub const PROGS_DIR: &str = "progs";

/// Whether `path` lies on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs at `/sys/fs/bpf` unless it is mounted already (SPEC §4).
pub fn ensure_bpffs() -> Result<()> {
    // Two threads mounting at once would stack two bpffs instances, and
    // pins made in the lower one would vanish from view.
    static MOUNTING: Mutex<()> = Mutex::new(());
    let _guard = MOUNTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = Path::new(BPFFS);
    if is_bpffs(path) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|source| DataplaneError::MountBpffs {
        path: path.to_owned(),
        source,
    })
}

/// Where [`retire_maps`] moves the pins of maps of another build's layout.
pub const RETIRED_DIR: &str = "retired";

/// Moves the pinned maps named `names` out of the way, into
/// `retired/` (an upgrade over another layout, SPEC §8): the maps live on
/// for as long as the old programs, which still enforce with them, and
/// their names are free for this build's. Returns whether any was pinned.
pub(crate) fn retire_maps(pin_dir: &Path, names: &[&str]) -> Result<bool> {
    let retired = pin_dir.join(RETIRED_DIR);
    fs::create_dir_all(&retired)
        .map_err(|e| DataplaneError::io("creating pin directory", &retired, e))?;
    let mut any = false;
    for name in names {
        let from = pin_dir.join(name);
        match fs::rename(&from, retired.join(name)) {
            Ok(()) => any = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DataplaneError::io("retiring pinned map", &from, e)),
        }
    }
    Ok(any)
}

/// Removes the retired maps' pins: once no old program holds them, the
/// kernel frees them.
pub(crate) fn remove_retired(pin_dir: &Path) -> Result<()> {
    let retired = pin_dir.join(RETIRED_DIR);
    match fs::remove_dir_all(&retired) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataplaneError::io("removing retired maps", &retired, e)),
    }
}

/// Removes what is pinned at `path`, if anything, to pin anew there.
pub(crate) fn remove_stale_pin(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataplaneError::io("removing a stale pin", path, e)),
    }
}

/// Pins `map` at `path` in place of what is pinned there, in one step: it
/// is pinned beside, then renamed over, so `path` always names a map.
pub(crate) fn pin_over(map: &aya::maps::MapData, path: &Path) -> Result<()> {
    let mut beside = path.as_os_str().to_owned();
    // (bpffs refuses names with a dot.)
    beside.push("-new");
    let beside = PathBuf::from(beside);
    remove_stale_pin(&beside)?;
    map.pin(&beside).map_err(|source| DataplaneError::Pin {
        path: beside.clone(),
        source,
    })?;
    fs::rename(&beside, path).map_err(|e| DataplaneError::io("pinning over", path, e))
}

/// The pin path of the XDP or TC link of an interface.
pub fn link_pin_path(pin_dir: &Path, ifname: &str, hook: Hook) -> PathBuf {
    pin_dir
        .join(LINKS_DIR)
        .join(format!("{ifname}-{}", hook.suffix()))
}

/// The interfaces with a pinned link under `pin_dir`
/// (`links/<ifname>-xdp`, `-tci`, `-tc`).
pub fn pinned_interfaces(pin_dir: &Path) -> std::collections::BTreeSet<String> {
    let Ok(entries) = fs::read_dir(pin_dir.join(LINKS_DIR)) else {
        return Default::default();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Hook::ALL
                .into_iter()
                .find_map(|hook| name.strip_suffix(&format!("-{}", hook.suffix())))
                .map(str::to_owned)
        })
        .collect()
}

/// The hooks an interface gets a program on: one of the two ingress hooks,
/// and the egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP: the interface's ingress.
    Xdp,
    /// tcx egress.
    Tc,
    /// tcx ingress.
    TcIngress,
}

impl Hook {
    pub(crate) const ALL: [Hook; 3] = [Hook::Xdp, Hook::Tc, Hook::TcIngress];

    pub(crate) const fn suffix(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Tc => "tc",
            Self::TcIngress => "tci",
        }
    }
}

/// A pin directory that this process owns: created, on bpffs, and locked
/// for as long as the value lives.
#[derive(Debug)]
pub(crate) struct PinDir {
    root: PathBuf,
    _lock: Flock<File>,
}

impl PinDir {
    /// Mounts bpffs if needed, creates `root` (and `links/`, `progs/`) and
    /// takes the lock.
    pub(crate) fn open(root: &Path) -> Result<Self> {
        ensure_bpffs()?;
        fs::create_dir_all(root)
            .map_err(|e| DataplaneError::io("creating pin directory", root, e))?;
        if !is_bpffs(root) {
            return Err(DataplaneError::NotBpffs {
                path: root.to_owned(),
            });
        }
        for sub in [LINKS_DIR, PROGS_DIR] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir)
                .map_err(|e| DataplaneError::io("creating pin directory", &dir, e))?;
        }
        let lock = lock(root)?;
        Ok(Self {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
}

/// Takes the exclusive lock of a pin directory without waiting.
fn lock(root: &Path) -> Result<Flock<File>> {
    let dir = File::open(root).map_err(|e| DataplaneError::io("opening pin directory", root, e))?;
    Flock::lock(dir, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            DataplaneError::PinDirBusy {
                path: root.to_owned(),
            }
        } else {
            DataplaneError::io("locking pin directory", root, io::Error::from(errno))
        }
    })
}

/// Detaches the link pinned at `path` now (whoever else still holds it)
/// and removes the pin. Returns whether there was one.
pub(crate) fn remove_pinned_link(path: &Path) -> Result<bool> {
    let fd = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(DataplaneError::io("opening pinned link", path, e)),
    };
    // Best effort: without BPF_LINK_DETACH (kernels before 5.9) the link
    // goes when its last reference, the pin or an fd, is gone.
    if let Err(e) = sys::link_detach(fd.as_fd()) {
        tracing::debug!("BPF_LINK_DETACH {}: {e}", path.display());
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(DataplaneError::io("removing link pin", path, e)),
    }
}

/// What [`detach_all_pinned`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetachReport {
    /// Pin paths of the links that were detached.
    pub links: Vec<PathBuf>,
    /// Whether the pin directory existed (and was removed).
    pub removed_dir: bool,
}

/// `filterctl detach` (SPEC §4): detaches every link pinned under
/// `pin_dir`, then removes the maps, the programs and the directory itself.
/// Tracked connections and the running generation are gone afterwards.
///
/// Fails with [`DataplaneError::PinDirBusy`] while a daemon holds the
/// directory; a daemon detaches through [`super::Dataplane::destroy`].
pub fn detach_all_pinned(pin_dir: &Path) -> Result<DetachReport> {
    if !pin_dir.exists() {
        return Ok(DetachReport::default());
    }
    let _lock = lock(pin_dir)?;
    remove_pin_dir(pin_dir)
}

/// Removes a pin directory whose lock the caller holds.
pub(crate) fn remove_pin_dir(pin_dir: &Path) -> Result<DetachReport> {
    let mut report = DetachReport::default();
    let links = pin_dir.join(LINKS_DIR);
    match fs::read_dir(&links) {
        Ok(entries) => {
            let mut paths = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| DataplaneError::io("listing", &links, e))?;
                paths.push(entry.path());
            }
            paths.sort();
            for path in paths {
                if remove_pinned_link(&path)? {
                    report.links.push(path);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DataplaneError::io("listing", &links, e)),
    }
    match fs::remove_dir_all(pin_dir) {
        Ok(()) => report.removed_dir = true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DataplaneError::io("removing pin directory", pin_dir, e)),
    }
    Ok(report)
}
