//! Who may change what the host enforces (SPEC §5): calls that change
//! anything need uid 0 or the socket group, checked against the peer's
//! credentials from `SO_PEERCRED`.
use std::fs;

use nix::unistd::{Gid, Uid, User};
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
    /// groups: from `/proc/<pid>/status` (what the process really has), or
    /// from the group database when the process is gone.
    pub fn of(stream: &UnixStream) -> std::io::Result<PeerIdentity> {
        let cred = stream.peer_cred()?;
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        let groups = pid
            .and_then(proc_groups)
            .or_else(|| database_groups(uid, gid))
            .unwrap_or_default();
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

fn proc_groups(pid: i32) -> Option<Vec<u32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

fn database_groups(uid: u32, gid: u32) -> Option<Vec<u32>> {
    let user = User::from_uid(Uid::from_raw(uid)).ok()??;
    let name = std::ffi::CString::new(user.name).ok()?;
    let groups = nix::unistd::getgrouplist(&name, Gid::from_raw(gid)).ok()?;
    Some(groups.into_iter().map(Gid::as_raw).collect())
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

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> PeerIdentity {
        PeerIdentity {
            uid,
            gid,
            groups: groups.to_vec(),
            pid: None,
        }
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
