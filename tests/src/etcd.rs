//! A real etcd (Debian's `etcd-server`) for the fleet tests and bench, with
//! a data directory of its own, stopped and removed on drop.
//!
//! In a test it runs inside a network namespace the test made
//! (`ip netns exec`), listening on an address of that namespace, so every
//! test has its own ports and hosts reach it over veths; the bench runs it
//! on loopback ports the kernel picked. With [`Tls`] it serves only TLS and
//! asks every client for a certificate signed by the test's CA.
//! [`EtcdGuard::ctl`] runs `etcdctl` (v3 API) against it.
use std::{
    fs, io,
    net::{IpAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::{cmd::describe, netns::Netns};

/// How long etcd may take to answer after a start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A CA and certificates made for one test, as PEM files in `dir`.
#[derive(Clone, Debug)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A certificate from another CA, which etcd must refuse.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl Tls {
    /// A CA, a server certificate for `server` and a client certificate
    /// (common name `client`), written into `dir`.
    pub fn generate(dir: &Path, server: IpAddr) -> Result<Tls> {
        fs::create_dir_all(dir)?;
        let (ca_pem, ca) = authority("filter test CA")?;
        let (_, other) = authority("someone else's CA")?;
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let path = dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        let (server_cert, server_key) = leaf(&ca, "etcd", Some(server), true)?;
        let (client_cert, client_key) = leaf(&ca, "client", None, false)?;
        let (stranger_cert, stranger_key) = leaf(&other, "client", None, false)?;
        Ok(Tls {
            ca: write("ca.pem", ca_pem)?,
            server_cert: write("server.pem", server_cert)?,
            server_key: write("server-key.pem", server_key)?,
            client_cert: write("client.pem", client_cert)?,
            client_key: write("client-key.pem", client_key)?,
            stranger_cert: write("stranger.pem", stranger_cert)?,
            stranger_key: write("stranger-key.pem", stranger_key)?,
        })
    }
}

fn authority(name: &str) -> Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A certificate and its key signed by `issuer`.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    ip: Option<IpAddr>,
    server: bool,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    if let Some(ip) = ip {
        params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    }
    params.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A running etcd (see the module docs).
#[derive(Debug)]
pub struct EtcdGuard {
    netns: Option<Netns>,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    tls: Option<Tls>,
    child: Option<Child>,
}

impl EtcdGuard {
    /// Starts etcd in `netns` (or here) on `ip`, its data in `dir` (which
    /// is removed on drop).
    pub fn start(netns: Option<&Netns>, ip: IpAddr, dir: &Path, tls: Option<Tls>) -> Result<Self> {
        let (client_port, peer_port) = match netns {
            // The namespace is the test's own: the well-known ports are free.
            Some(_) => (2379, 2380),
            None => (free_port()?, free_port()?),
        };
        fs::create_dir_all(dir)?;
        let mut guard = EtcdGuard {
            netns: netns.cloned(),
            ip,
            client_port,
            peer_port,
            dir: dir.to_owned(),
            tls,
            child: None,
        };
        guard.resume()?;
        Ok(guard)
    }

    /// `http://IP:PORT`, or `https://` with TLS.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", addr(self.ip, self.client_port))
    }

    /// Its directory: data, log, certificates; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Starts it again after [`Self::stop`], on the same data.
    pub fn resume(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))?;
        let peer = format!("http://{}", addr(self.ip, self.peer_port));
        let mut cmd = self.command("etcd");
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=warn");
        if let Some(tls) = &self.tls {
            cmd.arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the closure touches nothing
        // else. A test process that dies takes its etcd with it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let what = describe(&cmd);
        self.child = Some(cmd.spawn().with_context(|| format!("starting `{what}`"))?);
        let deadline = Instant::now() + START_TIMEOUT;
        while self.ctl(&["endpoint", "health"]).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("etcd exited at start ({status}): {}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not answer within {START_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops etcd (SIGKILL: as a crash or a lost machine would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `etcdctl` with this etcd's endpoint (and client certificate):
    /// its stdout, or an error with everything it printed.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        self.ctl_input(args, None)
    }

    /// [`Self::ctl`] with `input` on its standard input (`txn`).
    pub fn ctl_input(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut cmd = self.command("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--command-timeout=5s");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client_cert.display()))
                .arg(format!("--key={}", tls.client_key.display()));
        }
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = describe(&cmd);
        let mut child = cmd.spawn().with_context(|| format!("starting `{what}`"))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            io::Write::write_all(&mut stdin, text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "`{what}` failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        let out = self.ctl(&["get", key, "--print-value-only"])?;
        let value = out.trim_end_matches('\n');
        Ok((!value.is_empty()).then(|| value.to_owned()))
    }

    /// `put key value`: the revision of the write.
    pub fn put(&self, key: &str, value: &str) -> Result<i64> {
        header_revision(&self.ctl(&["-w", "json", "put", key, value])?)
    }

    /// `txn` of `script` (etcdctl's interactive format): the revision of
    /// the transaction.
    pub fn txn(&self, script: &str) -> Result<i64> {
        header_revision(&self.ctl_input(&["-w", "json", "txn"], Some(script))?)
    }

    /// etcd's current revision.
    pub fn revision(&self) -> Result<i64> {
        let out = self.ctl(&["endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["Status"]["header"]["revision"]
            .as_i64()
            .with_context(|| format!("no revision in {out}"))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => ns.cmd(program),
            None => Command::new(program),
        }
    }
}

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("filter-tests: removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// `header.revision` of etcdctl's JSON output.
fn header_revision(out: &str) -> Result<i64> {
    let v: serde_json::Value = serde_json::from_str(out)?;
    v["header"]["revision"]
        .as_i64()
        .with_context(|| format!("no revision in {out}"))
}

fn addr(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
