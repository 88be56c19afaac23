//! Where a command's database is, and timed progress lines on stderr.

use std::time::Instant;

use anyhow::{Context, Result};
use e2e_migrations::{local, state, Project};

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

/// Loads and validates the migrations folder and the requested sets (before any database).
pub(crate) fn load_project(args: &SetArgs) -> Result<(Project, Vec<String>)> {
    let project = match &args.migrations_dir {
        Some(d) => Project::load(d),
        None => Project::load(&e2e_migrations::bundled_migrations_dir()),
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

/// The URL for `migrate` and `partitions`: the flag or `DATABASE_URL`, else what e2e-setup left,
/// else the local default (started if needed).
pub(crate) fn resolve_url(explicit: Option<&str>) -> Result<String> {
    if let Some(u) = explicit {
        return Ok(u.to_string());
    }
    let root = e2e_migrations::state_root();
    if let Some(s) = state::read(&root)? {
        if let Some(u) = s.database_url {
            return Ok(u);
        }
        anyhow::bail!(
            "e2e-setup used --backend {:?}, which has no host URL; pass --database-url (for kube: port-forward first)",
            s.backend
        );
    }
    let step = Step::start("local PostgreSQL");
    let (st, how) = local::ensure_running(&local::default_state_dir())?;
    step.done(format!("{how:?} on 127.0.0.1:{}", st.port).to_lowercase());
    Ok(st.url())
}

/// Connects, saying where (without the password) if it fails.
pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    Ok(e2e_migrations::db::connect(url).await?)
}
