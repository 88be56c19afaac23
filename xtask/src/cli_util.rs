//! What the commands share: this checkout's workspace, its migrations, the server to reach,
//! the `--now` date, and the steps' progress on stderr ([`Step`], from [`crate::progress`]).

use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use e2e_migrations::lifecycle::{self, Access, Endpoint, Saved, Workspace};
use e2e_migrations::Project;

use crate::flags::{DbArgs, SetArgs};
use crate::progress::say;
pub(crate) use crate::progress::Step;

/// The checkout the command runs in (from the current folder).
pub(crate) fn workspace() -> Result<Workspace> {
    Ok(Workspace::current()?)
}

/// Loads and validates the migrations folder (`--migrations-dir`, else the workspace's) and the
/// requested sets, before any database.
pub(crate) fn load_project(args: &SetArgs) -> Result<(Project, Vec<String>)> {
    let project = project_in(&workspace()?, args.migrations_dir.as_deref())?;
    if project.folder.migrations.is_empty() {
        say!("warning: {} holds no migration (NNN_name.sql): nothing to apply", project.folder.dir.display());
    }
    let sets = match &args.sets {
        Some(s) => e2e_migrations::sets::parse_set_list(s)?,
        None => Vec::new(),
    };
    let selection = project.select(&sets)?;
    for w in &selection.warnings {
        say!("{w}");
    }
    Ok((project, sets))
}

/// The migrations folder `dir` (`--migrations-dir`, relative to the workspace root), else the
/// workspace's own, loaded and validated.
pub(crate) fn project_in(ws: &Workspace, dir: Option<&Path>) -> Result<Project> {
    match dir {
        Some(d) => {
            let dir = ws.resolve(d);
            if !dir.is_dir() {
                anyhow::bail!(
                    "--migrations-dir (or E2E_MIGRATIONS_DIR) {}: no such folder (a relative path is taken from the \
                     workspace root, {})",
                    dir.display(),
                    ws.root.display()
                );
            }
            Project::load(&dir)
        }
        None => ws.project(),
    }
    .context("invalid migrations")
}

/// The sets a command that follows a setup uses when `--sets` is not given (pure): the sets
/// the setup applied, when the command reaches that setup's server (no URL given, or its URL).
pub(crate) fn default_sets(given: Option<&str>, url: Option<&str>, saved: &Saved) -> Option<String> {
    if given.is_some() {
        return None;
    }
    let Saved::Ours(rec) = saved else { return None };
    let setup = &rec.setup;
    let same_server = match url.filter(|u| !u.trim().is_empty()) {
        None => true,
        Some(u) => setup.database_url.as_deref() == Some(u),
    };
    (same_server && !setup.sets.is_empty()).then(|| setup.sets.join(","))
}

/// Fills `--sets` from this checkout's setup when it is not given ([`default_sets`]), and says so.
/// Not with `--migrations-dir`: the setup's sets are those of the workspace's own folder.
pub(crate) fn follow_setup_sets(args: &mut SetArgs, url: Option<&str>) -> Result<()> {
    if args.sets.is_some() || args.migrations_dir.is_some() {
        return Ok(());
    }
    let saved = lifecycle::read_saved(&workspace()?)?;
    if let Some(sets) = default_sets(None, url, &saved) {
        say!("sets: {sets} (this checkout's setup; --sets to choose others)");
        args.sets = Some(sets);
    }
    Ok(())
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
    use e2e_migrations::lifecycle::{Phase, Record, SetupState};

    fn saved(sets: &[&str]) -> Saved {
        Saved::Ours(Record {
            format: e2e_migrations::lifecycle::record::RECORD_FORMAT,
            made_in: "/w/target/e2e".into(),
            instance_id: "i".into(),
            phase: Phase::Ready,
            setup: SetupState {
                database_url: Some("postgres://e2e:pw@127.0.0.1:5/e2e".into()),
                sets: sets.iter().map(|s| s.to_string()).collect(),
                ..SetupState::local()
            },
            local: None,
        })
    }

    #[test]
    fn now_is_midday_utc_of_the_date() {
        assert_eq!(parse_now(Some("2024-02-29")).unwrap().to_rfc3339(), "2024-02-29T12:00:00+00:00");
        assert!(parse_now(Some("2024-02-30")).unwrap_err().to_string().contains("--now"));
    }

    #[test]
    fn later_commands_default_to_the_sets_of_the_setup_they_reach() {
        let s = saved(&["audit", "notification"]);
        assert_eq!(default_sets(None, None, &s).as_deref(), Some("audit,notification"));
        assert_eq!(
            default_sets(None, Some("postgres://e2e:pw@127.0.0.1:5/e2e"), &s).as_deref(),
            Some("audit,notification")
        );
        assert_eq!(default_sets(Some("workflow"), None, &s), None, "--sets wins");
        assert_eq!(default_sets(None, Some("postgres://elsewhere/db"), &s), None, "another server: all sets");
        assert_eq!(default_sets(None, None, &saved(&[])), None, "a setup of all sets");
        assert_eq!(default_sets(None, None, &Saved::Missing), None);
    }
}
