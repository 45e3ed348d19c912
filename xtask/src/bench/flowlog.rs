//! The flow-log part of `cargo xtask bench` (issue 6): new-flow events per
//! second that `filterd`'s collector code consumes without loss, the
//! producer on one CPU and the consumer on the other
//! (`filter-user/benches/flowlog.rs`). Root only.
use anyhow::Result;

use crate::{run::cargo, run::run, setup::Toolchain};

pub fn bench(toolchain: &Toolchain, quick: bool) -> Result<()> {
    println!("xtask: bench 3/3: flow-log events (ring buffer → collector)");
    let mut flowlog = cargo(["bench", "-p", "filter-user", "--bench", "flowlog", "--"]);
    if quick {
        flowlog.arg("--quick");
    }
    run(flowlog.envs(toolchain.build_env()))
}
