//! `cargo xtask partitions roll|list|prune`.

use anyhow::Result;
use clap::Args;

/// `partitions` flags.
#[derive(Debug, Clone, Args)]
pub struct Partitions {}

impl Partitions {
    pub(crate) async fn run(self) -> Result<()> {
        anyhow::bail!("not built yet")
    }
}
