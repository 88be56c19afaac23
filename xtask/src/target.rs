//! What every command needs: this checkout's workspace, its migrations, the server to reach,
//! and timed progress lines on stderr.

use std::time::Instant;

use anyhow::{Context, Result};
use e2e_migrations::lifecycle::{self, Access, Endpoint, Workspace};
use e2e_migrations::Project;

use crate::flags::SetArgs;

/// One step of a command: prints `what ... (N ms)` on stderr when done.
pub(crate) struct Step {
    what: String,
    start: Instant,
}

impl Step {
    /// Starts timing a step.
    pub(crate) fn start(what: impl Into<String>) -> Step {
        Step { what: what.into(), start: Instant::now() }
    }

    /// Prints the step with its outcome and time.
    pub(crate) fn done(self, outcome: impl std::fmt::Display) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let outcome = outcome.to_string();
        if outcome.is_empty() {
            eprintln!("  {} ({ms:.0} ms)", self.what);
        } else {
            eprintln!("  {}: {outcome} ({ms:.0} ms)", self.what);
        }
    }
}

/// The checkout the command runs in (from the current folder).
pub(crate) fn workspace() -> Result<Workspace> {
    Ok(Workspace::current()?)
}

/// Loads and validates the migrations folder (`--migrations-dir`, else the workspace's) and the
/// requested sets, before any database.
pub(crate) fn load_project(args: &SetArgs) -> Result<(Project, Vec<String>)> {
    let project = match &args.migrations_dir {
        Some(d) => Project::load(d),
        None => workspace()?.project(),
    }
    .context("invalid migrations")?;
    let sets = match &args.sets {
        Some(s) => e2e_migrations::sets::parse_set_list(s)?,
        None => Vec::new(),
    };
    let selection = project.select(&sets)?;
    for w in &selection.warnings {
        eprintln!("{w}");
    }
    Ok((project, sets))
}

/// The server for `migrate` and `partitions` (the flag or `DATABASE_URL`, else what this
/// checkout's setup left), and a connection to it. Read-only work never starts a server; other
/// work starts (or creates) this checkout's local server when that is what it resolves to. The
/// endpoint keeps a port-forward alive where one is needed.
pub(crate) async fn open(url: Option<&str>, access: Access) -> Result<(Endpoint, tokio_postgres::Client)> {
    let ws = workspace()?;
    let endpoint = lifecycle::resolve(&ws, url, access).await?;
    let client = connect(&endpoint.url).await?;
    Ok((endpoint, client))
}

/// Connects, saying where (without the password) if it fails.
pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    Ok(e2e_migrations::db::connect(url).await?)
}
