//! Who may change what the host enforces (SPEC §5): calls that change
//! anything need uid 0 or the socket group, checked against the peer's
//! credentials from `SO_PEERCRED` and `SO_PEERGROUPS`.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use nix::unistd::Uid;
use tokio::net::UnixStream;

use crate::api::{ApiError, ErrorCode, Method};

/// The credentials of the process at the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub pid: Option<i32>,
}

impl PeerIdentity {
    /// Reads the peer's credentials (`SO_PEERCRED`) and its supplementary
    /// groups (`SO_PEERGROUPS`), both as the kernel recorded them when the
    /// peer connected: `/proc/<pid>/status` could name another process
    /// once the pid is reused.
    pub fn of(stream: &UnixStream) -> io::Result<PeerIdentity> {
        let cred = stream.peer_cred()?;
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        let groups = peer_groups(stream.as_fd())?;
        Ok(PeerIdentity {
            uid,
            gid,
            groups,
            pid,
        })
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// `SO_PEERGROUPS` of a connected Unix socket (Linux 4.13). The kernel
/// answers `ERANGE` with the size it needs when the buffer is too small
/// (up to `NGROUPS_MAX`, 65,536 groups).
fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    const GID: usize = size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    // Twice at most: the second try has the size the first was told.
    for _ in 0..2 {
        let mut len = libc::socklen_t::try_from(groups.len() * GID)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `groups` is writable for `len` bytes, and the kernel
        // writes at most `len` and stores the length it wrote in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = usize::try_from(len).unwrap_or(usize::MAX) / GID;
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || needed <= groups.len() {
            return Err(e);
        }
        groups.resize(needed, 0);
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

/// Whether a call changes what the host enforces, so the peer must be
/// root or in the socket group (SPEC §5): a mutating method, except an
/// `apply` with `dry_run: true`, which only reads.
pub fn changes_state(method: Method, params: &serde_json::Value) -> bool {
    let dry_run =
        method == Method::Apply && params.get("dry_run") == Some(&serde_json::Value::Bool(true));
    method.is_mutating() && !dry_run
}

/// Who may call mutating methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// `--socket-group`, resolved.
    pub socket_group: Option<u32>,
    /// The daemon's own uid. Root in production; a peer running as the
    /// daemon's own user could change its state anyway (and this lets the
    /// unprivileged tests drive a daemon).
    pub daemon_uid: u32,
}

impl Access {
    pub fn new(socket_group: Option<u32>) -> Access {
        Access {
            socket_group,
            daemon_uid: Uid::effective().as_raw(),
        }
    }
}

/// Whether `peer` may call `method`: anyone may read; changes need uid 0,
/// the daemon's uid, or membership of the socket group.
pub fn authorize(method: Method, peer: &PeerIdentity, access: &Access) -> Result<(), ApiError> {
    if !method.is_mutating()
        || peer.uid == 0
        || peer.uid == access.daemon_uid
        || access.socket_group.is_some_and(|g| peer.in_group(g))
    {
        return Ok(());
    }
    let who = match access.socket_group {
        Some(g) => format!("root or a member of group {g} (--socket-group)"),
        None => "root (filterd has no --socket-group)".to_owned(),
    };
    Err(ApiError::new(
        ErrorCode::PermissionDenied,
        format!(
            "{method} changes what the host enforces and needs {who}; you are uid {} gid {}",
            peer.uid, peer.gid
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The groups are the ones the peer had when it connected, read from
    /// the socket: here the peer has exited (no /proc entry) and had set
    /// groups of its own that its user does not have in the database.
    #[tokio::test]
    #[expect(clippy::unwrap_used, reason = "test code")]
    async fn supplementary_groups_come_from_the_socket() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: setgroups needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let addr = nix::sys::socket::UnixAddr::new(&path).unwrap();
        let wanted: [libc::gid_t; 3] = [4242, 4343, 4444];
        // SAFETY: the child makes raw system calls only, then `_exit`s.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe {
                let ok = libc::setgroups(wanted.len(), wanted.as_ptr()) == 0;
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let connected = libc::connect(
                    fd,
                    nix::sys::socket::SockaddrLike::as_ptr(&addr),
                    nix::sys::socket::SockaddrLike::len(&addr),
                ) == 0;
                libc::_exit(if ok && connected { 0 } else { 1 });
            },
            nix::unistd::ForkResult::Parent { child } => child,
        };
        let (stream, _) = listener.accept().await.unwrap();
        let status = nix::sys::wait::waitpid(child, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        let peer = PeerIdentity::of(&stream).unwrap();
        assert_eq!(peer.groups, wanted.to_vec());
        assert!(peer.in_group(4343));
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> PeerIdentity {
        PeerIdentity {
            uid,
            gid,
            groups: groups.to_vec(),
            pid: None,
        }
    }

    #[test]
    fn a_dry_run_only_reads() {
        use serde_json::json;
        assert!(!changes_state(
            Method::Apply,
            &json!({"document": "{}", "dry_run": true})
        ));
        assert!(changes_state(
            Method::Apply,
            &json!({"document": "{}", "dry_run": false})
        ));
        assert!(changes_state(Method::Apply, &json!({"document": "{}"})));
        // Only apply has a dry run.
        assert!(changes_state(Method::Rollback, &json!({"dry_run": true})));
        assert!(!changes_state(Method::Status, &json!({})));
    }

    #[test]
    fn mutating_needs_root_or_group() {
        let with_group = Access {
            socket_group: Some(990),
            daemon_uid: 0,
        };
        let without = Access {
            socket_group: None,
            daemon_uid: 0,
        };
        for method in Method::ALL {
            // Reading is for everyone who can open the socket.
            if !method.is_mutating() {
                assert!(
                    authorize(method, &peer(1000, 1000, &[]), &without).is_ok(),
                    "{method}"
                );
                continue;
            }
            assert!(authorize(method, &peer(0, 0, &[]), &without).is_ok());
            assert!(authorize(method, &peer(1000, 990, &[]), &with_group).is_ok());
            assert!(authorize(method, &peer(1000, 1000, &[27, 990]), &with_group).is_ok());
            let denied = authorize(method, &peer(1000, 1000, &[27]), &with_group);
            assert!(
                matches!(
                    denied,
                    Err(ApiError {
                        code: ErrorCode::PermissionDenied,
                        ..
                    })
                ),
                "{method}"
            );
            assert!(authorize(method, &peer(1000, 990, &[990]), &without).is_err());
        }
        // The daemon's own user.
        let own = Access {
            socket_group: None,
            daemon_uid: 1000,
        };
        assert!(authorize(Method::Apply, &peer(1000, 1000, &[]), &own).is_ok());
        assert!(authorize(Method::Apply, &peer(1001, 1000, &[]), &own).is_err());
    }
}
