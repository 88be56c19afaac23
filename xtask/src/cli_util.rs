//! What the commands share: this checkout's workspace, its migrations, the server to reach,
//! the `--now` date, and timed progress lines on stderr.

use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use e2e_migrations::lifecycle::{self, Access, Endpoint, Workspace};
use e2e_migrations::Project;

use crate::flags::{DbArgs, SetArgs};

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

/// The server for `migrate` and `partitions` (`--database-url` or `DATABASE_URL`, else what this
/// checkout's setup left), and a connection to it within `--connect-timeout`. Read-only work
/// never starts a server; other work starts (or creates) this checkout's local server when that
/// is what it resolves to. The endpoint keeps a port-forward alive where one is needed.
pub(crate) async fn open(db: &DbArgs, access: Access) -> Result<(Endpoint, tokio_postgres::Client)> {
    let mut ws = workspace()?;
    ws.connect_timeout = db.connect_timeout;
    let endpoint = lifecycle::resolve(&ws, db.database_url.as_deref(), access).await?;
    let client = connect(&endpoint.url, db.connect_timeout).await?;
    Ok((endpoint, client))
}

/// Connects within `timeout`, saying where (without the password) if it fails.
pub(crate) async fn connect(url: &str, timeout: std::time::Duration) -> Result<tokio_postgres::Client> {
    Ok(e2e_migrations::db::connect_within(url, timeout).await?)
}

/// Parses `--now YYYY-MM-DD` (midday UTC of that date), or the clock.
pub(crate) fn parse_now(now: Option<&str>) -> Result<DateTime<Utc>> {
    match now {
        None => Ok(Utc::now()),
        Some(s) => {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .with_context(|| format!("--now {s:?}: expected YYYY-MM-DD"))?;
            Ok(d.and_hms_opt(12, 0, 0).expect("valid time").and_utc())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_midday_utc_of_the_date() {
        assert_eq!(parse_now(Some("2024-02-29")).unwrap().to_rfc3339(), "2024-02-29T12:00:00+00:00");
        assert!(parse_now(Some("2024-02-30")).unwrap_err().to_string().contains("--now"));
    }
}
