//! `cargo xtask migrate up|status|plan|down` (and the dispatch of `new`, in `migrate_new`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use e2e_migrations::error::counted;
use e2e_migrations::lifecycle::Access;
use e2e_migrations::plan::State;
use e2e_migrations::{migrator, Migration, Options, Project, Report};
use serde_json::json;

use crate::cli_util::{follow_setup_sets, load_project, open, Step};
use crate::flags::{Migrate, MigrateAction, MigrateDown, MigrateRead, MigrateUp, Output};
use crate::progress::say;
use crate::status::listed;

impl Migrate {
    pub(crate) async fn run(mut self) -> Result<()> {
        match &mut self.action {
            MigrateAction::Up(a) => follow_setup_sets(&mut a.sets, a.db.database_url.as_deref())?,
            MigrateAction::Status(a) | MigrateAction::Plan(a) => {
                follow_setup_sets(&mut a.sets, a.db.database_url.as_deref())?
            }
            MigrateAction::Down(a) => follow_setup_sets(&mut a.sets, a.db.database_url.as_deref())?,
            MigrateAction::New(_) => {}
        }
        match self.action {
            MigrateAction::Up(a) => a.run().await,
            MigrateAction::Status(a) => status(a, false).await,
            MigrateAction::Plan(a) => status(a, true).await,
            MigrateAction::Down(a) => a.run().await,
            MigrateAction::New(a) => a.run(),
        }
    }
}

/// Applies `migrations` of `project` (the selection of `sets`) under a progress step that says
/// how many it applied: what `migrate up` and `e2e-setup` do alike.
pub(crate) async fn up_in_step(
    client: &mut tokio_postgres::Client,
    project: &Project,
    migrations: &[&Migration],
    sets: &[String],
    accept_drift: bool,
    lock_timeout: Duration,
) -> Result<Report> {
    let step = Step::start(format!("migrations ({})", sets_label(sets)));
    let opts = Options { accept_drift, lock_timeout, observer: Some(step.observer()) };
    let report = migrator::up(client, &project.folder, migrations, &opts).await?;
    step.done(format!("{} applied, {} already applied", report.applied.len(), report.already_applied));
    Ok(report)
}

/// Says each migration `report` applied, and warns of applied versions without a file in `dir`.
pub(crate) fn say_applied(report: &Report, dir: &std::path::Path) {
    for a in &report.applied {
        say!("    {}", done_line("applied", a));
        if a.statements == 0 {
            say!("    warning: {}", empty_up_warning(&a.name));
        }
    }
    if let Some(w) = unknown_warning(&report.unknown, dir) {
        say!("    warning: {w}");
    }
}

impl MigrateUp {
    async fn run(self) -> Result<()> {
        let (project, sets) = load_project(&self.sets)?;
        let selection = project.select(&sets)?;
        let (_forward, mut client) = open(&self.db, Access::StartIfNeeded).await?;
        let lock_timeout = Duration::from_secs(self.lock_timeout);
        let report =
            up_in_step(&mut client, &project, &selection.migrations, &sets, self.accept_drift, lock_timeout).await?;
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            Output::Text => say_applied(&report, &project.folder.dir),
        }
        Ok(())
    }
}

impl MigrateDown {
    async fn run(self) -> Result<()> {
        let (project, sets) = load_project(&self.sets)?;
        let selection = project.select(&sets)?;
        let (_forward, mut client) = open(&self.db, Access::StartIfNeeded).await?;
        let step = Step::start(format!("revert ({})", sets_label(&sets)));
        let opts = Options {
            lock_timeout: Duration::from_secs(self.lock_timeout),
            observer: Some(step.observer()),
            ..Options::default()
        };
        let report = migrator::down(&mut client, &project.folder, &selection.migrations, self.to, &opts)
            .await
            .map_err(|e| match e {
                e2e_migrations::Error::Migration { .. } => {
                    anyhow::Error::new(e).context("reverting failed in a Down section: that version stays applied")
                }
                e => e.into(),
            })?;
        step.done(if report.applied.is_empty() {
            "nothing to revert".to_string()
        } else {
            format!("{} reverted", report.applied.len())
        });
        for a in &report.applied {
            say!("    {}", done_line("reverted", a));
        }
        Ok(())
    }
}

/// Said of a migration applied with no statement in its Up section (pure): goose records it as
/// applied too, and SQL written into it afterwards is then drift, never run. Typically a
/// `migrate new` template that a setup applied before it was filled in.
pub(crate) fn empty_up_warning(name: &str) -> String {
    format!(
        "{name} has no statement in its Up section: it is recorded as applied (as goose does), so SQL added to it \
         later will not run; revert it first (`cargo xtask migrate down`) or put the SQL in a new file (`cargo xtask \
         migrate new`)"
    )
}

/// What was done to one migration (pure): `applied 030_new.sql (1 statement, 2 ms)`.
pub(crate) fn done_line(verb: &str, a: &migrator::Applied) -> String {
    format!("{verb} {} ({}, {:.0} ms)", a.name, counted(a.statements as u64, "statement", "statements"), a.duration_ms)
}

/// The sets of a run, for a step's name: `audit,workflow`, or `all` (pure).
pub(crate) fn sets_label(sets: &[String]) -> String {
    if sets.is_empty() {
        "all".to_string()
    } else {
        sets.join(",")
    }
}

/// One line for applied versions without a file (a long list cut with a count), if any.
pub(crate) fn unknown_warning(unknown: &[i64], dir: &std::path::Path) -> Option<String> {
    if unknown.is_empty() {
        return None;
    }
    let versions: Vec<String> = unknown.iter().map(i64::to_string).collect();
    let noun = if unknown.len() == 1 { "version" } else { "versions" };
    Some(format!("{noun} {} applied but with no file in {}", e2e_migrations::error::cut_list(&versions), dir.display()))
}

fn state_word(s: State) -> &'static str {
    match s {
        State::Applied => "applied",
        State::AppliedUnverified => "applied (unverified)",
        State::Drifted => "DRIFTED",
        State::Pending => "pending",
        State::Partial => "partial",
        State::PartialChanged => "PARTIAL, CHANGED",
    }
}

async fn status(a: MigrateRead, plan_only: bool) -> Result<()> {
    let (project, sets) = load_project(&a.sets)?;
    let selection = project.select(&sets)?;
    // Read-only: never starts a server.
    let (_forward, client) = open(&a.db, Access::ReadOnly).await?;
    // `plan` is the sets' own; `status` lists them and every other migration that is applied.
    let all: Vec<&Migration> = project.folder.migrations.iter().collect();
    let mut plan =
        migrator::status(&client, &project.folder, if plan_only { &selection.migrations } else { &all }).await?;
    let wanted: BTreeSet<i64> = selection.migrations.iter().map(|m| m.version).collect();
    plan.migrations.retain(|(m, s)| listed(m.version, *s, &wanted, !sets.is_empty()));
    if plan_only {
        let pending = plan.pending();
        match a.output {
            Output::Json => {
                let items: Vec<_> = pending
                    .iter()
                    .map(|m| {
                        json!({
                            "version": m.version,
                            "file": m.name,
                            "transaction": !m.sql.no_transaction,
                            "resume_after_statement": plan.resume.get(&m.version),
                            "statements": m.sql.up.iter().map(|s| json!({"line": s.first_line(), "sql": s.sql})).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&json!({ "migrations": items }))?);
            }
            Output::Text => {
                if pending.is_empty() {
                    say!("nothing to apply");
                }
                for m in pending {
                    let tx = if m.sql.no_transaction { "NO TRANSACTION" } else { "in one transaction" };
                    println!("-- {} (version {}, {tx})", m.path.display(), m.version);
                    for s in &m.sql.up {
                        println!("-- line {}\n{}\n", s.first_line(), s.sql);
                    }
                }
            }
        }
        return Ok(());
    }
    match a.output {
        Output::Json => {
            let items: Vec<_> = plan
                .migrations
                .iter()
                .map(|(m, s)| json!({"version": m.version, "file": m.name, "state": s, "checksum": m.checksum}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&json!({ "migrations": items, "unknown": plan.unknown }))?);
        }
        Output::Text => {
            println!("{:>14}  {:<22}  FILE", "VERSION", "STATE");
            for (m, s) in &plan.migrations {
                println!("{:>14}  {:<22}  {}", m.version, state_word(*s), m.name);
            }
            for v in &plan.unknown {
                println!("{:>14}  {:<22}  (no file in {})", v, "unknown", project.folder.dir.display());
            }
        }
    }
    let drifted = plan.drifted();
    if !drifted.is_empty() {
        say!("drifted: {}", drifted.iter().map(|m| m.path.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_of_one_statement_says_statement() {
        let a =
            |statements| migrator::Applied { version: 30, name: "030_new.sql".into(), statements, duration_ms: 2.4 };
        assert_eq!(done_line("applied", &a(1)), "applied 030_new.sql (1 statement, 2 ms)");
        assert_eq!(done_line("reverted", &a(3)), "reverted 030_new.sql (3 statements, 2 ms)");
    }

    #[test]
    fn unknown_versions_are_one_short_line() {
        let dir = std::path::Path::new("m");
        assert_eq!(unknown_warning(&[], dir), None);
        assert_eq!(unknown_warning(&[7], dir).unwrap(), "version 7 applied but with no file in m");
        let many: Vec<i64> = (1..=40).collect();
        assert_eq!(
            unknown_warning(&many, dir).unwrap(),
            "versions 1, 2, 3, 4, 5, 6, 7, 8 and 32 more applied but with no file in m"
        );
    }
}
