//! Helpers for the privileged tests (`cargo xtask test`, tiers 2 and 3).
//!
//! - [`packet`]: a builder for crafted frames, well-formed and malformed.
//! - [`bpf`]: the real eBPF object loaded with fresh maps; BPF_PROG_TEST_RUN
//!   through both programs and the verdict counters.
//! - [`netns`]: network namespaces, veth pairs and addresses per test,
//!   removed on drop.
//! - [`pins`]: a private bpffs directory per test, removed on drop.
//! - [`tap`]: a tap interface with the test as its VM.
//! - [`id`]: the unique names all of the above derive from a test's name,
//!   and the check that nothing is left behind.
//! - [`daemon`]: the real `filterd` in a namespace and the real
//!   `filterctl` against it, stopped and cleaned up on drop.
//! - [`process`]: a process's memory, descriptors and open-file limit.
//! - [`etcd`]: a real etcd with its own data dir (and TLS), for the fleet.
//! - [`flowlog`]: the records `filterd` wrote to its flow-log file.
//! - [`cloud`]: a small cloud in namespaces (a bridge for the vSwitch
//!   fabric, instances behind guarded tap ports, outside hosts), shared by
//!   the scenario tests and the demo (`src/bin/filter-demo.rs`).
//! - [`traffic`]: echo servers and real TCP/UDP/ICMP checks between its
//!   nodes, connections that must work and connections that must fail.
//!
//! Everything but [`packet`] needs root (CAP_BPF, CAP_NET_ADMIN,
//! CAP_SYS_ADMIN for setns and mounting bpffs).
pub mod bpf;
pub mod cloud;
pub mod cmd;
pub mod daemon;
pub mod etcd;
pub mod flowlog;
pub mod fuzz;
pub mod id;
pub mod instance;
pub mod netns;
pub mod packet;
pub mod pins;
pub mod process;
#[cfg(test)]
mod readme;
pub mod tap;
pub mod traffic;

use anyhow::{bail, Result};

/// Fails with a clear message when the process is not root.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "this test loads eBPF programs and creates network namespaces: it must run as root \
             (`sudo -E cargo xtask test`)"
        );
    }
    Ok(())
}
