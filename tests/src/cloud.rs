//! A small cloud in network namespaces, for the scenario tests and the demo.
//!
//! ```text
//!   admin ─ wan-admin ┐          ┌ tap-web1 ─ web1   (vSwitch A)
//!  client ─ wan-client┤ fabric  ├ tap-web2 ─ web2   (vSwitch A)
//!                     │ (bridge)└ tap-db1  ─ db1    (vSwitch B)
//!                     └── host namespace: routes between all subnets,
//!                         runs filterd, which guards the tap-* ports
//! ```
//!
//! One namespace, `host`, stands for the hypervisor: a bridge `fabric` for
//! the vSwitch fabric, with the gateway address of every subnet, and IP
//! forwarding on. Every other node is a namespace of its own with one
//! interface, `eth0`, the peer of a port on the bridge, and default routes
//! through its subnet's gateway:
//!
//! - an **instance** ([`Cloud::instance`]) sits on a vSwitch; its port in
//!   the host namespace is `tap-<name>`, the interface an ENI with
//!   `attach_mode: tap` names ([`Node::eni`] writes that ENI);
//! - an **outside** host ([`Cloud::outside`]) is somewhere on the Internet;
//!   its port is `wan-<name>` and nothing guards it.
//!
//! All traffic between nodes crosses the host namespace (routed between
//! subnets, bridged within one), so it passes the guarded ports exactly as
//! it would pass a hypervisor's taps. Addresses are RFC 5737 / RFC 3849 /
//! `fd00::/8` only ([`crate::netns::TestNet::addr`] enforces it).
//!
//! Everything lives in the namespaces of one [`TestNet`]: dropping the
//! [`Cloud`] stops the [servers](crate::traffic::Servers) it holds, then
//! deletes the namespaces and with them every interface. Drop a daemon
//! guarding the ports before the cloud (declare it after), so it detaches
//! while its interfaces still exist.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::{json, Value};

use crate::{
    id::TestId,
    netns::{Netns, TestNet},
    traffic::Servers,
};

/// The bridge in the host namespace.
pub const FABRIC: &str = "fabric";
/// The bridge's MAC address (locally administered; one bridge per host
/// namespace, so every cloud may use the same).
const FABRIC_MAC: &str = "02:00:00:00:fa:b1";
/// Every node's interface inside its own namespace.
pub const NODE_IF: &str = "eth0";

/// A VPC: the blocks its vSwitches are cut from.
#[derive(Clone, Debug)]
pub struct Vpc {
    pub id: String,
    pub cidr: Ipv4Net,
    pub ipv6_cidr: Ipv6Net,
}

/// A subnet of the VPC; its gateway (the first address of each block) is on
/// the bridge.
#[derive(Clone, Debug)]
pub struct VSwitch {
    pub id: String,
    pub cidr: Ipv4Net,
    pub ipv6_cidr: Ipv6Net,
    /// `network_acl_id`, when one is bound.
    pub network_acl_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// On a vSwitch, behind a guarded `tap-<name>` port.
    Instance,
    /// On the Internet, behind an unguarded `wan-<name>` port.
    Outside,
}

/// One namespace of the cloud with its two addresses.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub netns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// Its port in the host namespace: `tap-<name>` or `wan-<name>`.
    pub port: String,
    /// The vSwitch of an instance.
    pub vswitch: Option<String>,
}

impl Node {
    /// The address of `family`.
    pub fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.v4),
            Family::V6 => IpAddr::V6(self.v6),
        }
    }

    /// `eni-<name>`: the id [`Node::eni`] gives the instance's ENI.
    pub fn eni_id(&self) -> Option<String> {
        (self.kind == NodeKind::Instance).then(|| format!("eni-{}", self.name))
    }

    /// The document's ENI for this instance: `eni-<name>` on `tap-<name>`
    /// (tap mode) with both addresses, in `groups`.
    pub fn eni(&self, groups: &[&str]) -> Value {
        json!({
            "id": self.eni_id().unwrap_or_default(),
            "interface": self.port,
            "attach_mode": "tap",
            "vswitch_id": self.vswitch.clone().unwrap_or_default(),
            "ips": [self.v4.to_string(), self.v6.to_string()],
            "security_group_ids": groups,
        })
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The namespaces, the bridge and the nodes (see the module docs).
#[derive(Debug)]
pub struct Cloud {
    /// Declared first: servers hold sockets in the nodes' namespaces, which
    /// keep a deleted namespace alive, so they stop before `net` drops.
    servers: Vec<Servers>,
    pub vpc: Vpc,
    vswitches: Vec<VSwitch>,
    nodes: Vec<Node>,
    /// Networks whose gateway is on the bridge already.
    gateways: Vec<IpNet>,
    host: Netns,
    net: TestNet,
}

impl Cloud {
    /// The host namespace with the bridge, forwarding on, no nodes yet.
    pub fn new(id: &TestId, vpc: Vpc) -> Result<Cloud> {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        // Multicast snooping off: a filter that drops an instance's MLD
        // reports must not make the bridge stop forwarding its neighbour
        // solicitations. A MAC address of its own: a bridge without one
        // takes the lowest of its ports', so a port plugged in later
        // (`Cloud::replug`) could change the gateways' MAC under every
        // node's neighbour cache, and their packets would be flooded to
        // no one until the caches expire.
        host.ip(&[
            "link",
            "add",
            FABRIC,
            "address",
            FABRIC_MAC,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        host.ip(&["link", "set", FABRIC, "up"])?;
        host.run_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{FABRIC}.send_redirects=0"),
        ])?;
        // A router: forwarding on; no ICMP redirects, since nodes of
        // different subnets share the bridge and the host would otherwise
        // tell them to talk directly.
        host.run_ok(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.default.send_redirects=0",
        ])?;
        Ok(Cloud {
            servers: Vec::new(),
            vpc,
            vswitches: Vec::new(),
            nodes: Vec::new(),
            gateways: Vec::new(),
            host,
            net,
        })
    }

    /// The host namespace (where `filterd` runs and the ports are).
    pub fn host(&self) -> &Netns {
        &self.host
    }

    pub fn id(&self) -> &TestId {
        self.net.id()
    }

    /// Adds a vSwitch: its gateways go on the bridge.
    pub fn vswitch(&mut self, id: &str, cidr: &str, ipv6_cidr: &str) -> Result<()> {
        let cidr: Ipv4Net = cidr
            .parse()
            .with_context(|| format!("vSwitch {id}: {cidr}"))?;
        let ipv6_cidr: Ipv6Net = ipv6_cidr
            .parse()
            .with_context(|| format!("vSwitch {id}: {ipv6_cidr}"))?;
        ensure!(
            self.vpc.cidr.contains(&cidr) && self.vpc.ipv6_cidr.contains(&ipv6_cidr),
            "vSwitch {id} ({cidr}, {ipv6_cidr}) is not inside VPC {}",
            self.vpc.id
        );
        self.gateway_on_fabric(IpNet::V4(cidr))?;
        self.gateway_on_fabric(IpNet::V6(ipv6_cidr))?;
        self.vswitches.push(VSwitch {
            id: id.to_owned(),
            cidr,
            ipv6_cidr,
            network_acl_id: None,
        });
        Ok(())
    }

    /// Binds `acl` to the vSwitch `id` in [`Cloud::network_json`].
    pub fn bind_acl(&mut self, id: &str, acl: Option<&str>) -> Result<()> {
        let vsw = self
            .vswitches
            .iter_mut()
            .find(|v| v.id == id)
            .ok_or_else(|| anyhow!("no vSwitch {id}"))?;
        vsw.network_acl_id = acl.map(str::to_owned);
        Ok(())
    }

    pub fn vswitches(&self) -> &[VSwitch] {
        &self.vswitches
    }

    /// An instance with these addresses, on the vSwitch that holds them,
    /// behind the port `tap-<name>`.
    pub fn instance(&mut self, name: &str, v4: &str, v6: &str) -> Result<Node> {
        let (v4, v6): (Ipv4Addr, Ipv6Addr) = (
            v4.parse().with_context(|| format!("{name}: {v4}"))?,
            v6.parse().with_context(|| format!("{name}: {v6}"))?,
        );
        let vsw = self
            .vswitches
            .iter()
            .find(|v| v.cidr.contains(&v4))
            .cloned()
            .ok_or_else(|| anyhow!("{name}: no vSwitch holds {v4}"))?;
        ensure!(
            vsw.ipv6_cidr.contains(&v6),
            "{name}: {v6} is not in vSwitch {} ({})",
            vsw.id,
            vsw.ipv6_cidr
        );
        let node = Node {
            name: name.to_owned(),
            kind: NodeKind::Instance,
            netns: self.net.netns(name)?,
            v4,
            v6,
            port: port_name("tap-", name)?,
            vswitch: Some(vsw.id.clone()),
        };
        self.plug(
            &node,
            IpNet::V4(Ipv4Net::new(v4, vsw.cidr.prefix_len())?),
            IpNet::V6(Ipv6Net::new(v6, vsw.ipv6_cidr.prefix_len())?),
        )?;
        Ok(node)
    }

    /// A host on the Internet with these addresses (`203.0.113.7/24`,
    /// `2001:db8:ad::7/64`): the first address of each network is its
    /// gateway, on the bridge.
    pub fn outside(&mut self, name: &str, v4: &str, v6: &str) -> Result<Node> {
        let (net4, net6): (Ipv4Net, Ipv6Net) = (
            v4.parse().with_context(|| format!("{name}: {v4}"))?,
            v6.parse().with_context(|| format!("{name}: {v6}"))?,
        );
        for net in [IpNet::V4(net4), IpNet::V6(net6)] {
            ensure!(
                !self.vpc_contains(net.addr()),
                "{name}: {net} is inside VPC {}; outside hosts are outside",
                self.vpc.id
            );
            self.gateway_on_fabric(net.trunc())?;
        }
        let node = Node {
            name: name.to_owned(),
            kind: NodeKind::Outside,
            netns: self.net.netns(name)?,
            v4: net4.addr(),
            v6: net6.addr(),
            port: port_name("wan-", name)?,
            vswitch: None,
        };
        self.plug(&node, IpNet::V4(net4), IpNet::V6(net6))?;
        Ok(node)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node {name} in the cloud"))
    }

    /// The node that has `addr`.
    pub fn node_with(&self, addr: IpAddr) -> Option<&Node> {
        self.nodes.iter().find(|n| n.addr(Family::of(addr)) == addr)
    }

    /// Starts echo servers on `node` (see [`Servers`]); they stop when the
    /// cloud drops.
    pub fn serve(&mut self, node: &Node, tcp: &[u16], udp: &[u16]) -> Result<()> {
        let servers = Servers::start(node, tcp, udp)?;
        self.servers.push(servers);
        Ok(())
    }

    /// The document's `vpcs` and `vswitches` sections.
    pub fn network_json(&self) -> (Value, Value) {
        let vpcs = json!([{
            "id": self.vpc.id,
            "cidr": self.vpc.cidr.to_string(),
            "ipv6_cidr": self.vpc.ipv6_cidr.to_string(),
        }]);
        let vswitches: Vec<Value> = self
            .vswitches
            .iter()
            .map(|v| {
                let mut vsw = json!({
                    "id": v.id,
                    "vpc_id": self.vpc.id,
                    "cidr": v.cidr.to_string(),
                    "ipv6_cidr": v.ipv6_cidr.to_string(),
                });
                if let Some(acl) = &v.network_acl_id {
                    vsw["network_acl_id"] = json!(acl);
                }
                vsw
            })
            .collect();
        (vpcs, Value::Array(vswitches))
    }

    /// Pings every node, both families, from the host namespace, before
    /// anything guards the ports: the cloud itself routes, and every
    /// neighbour cache on the way is warm. Retries a few times (IPv6
    /// neighbour discovery can take a second on a loaded machine).
    pub fn check_fabric(&self) -> Result<()> {
        let failures: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .flat_map(|n| Family::BOTH.map(|f| (n, f)))
                .map(|(node, family)| {
                    s.spawn(move || {
                        let addr = node.addr(family).to_string();
                        for _ in 0..5 {
                            let out = self.host.output(&["ping", "-n", "-c1", "-W2", &addr]);
                            if out.is_ok_and(|o| o.status.success()) {
                                return None;
                            }
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Some(format!(
                            "{node} ({addr}) does not answer the host namespace"
                        ))
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap_or(Some("a ping thread panicked".into())))
                .collect()
        });
        if !failures.is_empty() {
            bail!("the cloud does not route:\n  {}", failures.join("\n  "));
        }
        Ok(())
    }

    fn vpc_contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.vpc.cidr.contains(&a),
            IpAddr::V6(a) => self.vpc.ipv6_cidr.contains(&a),
        }
    }

    /// Puts the first address of `net` on the bridge (once per network).
    fn gateway_on_fabric(&mut self, net: IpNet) -> Result<()> {
        let net = net.trunc();
        if self.gateways.contains(&net) {
            return Ok(());
        }
        let gw = gateway(net)?;
        self.add_addr(&self.host, FABRIC, gw, net.prefix_len())?;
        self.gateways.push(net);
        Ok(())
    }

    /// Deletes the instance's port, and with it the link to its namespace
    /// (an instance whose VM stopped: the ENI's interface is gone).
    pub fn unplug(&self, node: &Node) -> Result<()> {
        self.host.ip(&["link", "del", &node.port]).map(drop)
    }

    /// Creates the port of an [`Cloud::unplug`]ged instance again, with
    /// its addresses and routes (the VM started again).
    pub fn replug(&self, node: &Node) -> Result<()> {
        let vsw = node
            .vswitch
            .as_ref()
            .and_then(|id| self.vswitches.iter().find(|v| &v.id == id))
            .ok_or_else(|| anyhow!("{node} is not an instance on a vSwitch"))?;
        self.connect(
            node,
            IpNet::V4(Ipv4Net::new(node.v4, vsw.cidr.prefix_len())?),
            IpNet::V6(Ipv6Net::new(node.v6, vsw.ipv6_cidr.prefix_len())?),
            self.nodes.iter().position(|n| n.name == node.name),
        )
    }

    /// [`Cloud::connect`] a new node.
    fn plug(&mut self, node: &Node, v4: IpNet, v6: IpNet) -> Result<()> {
        ensure!(
            self.nodes.iter().all(|n| n.name != node.name),
            "two nodes called {}",
            node.name
        );
        self.connect(node, v4, v6, Some(self.nodes.len()))?;
        self.nodes.push(node.clone());
        Ok(())
    }

    /// The veth pair `<port>` (host namespace, on the bridge) ↔ `eth0`
    /// (the node's namespace), the node's addresses and default routes.
    /// `position` is the node's place in the cloud.
    fn connect(&self, node: &Node, v4: IpNet, v6: IpNet, position: Option<usize>) -> Result<()> {
        let position = position.unwrap_or(self.nodes.len());
        // Every other port gets an ifindex past the data plane's direct
        // ENI array, so the scenarios go through both ENI lookups
        // (ARCHITECTURE.md, "ENI lookup"). Indexes are per namespace: the
        // host namespace is this test's own.
        let index = (filter_common::ENI_DIRECT_IFINDEXES + position as u32).to_string();
        let mut add = vec!["link", "add", &node.port];
        if position % 2 == 1 {
            add.extend(["index", &index]);
        }
        add.extend([
            "type",
            "veth",
            "peer",
            "name",
            NODE_IF,
            "netns",
            node.netns.name(),
        ]);
        self.host.ip(&add)?;
        self.host
            .ip(&["link", "set", &node.port, "master", FABRIC, "up"])?;
        node.netns.ip(&["link", "set", NODE_IF, "up"])?;
        // IPv6 routers send redirects whatever the sysctls say: ignore them,
        // so every node keeps going through its gateway.
        node.netns.run_ok(&[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.accept_redirects=0",
            "net.ipv6.conf.all.accept_redirects=0",
            &format!("net.ipv6.conf.{NODE_IF}.accept_redirects=0"),
            &format!("net.ipv4.conf.{NODE_IF}.accept_redirects=0"),
        ])?;
        for net in [v4, v6] {
            self.add_addr(&node.netns, NODE_IF, net.addr(), net.prefix_len())?;
            let gw = gateway(net.trunc())?.to_string();
            let family = if net.addr().is_ipv4() { "-4" } else { "-6" };
            node.netns
                .ip(&[family, "route", "add", "default", "via", &gw])?;
        }
        Ok(())
    }

    fn add_addr(&self, ns: &Netns, dev: &str, addr: IpAddr, len: u8) -> Result<()> {
        let cidr = format!("{addr}/{len}");
        ensure!(
            crate::netns::is_test_address(addr),
            "{cidr} is not a documentation (RFC 5737 / RFC 3849) or fd00::/8 address"
        );
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        ns.ip(&args).map(drop)
    }
}

/// The first address after the network address of `net`: its gateway.
fn gateway(net: IpNet) -> Result<IpAddr> {
    let gw = match net.trunc() {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()).wrapping_add(1))),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(1))),
    };
    ensure!(
        net.prefix_len() < net.max_prefix_len() - 1 && net.contains(&gw),
        "{net} is too small for a gateway and a host"
    );
    Ok(gw)
}

/// `<prefix><name>`, at most 15 bytes (IFNAMSIZ).
fn port_name(prefix: &str, name: &str) -> Result<String> {
    let port = format!("{prefix}{name}");
    ensure!(
        port.len() <= crate::id::IFNAME_MAX,
        "interface name {port:?} is longer than {} bytes: pick a shorter node name",
        crate::id::IFNAME_MAX
    );
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_are_first_hosts() -> Result<()> {
        assert_eq!(
            gateway("192.0.2.64/26".parse()?)?,
            "192.0.2.65".parse::<IpAddr>()?
        );
        assert_eq!(
            gateway("192.0.2.70/26".parse()?)?,
            "192.0.2.65".parse::<IpAddr>()?
        );
        assert_eq!(
            gateway("fd00:1:0:2::/64".parse()?)?,
            "fd00:1:0:2::1".parse::<IpAddr>()?
        );
        assert!(gateway("192.0.2.4/31".parse()?).is_err());
        Ok(())
    }

    #[test]
    fn port_names_fit() {
        assert_eq!(port_name("tap-", "web1").ok().as_deref(), Some("tap-web1"));
        assert!(port_name("tap-", "averylongname").is_err());
    }
}
