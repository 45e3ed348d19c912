//! The open-file limit the client slots need.
//!
//! Each client holds a file descriptor, and so do the maps, programs and
//! links. systemd (and most shells) give a process a soft limit of 1024
//! with a much higher hard limit, and expect a program that needs more to
//! raise its soft limit itself (it never calls `select`, so it can).
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors beyond the clients: maps, programs and links (a few per
/// guarded interface), netlink, the flow-log file, the state dir, the
/// metrics and etcd connections.
pub const OTHER_FILES: u64 = 1024;

/// What [`raise_open_file_limit`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit: the most the soft limit can become.
    pub hard: u64,
    /// What `max_clients` clients and [`OTHER_FILES`] need.
    pub needed: u64,
}

impl OpenFileLimit {
    /// Whether the limit in force fits what is needed.
    pub fn fits(&self) -> bool {
        self.soft >= self.needed
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit when it is below what
/// `max_clients` clients need (never lowers it).
pub fn raise_open_file_limit(max_clients: usize) -> nix::Result<OpenFileLimit> {
    let needed = (max_clients as u64).saturating_add(OTHER_FILES);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let mut limit = OpenFileLimit { soft, hard, needed };
    if soft < needed && soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        limit.soft = hard;
    }
    Ok(limit)
}
