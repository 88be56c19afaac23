//! `cargo xtask bench`: ours against the old way, measured side by side in one run.

use anyhow::Result;

use crate::flags::Bench;

impl Bench {
    pub(crate) async fn run(self) -> Result<()> {
        anyhow::bail!("not built yet")
    }
}
