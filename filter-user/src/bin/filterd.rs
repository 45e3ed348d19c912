//! `filterd`: the daemon (SPEC §4).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("filterd is not implemented yet")
}
