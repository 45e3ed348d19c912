//! Two namespaces joined by a veth pair, from the tests' harness
//! (`filter_tests::netns`): names `ft-bench-<pid>-<n>-<tag>-{c,s}`, so a run
//! killed before its guards dropped is swept by the next one (and by
//! `cargo xtask bench` when the benchmark exits).
use anyhow::Result;
use filter_tests::{
    id::TestId,
    netns::{Netns, TestNet},
    tap::{self, Relay, Tap},
};

/// The client end has `192.0.2.1/24`, the server end (the guarded one)
/// `192.0.2.2/24`. Dropping it deletes both namespaces.
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
    pub server_if: String,
    /// The client's end, where live frames start (`live.rs`).
    pub client_if: String,
    /// The taps' link ([`Pair::taps`]); it goes before the namespaces.
    _relay: Option<Relay>,
    _net: TestNet,
}

impl Pair {
    pub fn new(tag: &str) -> Result<Self> {
        let mut net = TestNet::new(&TestId::new("bench"))?;
        let client = net.netns(&format!("{tag}-c"))?;
        let server = net.netns(&format!("{tag}-s"))?;
        let veth = net.veth(&client, &server)?;
        net.addr(&veth.a, "192.0.2.1/24")?;
        net.addr(&veth.b, "192.0.2.2/24")?;
        let server_if = veth.b.name;
        let client_if = veth.a.name;
        Self::finish(client, server, server_if, client_if, None, net)
    }

    /// The same with a VM's link: the client's NIC and the server's end
    /// are taps with offloads ([`Tap::create_offloading`]), their frames
    /// relayed by this process as a VM's backend would.
    pub fn taps(tag: &str) -> Result<Self> {
        let mut net = TestNet::new(&TestId::new("bench"))?;
        let client = net.netns(&format!("{tag}-c"))?;
        let server = net.netns(&format!("{tag}-s"))?;
        let (client_if, server_if) = ("vmnic".to_owned(), "vmtap".to_owned());
        let vm = Tap::create_offloading(&client, &client_if)?;
        let host = Tap::create_offloading(&server, &server_if)?;
        let relay = tap::relay(vm, host)?;
        for (ns, iface, cidr) in [
            (&client, &client_if, "192.0.2.1/24"),
            (&server, &server_if, "192.0.2.2/24"),
        ] {
            ns.ip(&["link", "set", iface, "up"])?;
            ns.ip(&["addr", "add", cidr, "dev", iface])?;
        }
        Self::finish(client, server, server_if, client_if, Some(relay), net)
    }

    fn finish(
        client: Netns,
        server: Netns,
        server_if: String,
        client_if: String,
        relay: Option<Relay>,
        net: TestNet,
    ) -> Result<Self> {
        // The new-flow traffic comes from many addresses of the client's
        // subnet, which the server never answers: no reverse-path check.
        server.run_ok(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            &format!("net.ipv4.conf.{server_if}.rp_filter=0"),
        ])?;
        Ok(Self {
            client,
            server,
            server_if,
            client_if,
            _relay: relay,
            _net: net,
        })
    }
}
