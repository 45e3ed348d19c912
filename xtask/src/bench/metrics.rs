//! The metrics part of `cargo xtask bench` (issue 19): what one scrape and
//! one window's worth of verdict counting cost at 100k rules
//! (`filter-user/benches/metrics.rs`). No privileges needed.
use anyhow::Result;

use crate::{run::cargo, run::run, setup::Toolchain};

pub fn bench(toolchain: &Toolchain) -> Result<()> {
    println!("xtask: bench: a /metrics scrape at 100k rules");
    run(cargo(["bench", "-p", "filter-user", "--bench", "metrics"]).envs(toolchain.build_env()))
}
