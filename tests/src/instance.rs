//! The smallest guarded cloud: a host namespace (where `filterd` runs) and
//! one instance namespace, joined by a veth pair whose host end is the
//! instance's tap (an ENI with `attach_mode: tap`), one IPv4 address at
//! each end.
use anyhow::Result;

use crate::{
    id::TestId,
    netns::{Netns, TestNet},
};

#[derive(Debug)]
pub struct HostAndInstance {
    /// Removes the namespaces and everything in them when dropped.
    pub net: TestNet,
    pub host: Netns,
    pub vm: Netns,
    /// The host end: the ENI's interface.
    pub tap: String,
}

impl HostAndInstance {
    /// `host_cidr` on the host end, `vm_cidr` on the instance's.
    pub fn new(id: &TestId, host_cidr: &str, vm_cidr: &str) -> Result<Self> {
        let mut net = TestNet::new(id)?;
        let host = net.netns("host")?;
        let vm = net.netns("vm")?;
        let link = net.veth(&host, &vm)?;
        net.addr(&link.a, host_cidr)?;
        net.addr(&link.b, vm_cidr)?;
        Ok(HostAndInstance {
            tap: link.a.name.clone(),
            net,
            host,
            vm,
        })
    }
}
