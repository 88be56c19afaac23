//! `cargo xtask partitions roll|list|prune`: the declared partitions of the selected sets.

use std::time::Duration;

use anyhow::Result;
use e2e_migrations::error::counted;
use e2e_migrations::lifecycle::{Access, Endpoint};
use e2e_migrations::partitions::{self, Listing, PartitionSpec, RollOptions, RollReport};

use crate::cli_util::{follow_setup_sets, load_project, open, parse_now};
use crate::flags::{Output, Partitions, PartitionsAction, PartitionsArgs, PartitionsChange};
use crate::progress::say;

impl Partitions {
    pub(crate) async fn run(self) -> Result<()> {
        match self.action {
            PartitionsAction::Roll(a) => change(a, false).await,
            PartitionsAction::Prune(a) => change(a, true).await,
            PartitionsAction::List(a) => list(a).await,
        }
    }
}

/// The specs of the selected sets and a connection (the endpoint keeps a port-forward alive);
/// `None` (said on stderr) when there are none.
async fn prepare(
    c: &PartitionsArgs,
    access: Access,
) -> Result<Option<(Vec<PartitionSpec>, Endpoint, tokio_postgres::Client)>> {
    let mut set_args = c.sets.clone();
    follow_setup_sets(&mut set_args, c.db.database_url.as_deref())?;
    let (project, sets) = load_project(&set_args)?;
    let specs = project.select(&sets)?.partitions;
    if specs.is_empty() {
        let label = if sets.is_empty() { "all".to_string() } else { sets.join(",") };
        say!("no partitioned tables are declared in the selected sets ({label})");
        return Ok(None);
    }
    let (endpoint, client) = open(&c.db, access).await?;
    Ok(Some((specs, endpoint, client)))
}

async fn change(a: PartitionsChange, prune_only: bool) -> Result<()> {
    let now = parse_now(a.common.now.as_deref())?;
    let Some((specs, _endpoint, mut client)) = prepare(&a.common, Access::StartIfNeeded).await? else {
        return Ok(());
    };
    let opts =
        RollOptions { lock_timeout: Duration::from_secs(a.lock_timeout), prune: !a.no_prune, ..RollOptions::default() };
    let report = if prune_only {
        partitions::prune(&mut client, &specs, now, &opts).await?
    } else {
        partitions::roll(&mut client, &specs, now, &opts).await?
    };
    match a.common.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            for line in report_lines(&report) {
                println!("{line}");
            }
        }
    }
    for n in &report.notes {
        say!("note: {n}");
    }
    say!("{}", summary(&report, now.date_naive(), prune_only));
    Ok(())
}

/// One stdout line per change.
fn report_lines(r: &RollReport) -> Vec<String> {
    let mut lines: Vec<String> = r.created.iter().map(|n| format!("created {n}")).collect();
    if r.moved_rows > 0 {
        lines.push(format!("moved {} out of default partitions", counted(r.moved_rows, "row", "rows")));
    }
    lines.extend(r.pruned.iter().map(|n| format!("pruned {n}")));
    lines
}

/// The stderr summary.
fn summary(r: &RollReport, day: chrono::NaiveDate, prune_only: bool) -> String {
    if prune_only {
        return format!("as of {day}: {} pruned", r.pruned.len());
    }
    format!(
        "as of {day}: {} created, {} already present, {} moved from default partitions, {} pruned",
        r.created.len(),
        r.present,
        counted(r.moved_rows, "row", "rows"),
        r.pruned.len()
    )
}

async fn list(a: PartitionsArgs) -> Result<()> {
    let now = parse_now(a.now.as_deref())?;
    // Read-only: never starts a server.
    let Some((specs, _endpoint, mut client)) = prepare(&a, Access::ReadOnly).await? else {
        return Ok(());
    };
    let listings = partitions::list(&mut client, &specs, now).await?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "tables": listings }))?),
        Output::Text => print!("{}", render_listings(&listings, now.date_naive())),
    }
    Ok(())
}

/// The text form of `list`: per table, a header and one line per partition.
fn render_listings(listings: &[Listing], day: chrono::NaiveDate) -> String {
    let mut out = String::new();
    for l in listings {
        let key = serde_json::to_value(l.key).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let interval = format!("{:?}", l.interval).to_lowercase();
        // counted as `status` counts them: the range partitions, and the default apart
        let ranged = l.partitions.iter().filter(|p| !p.default).count();
        let default = if l.partitions.iter().any(|p| p.default) { " and the default" } else { "" };
        out.push_str(&format!(
            "{}.{} ({} {key}, {interval}): {ranged} partitions{default}, {} rows\n",
            l.schema,
            l.table.rsplit('.').next().unwrap_or(&l.table),
            l.column,
            l.total_rows
        ));
        let width = l.partitions.iter().map(|p| p.name.len()).max().unwrap_or(9).max(9);
        out.push_str(&format!("  {:<width$}  {:<19}  {:<19}  {:>10}\n", "PARTITION", "FROM", "TO", "ROWS"));
        for p in &l.partitions {
            let (from, to) = match (&p.from, &p.to) {
                (Some(f), Some(t)) => (f.as_str(), t.as_str()),
                _ => ("DEFAULT", ""),
            };
            let mark = if p.by_spec { "" } else { "  (not named by the spec)" };
            out.push_str(&format!("  {:<width$}  {from:<19}  {to:<19}  {:>10}{mark}\n", p.name, p.rows));
        }
        for m in &l.missing {
            out.push_str(&format!(
                "  missing as of {day}: {} {} (run `cargo xtask partitions roll`)\n",
                m.name, m.period
            ));
        }
        for n in &l.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2e_migrations::partitions::{calendar, Interval, KeyType, Listed};
    use expect_test::expect;

    fn d(s: &str) -> chrono::NaiveDate {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn list_text_shows_bounds_rows_and_what_is_missing() {
        let p = |name: &str, from: Option<&str>, to: Option<&str>, rows, by_spec| Listed {
            name: name.into(),
            schema: "public".into(),
            bounds: String::new(),
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            default: from.is_none(),
            rows,
            by_spec,
        };
        let listing = Listing {
            table: "audit_events".into(),
            schema: "public".into(),
            column: "event_date".into(),
            key: KeyType::Date,
            interval: Interval::Monthly,
            partitions: vec![
                p("audit_events_y2024m11", Some("2024-11-01"), Some("2024-12-01"), 3, false),
                p("audit_events_2024_12", Some("2024-12-01"), Some("2025-01-01"), 12, true),
                p("audit_events_default", None, None, 1, true),
            ],
            total_rows: 16,
            missing: vec![calendar::Wanted {
                name: "audit_events_2025_01".into(),
                period: calendar::Period { from: d("2025-01-01"), to: d("2025-02-01") },
            }],
            notes: vec![],
        };
        expect![[r#"
            public.audit_events (event_date date, monthly): 2 partitions and the default, 16 rows
              PARTITION              FROM                 TO                         ROWS
              audit_events_y2024m11  2024-11-01           2024-12-01                    3  (not named by the spec)
              audit_events_2024_12   2024-12-01           2025-01-01                   12
              audit_events_default   DEFAULT                                            1
              missing as of 2024-12-15: audit_events_2025_01 [2025-01-01, 2025-02-01) (run `cargo xtask partitions roll`)
        "#]]
        .assert_eq(&render_listings(&[listing], d("2024-12-15")));
    }

    #[test]
    fn roll_lines_and_summary() {
        let r = RollReport {
            created: vec!["t_2025_01".into()],
            moved_rows: 4,
            pruned: vec!["t_2024_01".into()],
            present: 4,
            notes: vec![],
        };
        assert_eq!(
            report_lines(&r),
            ["created t_2025_01", "moved 4 rows out of default partitions", "pruned t_2024_01"]
        );
        assert_eq!(
            summary(&r, d("2024-12-15"), false),
            "as of 2024-12-15: 1 created, 4 already present, 4 rows moved from default partitions, 1 pruned"
        );
        let one = RollReport { moved_rows: 1, ..r };
        assert_eq!(report_lines(&one)[1], "moved 1 row out of default partitions");
        assert!(summary(&one, d("2024-12-15"), false).contains(", 1 row moved from default partitions,"));
    }
}
