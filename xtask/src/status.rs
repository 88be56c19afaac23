//! `cargo xtask status`: this checkout's setup at a glance. Starts nothing, changes nothing: it
//! reads the state folder, asks the server (if it is up) read-only questions, and prints.
//!
//! The report is built by pure functions over what was read ([`sets_of`], [`gaps`],
//! [`table_of`], [`test_databases`]) and printed as text ([`render`]) or JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use e2e_migrations::error::report;
use e2e_migrations::lifecycle::{self, local, record, Access, Phase, Saved, Workspace};
use e2e_migrations::partitions::{self, Listing, PartitionSpec};
use e2e_migrations::plan::{MigrationPlan, State};
use e2e_migrations::testdb::{parse_name, DbName};
use e2e_migrations::{db, migrator, Catalog, Project};
use serde::Serialize;

use crate::cli_util::{connect, parse_now, workspace};
use crate::flags::{Output, Status};
use crate::progress::say;

/// Whether `status` and `migrate status` list a migration (pure): with chosen sets, those
/// sets' migrations and every other one that is applied, drifted or partly applied; else all.
pub(crate) fn listed(version: i64, state: State, wanted: &BTreeSet<i64>, chosen: bool) -> bool {
    !chosen || wanted.contains(&version) || state != State::Pending
}

/// The migrations `status` lists (pure), by [`listed`].
pub(crate) fn of_setup_sets(all: Vec<MigrationStatus>, wanted: &BTreeSet<i64>, chosen: bool) -> Vec<MigrationStatus> {
    all.into_iter().filter(|m| listed(m.version, m.state, wanted, chosen)).collect()
}

/// What `status` reports (the JSON form).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Report {
    /// This checkout's state folder.
    pub state_dir: PathBuf,
    /// `none`, `ours`, `copied`, `unreadable` or `earlier-version`.
    pub setup: &'static str,
    /// Why the setup is not usable, when it is not.
    pub note: Option<String>,
    /// The backend the setup used.
    pub backend: Option<String>,
    /// Whether what setup points at was made (and is removed) by it: for the local server,
    /// proven on the live server.
    pub ours: Option<bool>,
    /// Whether the server answers.
    pub up: bool,
    /// How far the last setup got.
    pub phase: Option<Phase>,
    /// The URL, password redacted.
    pub url: Option<String>,
    /// The sets the last setup applied.
    pub setup_sets: Vec<String>,
    /// Each set of the manifest: complete, partial or none.
    pub sets: Vec<SetStatus>,
    /// Every migration of the folder with its state.
    pub migrations: Vec<MigrationStatus>,
    /// Applied versions without a file.
    pub unknown: Vec<i64>,
    /// Pending versions below the newest applied one (goose's `up` refuses them).
    pub gaps: Vec<i64>,
    /// Partitioned tables of the complete sets.
    pub partitions: Vec<TableStatus>,
    /// Test-database templates and their pools.
    pub test_databases: TestDatabases,
    /// Warnings.
    pub warnings: Vec<String>,
}

/// One set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SetStatus {
    /// Its name.
    pub name: String,
    /// `complete`, `partial` or `none`.
    pub state: &'static str,
    /// Applied migrations of the set.
    pub applied: usize,
    /// Migrations of the set.
    pub total: usize,
}

/// One migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MigrationStatus {
    /// Its version.
    pub version: i64,
    /// Its file.
    pub file: String,
    /// Its state.
    pub state: State,
}

/// One partitioned table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TableStatus {
    /// `schema.table`.
    pub table: String,
    /// The spec's interval.
    pub interval: String,
    /// The lowest lower bound of its range partitions.
    pub from: Option<String>,
    /// The highest upper bound.
    pub to: Option<String>,
    /// Range partitions.
    pub partitions: usize,
    /// Periods a roll would add as of the date (`[from, to)`), by partition name.
    pub missing: Vec<String>,
    /// Rows waiting in the default partition.
    pub default_rows: i64,
}

/// The test databases on the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct TestDatabases {
    /// Each template, with its ready clones and the tests' databases made from it.
    pub templates: Vec<TemplateStatus>,
    /// Templates being built.
    pub building: usize,
    /// Ready clones or test databases whose template is gone.
    pub orphans: usize,
    /// Empty databases tests made for themselves (`e2e_migrations::testdb::scratch_name`).
    pub scratch: usize,
}

/// One template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TemplateStatus {
    /// Its name.
    pub name: String,
    /// The sets label.
    pub sets: String,
    /// Ready clones in the pool.
    pub ready: usize,
    /// Tests' databases.
    pub in_use: usize,
}

/// Each set with how many of its migrations are applied (pure).
pub(crate) fn sets_of(catalog: &Catalog<'_>, applied: &BTreeSet<i64>) -> Result<Vec<SetStatus>> {
    let mut out = Vec::new();
    for name in catalog.known() {
        if name == e2e_migrations::sets::ALL && catalog.known().len() > 1 {
            continue;
        }
        let sel = catalog.select(std::slice::from_ref(&name))?;
        let total = sel.migrations.len();
        let n = sel.migrations.iter().filter(|m| applied.contains(&m.version)).count();
        let state = match n {
            0 => "none",
            n if n == total => "complete",
            _ => "partial",
        };
        out.push(SetStatus { name, state, applied: n, total });
    }
    Ok(out)
}

/// Pending versions below the newest applied one (pure).
pub(crate) fn gaps(migrations: &[MigrationStatus]) -> Vec<i64> {
    let applied = |s: State| !matches!(s, State::Pending | State::Partial | State::PartialChanged);
    let Some(newest) = migrations.iter().filter(|m| applied(m.state)).map(|m| m.version).max() else {
        return Vec::new();
    };
    migrations.iter().filter(|m| !applied(m.state) && m.version < newest).map(|m| m.version).collect()
}

/// A table's partition window (pure).
pub(crate) fn table_of(l: &Listing) -> TableStatus {
    let ranges: Vec<_> = l.partitions.iter().filter(|p| !p.default).collect();
    TableStatus {
        table: format!("{}.{}", l.schema, l.table.rsplit('.').next().unwrap_or(&l.table)),
        interval: format!("{:?}", l.interval).to_lowercase(),
        from: ranges.iter().filter_map(|p| p.from.clone()).min(),
        to: ranges.iter().filter_map(|p| p.to.clone()).max(),
        partitions: ranges.len(),
        missing: l.missing.iter().map(|m| format!("{} {}", m.name, m.period)).collect(),
        default_rows: l.partitions.iter().filter(|p| p.default).map(|p| p.rows).sum(),
    }
}

/// Groups the databases this tool's test databases made (pure over the names on the server).
pub(crate) fn test_databases(names: &[String]) -> TestDatabases {
    let mut by_hash: BTreeMap<String, TemplateStatus> = BTreeMap::new();
    let mut clones: Vec<(String, bool)> = Vec::new();
    let (mut building, mut scratch) = (0, 0);
    for n in names {
        match parse_name(n) {
            Some(DbName::Template { hash, label }) => {
                by_hash.insert(hash, TemplateStatus { name: n.clone(), sets: label, ready: 0, in_use: 0 });
            }
            Some(DbName::Ready { hash, .. }) => clones.push((hash, true)),
            Some(DbName::Test { hash, .. }) => clones.push((hash, false)),
            Some(DbName::Build { .. }) => building += 1,
            Some(DbName::Scratch { .. }) => scratch += 1,
            _ => {}
        }
    }
    let mut orphans = 0;
    for (hash, ready) in clones {
        match by_hash.get_mut(&hash) {
            Some(t) if ready => t.ready += 1,
            Some(t) => t.in_use += 1,
            None => orphans += 1,
        }
    }
    TestDatabases { templates: by_hash.into_values().collect(), building, orphans, scratch }
}

/// The text form (pure).
pub(crate) fn render(r: &Report, day: NaiveDate) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("state:       {} ({})", r.state_dir.display(), r.setup));
    if let Some(n) = &r.note {
        line(format!("             {n}"));
    }
    let Some(backend) = &r.backend else {
        return out;
    };
    let ours = match r.ours {
        Some(true) => "ours",
        Some(false) => "not ours",
        None => "ownership unknown",
    };
    let phase = match r.phase {
        Some(Phase::Creating) => ", setup incomplete",
        _ => "",
    };
    line(format!("backend:     {backend} ({ours}, {}{phase})", if r.up { "up" } else { "down" }));
    if let Some(u) = &r.url {
        line(format!("url:         {u}"));
    }
    if !r.setup_sets.is_empty() {
        line(format!("setup sets:  {}", r.setup_sets.join(",")));
    }
    if !r.up {
        return out;
    }
    let sets: Vec<String> =
        r.sets.iter().map(|s| format!("{} {} ({}/{})", s.name, s.state, s.applied, s.total)).collect();
    line(format!("sets:        {}", sets.join(", ")));
    let count = |f: &dyn Fn(State) -> bool| r.migrations.iter().filter(|m| f(m.state)).count();
    line(format!(
        "migrations:  {} applied, {} pending, {} drifted, {} unknown",
        count(&|s| matches!(s, State::Applied | State::AppliedUnverified)),
        count(&|s| matches!(s, State::Pending | State::Partial | State::PartialChanged)),
        count(&|s| s == State::Drifted),
        r.unknown.len()
    ));
    for m in &r.migrations {
        line(format!("  {:>14}  {:<20}  {}", m.version, format!("{:?}", m.state).to_lowercase(), m.file));
    }
    for v in &r.unknown {
        line(format!("  {v:>14}  {:<20}  (no file)", "unknown"));
    }
    if !r.partitions.is_empty() {
        line(format!("partitions (as of {day}):"));
    }
    for t in &r.partitions {
        let window = match (&t.from, &t.to) {
            (Some(f), Some(to)) => format!("[{f}, {to})"),
            _ => "no range partitions".to_string(),
        };
        line(format!(
            "  {} ({}): {window}, {} partitions, {} missing, {} rows in the default partition",
            t.table,
            t.interval,
            t.partitions,
            t.missing.len(),
            t.default_rows
        ));
        for m in &t.missing {
            line(format!("    missing {m}"));
        }
    }
    let td = &r.test_databases;
    line(format!(
        "test databases: {} templates, {} ready, {} in use{}{}{}",
        td.templates.len(),
        td.templates.iter().map(|t| t.ready).sum::<usize>(),
        td.templates.iter().map(|t| t.in_use).sum::<usize>(),
        if td.building > 0 { format!(", {} building", td.building) } else { String::new() },
        if td.orphans > 0 { format!(", {} without a template", td.orphans) } else { String::new() },
        if td.scratch > 0 { format!(", {} scratch", td.scratch) } else { String::new() },
    ));
    for t in &td.templates {
        line(format!("  {} ({}): {} ready, {} in use", t.name, t.sets, t.ready, t.in_use));
    }
    out
}

impl Status {
    pub(crate) async fn run(self) -> Result<()> {
        let now = parse_now(self.now.as_deref())?;
        let ws = workspace()?;
        // an invalid folder hides no more than it must: the setup and server are still shown
        let project = crate::cli_util::project_in(&ws, self.migrations_dir.as_deref());
        let report = gather(&ws, project.as_ref().ok(), now).await?;
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            Output::Text => print!("{}", render(&report, now.date_naive())),
        }
        for w in &report.warnings {
            say!("warning: {w}");
        }
        if report.backend.is_none() {
            say!("hint: `cargo xtask e2e-setup [--sets SET,...]` sets this checkout up");
        }
        project.context("migrations, sets and partitions are not shown")?;
        Ok(())
    }
}

/// Reads everything, read-only.
/// Without a valid `project`, the setup and the server only.
async fn gather(ws: &Workspace, project: Option<&Project>, now: DateTime<Utc>) -> Result<Report> {
    let saved = lifecycle::read_saved(ws)?;
    let file = record::record_file(&ws.state_dir);
    let mut r = Report {
        state_dir: ws.state_dir.clone(),
        setup: "none",
        note: None,
        backend: None,
        ours: None,
        up: false,
        phase: None,
        url: None,
        setup_sets: Vec::new(),
        sets: Vec::new(),
        migrations: Vec::new(),
        unknown: Vec::new(),
        gaps: Vec::new(),
        partitions: Vec::new(),
        test_databases: TestDatabases::default(),
        warnings: Vec::new(),
    };
    let rec = match saved {
        Saved::Ours(rec) => rec,
        Saved::Missing => return Ok(r),
        Saved::Foreign { made_in, .. } => {
            r.setup = "copied";
            r.note = Some(format!("{} was made in {}: not this checkout's", file.display(), made_in.display()));
            return Ok(r);
        }
        Saved::Unreadable { reason } => {
            r.setup = "unreadable";
            r.note = Some(format!("{}: {reason}", file.display()));
            return Ok(r);
        }
        Saved::Legacy { .. } => {
            r.setup = "earlier-version";
            r.note = Some("state of an earlier version: `cargo xtask e2e-teardown` removes it".to_string());
            return Ok(r);
        }
    };
    r.setup = "ours";
    r.backend = Some(rec.setup.backend.name().to_string());
    r.phase = Some(rec.phase);
    r.setup_sets = rec.setup.sets.clone();
    r.ours = Some(rec.setup.owned);
    r.url = rec.setup.database_url.as_deref().map(db::redact);
    if rec.setup.backend == lifecycle::BackendKind::Local {
        let here = std::fs::canonicalize(&ws.state_dir)?;
        if let Some(i) = local::inspect(&here, &rec, ws.connect_timeout).await {
            r.ours = Some(i.not_ours.is_none());
            if let Some(why) = i.not_ours {
                r.warnings.push(format!("a server answers on {} that is not ours: {why}", i.layout.sock.display()));
            }
            if let Some(why) = i.stale {
                r.warnings.push(format!("a stale postmaster.pid in {}: {why}", i.layout.data.display()));
            }
            if let Some(why) = i.hung {
                r.warnings.push(format!("the server of {} does not answer: {why}", i.layout.data.display()));
            }
            if !i.up {
                return Ok(r);
            }
        }
    }
    let endpoint = match lifecycle::resolve(ws, None, Access::ReadOnly).await {
        Ok(e) => e,
        Err(e) => {
            r.warnings.push(format!("cannot reach the server: {}", report(&e)));
            return Ok(r);
        }
    };
    r.url = Some(db::redact(&endpoint.url));
    let mut client = match connect(&endpoint.url, ws.connect_timeout).await {
        Ok(c) => c,
        Err(e) => {
            r.warnings.push(format!("{e:#}"));
            return Ok(r);
        }
    };
    r.up = true;
    let Some(project) = project else {
        return Ok(r);
    };
    let all: Vec<&e2e_migrations::Migration> = project.folder.migrations.iter().collect();
    let plan: MigrationPlan<'_> = migrator::status(&client, &project.folder, &all).await?;
    r.migrations = plan
        .migrations
        .iter()
        .map(|(m, s)| MigrationStatus { version: m.version, file: m.name.clone(), state: *s })
        .collect();
    r.unknown = plan.unknown.clone();
    r.gaps = gaps(&r.migrations);
    if !r.gaps.is_empty() {
        let newest = r.migrations.iter().filter(|m| m.state == State::Applied).map(|m| m.version).max();
        r.warnings.push(format!(
            "applied versions leave a gap: {} pending below the newest applied version {}; goose's own `up` refuses this without -allow-missing",
            r.gaps.iter().map(i64::to_string).collect::<Vec<_>>().join(", "),
            newest.unwrap_or_default()
        ));
    }
    let applied: BTreeSet<i64> = r
        .migrations
        .iter()
        .filter(|m| matches!(m.state, State::Applied | State::AppliedUnverified | State::Drifted))
        .map(|m| m.version)
        .collect();
    let catalog = project.catalog()?;
    r.sets = sets_of(&catalog, &applied)?;
    // the migrations of the setup's sets, and whatever else is applied (gaps were judged over all)
    if let Ok(selection) = catalog.select(&r.setup_sets) {
        let wanted: BTreeSet<i64> = selection.migrations.iter().map(|m| m.version).collect();
        r.migrations = of_setup_sets(std::mem::take(&mut r.migrations), &wanted, !r.setup_sets.is_empty());
    }
    let complete: Vec<String> = r.sets.iter().filter(|s| s.state == "complete").map(|s| s.name.clone()).collect();
    let mut specs: Vec<PartitionSpec> = Vec::new();
    for name in &complete {
        for spec in catalog.select(std::slice::from_ref(name))?.partitions {
            if !specs.iter().any(|s| s.table == spec.table) {
                specs.push(spec);
            }
        }
    }
    match partitions::list(&mut client, &specs, now).await {
        Ok(listings) => r.partitions = listings.iter().map(table_of).collect(),
        Err(e) => r.warnings.push(format!("listing partitions: {}", report(&e))),
    }
    let maintenance = db::with_database(&endpoint.url, "postgres")?;
    match connect(&maintenance, ws.connect_timeout).await {
        Ok(admin) => {
            let rows = admin
                .query("SELECT datname::text FROM pg_database WHERE datname LIKE 'e2e\\_%' ORDER BY 1", &[])
                .await
                .context("listing test databases")?;
            let names: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
            r.test_databases = test_databases(&names);
        }
        Err(e) => r.warnings.push(format!("listing test databases: {e:#}")),
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_the_setup_sets_migrations_and_whatever_else_is_applied() {
        let m = |version: i64, state: State| MigrationStatus { version, file: format!("{version}.sql"), state };
        let all = vec![m(1, State::Applied), m(2, State::Pending), m(3, State::Pending), m(4, State::Applied)];
        let wanted: BTreeSet<i64> = [1, 3].into();
        let shown: Vec<i64> = of_setup_sets(all.clone(), &wanted, true).iter().map(|m| m.version).collect();
        assert_eq!(shown, [1, 3, 4], "2 is pending in a set the setup did not ask for");
        assert_eq!(of_setup_sets(all.clone(), &wanted, false), all, "a setup of all sets lists all");
    }
    use e2e_migrations::source::parse_folder;
    use e2e_migrations::Manifest;
    use expect_test::expect;
    use std::path::Path;

    fn project() -> Project {
        let f = |n: &str| (n.to_string(), "-- +goose Up\nSELECT 1;\n".to_string());
        let folder = parse_folder(
            Path::new("m"),
            vec![f("013_audit.sql"), f("015_workflow.sql"), f("021_notification.sql")],
            &|_| None,
        )
        .unwrap();
        let manifest = Manifest::parse(
            Path::new("m/sets.toml"),
            "[sets.audit]\nfiles=[\"013_audit.sql\"]\n[sets.workflow]\nfiles=[\"015_workflow.sql\"]\n\
             [sets.notification]\nfiles=[\"021_notification.sql\"]\ninclude=[\"audit\"]\n",
        )
        .unwrap();
        Project { folder, manifest: Some(manifest) }
    }

    fn m(version: i64, state: State) -> MigrationStatus {
        MigrationStatus { version, file: format!("{version:03}_x.sql"), state }
    }

    #[test]
    fn sets_are_complete_partial_or_none() {
        let p = project();
        let sets = sets_of(&p.catalog().unwrap(), &[13, 21].into()).unwrap();
        let got: Vec<(&str, &str)> = sets.iter().map(|s| (s.name.as_str(), s.state)).collect();
        assert_eq!(got, [("audit", "complete"), ("notification", "complete"), ("workflow", "none")]);
        let sets = sets_of(&p.catalog().unwrap(), &[21].into()).unwrap();
        assert_eq!(sets[1].state, "partial");
    }

    #[test]
    fn a_pending_version_below_the_newest_applied_is_a_gap() {
        // notification (021) applied without workflow (015): goose's up refuses 015 then.
        let ms = [m(13, State::Applied), m(15, State::Pending), m(21, State::Applied)];
        assert_eq!(gaps(&ms), [15]);
        assert!(gaps(&[m(13, State::Applied), m(15, State::Pending)]).is_empty(), "pending above: no gap");
        assert!(gaps(&[m(13, State::Pending)]).is_empty());
    }

    #[test]
    fn test_databases_are_grouped_by_template() {
        let names: Vec<String> = [
            "e2e_tpl_aaaaaaaaaaaa_audit",
            "e2e_r_aaaaaaaaaaaa_ab12_7_1_1",
            "e2e_r_aaaaaaaaaaaa_ab12_7_1_2",
            "e2e_t_aaaaaaaaaaaa_ab12_7_1_3",
            "e2e_r_bbbbbbbbbbbb_ab12_7_1_4",
            "e2e_b_bbbbbbbbbbbb_ab12_7_1_5",
            "e2e_s_ab12_7_1_6",
            "e2e",
        ]
        .map(String::from)
        .into();
        let td = test_databases(&names);
        assert_eq!(
            td.templates,
            [TemplateStatus { name: "e2e_tpl_aaaaaaaaaaaa_audit".into(), sets: "audit".into(), ready: 2, in_use: 1 }]
        );
        assert_eq!((td.building, td.orphans, td.scratch), (1, 1, 1));
    }

    #[test]
    fn the_text_report_shows_everything_at_a_glance() {
        let r = Report {
            state_dir: "/w/target/e2e".into(),
            setup: "ours",
            note: None,
            backend: Some("local".into()),
            ours: Some(true),
            up: true,
            phase: Some(Phase::Ready),
            url: Some("postgres://e2e:***@127.0.0.1:41000/e2e".into()),
            setup_sets: vec!["audit".into(), "notification".into()],
            sets: vec![
                SetStatus { name: "audit".into(), state: "complete", applied: 1, total: 1 },
                SetStatus { name: "workflow".into(), state: "none", applied: 0, total: 1 },
            ],
            migrations: vec![m(13, State::Applied), m(15, State::Pending), m(21, State::Applied)],
            unknown: vec![],
            gaps: vec![15],
            partitions: vec![TableStatus {
                table: "public.audit_events".into(),
                interval: "monthly".into(),
                from: Some("2025-02-01".into()),
                to: Some("2025-07-01".into()),
                partitions: 5,
                missing: vec!["audit_events_2025_07 [2025-07-01, 2025-08-01)".into()],
                default_rows: 3,
            }],
            test_databases: TestDatabases {
                templates: vec![TemplateStatus {
                    name: "e2e_tpl_aaaaaaaaaaaa_audit".into(),
                    sets: "audit".into(),
                    ready: 2,
                    in_use: 1,
                }],
                building: 0,
                orphans: 0,
                scratch: 0,
            },
            warnings: vec![],
        };
        let day = NaiveDate::from_ymd_opt(2025, 3, 10).unwrap();
        expect![[r#"
            state:       /w/target/e2e (ours)
            backend:     local (ours, up)
            url:         postgres://e2e:***@127.0.0.1:41000/e2e
            setup sets:  audit,notification
            sets:        audit complete (1/1), workflow none (0/1)
            migrations:  2 applied, 1 pending, 0 drifted, 0 unknown
                          13  applied               013_x.sql
                          15  pending               015_x.sql
                          21  applied               021_x.sql
            partitions (as of 2025-03-10):
              public.audit_events (monthly): [2025-02-01, 2025-07-01), 5 partitions, 1 missing, 3 rows in the default partition
                missing audit_events_2025_07 [2025-07-01, 2025-08-01)
            test databases: 1 templates, 2 ready, 1 in use
              e2e_tpl_aaaaaaaaaaaa_audit (audit): 2 ready, 1 in use
        "#]]
        .assert_eq(&render(&r, day));
    }
}
