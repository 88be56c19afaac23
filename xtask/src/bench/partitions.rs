//! Bench case `partitions_120`: 120 monthly partitions of `audit_events`, ours against pg_partman.
//!
//! Both start from a fresh database holding the `audit` set's `audit_events` (its nine indexes,
//! primary key and self-referencing foreign key), untimed. Timed: ours, `partitions::roll` of a
//! monthly spec 115 behind and 4 ahead of today; the baseline, pg_partman's `create_parent`
//! starting 115 months back with `p_premake` 4. Both make the same 120 ranges plus a default
//! partition, each with every index, and the case checks that they did.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{Datelike, Months, NaiveDate, Utc};
use e2e_migrations::partitions::{self, PartitionSpec, RollOptions};
use e2e_migrations::{migrator, Options, Project};
use tokio_postgres::Client;

use super::{fresh_db, median, CaseResult, Ctx, Goal};
use crate::progress::say;

/// The Debian package that brings pg_partman for a server of `server_version_num` (`150004` is
/// 15.4): `postgresql-15-partman`.
pub(crate) fn partman_package(server_version_num: i32) -> String {
    format!("postgresql-{}-partman", server_version_num / 10_000)
}

const BEHIND: u32 = 115;
const AHEAD: u32 = 4;
const RANGES: i64 = (BEHIND + 1 + AHEAD) as i64;

/// `partitions_120`: ours against pg_partman (or ours alone, said plainly, when it is missing).
pub(crate) async fn partitions_120(ctx: &Ctx) -> Result<Vec<CaseResult>> {
    let project = Project::load(&ctx.root.join("migrations"))?;
    let spec = PartitionSpec { behind: BEHIND, ahead: AHEAD, ..PartitionSpec::monthly("audit_events", "event_date") };
    let admin = e2e_migrations::db::connect(&ctx.server.url_for("postgres")).await?;
    let partman = admin
        .query_opt("SELECT default_version FROM pg_available_extensions WHERE name = 'pg_partman'", &[])
        .await?
        .map(|r| r.get::<_, String>(0));
    if partman.is_none() {
        let version: i32 = admin.query_one("SELECT current_setting('server_version_num')::int", &[]).await?.get(0);
        say!(
            "  pg_partman is NOT installed on this machine (apt-get install {}): partitions_120 measures ours alone, \
             without its baseline",
            partman_package(version)
        );
    }

    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let mut c = audit_table(ctx, &project, "bench_part_ours").await?;
        let start = Instant::now();
        let report = partitions::roll(&mut c, std::slice::from_ref(&spec), Utc::now(), &RollOptions::default()).await?;
        ours.push(start.elapsed().as_secs_f64());
        check_count(&c, "ours").await?;
        if report.created.len() as i64 != RANGES + 1 {
            bail!("ours created {} partitions, expected {} and a default one", report.created.len(), RANGES);
        }

        if let Some(version) = &partman {
            let c = audit_table(ctx, &project, "bench_part_partman").await?;
            c.batch_execute("CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman; SET TimeZone = 'UTC'")
                .await
                .context("installing pg_partman in the bench database")?;
            let sql = create_parent_sql(version, first_month(Utc::now().date_naive()));
            let start = Instant::now();
            c.batch_execute(&sql).await.with_context(|| format!("pg_partman {version}: {sql}"))?;
            base.push(start.elapsed().as_secs_f64());
            check_count(&c, &format!("pg_partman {version}")).await?;
        }
    }
    let goal = Goal::RatioAtMost(1.0);
    Ok(vec![match &partman {
        Some(v) => CaseResult::pair("partitions_120", &format!("pg_partman {v}"), median(ours), median(base), goal),
        None => CaseResult::alone("partitions_120", median(ours), goal),
    }])
}

/// A fresh database with `audit_events` created by the project's `audit` set.
async fn audit_table(ctx: &Ctx, project: &Project, name: &str) -> Result<Client> {
    let url = fresh_db(ctx, name).await?;
    let mut c = e2e_migrations::db::connect(&url).await?;
    let sel = project.select(&["audit".to_string()])?;
    let opts = Options { lock_timeout: Duration::from_secs(30), ..Options::default() };
    migrator::up(&mut c, &project.folder, &sel.migrations, &opts).await?;
    Ok(c)
}

/// The first month of the 120: 115 months before this one.
fn first_month(today: NaiveDate) -> NaiveDate {
    let this = today.with_day(1).expect("day 1 exists");
    this.checked_sub_months(Months::new(BEHIND)).expect("in the calendar")
}

/// `create_parent` as the installed major version spells it (4.x takes a type `native` and an
/// interval keyword; 5.x takes an interval and defaults to range partitioning).
fn create_parent_sql(version: &str, start: NaiveDate) -> String {
    if version.starts_with("4.") {
        format!(
            "SELECT partman.create_parent(p_parent_table := 'public.audit_events', p_control := 'event_date', \
             p_type := 'native', p_interval := 'monthly', p_premake := {AHEAD}, p_start_partition := '{start}')"
        )
    } else {
        format!(
            "SELECT partman.create_parent(p_parent_table := 'public.audit_events', p_control := 'event_date', \
             p_interval := '1 month', p_premake := {AHEAD}, p_start_partition := '{start}')"
        )
    }
}

/// Both sides must end with the 120 ranges and one default partition, each with all indexes.
async fn check_count(c: &Client, who: &str) -> Result<()> {
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_get_expr(p.relpartbound, p.oid) <> 'DEFAULT'),
                    count(*) FILTER (WHERE pg_get_expr(p.relpartbound, p.oid) = 'DEFAULT'),
                    min((SELECT count(*) FROM pg_index x WHERE x.indrelid = p.oid)),
                    (SELECT count(*) FROM pg_index x WHERE x.indrelid = 'audit_events'::regclass)
               FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
              WHERE i.inhparent = 'audit_events'::regclass",
            &[],
        )
        .await?;
    let (ranges, defaults, min_indexes, parent_indexes): (i64, i64, Option<i64>, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if ranges != RANGES || defaults != 1 || min_indexes != Some(parent_indexes) {
        bail!(
            "{who} made {ranges} ranged and {defaults} default partitions (the least indexed with {min_indexes:?} of \
             {parent_indexes} indexes); expected {RANGES} and 1, all indexed"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_120_months_end_four_after_this_one() {
        let today = NaiveDate::from_ymd_opt(2025, 3, 17).unwrap();
        assert_eq!(first_month(today), NaiveDate::from_ymd_opt(2015, 8, 1).unwrap());
        // 2015-08 .. 2025-07 is 120 months: 115 behind, this one, 4 ahead.
        assert_eq!(
            first_month(today).checked_add_months(Months::new(120)).unwrap(),
            NaiveDate::from_ymd_opt(2025, 8, 1).unwrap()
        );
    }

    #[test]
    fn the_partman_package_follows_the_servers_major_version() {
        assert_eq!(partman_package(150_004), "postgresql-15-partman");
        assert_eq!(partman_package(160_001), "postgresql-16-partman");
        assert_eq!(partman_package(170_000), "postgresql-17-partman");
    }

    #[test]
    fn create_parent_follows_the_installed_major_version() {
        let start = NaiveDate::from_ymd_opt(2015, 8, 1).unwrap();
        assert!(create_parent_sql("4.7.2", start).contains("p_type := 'native', p_interval := 'monthly'"));
        assert!(create_parent_sql("5.1.0", start).contains("p_interval := '1 month'"));
        assert!(create_parent_sql("5.1.0", start).contains("p_start_partition := '2015-08-01'"));
    }
}
