//! `fake-upstream`: the httpbin-like server the e2e harness runs inside a fake internet.
//! See `iron_proxy_tests::fake_upstream` for the endpoints.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = iron_proxy_tests::fake_upstream::Args::parse();
    iron_proxy_tests::fake_upstream::run(args).await?;
    Ok(())
}
