//! Network namespaces, veth pairs and addresses for one test, removed on
//! drop (also when the test panics).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use filter_tests::{id::TestId, netns::TestNet};
//! let id = TestId::new("my_test");
//! {
//!     let mut net = TestNet::new(&id)?;
//!     let (left, right) = (net.netns("left")?, net.netns("right")?);
//!     let veth = net.veth(&left, &right)?;
//!     net.addr(&veth.a, "192.0.2.1/24")?;
//!     net.addr(&veth.b, "192.0.2.2/24")?;
//!     left.run_ok(&["ping", "-c1", "-W2", "192.0.2.2"])?;
//! }
//! id.assert_nothing_left()?;
//! # Ok(()) }
//! ```
//!
//! Traffic stays inside the namespaces the test creates, between RFC 5737,
//! RFC 3849 and `fd00::/8` addresses only: [`TestNet::addr`] refuses others.
//!
//! Entering a namespace: [`Netns::run`] runs a closure on a thread that has
//! joined the namespace with `setns` (sockets it opens, and netlink calls such
//! as aya's attach, act there). [`Netns::cmd`] uses `ip netns exec`, which
//! also gives the command a private mount namespace whose `/sys` has no
//! bpffs (TOOLCHAIN.md): a process that must see pins in `/sys/fs/bpf` is
//! started with [`Netns::nsenter`], which enters only the network namespace.
use std::{
    fs::File,
    net::IpAddr,
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{anyhow, bail, Context as _, Result};
use ipnet::IpNet;
use nix::sched::{setns, CloneFlags};

use crate::{
    cmd::{ip, output, run, tool},
    id::{sweep_stale_once, TestId, NETNS_DIR},
};

/// A network namespace made by a [`TestNet`]. Cheap to clone; removing it
/// is the `TestNet`'s job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Runs `f` on a new thread that has entered this namespace and returns
    /// its result. A panic in `f` resumes on the caller's thread, so test
    /// assertions inside `f` report normally.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {}", self.name))?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `ip netns exec <ns> <program>`: add arguments and run it. The command
    /// gets a private mount namespace (no bpffs at `/sys/fs/bpf`).
    pub fn cmd(&self, program: &str) -> Command {
        let mut cmd = ip();
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `nsenter --net=/run/netns/<ns> -- <program>`: enters only the network
    /// namespace, so the program sees the host's bpffs and its pins.
    pub fn nsenter(&self, program: &str) -> Command {
        let mut cmd = tool("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `argv` in the namespace (via [`Netns::cmd`]) and returns its
    /// stdout; fails, with everything it printed, on a non-zero exit.
    pub fn run_ok(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = argv.split_first().ok_or_else(|| anyhow!("empty command"))?;
        run(self.cmd(program).args(args))
    }

    /// Runs `argv` in the namespace and returns its output, whatever the
    /// exit status.
    pub fn output(&self, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().ok_or_else(|| anyhow!("empty command"))?;
        output(self.cmd(program).args(args))
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(ip().args(["-n", &self.name]).args(args))
    }
}

/// An interface inside one of the test's namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub netns: Netns,
    pub name: String,
}

impl Iface {
    /// The interface index inside its namespace.
    pub fn index(&self) -> Result<u32> {
        let name = self.name.clone();
        self.netns
            .run(move || nix::net::if_::if_nametoindex(name.as_str()))?
            .with_context(|| format!("if_nametoindex({})", self.name))
    }
}

/// Both ends of a veth pair.
#[derive(Clone, Debug)]
pub struct VethPair {
    pub a: Iface,
    pub b: Iface,
}

/// The namespaces of one test. Dropping it deletes them, and with them
/// every interface, address, route, qdisc and attachment inside.
#[derive(Debug)]
pub struct TestNet {
    id: TestId,
    namespaces: Vec<Netns>,
    next_if: u32,
}

impl TestNet {
    pub fn new(id: &TestId) -> Result<Self> {
        crate::require_root()?;
        sweep_stale_once();
        Ok(Self {
            id: id.clone(),
            namespaces: Vec::new(),
            next_if: 0,
        })
    }

    /// Creates the namespace `<id prefix><label>` with `lo` up.
    pub fn netns(&mut self, label: &str) -> Result<Netns> {
        let name = self.id.netns_name(label);
        run(ip().args(["netns", "add", &name]))?;
        let ns = Netns { name };
        self.namespaces.push(ns.clone());
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a veth pair with one end in `a` and the other in `b`, both
    /// up. The ends never exist in the caller's namespace.
    pub fn veth(&mut self, a: &Netns, b: &Netns) -> Result<VethPair> {
        let name_a = self.id.ifname(self.next_if)?;
        let name_b = self.id.ifname(self.next_if + 1)?;
        self.next_if += 2;
        run(ip().args([
            "link",
            "add",
            &name_a,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &name_b,
            "netns",
            b.name(),
        ]))?;
        a.ip(&["link", "set", &name_a, "up"])?;
        b.ip(&["link", "set", &name_b, "up"])?;
        Ok(VethPair {
            a: Iface {
                netns: a.clone(),
                name: name_a,
            },
            b: Iface {
                netns: b.clone(),
                name: name_b,
            },
        })
    }

    /// Adds `cidr` (e.g. `192.0.2.1/24`) to `iface`. Only documentation
    /// and ULA addresses are allowed; IPv6 addresses skip duplicate address
    /// detection so they are usable at once.
    pub fn addr(&self, iface: &Iface, cidr: &str) -> Result<()> {
        let net: IpNet = cidr
            .parse()
            .with_context(|| format!("bad address {cidr:?}"))?;
        if !is_test_address(net.addr()) {
            bail!("{cidr} is not a documentation (RFC 5737 / RFC 3849) or fd00::/8 address");
        }
        let mut args = vec!["addr", "add", cidr, "dev", iface.name.as_str()];
        if net.addr().is_ipv6() {
            args.push("nodad");
        }
        iface.netns.ip(&args).map(drop)
    }

    pub fn id(&self) -> &TestId {
        &self.id
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = run(ip().args(["netns", "delete", ns.name()])) {
                eprintln!(
                    "filter-tests: could not delete network namespace {}: {e:#}",
                    ns.name()
                );
            }
        }
    }
}

/// RFC 5737 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24), RFC 3849
/// (2001:db8::/32) or unique local `fd00::/8`.
pub fn is_test_address(addr: IpAddr) -> bool {
    const ALLOWED: [&str; 5] = [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
        "fd00::/8",
    ];
    ALLOWED
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .any(|n| n.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::is_test_address;

    #[test]
    fn only_documentation_and_ula_addresses() {
        for ok in [
            "192.0.2.1",
            "198.51.100.255",
            "203.0.113.7",
            "2001:db8::1",
            "fd00::1",
            "fdff::1",
        ] {
            assert!(
                is_test_address(ok.parse().unwrap_or([0, 0, 0, 0].into())),
                "{ok}"
            );
        }
        for bad in [
            "10.0.0.1",
            "192.0.3.1",
            "8.8.8.8",
            "2001:db9::1",
            "fc00::1",
            "fe80::1",
        ] {
            assert!(
                !is_test_address(bad.parse().unwrap_or([192, 0, 2, 1].into())),
                "{bad}"
            );
        }
    }
}
