//! Project automation: `cargo xtask bench`, `cargo xtask package`.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("no xtask commands yet")
}
