//! Partition tests against the real server: rolling at several instants, later rolls, rows moved
//! out of the default partition, retention, foreign names and overlaps, concurrent inserts, and
//! specs that do not fit their table.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, Utc};
use e2e_migrations::partitions::{
    self, calendar, Interval, KeyType, PartitionSpec, Retention, RetentionAction, RollOptions, RollReport,
};
use e2e_migrations::{migrator, Options, Project};
use tokio_postgres::Client;

use crate::support::{count, FreshDb};

/// The whole error chain, as the CLI shows it.
fn report(e: &(dyn std::error::Error + 'static)) -> String {
    e2e_migrations::error::report(e)
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Midday UTC of a date, as `--now` reads it.
fn at(s: &str) -> DateTime<Utc> {
    day(s).and_hms_opt(12, 0, 0).unwrap().and_utc()
}

/// Rolls `spec` as on `date` (midday UTC) with the default options.
async fn roll_at(c: &mut Client, spec: &PartitionSpec, date: &str) -> e2e_migrations::Result<RollReport> {
    partitions::roll(c, std::slice::from_ref(spec), at(date), &RollOptions::default()).await
}

/// A fresh database with the project's `audit` set applied; and its spec from the manifest.
async fn audit_db() -> (FreshDb, Client, PartitionSpec) {
    let db = FreshDb::new();
    let mut c = db.connect().await;
    let project = Project::load(&e2e_test_support::repo_migrations_dir()).unwrap();
    let sel = project.select(&["audit".into()]).unwrap();
    migrator::up(&mut c, &project.folder, &sel.migrations, &Options::default()).await.unwrap();
    assert_eq!(sel.partitions.len(), 1);
    let spec = sel.partitions[0].clone();
    assert_eq!(spec, PartitionSpec::monthly("audit_events", "event_date"), "the audit set declares the defaults");
    (db, c, spec)
}

/// Inserts one audit event on `date` (optionally referencing a parent event); returns its id.
async fn insert_event(c: &Client, date: NaiveDate, parent: Option<(&str, NaiveDate)>) -> String {
    let (pid, pdate) = match parent {
        Some((id, d)) => (Some(id.to_string()), Some(d)),
        None => (None, None),
    };
    c.query_one(
        "INSERT INTO audit_events (event_date, event_type, event_category, event_action, event_outcome, actor_type,
                                   actor_id, resource_type, resource_id, correlation_id, event_data,
                                   parent_event_id, parent_event_date)
         VALUES ($1, 'test', 'test', 'create', 'success', 'user', 'u1', 'thing', 'r1', 'c1', '{}', $2::text::uuid, $3)
         RETURNING event_id::text",
        &[&date, &pid, &pdate],
    )
    .await
    .unwrap_or_else(|e| panic!("insert on {date}: {e}"))
    .get(0)
}

/// Partition name -> bounds text, as the catalog has them.
async fn partitions_of(c: &Client, table: &str) -> Vec<(String, String)> {
    c.query(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = $1::text::regclass ORDER BY 1",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn names(parts: &[(String, String)]) -> Vec<&str> {
    parts.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn audit_window_is_covered_at_several_instants() {
    for (now, expected) in [
        ("2024-07-15", ["2024_06", "2024_07", "2024_08", "2024_09", "2024_10"]),
        ("2024-12-15", ["2024_11", "2024_12", "2025_01", "2025_02", "2025_03"]),
        ("2024-02-29", ["2024_01", "2024_02", "2024_03", "2024_04", "2024_05"]),
        ("2023-02-28", ["2023_01", "2023_02", "2023_03", "2023_04", "2023_05"]),
    ] {
        let (_db, mut c, spec) = audit_db().await;
        let report = roll_at(&mut c, &spec, now).await.unwrap();
        let mut want: Vec<String> = expected.iter().map(|s| format!("audit_events_{s}")).collect();
        want.push("audit_events_default".into());
        assert_eq!(report.created, want, "at {now}");
        assert_eq!(report.moved_rows, 0);
        let parts = partitions_of(&c, "audit_events").await;
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(names(&parts), sorted, "at {now}");

        // Every day of the window takes a row, and none lands in the default partition.
        let window = calendar::window(&spec, at(now));
        let mut d = window.from;
        let mut days = 0;
        while d < window.to {
            insert_event(&c, d, None).await;
            d = d + Days::new(1);
            days += 1;
        }
        assert!(days >= 150, "at {now}: {days} days");
        assert_eq!(count(&c, "SELECT count(*) FROM audit_events_default").await, 0, "at {now}");
        assert_eq!(count(&c, "SELECT count(*) FROM ONLY audit_events").await, 0);
        assert_eq!(count(&c, "SELECT count(*) FROM audit_events").await, days);
        // Each row is in the partition of its month.
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM audit_events
                  WHERE tableoid::regclass::text <> 'audit_events_' || to_char(event_date, 'YYYY_MM')"
            )
            .await,
            0,
            "at {now}"
        );

        // Idempotent: the same instant again changes nothing.
        let again = roll_at(&mut c, &spec, now).await.unwrap();
        assert!(again.created.is_empty() && again.pruned.is_empty() && again.moved_rows == 0, "{again:?}");
        assert_eq!(again.present, 5);
        assert_eq!(partitions_of(&c, "audit_events").await, parts);
    }
}

#[tokio::test]
async fn later_roll_adds_exactly_the_new_periods() {
    let (_db, mut c, spec) = audit_db().await;
    roll_at(&mut c, &spec, "2024-12-15").await.unwrap();
    let later = roll_at(&mut c, &spec, "2025-02-10").await.unwrap();
    assert_eq!(later.created, ["audit_events_2025_04", "audit_events_2025_05"]);
    assert_eq!(later.present, 3);
    // Without retention nothing old goes away.
    assert_eq!(partitions_of(&c, "audit_events").await.len(), 5 + 2 + 1);
}

#[tokio::test]
async fn rows_waiting_in_the_default_partition_move_into_new_partitions() {
    let (_db, mut c, spec) = audit_db().await;
    roll_at(&mut c, &spec, "2024-12-15").await.unwrap();
    // Rows for April and May 2025 arrive before their partitions: they wait in the default one,
    // one of them referencing another (the table's self-referencing foreign key).
    let mut ids = Vec::new();
    let parent = insert_event(&c, day("2025-04-03"), None).await;
    ids.push(parent.clone());
    ids.push(insert_event(&c, day("2025-05-20"), Some((&parent, day("2025-04-03")))).await);
    for d in ["2025-04-01", "2025-04-30", "2025-05-01", "2025-05-31"] {
        ids.push(insert_event(&c, day(d), None).await);
    }
    let far = insert_event(&c, day("2030-01-01"), None).await;
    ids.push(insert_event(&c, day("2024-12-24"), None).await);
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_default").await, 7);
    let before: Vec<(String, String)> = c
        .query("SELECT event_id::text, md5(row_to_json(a)::text) FROM audit_events a ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let report = roll_at(&mut c, &spec, "2025-02-10").await.unwrap();
    assert_eq!(report.created, ["audit_events_2025_04", "audit_events_2025_05"]);
    assert_eq!(report.moved_rows, 6);
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_2025_04").await, 3);
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_2025_05").await, 3);
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_default").await, 1);
    assert_eq!(count(&c, &format!("SELECT count(*) FROM audit_events_default WHERE event_id = '{far}'")).await, 1);
    // The same rows, byte for byte: none lost, none duplicated, nothing rewritten.
    let after: Vec<(String, String)> = c
        .query("SELECT event_id::text, md5(row_to_json(a)::text) FROM audit_events a ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM audit_events_2025_05 WHERE parent_event_id = '{parent}'")).await,
        1,
        "the child row keeps its reference"
    );

    // `list` sees the same thing, with bounds and row counts, and serialises.
    let listing = partitions::list(&mut c, std::slice::from_ref(&spec), at("2025-02-10")).await.unwrap();
    let l = &listing[0];
    assert_eq!(l.total_rows, 8);
    assert!(l.missing.is_empty());
    let may = l.partitions.iter().find(|p| p.name == "audit_events_2025_05").unwrap();
    assert_eq!(
        (may.from.as_deref(), may.to.as_deref(), may.rows, may.by_spec),
        (Some("2025-05-01"), Some("2025-06-01"), 3, true)
    );
    let last = l.partitions.last().unwrap();
    assert!(last.default && last.rows == 1 && last.bounds == "DEFAULT");
    let json = serde_json::to_value(&listing).unwrap();
    assert_eq!(json[0]["partitions"][0]["name"], "audit_events_2024_11");
}

/// A small partitioned table created inline, with an identity and a generated column (which
/// moving rows must keep and recompute).
async fn small_table(c: &Client, name: &str, key_type: &str) {
    c.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint GENERATED ALWAYS AS IDENTITY, k {key_type} NOT NULL, note text,
                              note_len int GENERATED ALWAYS AS (length(note)) STORED) PARTITION BY RANGE (k)"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn retention_detaches_or_drops_only_what_it_should() {
    for action in [RetentionAction::Detach, RetentionAction::Drop] {
        let db = FreshDb::new();
        let mut c = db.connect().await;
        small_table(&c, "metrics", "date").await;
        let spec =
            PartitionSpec { retention: Some(Retention { keep: 1, action }), ..PartitionSpec::monthly("metrics", "k") };
        // A hand-made old partition under another name: never ours to prune.
        c.batch_execute(
            "CREATE TABLE metrics_archive PARTITION OF metrics FOR VALUES FROM ('2024-01-01') TO ('2024-05-01')",
        )
        .await
        .unwrap();
        let first = roll_at(&mut c, &spec, "2024-06-15").await.unwrap();
        assert_eq!(
            first.created,
            [
                "metrics_2024_05",
                "metrics_2024_06",
                "metrics_2024_07",
                "metrics_2024_08",
                "metrics_2024_09",
                "metrics_default"
            ]
        );
        c.batch_execute(
            "INSERT INTO metrics (k) SELECT d FROM generate_series('2024-04-01'::date, '2024-09-30', '1 day') d",
        )
        .await
        .unwrap();

        let later = roll_at(&mut c, &spec, "2024-09-15").await.unwrap();
        assert_eq!(later.created, ["metrics_2024_10", "metrics_2024_11", "metrics_2024_12"]);
        // Cutoff: 1 period kept behind September, so everything ending by August 1st goes.
        assert_eq!(later.pruned, ["metrics_2024_05", "metrics_2024_06", "metrics_2024_07"]);
        assert!(later.notes.iter().any(|n| n.contains("keeps metrics_archive")), "{:?}", later.notes);
        assert_eq!(
            names(&partitions_of(&c, "metrics").await),
            [
                "metrics_2024_08",
                "metrics_2024_09",
                "metrics_2024_10",
                "metrics_2024_11",
                "metrics_2024_12",
                "metrics_archive",
                "metrics_default"
            ]
        );
        let left = count(
            &c,
            "SELECT count(*) FROM pg_class WHERE relname IN ('metrics_2024_05', 'metrics_2024_06', 'metrics_2024_07')",
        )
        .await;
        match action {
            RetentionAction::Detach => {
                assert_eq!(left, 3, "detached tables stay");
                assert_eq!(count(&c, "SELECT count(*) FROM metrics_2024_06").await, 30, "with their rows");
            }
            RetentionAction::Drop => assert_eq!(left, 0, "dropped tables are gone"),
        }
        // April (in the hand-made partition), August and September are left.
        assert_eq!(count(&c, "SELECT count(*) FROM metrics").await, 30 + 31 + 30);
        // Again: nothing more to prune, nothing to create.
        let again = roll_at(&mut c, &spec, "2024-09-15").await.unwrap();
        assert!(again.created.is_empty() && again.pruned.is_empty(), "{again:?}");
        // `prune` alone creates nothing, even when a roll would.
        let pruned = partitions::prune(&mut c, std::slice::from_ref(&spec), at("2025-03-15"), &RollOptions::default())
            .await
            .unwrap();
        assert!(pruned.created.is_empty());
        assert_eq!(
            pruned.pruned,
            ["metrics_2024_08", "metrics_2024_09", "metrics_2024_10", "metrics_2024_11", "metrics_2024_12"]
        );
    }
}

#[tokio::test]
async fn foreign_named_partition_is_respected_and_overlap_reported() {
    let (_db, mut c, spec) = audit_db().await;
    c.batch_execute(
        "CREATE TABLE audit_events_y2024m12 PARTITION OF audit_events FOR VALUES FROM ('2024-12-01') TO ('2025-01-01');
         CREATE TABLE audit_events_odd PARTITION OF audit_events FOR VALUES FROM ('2025-02-15') TO ('2025-03-15');",
    )
    .await
    .unwrap();
    let report = roll_at(&mut c, &spec, "2024-12-15").await.unwrap();
    assert_eq!(report.created, ["audit_events_2024_11", "audit_events_2025_01", "audit_events_default"]);
    assert!(report.notes.iter().any(|n| n.contains("covered by audit_events_y2024m12")), "{:?}", report.notes);
    let overlaps: Vec<&String> = report.notes.iter().filter(|n| n.contains("overlap")).collect();
    assert_eq!(overlaps.len(), 2, "{:?}", report.notes);
    assert!(overlaps[0].contains("audit_events_2025_02") && overlaps[1].contains("audit_events_2025_03"));
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'audit_events_2024_12'").await, 0);
    // A row for December goes to the foreign-named partition, as the catalog says it should.
    insert_event(&c, day("2024-12-24"), None).await;
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_y2024m12").await, 1);
    // And a second roll still creates nothing.
    let again = roll_at(&mut c, &spec, "2024-12-15").await.unwrap();
    assert!(again.created.is_empty(), "{again:?}");
}

#[tokio::test]
async fn legacy_name_pattern_and_partition_sql_agree_with_roll() {
    let db = FreshDb::new();
    let mut c = db.connect().await;
    small_table(&c, "events", "date").await;
    let spec = PartitionSpec { name: Some("{table}_y{yyyy}m{mm}".into()), ..PartitionSpec::monthly("events", "k") };
    c.batch_execute(&partitions::partition_sql(&spec, KeyType::Date, at("2025-12-01")).unwrap()).await.unwrap();
    assert!(names(&partitions_of(&c, "events").await).contains(&"events_y2025m12"));
    let report = partitions::roll(&mut c, &[spec], at("2025-12-01"), &RollOptions::default()).await.unwrap();
    assert!(report.created.is_empty(), "{report:?}");
    assert_eq!(report.present, 5);
}

#[tokio::test]
async fn timestamptz_bounds_are_utc_whatever_the_session_zone() {
    let db = FreshDb::new();
    let mut c = db.connect().await;
    small_table(&c, "ticks", "timestamptz").await;
    c.batch_execute("SET TimeZone = 'America/New_York'").await.unwrap();
    let spec = PartitionSpec { interval: Interval::Daily, behind: 0, ahead: 1, ..PartitionSpec::monthly("ticks", "k") };
    let report = roll_at(&mut c, &spec, "2024-12-31").await.unwrap();
    assert_eq!(report.created, ["ticks_2024_12_31", "ticks_2025_01_01", "ticks_default"]);
    c.batch_execute(
        "INSERT INTO ticks (k) VALUES ('2024-12-31 23:59:59+00'), ('2025-01-01 00:00:00+00'), ('2024-12-30 23:59:59+00')",
    )
    .await
    .unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM ticks_2024_12_31").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM ticks_2025_01_01").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM ticks_default").await, 1);
    // Read back in a non-UTC session, the bounds still match: nothing to do.
    let again = roll_at(&mut c, &spec, "2024-12-31").await.unwrap();
    assert!(again.created.is_empty(), "{again:?}");
    // A row for January 2nd waits in the default partition, then moves with its identity value.
    let id: i64 = c
        .query_one("INSERT INTO ticks (k, note) VALUES ('2025-01-02 10:00:00+00', 'hello') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    let next = partitions::roll(&mut c, &[spec], at("2025-01-01"), &RollOptions::default()).await.unwrap();
    assert_eq!((next.created.as_slice(), next.moved_rows), (&["ticks_2025_01_02".to_string()][..], 1));
    assert_eq!(count(&c, &format!("SELECT count(*) FROM ticks_2025_01_02 WHERE id = {id} AND note_len = 5")).await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM ticks").await, 4);
}

#[tokio::test]
async fn concurrent_inserts_during_rolls_neither_fail_nor_deadlock() {
    let (db, mut c, spec) = audit_db().await;
    roll_at(&mut c, &spec, "2024-01-15").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let client = db.connect().await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut inserted = 0i64;
            let mut seed = w * 7919 + 1;
            while !stop.load(Ordering::Relaxed) {
                // Two rows per transaction, over 2024 and early 2025: many wait in the default
                // partition until a roll gives them theirs.
                let mut dates = Vec::new();
                for _ in 0..2 {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    dates.push(day("2024-01-01") + Days::new((seed >> 33) % 450));
                }
                let sql = "INSERT INTO audit_events (event_date, event_type, event_category, event_action, event_outcome,
                                                     actor_type, actor_id, resource_type, resource_id, correlation_id, event_data)
                           VALUES ($1, 'load', 'test', 'create', 'success', 'user', 'w', 'thing', 'r', 'c', '{}')";
                let result = async {
                    client.batch_execute("BEGIN").await?;
                    for d in &dates {
                        client.execute(sql, &[d]).await?;
                    }
                    client.batch_execute("COMMIT").await
                }
                .await;
                if let Err(e) = result {
                    return Err(format!("writer {w}: {e:?}"));
                }
                inserted += 2;
            }
            Ok(inserted)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut created = 0;
    let mut moved = 0;
    for month in 2..=12 {
        let r = partitions::roll(
            &mut c,
            std::slice::from_ref(&spec),
            at(&format!("2024-{month:02}-15")),
            &RollOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("roll at month {month}: {e}"));
        created += r.created.len();
        moved += r.moved_rows;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap().unwrap();
    }
    assert_eq!(created, 11, "one new month per roll");
    assert!(total > 100, "the writers made progress: {total} rows");
    assert!(moved > 0, "some rows waited in the default partition");
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events").await, total);
    // Whatever is left in the default partition belongs to no partition's range.
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_default WHERE event_date < '2025-04-01'").await, 0);
}

#[tokio::test]
async fn roll_waits_out_a_long_transaction_by_retrying_and_gives_up_clearly() {
    let (db, mut c, spec) = audit_db().await;
    roll_at(&mut c, &spec, "2024-06-15").await.unwrap();
    // Another session holds the parent (an open transaction that inserted a row) for 1.2 s.
    let other = db.connect().await;
    other.batch_execute("BEGIN").await.unwrap();
    insert_event(&other, day("2024-06-20"), None).await;
    let holder = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        other.batch_execute("COMMIT").await.unwrap();
        other
    });
    let start = std::time::Instant::now();
    let r = roll_at(&mut c, &spec, "2024-07-15").await.unwrap();
    assert_eq!(r.created, ["audit_events_2024_10"]);
    assert!(start.elapsed() >= std::time::Duration::from_millis(1000), "it waited for the other transaction");
    let other = holder.await.unwrap();

    // With too few attempts it gives up, says why, and leaves nothing half-done.
    other.batch_execute("BEGIN").await.unwrap();
    insert_event(&other, day("2024-06-21"), None).await;
    let opts = RollOptions {
        attempts: 2,
        table_lock_timeout: std::time::Duration::from_millis(100),
        ..RollOptions::default()
    };
    let e = report(&partitions::roll(&mut c, std::slice::from_ref(&spec), at("2024-08-15"), &opts).await.unwrap_err());
    assert!(e.starts_with("partitions of audit_events: could not lock the table in 2 attempts of 100 ms each"), "{e}");
    assert!(e.contains("lock timeout"), "{e}");
    let pid: i32 = other.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(
        e.contains(&format!("held by pid {pid} (e2e-migrations, idle in transaction: \"INSERT INTO audit_events")),
        "the holder is named: {e}"
    );
    assert!(e.contains("RowExclusiveLock on audit_events"), "{e}");
    other.batch_execute("COMMIT").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'audit_events_2024_11'").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").await, 0, "the advisory lock is released");
}

#[tokio::test]
async fn specs_that_do_not_fit_their_table_are_clear_errors() {
    let db = FreshDb::new();
    let mut c = db.connect().await;
    c.batch_execute(
        "CREATE TABLE plain (k date);
         CREATE TABLE by_other (k date, created date) PARTITION BY RANGE (created);
         CREATE TABLE by_list (k date) PARTITION BY LIST (k);
         CREATE TABLE by_int (k int) PARTITION BY RANGE (k);",
    )
    .await
    .unwrap();
    let now = at("2024-12-15");
    let db_ref = &db;
    let err = |table: &str| {
        let spec = PartitionSpec::monthly(table, "k");
        async move {
            report(
                &partitions::roll(&mut db_ref.connect().await, &[spec], now, &RollOptions::default())
                    .await
                    .unwrap_err(),
            )
            .to_string()
        }
    };
    assert_eq!(
        err("nope").await,
        "partitions of nope: the table does not exist (apply the migrations that create it before rolling its partitions)"
    );
    assert_eq!(
        err("plain").await,
        "partitions of plain: the table is not partitioned (an ordinary table); it needs PARTITION BY RANGE (k) in the migration that creates it"
    );
    assert_eq!(
        err("by_other").await,
        "partitions of by_other: the table is partitioned by RANGE (created), not by RANGE (k)"
    );
    assert_eq!(err("by_list").await, "partitions of by_list: the table is partitioned by LIST (k), not by RANGE (k)");
    assert_eq!(
        err("by_int").await,
        "partitions of by_int: the partition key k is of type int4; rolling needs date, timestamp or timestamptz"
    );
    let bad = PartitionSpec::monthly("audit events", "k");
    let e = report(&partitions::roll(&mut c, &[bad], now, &RollOptions::default()).await.unwrap_err());
    assert!(e.starts_with("partition spec for audit events: table: identifier"), "{e}");
    // Nothing was created on the way.
    assert_eq!(count(&c, "SELECT count(*) FROM pg_inherits").await, 0);
}

/// The foreign keys on audit_events' parent (not the per-partition copies): name, definition,
/// validated, comment.
async fn audit_fks(c: &Client) -> Vec<(String, String, bool, Option<String>)> {
    c.query(
        "SELECT conname::text, pg_get_constraintdef(oid), convalidated, obj_description(oid, 'pg_constraint')
           FROM pg_constraint
          WHERE conrelid = 'audit_events'::regclass AND contype = 'f' AND conparentid = 0 ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// Every row of audit_events: id, partition, and a digest of the whole row.
async fn audit_rows(c: &Client) -> Vec<(String, String, String)> {
    c.query(
        "SELECT event_id::text, tableoid::regclass::text, md5(row_to_json(a)::text) FROM audit_events a ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn a_referenced_row_moves_out_of_the_default_partition_with_its_references_intact() {
    let (_db, mut c, spec) = audit_db().await;
    c.batch_execute("COMMENT ON CONSTRAINT fk_audit_events_parent ON audit_events IS 'the parent event'")
        .await
        .unwrap();
    // Only partitions from 2026-10 on exist.
    let ahead_only = PartitionSpec { behind: 0, ..spec.clone() };
    let first = partitions::roll(&mut c, &[ahead_only], at("2026-10-15"), &RollOptions::default()).await.unwrap();
    assert_eq!(first.created[0], "audit_events_2026_10");
    // A parent dated September waits in the default partition; its child (October) is in an
    // existing partition, and a grandchild back in September waits in the default partition too.
    let parent = insert_event(&c, day("2026-09-15"), None).await;
    let child = insert_event(&c, day("2026-10-02"), Some((&parent, day("2026-09-15")))).await;
    let grandchild = insert_event(&c, day("2026-09-20"), Some((&child, day("2026-10-02")))).await;
    let far = insert_event(&c, day("2030-01-01"), Some((&parent, day("2026-09-15")))).await;
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_default").await, 3);
    let fks = audit_fks(&c).await;
    assert_eq!(fks.len(), 1);
    assert_eq!(fks[0].3.as_deref(), Some("the parent event"));
    let before = audit_rows(&c).await;

    // behind = 1 wants September: the parent must move under its child's reference.
    let report = roll_at(&mut c, &spec, "2026-10-15").await.unwrap();
    assert_eq!(report.created, ["audit_events_2026_09"]);
    assert_eq!(report.moved_rows, 2);

    let after = audit_rows(&c).await;
    let strip = |rows: &[(String, String, String)]| -> Vec<(String, String)> {
        rows.iter().map(|(id, _, digest)| (id.clone(), digest.clone())).collect()
    };
    assert_eq!(strip(&before), strip(&after), "the same rows, byte for byte");
    let home = |id: &str| after.iter().find(|(i, _, _)| i == id).unwrap().1.clone();
    assert_eq!(home(&parent), "audit_events_2026_09");
    assert_eq!(home(&grandchild), "audit_events_2026_09");
    assert_eq!(home(&child), "audit_events_2026_10");
    assert_eq!(home(&far), "audit_events_default");
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM audit_events c JOIN audit_events p
                   ON (p.event_id, p.event_date) = (c.parent_event_id, c.parent_event_date)
                  WHERE c.event_id IN ('{child}', '{grandchild}', '{far}')"
            )
        )
        .await,
        3,
        "every reference still resolves"
    );
    // The key is back as it was (validated, with its comment), on every partition, and enforced.
    assert_eq!(audit_fks(&c).await, fks);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_constraint WHERE conname = 'fk_audit_events_parent'").await, 1 + 6);
    let e = c.execute(&format!("DELETE FROM audit_events WHERE event_id = '{parent}'"), &[]).await.unwrap_err();
    assert!(format!("{e:?}").contains("still referenced"), "{e:?}");
    let e = c
        .execute(
            "INSERT INTO audit_events (event_date, event_type, event_category, event_action, event_outcome, actor_type,
                                       actor_id, resource_type, resource_id, correlation_id, event_data,
                                       parent_event_id, parent_event_date)
             VALUES ('2026-09-21', 't', 't', 'a', 'success', 'u', 'u', 'r', 'r', 'c', '{}', gen_random_uuid(), '2026-09-15')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("fk_audit_events_parent"), "{e:?}");

    // Idempotent.
    let again = roll_at(&mut c, &spec, "2026-10-15").await.unwrap();
    assert!(again.created.is_empty() && again.moved_rows == 0, "{again:?}");
}

#[tokio::test]
async fn a_key_on_the_default_partition_itself_stops_the_move_clearly() {
    let (_db, mut c, spec) = audit_db().await;
    partitions::roll(&mut c, &[PartitionSpec { behind: 0, ..spec.clone() }], at("2026-10-15"), &RollOptions::default())
        .await
        .unwrap();
    let parent = insert_event(&c, day("2026-09-15"), None).await;
    // A key that references the default partition, not audit_events: the roll cannot set it aside.
    c.batch_execute(&format!(
        "CREATE TABLE notes (event_id uuid, event_date date,
                             CONSTRAINT fk_notes_event FOREIGN KEY (event_id, event_date)
                                 REFERENCES audit_events_default (event_id, event_date));
         INSERT INTO notes VALUES ('{parent}', '2026-09-15');"
    ))
    .await
    .unwrap();
    let fks = audit_fks(&c).await;
    let e = report(&roll_at(&mut c, &spec, "2026-10-15").await.unwrap_err());
    assert!(
        e.starts_with(
            "partitions of audit_events: cannot move rows of the new ranges out of the default partition audit_events_default: foreign key fk_notes_event"
        ),
        "{e}"
    );
    assert!(e.contains("not one of the keys that reference audit_events (fk_audit_events_parent)"), "{e}");
    assert!(e.contains("rolled back") && e.contains("still referenced"), "{e}");
    // Nothing changed.
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'audit_events_2026_09'").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_default").await, 1);
    assert_eq!(audit_fks(&c).await, fks);
}

#[tokio::test]
async fn retention_on_audit_events_detaches_or_drops_despite_its_self_reference() {
    for action in [RetentionAction::Detach, RetentionAction::Drop] {
        let (_db, mut c, spec) = audit_db().await;
        let spec = PartitionSpec { retention: Some(Retention { keep: 1, action }), ..spec };
        let specs = std::slice::from_ref(&spec);
        let opts = RollOptions::default();
        partitions::roll(&mut c, specs, at("2026-09-15"), &opts).await.unwrap();
        let fks = audit_fks(&c).await;
        // September: a parent and its child (references inside the partition). October: a
        // parent referenced from November.
        let p9 = insert_event(&c, day("2026-09-03"), None).await;
        insert_event(&c, day("2026-09-04"), Some((&p9, day("2026-09-03")))).await;
        let p10 = insert_event(&c, day("2026-10-05"), None).await;
        let c11 = insert_event(&c, day("2026-11-06"), Some((&p10, day("2026-10-05")))).await;

        // August holds nothing: pruned as is.
        let r = partitions::roll(&mut c, specs, at("2026-10-15"), &opts).await.unwrap();
        assert_eq!(
            (r.created.as_slice(), r.pruned.as_slice()),
            (&["audit_events_2027_01".to_string()][..], &["audit_events_2026_08".to_string()][..]),
            "{action:?}"
        );
        // September references itself: PostgreSQL refuses to detach it under the key; the roll
        // sets the key aside and adds it back.
        let r = partitions::roll(&mut c, specs, at("2026-11-15"), &opts).await.unwrap();
        assert_eq!(r.pruned, ["audit_events_2026_09"], "{action:?}");
        assert_eq!(r.created, ["audit_events_2027_02"], "{action:?}");
        let left = count(
            &c,
            "SELECT count(*) FROM pg_class WHERE relname IN ('audit_events_2026_08', 'audit_events_2026_09')",
        )
        .await;
        match action {
            RetentionAction::Detach => {
                assert_eq!(left, 2, "detached tables stay");
                assert_eq!(count(&c, "SELECT count(*) FROM audit_events_2026_09").await, 2, "with their rows");
                assert_eq!(
                    count(&c, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'audit_events_2026_09'::regclass AND contype = 'f'").await,
                    0,
                    "the detached table keeps no key into audit_events"
                );
            }
            RetentionAction::Drop => assert_eq!(left, 0, "dropped tables are gone"),
        }
        assert_eq!(count(&c, "SELECT count(*) FROM audit_events").await, 2);
        assert_eq!(audit_fks(&c).await, fks, "{action:?}: the key is back as it was");

        // October is still referenced from November: retention fails clearly, removes nothing.
        let e = report(&partitions::roll(&mut c, specs, at("2026-12-15"), &opts).await.unwrap_err());
        assert!(
            e.starts_with("partitions of audit_events: retention cannot remove audit_events_2026_10: rows left in audit_events still reference rows there through foreign key fk_audit_events_parent"),
            "{action:?}: {e}"
        );
        assert!(e.contains(&p10) || e.contains("2026-10-05"), "{e}");
        assert_eq!(
            names(&partitions_of(&c, "audit_events").await)[0],
            "audit_events_2026_10",
            "{action:?}: still attached"
        );
        assert_eq!(count(&c, "SELECT count(*) FROM audit_events_2026_10").await, 1);
        assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'audit_events_2027_03'").await, 0);
        assert_eq!(audit_fks(&c).await, fks);

        // Once the reference is gone, October goes too.
        c.execute(&format!("DELETE FROM audit_events WHERE event_id = '{c11}'"), &[]).await.unwrap();
        let r = partitions::roll(&mut c, specs, at("2026-12-15"), &opts).await.unwrap();
        assert_eq!(r.pruned, ["audit_events_2026_10"], "{action:?}");
        assert_eq!(audit_fks(&c).await, fks);
    }
}

#[tokio::test]
async fn rows_move_by_column_name_from_a_default_partition_in_another_column_order() {
    let db = FreshDb::new();
    let mut c = db.connect().await;
    c.batch_execute(
        "CREATE TABLE readings (k date NOT NULL, a text, gone int, b text, n int GENERATED ALWAYS AS (length(a)) STORED)
             PARTITION BY RANGE (k);
         ALTER TABLE readings DROP COLUMN gone;
         CREATE TABLE readings_default (b text, n int GENERATED ALWAYS AS (length(a)) STORED, a text, k date NOT NULL);
         ALTER TABLE readings ATTACH PARTITION readings_default DEFAULT;
         INSERT INTO readings (k, a, b) VALUES ('2025-01-10', 'alpha', 'beta!');",
    )
    .await
    .unwrap();
    let spec = PartitionSpec { behind: 0, ahead: 0, ..PartitionSpec::monthly("readings", "k") };
    let r = partitions::roll(&mut c, &[spec], at("2025-01-15"), &RollOptions::default()).await.unwrap();
    assert_eq!((r.created.as_slice(), r.moved_rows), (&["readings_2025_01".to_string()][..], 1));
    let row = c.query_one("SELECT k::text, a, b, n FROM readings_2025_01", &[]).await.unwrap();
    let got: (String, String, String, i32) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(got, ("2025-01-10".to_string(), "alpha".to_string(), "beta!".to_string(), 5));
    assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 1);
}

#[tokio::test]
async fn a_name_pattern_making_names_longer_than_63_bytes_is_refused() {
    let db = FreshDb::new();
    let mut c = db.connect().await;
    small_table(&c, "events", "date").await;
    let pattern = format!("{{table}}_{}_{{yyyy}}_{{mm}}", "x".repeat(50));
    let spec = PartitionSpec { name: Some(pattern), ..PartitionSpec::monthly("events", "k") };
    let long = format!("events_{}_2000_01", "x".repeat(50));
    assert_eq!(long.len(), 65);
    let e = report(&roll_at(&mut c, &spec, "2024-12-15").await.unwrap_err());
    assert_eq!(
        e,
        format!(
            "partition spec for events: name pattern {:?} makes partition names such as \"{long}\" (65 bytes), which is longer than 63 bytes (PostgreSQL would truncate it)",
            spec.name.as_deref().unwrap()
        )
    );
    let e = report(&partitions::partition_sql(&spec, KeyType::Date, at("2024-12-15")).unwrap_err());
    assert!(e.contains("is longer than 63 bytes"), "{e}");
    assert_eq!(count(&c, "SELECT count(*) FROM pg_inherits").await, 0, "nothing created, nothing truncated");
}

/// The guarded audit table of `tests/fixtures/guarded` (triggers that derive, forbid and
/// protect; a self-referencing key; a key to its actors; a generated column), applied to a fresh
/// database with two actors; and its spec.
async fn guarded_db() -> (FreshDb, Client, PartitionSpec) {
    let db = FreshDb::new();
    let mut c = db.connect().await;
    let project = Project::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guarded")).unwrap();
    let sel = project.select(&["guarded".into()]).unwrap();
    migrator::up(&mut c, &project.folder, &sel.migrations, &Options::default()).await.unwrap();
    c.batch_execute("INSERT INTO guarded_actors VALUES ('alice'), ('bob')").await.unwrap();
    (db, c, sel.partitions[0].clone())
}

/// Inserts a guarded event on `date` (through its triggers); returns its id.
async fn guarded_event(c: &Client, date: &str, parent: Option<(i64, &str)>, legal_hold: bool) -> i64 {
    let (pid, pdate) = match parent {
        Some((id, d)) => (Some(id), Some(day(d))),
        None => (None, None),
    };
    c.query_one(
        "INSERT INTO guarded_events (event_date, occurred_at, actor_id, payload, legal_hold, parent_event_id, parent_event_date)
         VALUES ($1, $1::date + time '10:30', 'alice', jsonb_build_object('on', $1::date, 'what', 'approve'), $2, $3, $4)
         RETURNING event_id",
        &[&day(date), &legal_hold, &pid, &pdate],
    )
    .await
    .unwrap_or_else(|e| panic!("guarded event on {date}: {e:?}"))
    .get(0)
}

/// Every guarded event: id, partition, and the whole row as text (derived and generated columns
/// included).
async fn guarded_rows(c: &Client) -> Vec<(i64, String, String)> {
    c.query("SELECT event_id, tableoid::regclass::text, e::text FROM guarded_events e ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The rows without their partition.
fn as_text(rows: &[(i64, String, String)]) -> Vec<(i64, String)> {
    rows.iter().map(|(id, _, text)| (*id, text.clone())).collect()
}

/// The trigger calls recorded so far.
async fn trigger_calls(c: &Client) -> Vec<String> {
    c.query("SELECT trigger_name || coalesce(' ' || event_id, '') FROM guarded_events_log ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The user triggers of a table: name and state.
async fn user_triggers(c: &Client, table: &str) -> Vec<(String, String)> {
    c.query(
        "SELECT tgname::text, tgenabled::text FROM pg_trigger WHERE tgrelid = $1::text::regclass AND NOT tgisinternal ORDER BY 1",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The guarded table's own foreign keys: name, definition, validated, oid.
async fn guarded_fks(c: &Client) -> Vec<(String, String, bool, u32)> {
    c.query(
        "SELECT conname::text, pg_get_constraintdef(oid), convalidated, oid FROM pg_constraint
          WHERE conrelid = 'guarded_events'::regclass AND contype = 'f' AND conparentid = 0 ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

fn without_oids(fks: &[(String, String, bool, u32)]) -> Vec<(String, String, bool)> {
    fks.iter().map(|(n, d, v, _)| (n.clone(), d.clone(), *v)).collect()
}

#[tokio::test]
async fn guarded_rows_move_out_of_the_default_partition_without_firing_or_bending_triggers() {
    let (_db, mut c, spec) = guarded_db().await;
    let first = partitions::roll(
        &mut c,
        &[PartitionSpec { behind: 0, ..spec.clone() }],
        at("2026-10-15"),
        &RollOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(first.created[0], "guarded_events_2026_10");
    // September waits in the default partition: a parent and the child that references it, and a
    // row on legal hold; October's row references the parent too; a far one references the child.
    let parent = guarded_event(&c, "2026-09-15", None, false).await;
    let child = guarded_event(&c, "2026-09-20", Some((parent, "2026-09-15")), false).await;
    let held = guarded_event(&c, "2026-09-03", None, true).await;
    let october = guarded_event(&c, "2026-10-02", Some((parent, "2026-09-15")), false).await;
    let far = guarded_event(&c, "2030-01-01", Some((child, "2026-09-20")), false).await;
    assert_eq!(count(&c, "SELECT count(*) FROM guarded_events_default").await, 4);
    let before = guarded_rows(&c).await;
    let calls = trigger_calls(&c).await;
    assert_eq!(calls.len(), 10, "each insert ran the derive trigger and the statement trigger: {calls:?}");
    let fks = guarded_fks(&c).await;
    let parent_triggers = user_triggers(&c, "guarded_events_2026_10").await;
    // The row triggers are cloned onto each partition (the statement trigger stays the parent's).
    assert_eq!(parent_triggers.len(), 3, "{parent_triggers:?}");

    // behind = 1 wants September.
    let report = roll_at(&mut c, &spec, "2026-10-15").await.unwrap();
    assert_eq!(report.created, ["guarded_events_2026_09"]);
    assert_eq!(report.moved_rows, 3);
    let after = guarded_rows(&c).await;
    assert_eq!(as_text(&before), as_text(&after), "every row as it was, derived and generated columns included");
    let home = |id: i64| after.iter().find(|(i, _, _)| *i == id).unwrap().1.clone();
    for id in [parent, child, held] {
        assert_eq!(home(id), "guarded_events_2026_09");
    }
    assert_eq!((home(october).as_str(), home(far).as_str()), ("guarded_events_2026_10", "guarded_events_default"));
    assert_eq!(trigger_calls(&c).await, calls, "no trigger fired");

    // The new partition is guarded as the others: the same triggers, every index, the keys.
    assert_eq!(user_triggers(&c, "guarded_events_2026_09").await, parent_triggers);
    assert_eq!(user_triggers(&c, "guarded_events_default").await, parent_triggers);
    assert_eq!(
        count(&c, "SELECT count(*) FROM pg_index WHERE indrelid = 'guarded_events_2026_09'::regclass").await,
        count(&c, "SELECT count(*) FROM pg_index WHERE indrelid = 'guarded_events'::regclass").await
    );
    assert_eq!(without_oids(&guarded_fks(&c).await), without_oids(&fks), "the keys are back as they were");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'guarded_events_2026_09'::regclass AND contype = 'f' AND convalidated"
        )
        .await,
        2
    );
    let refused = |sql: &'static str| {
        let c = &c;
        async move { format!("{:?}", c.batch_execute(sql).await.unwrap_err()) }
    };
    let e = refused("DELETE FROM guarded_events WHERE legal_hold").await;
    assert!(e.contains("is on legal hold"), "{e}");
    let e = refused("DELETE FROM guarded_events WHERE event_date = '2026-09-15'").await;
    assert!(e.contains("is referenced by other events"), "{e}");
    let e = refused("UPDATE guarded_events SET payload = '{}' WHERE event_date = '2026-09-20'").await;
    assert!(e.contains("cannot change"), "{e}");
    let e = refused(
        "INSERT INTO guarded_events (event_date, occurred_at, actor_id, payload, parent_event_id, parent_event_date)
         VALUES ('2026-09-21', now(), 'alice', '{}', 424242, '2026-09-01')",
    )
    .await;
    assert!(e.contains("guarded_events_parent_fk"), "{e}");
    let e = refused(
        "INSERT INTO guarded_events (event_date, occurred_at, actor_id, payload) VALUES ('2026-09-21', now(), 'mallory', '{}')",
    )
    .await;
    assert!(e.contains("guarded_events_actor_id_fkey"), "{e}");
    let newest = guarded_event(&c, "2026-09-22", Some((child, "2026-09-20")), false).await;
    assert_eq!(trigger_calls(&c).await.len(), calls.len() + 2, "the derive trigger runs on the new partition");
    let chained = c
        .query_one(&format!("SELECT prev_hash FROM guarded_events WHERE event_id = {newest}"), &[])
        .await
        .unwrap()
        .get::<_, Option<String>>(0);
    assert_eq!(chained, after.iter().find(|(i, _, _)| *i == far).map(|(_, _, t)| hash_of(t)), "the chain goes on");

    // A later roll whose moved row is referenced by nothing keeps the keys in place (attaching
    // checks the row against them), and moves it as it was.
    let loose = guarded_event(&c, "2027-02-10", Some((october, "2026-10-02")), false).await;
    let before = guarded_rows(&c).await;
    let fks = guarded_fks(&c).await;
    let calls = trigger_calls(&c).await;
    let r = roll_at(&mut c, &spec, "2027-01-15").await.unwrap();
    assert_eq!(r.created, ["guarded_events_2027_02", "guarded_events_2027_03", "guarded_events_2027_04"]);
    assert_eq!(r.moved_rows, 1);
    let after = guarded_rows(&c).await;
    assert_eq!(as_text(&before), as_text(&after));
    assert_eq!(after.iter().find(|(i, _, _)| *i == loose).unwrap().1, "guarded_events_2027_02");
    assert_eq!(guarded_fks(&c).await, fks, "the same keys (same oids): not set aside");
    assert_eq!(trigger_calls(&c).await, calls, "no trigger fired");

    // Idempotent.
    let again = roll_at(&mut c, &spec, "2027-01-15").await.unwrap();
    assert!(again.created.is_empty() && again.moved_rows == 0, "{again:?}");
}

/// The `row_hash` field of a guarded row's text form.
fn hash_of(row_text: &str) -> String {
    // (event_id,event_date,occurred_at,occurred_on,recorded_at,actor_id,payload,legal_hold,
    //  parent_event_id,parent_event_date,prev_hash,row_hash,payload_bytes): the hashes are
    // hex, so the last fields split plainly on commas.
    let fields: Vec<&str> = row_text.trim_matches(|c| c == '(' || c == ')').rsplitn(3, ',').collect();
    fields[1].to_string()
}

#[tokio::test]
async fn a_delete_trigger_of_the_default_partition_itself_stays_silent_and_keeps_its_state() {
    let (_db, mut c, spec) = guarded_db().await;
    partitions::roll(&mut c, &[PartitionSpec { behind: 0, ..spec.clone() }], at("2026-10-15"), &RollOptions::default())
        .await
        .unwrap();
    guarded_event(&c, "2026-09-15", None, false).await;
    guarded_event(&c, "2030-01-01", None, false).await;
    // A trigger of the default partition alone, which refuses every delete there, always; and one
    // that is off.
    c.batch_execute(
        "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'rows of % are never deleted', TG_TABLE_NAME; END $$;
         CREATE TRIGGER default_keeps_rows BEFORE DELETE ON guarded_events_default
             FOR EACH ROW EXECUTE FUNCTION refuse_delete();
         ALTER TABLE guarded_events_default ENABLE ALWAYS TRIGGER default_keeps_rows;
         CREATE TRIGGER default_off BEFORE DELETE ON guarded_events_default
             FOR EACH ROW EXECUTE FUNCTION refuse_delete();
         ALTER TABLE guarded_events_default DISABLE TRIGGER default_off;",
    )
    .await
    .unwrap();
    let triggers = user_triggers(&c, "guarded_events_default").await;
    assert!(triggers.contains(&("default_keeps_rows".into(), "A".into())), "{triggers:?}");
    let before = guarded_rows(&c).await;

    let r = roll_at(&mut c, &spec, "2026-10-15").await.unwrap();
    assert_eq!(r.moved_rows, 1);
    assert_eq!(as_text(&guarded_rows(&c).await), as_text(&before));
    assert_eq!(user_triggers(&c, "guarded_events_default").await, triggers, "put back as they were");
    let e = c.batch_execute("DELETE FROM guarded_events_default").await.unwrap_err();
    assert!(format!("{e:?}").contains("are never deleted"), "{e:?}");
}

#[tokio::test]
async fn an_event_trigger_that_refuses_the_rolls_ddl_is_named() {
    let (_db, mut c, spec) = guarded_db().await;
    partitions::roll(&mut c, &[PartitionSpec { behind: 0, ..spec.clone() }], at("2026-10-15"), &RollOptions::default())
        .await
        .unwrap();
    guarded_event(&c, "2026-09-15", None, false).await;
    c.batch_execute(
        "CREATE FUNCTION guarded_ddl_freeze() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'DDL on audit tables is frozen'; END $$;
         CREATE EVENT TRIGGER guarded_ddl_freeze ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
             EXECUTE FUNCTION guarded_ddl_freeze();",
    )
    .await
    .unwrap();
    let before = guarded_rows(&c).await;
    let e = report(&roll_at(&mut c, &spec, "2026-10-15").await.unwrap_err());
    assert!(
        e.starts_with(
            "partitions of guarded_events: stopped by event trigger guarded_ddl_freeze (ddl_command_start), which runs guarded_ddl_freeze(); rolled back, nothing changed ("
        ),
        "{e}"
    );
    assert!(e.ends_with("): DDL on audit tables is frozen (SQLSTATE P0001)"), "{e}");
    assert_eq!(e.matches("SQLSTATE").count(), 1, "{e}");
    assert_eq!(guarded_rows(&c).await, before);
    assert_eq!(names(&partitions_of(&c, "guarded_events").await).len(), 5, "nothing created");
}

#[tokio::test]
async fn a_cascading_key_on_the_default_partition_is_refused_before_it_deletes_anything() {
    let (_db, mut c, spec) = audit_db().await;
    partitions::roll(&mut c, &[PartitionSpec { behind: 0, ..spec.clone() }], at("2026-10-15"), &RollOptions::default())
        .await
        .unwrap();
    let waiting = insert_event(&c, day("2026-09-15"), None).await;
    let far = insert_event(&c, day("2030-01-01"), None).await;
    // Notes that reference the default partition itself, deleted with the rows they note.
    c.batch_execute(&format!(
        "CREATE TABLE notes (event_id uuid, event_date date, note text,
                             CONSTRAINT fk_notes_event FOREIGN KEY (event_id, event_date)
                                 REFERENCES audit_events_default (event_id, event_date) ON DELETE CASCADE);
         INSERT INTO notes VALUES ('{waiting}', '2026-09-15', 'keep me'), ('{far}', '2030-01-01', 'me too');"
    ))
    .await
    .unwrap();
    let e = report(&roll_at(&mut c, &spec, "2026-10-15").await.unwrap_err());
    assert!(
        e.starts_with(
            "partitions of audit_events: cannot move rows of the new ranges out of the default partition audit_events_default: foreign key fk_notes_event of notes references that partition itself (ON DELETE CASCADE), and rows there are still referenced by 1 rows of notes"
        ),
        "{e}"
    );
    assert!(e.contains("moving them would delete those rows of notes"), "{e}");
    assert_eq!(count(&c, "SELECT count(*) FROM notes").await, 2, "no note deleted");
    assert_eq!(count(&c, "SELECT count(*) FROM audit_events_default").await, 2);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'audit_events_2026_09'").await, 0);

    // A key on the default partition that references none of the rows to move is no obstacle.
    c.batch_execute(&format!("DELETE FROM notes WHERE event_id = '{waiting}'")).await.unwrap();
    let r = roll_at(&mut c, &spec, "2026-10-15").await.unwrap();
    assert_eq!(r.moved_rows, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM notes").await, 1);
}

#[tokio::test]
async fn a_roll_blocked_by_a_lock_names_its_holder() {
    let (db, mut c, spec) = guarded_db().await;
    partitions::roll(&mut c, &[PartitionSpec { behind: 0, ..spec.clone() }], at("2026-10-15"), &RollOptions::default())
        .await
        .unwrap();
    let parent = guarded_event(&c, "2026-09-15", None, false).await;
    guarded_event(&c, "2026-09-16", Some((parent, "2026-09-15")), false).await;
    // A writer of the actors keeps a transaction open: moving rows whose keys are set aside
    // detaches the default partition, which locks the tables its keys reference.
    let writer =
        tokio_postgres::connect(&format!("{} application_name=audit-writer", keyword_url(&db)), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(writer.1);
    let writer = writer.0;
    let pid: i32 = writer.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    writer.batch_execute("BEGIN; INSERT INTO guarded_actors VALUES ('carol')").await.unwrap();
    let opts = RollOptions {
        attempts: 2,
        table_lock_timeout: std::time::Duration::from_millis(100),
        ..RollOptions::default()
    };
    let e = report(&partitions::roll(&mut c, std::slice::from_ref(&spec), at("2026-10-15"), &opts).await.unwrap_err());
    assert!(
        e.contains(&format!(
            "held by pid {pid} (audit-writer, idle in transaction: \"BEGIN; INSERT INTO guarded_actors VALUES ('carol')\") holding RowExclusiveLock on guarded_actors"
        )),
        "{e}"
    );
    writer.batch_execute("COMMIT").await.unwrap();
    let r = partitions::roll(&mut c, std::slice::from_ref(&spec), at("2026-10-15"), &opts).await.unwrap();
    assert_eq!(r.moved_rows, 2);
}

/// The fresh database's connection string in key=value form (so that settings can be appended).
fn keyword_url(db: &FreshDb) -> String {
    let config: tokio_postgres::Config = db.url().parse().unwrap();
    let tokio_postgres::config::Host::Tcp(host) = &config.get_hosts()[0] else { panic!("a TCP host") };
    format!(
        "host={host} port={} user={} password={} dbname={}",
        config.get_ports()[0],
        config.get_user().unwrap(),
        String::from_utf8_lossy(config.get_password().unwrap()),
        db.name()
    )
}

#[tokio::test]
async fn a_moved_row_that_breaks_a_key_is_caught_by_the_recheck() {
    let (_db, mut c, spec) = guarded_db().await;
    partitions::roll(&mut c, &[PartitionSpec { behind: 0, ..spec.clone() }], at("2026-10-15"), &RollOptions::default())
        .await
        .unwrap();
    // A row that references nothing that exists, written while the key was not enforced (as a
    // restore with triggers off, or replication, can leave one).
    c.batch_execute(
        "SET session_replication_role = replica;
         INSERT INTO guarded_events (event_date, occurred_at, actor_id, payload, parent_event_id, parent_event_date)
             VALUES ('2026-09-15', now(), 'alice', '{}', 424242, '2026-09-01');
         RESET session_replication_role;",
    )
    .await
    .unwrap();
    let e = report(&roll_at(&mut c, &spec, "2026-10-15").await.unwrap_err());
    assert!(e.contains("foreign key guarded_events_parent_fk"), "{e}");
    assert!(e.contains("(424242, 2026-09-01) is not present"), "{e}");
    assert!(e.contains("rolled back, nothing changed"), "{e}");
    assert_eq!(count(&c, "SELECT count(*) FROM guarded_events_default").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'guarded_events_2026_09'").await, 0);
}

/// What the roll relies on PostgreSQL to do when a partition is detached and tables are attached
/// (checked on the server the tests run against, so that another major version that behaves
/// otherwise fails here first).
#[tokio::test]
async fn detach_and_attach_behave_as_the_roll_relies_on() {
    let (_db, mut c, spec) = guarded_db().await;
    partitions::roll(&mut c, &[PartitionSpec { behind: 0, ..spec.clone() }], at("2026-10-15"), &RollOptions::default())
        .await
        .unwrap();
    let parent = guarded_event(&c, "2026-09-15", None, false).await;
    guarded_event(&c, "2026-09-16", Some((parent, "2026-09-15")), false).await;
    let step = |sql: String| {
        let c = &c;
        async move { c.batch_execute(&sql).await.map_err(|e| format!("{e:?}")) }
    };
    step("BEGIN".into()).await.unwrap();
    // Detaching is refused while rows of the partition are referenced, naming the key's clone.
    step("SAVEPOINT s".into()).await.unwrap();
    let e = step("ALTER TABLE guarded_events DETACH PARTITION guarded_events_default".into()).await.unwrap_err();
    assert!(e.contains("E23503") && e.contains("removing partition"), "{e}");
    step("ROLLBACK TO SAVEPOINT s; ALTER TABLE guarded_events DROP CONSTRAINT guarded_events_parent_fk".into())
        .await
        .unwrap();
    step("ALTER TABLE guarded_events DETACH PARTITION guarded_events_default".into()).await.unwrap();
    // Detached: the clones of the parent's triggers are gone; its keys and indexes stay, its own.
    assert!(user_triggers(&c, "guarded_events_default").await.is_empty());
    assert_eq!(
        count(&c, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'guarded_events_default'::regclass AND contype = 'f' AND conparentid = 0").await,
        1,
        "the actor key stays, now its own"
    );
    let indexes = count(&c, "SELECT count(*) FROM pg_index WHERE indrelid = 'guarded_events'::regclass").await;
    assert_eq!(indexes, 3);
    assert_eq!(
        count(&c, "SELECT count(*) FROM pg_index WHERE indrelid = 'guarded_events_default'::regclass").await,
        indexes
    );
    // A table made by LIKE ... INCLUDING (no identity, no index, no key, no trigger) attaches;
    // attaching checks its rows against the parent's keys, naming the parent's key.
    step(format!(
        "CREATE TABLE t_alone (LIKE guarded_events INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION);
         INSERT INTO t_alone (event_id, event_date, occurred_at, actor_id, payload) VALUES ({parent} + 100, '2031-01-01', now(), 'nobody', '{{}}');
         SAVEPOINT a"
    ))
    .await
    .unwrap();
    let e = step(
        "ALTER TABLE guarded_events ATTACH PARTITION t_alone FOR VALUES FROM ('2031-01-01') TO ('2031-02-01')".into(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("guarded_events_actor_id_fkey") && e.contains("is not present in table"), "{e}");
    step("ROLLBACK TO SAVEPOINT a; UPDATE t_alone SET actor_id = 'bob'".into()).await.unwrap();
    step("ALTER TABLE guarded_events ATTACH PARTITION t_alone FOR VALUES FROM ('2031-01-01') TO ('2031-02-01')".into())
        .await
        .unwrap();
    step("ALTER TABLE guarded_events ATTACH PARTITION guarded_events_default DEFAULT".into()).await.unwrap();
    // Attached, both are what CREATE TABLE ... PARTITION OF makes: the parent's triggers, indexes
    // and keys, columns and checks inherited rather than local, no identity of their own.
    for t in ["t_alone", "guarded_events_default"] {
        assert_eq!(user_triggers(&c, t).await.len(), 3, "{t}");
        let q = |sql: &str| sql.replace("$t", t);
        assert_eq!(
            count(&c, &q("SELECT count(*) FROM pg_index WHERE indrelid = '$t'::regclass")).await,
            indexes,
            "{t}"
        );
        assert_eq!(
            count(&c, &q("SELECT count(*) FROM pg_attribute WHERE attrelid = '$t'::regclass AND attnum > 0 AND (attislocal OR attidentity <> '')")).await,
            0,
            "{t}"
        );
        assert_eq!(
            count(&c, &q("SELECT count(*) FROM pg_constraint WHERE conrelid = '$t'::regclass AND conislocal")).await,
            0,
            "{t}"
        );
    }
    // With the self-reference back, a partition detached while unreferenced keeps its clone of
    // the key as a key of its own (PostgreSQL adds clones of that on the other partitions), and
    // attaching merges it back with no extras: the partition's primary key, check, its two keys'
    // clones, and the clone of the self-reference that points at it.
    let constraints =
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 't_alone'::regclass OR confrelid = 't_alone'::regclass";
    step(
        "ALTER TABLE guarded_events ADD CONSTRAINT guarded_events_parent_fk FOREIGN KEY (parent_event_id, parent_event_date)
             REFERENCES guarded_events (event_id, event_date) ON DELETE RESTRICT"
            .into(),
    )
    .await
    .unwrap();
    assert_eq!(count(&c, constraints).await, 5);
    step("ALTER TABLE guarded_events DETACH PARTITION t_alone".into()).await.unwrap();
    assert_eq!(
        count(&c, "SELECT count(*) FROM pg_constraint WHERE conrelid = 't_alone'::regclass AND contype = 'f' AND conparentid = 0").await,
        2,
        "both keys are its own"
    );
    step("ALTER TABLE guarded_events ATTACH PARTITION t_alone FOR VALUES FROM ('2031-01-01') TO ('2031-02-01')".into())
        .await
        .unwrap();
    assert_eq!(count(&c, constraints).await, 5);
    step("ROLLBACK".into()).await.unwrap();
}
