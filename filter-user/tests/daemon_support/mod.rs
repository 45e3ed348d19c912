//! A daemon with the in-memory enforcer on a socket in a temporary
//! directory, and the documents the daemon tests apply. No privileges
//! needed.
#![allow(dead_code, reason = "each test file uses part of the support code")]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use filter::{
    api::client::Client,
    daemon::{
        library::LibraryValidator, serve, Daemon, DaemonConfig, DaemonError, DirLocks,
        ServerConfig, Started,
    },
};
use tempfile::TempDir;

mod memory;
pub use memory::*;
use tokio::{net::UnixListener, sync::oneshot, task::JoinHandle};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Where one daemon keeps things: `<root>/state`, `<root>/pins`,
/// `<root>/filterd.sock`.
pub struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    pub fn new(root: &Path) -> Dirs {
        Dirs {
            root: root.to_owned(),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn pins(&self) -> PathBuf {
        self.root.join("pins")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("run/filterd.sock")
    }
}

pub struct TestDaemon {
    pub dirs: Dirs,
    pub enforcer: MemoryEnforcer,
    pub daemon: Arc<Daemon<MemoryEnforcer>>,
    pub started: Started,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    // Last: the socket file goes when the daemon is done with it.
    _socket: filter::daemon::socket::BoundSocket,
}

/// Every interface exists (the documents name made-up ones).
pub fn validator() -> Arc<LibraryValidator> {
    Arc::new(LibraryValidator::any_interface())
}

impl TestDaemon {
    /// A daemon with default limits in `dirs`, on `enforcer`'s data plane.
    pub async fn start(dirs: Dirs, enforcer: MemoryEnforcer) -> Result<TestDaemon, DaemonError> {
        Self::start_with(dirs, enforcer, ServerConfig::default(), None).await
    }

    pub async fn start_with(
        dirs: Dirs,
        enforcer: MemoryEnforcer,
        server: ServerConfig,
        ruleset: Option<String>,
    ) -> Result<TestDaemon, DaemonError> {
        let locks = DirLocks::acquire(&dirs.state(), &dirs.pins())?;
        let daemon = Daemon::open(
            DaemonConfig::new(dirs.state(), dirs.pins()),
            locks,
            enforcer.clone(),
            validator(),
        )?;
        let started = daemon.start(ruleset)?;
        let daemon = Arc::new(daemon);
        let socket = filter::daemon::socket::bind(&dirs.socket(), None)
            .map_err(|e| DaemonError::Internal(e.to_string()))?;
        let listener = socket
            .try_clone_listener()
            .and_then(UnixListener::from_std)
            .map_err(|e| DaemonError::Internal(e.to_string()))?;
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&daemon), server, async move {
            let _ = rx.await;
        }));
        Ok(TestDaemon {
            dirs,
            enforcer,
            daemon,
            started,
            shutdown: Some(tx),
            server: Some(server),
            _socket: socket,
        })
    }

    /// A fresh daemon in a new temporary directory.
    pub async fn fresh() -> Result<(TempDir, TestDaemon), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let daemon = TestDaemon::start(Dirs::new(tmp.path()), MemoryEnforcer::new()).await?;
        Ok((tmp, daemon))
    }

    /// The generations saved in the state directory.
    pub fn daemon_generations(&self) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
        Ok(filter::daemon::StateStore::open(&self.dirs.state())?.generations()?)
    }

    pub async fn client(&self) -> Result<Client, Box<dyn std::error::Error>> {
        Ok(Client::connect(self.dirs.socket()).await?)
    }

    /// Graceful shutdown (what SIGTERM does); returns the directories and
    /// the data plane, which outlive the daemon as pins do.
    pub async fn stop(mut self) -> (Dirs, MemoryEnforcer) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let TestDaemon { dirs, enforcer, .. } = self;
        (dirs, enforcer)
    }
}

/// A rule-set document in the format of SPEC §2 with one web ENI; `extra`
/// rules (JSON objects) are appended to `sg-web`'s rules.
pub fn document(extra_rules: &[&str], extra_enis: &[&str]) -> String {
    let mut rules = vec![
        r#"{"id": "http", "direction": "ingress", "policy": "accept", "priority": 1, "ip_protocol": "tcp", "port_range": "80/80", "source_cidr_ip": "0.0.0.0/0"}"#,
        r#"{"direction": "ingress", "policy": "accept", "priority": 1, "ip_protocol": "tcp", "port_range": "3306/3306", "source_group_id": "sg-app"}"#,
        r#"{"id": "no-telnet", "direction": "ingress", "policy": "drop", "priority": 1, "ip_protocol": "tcp", "port_range": "23/23", "source_cidr_ip": "0.0.0.0/0"}"#,
    ];
    rules.extend_from_slice(extra_rules);
    let mut enis = vec![
        r#"{"id": "eni-web1", "interface": "tap-web1", "attach_mode": "tap", "vswitch_id": "vsw-web", "ips": ["10.0.1.10", "fd00:1::10"], "security_group_ids": ["sg-web"]}"#,
        r#"{"id": "eni-app1", "interface": "tap-app1", "attach_mode": "tap", "vswitch_id": "vsw-web", "ips": ["10.0.1.20"], "security_group_ids": ["sg-app"]}"#,
    ];
    enis.extend_from_slice(extra_enis);
    format!(
        r#"{{
  "vpcs": [{{"id": "vpc-prod", "cidr": "10.0.0.0/16"}}],
  "vswitches": [{{"id": "vsw-web", "vpc_id": "vpc-prod", "cidr": "10.0.1.0/24", "network_acl_id": "acl-web"}}],
  "security_groups": [
    {{"id": "sg-web", "vpc_id": "vpc-prod", "type": "basic", "inner_access_policy": "accept",
      "rules": [{}]}},
    {{"id": "sg-app", "vpc_id": "vpc-prod", "type": "basic", "inner_access_policy": "drop",
      "rules": [{{"id": "out", "direction": "egress", "policy": "accept", "priority": 1, "ip_protocol": "all", "port_range": "-1/-1", "dest_cidr_ip": "0.0.0.0/0"}}]}}
  ],
  "network_acls": [{{"id": "acl-web",
     "ingress": [{{"name": "web", "policy": "accept", "protocol": "tcp", "source_cidr_ip": "0.0.0.0/0", "port": "1/65535"}}],
     "egress":  [{{"name": "all", "policy": "accept", "protocol": "all", "destination_cidr_ip": "0.0.0.0/0", "port": "-1/-1"}}]}}],
  "enis": [{}]
}}
"#,
        rules.join(",\n        "),
        enis.join(",\n    ")
    )
}

/// The base document.
pub fn base() -> String {
    document(&[], &[])
}

/// The base document with an HTTPS rule and a second web ENI.
pub fn grown() -> String {
    document(
        &[
            r#"{"id": "https", "direction": "ingress", "policy": "accept", "priority": 1, "ip_protocol": "tcp", "port_range": "443/443", "source_cidr_ip": "0.0.0.0/0"}"#,
        ],
        &[
            r#"{"id": "eni-web2", "interface": "tap-web2", "attach_mode": "tap", "vswitch_id": "vsw-web", "ips": ["10.0.1.11"], "security_group_ids": ["sg-web"]}"#,
        ],
    )
}

/// A document with three mistakes.
pub fn broken() -> String {
    document(
        &[
            r#"{"id": "bad-cidr", "direction": "ingress", "policy": "accept", "priority": 1, "ip_protocol": "tcp", "port_range": "22/22", "source_cidr_ip": "10.0.0.1/24"}"#,
            r#"{"id": "bad-prio", "direction": "ingress", "policy": "accept", "priority": 101, "ip_protocol": "tcp", "port_range": "25/25", "source_cidr_ip": "0.0.0.0/0"}"#,
        ],
        &[
            r#"{"id": "eni-x", "interface": "tap-x", "attach_mode": "tap", "vswitch_id": "vsw-nowhere", "ips": ["10.0.1.12"], "security_group_ids": ["sg-web"]}"#,
        ],
    )
}
