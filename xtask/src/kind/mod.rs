//! The Kind and existing-cluster backends (`--backend kind|kube`).

use anyhow::{bail, Result};
use e2e_migrations::state::SetupState;

use crate::flags::{Setup, Teardown};

/// Why kind cannot serve here, or `None` when kind and a running container engine are present.
pub(crate) fn unavailable_reason() -> Option<String> {
    Some("kind support is not built yet".to_string())
}

/// Creates or reuses the cluster, deploys PostgreSQL and connects to it.
/// Returns `None` after a dry run (which only prints).
pub(crate) async fn setup(args: &Setup) -> Result<Option<(SetupState, tokio_postgres::Client)>> {
    let _ = args;
    bail!("--backend kind/kube is not built yet")
}

/// Deletes what setup made in a cluster.
pub(crate) async fn teardown(args: &Teardown, state: Option<&SetupState>) -> Result<()> {
    let _ = (args, state);
    bail!("--backend kind/kube is not built yet")
}
