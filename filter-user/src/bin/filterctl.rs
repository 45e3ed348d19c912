//! `filterctl`: the CLI (SPEC §6).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("filterctl is not implemented yet")
}
