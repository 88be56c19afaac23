//! `cargo xtask partitions` and `e2e-setup` as a user runs them, against the shared local server:
//! bad manifests refused before any database is touched, and a roll killed in the middle.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_migrations::db;
use e2e_test_support::process::{run, stderr};
use e2e_test_support::{rt, FreshDb, TempDir};
use tokio_postgres::Client;

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env_remove("DATABASE_URL").env_remove("E2E_MIGRATIONS_DIR").env("E2E_LOG", "info");
    c
}

/// At most the first `n` bytes of `s` (whole characters), for failure messages.
fn cut(s: &str, n: usize) -> &str {
    let end = s.char_indices().map(|(i, _)| i).chain([s.len()]).take_while(|i| *i <= n).last().unwrap_or(0);
    &s[..end]
}

/// A temporary folder holding `files`.
fn dir(files: &[(&str, &str)]) -> TempDir {
    TempDir::with_files("xtask-partitions", files)
}

fn connect(rt: &tokio::runtime::Runtime, url: &str) -> Client {
    rt.block_on(db::connect(url)).unwrap()
}

fn query_i64(rt: &tokio::runtime::Runtime, c: &Client, sql: &str) -> i64 {
    rt.block_on(c.query_one(sql, &[])).unwrap_or_else(|e| panic!("{sql}: {e:?}")).get(0)
}

/// The guarded audit table's migrations folder (triggers, keys, a generated column).
fn guarded_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/e2e-migrations/tests/fixtures/guarded")
}

const TABLE_SQL: &str = "-- +goose Up\nCREATE TABLE events (k date NOT NULL) PARTITION BY RANGE (k);\n";

/// A manifest whose one set `s` declares one partitioned table with the given TOML lines.
fn manifest(spec: &str) -> String {
    format!("[sets.s]\nfiles = [\"001_events.sql\"]\n\n[[sets.s.partitions]]\n{spec}\n")
}

#[test]
fn bad_manifests_are_refused_before_any_database_is_touched() {
    let rt = rt();
    let db = FreshDb::new();
    let url = db.url().to_string();
    let c = connect(&rt, &url);
    let huge = "e".repeat(2 << 20);
    let cases: Vec<(String, &str, &str)> = vec![
        // (spec lines, the table as the message names it, what the message says)
        (
            "table = 'events\"; DROP TABLE events; --'\ncolumn = 'k'".into(),
            "\"events\\\"; DROP TABLE events; --\"",
            "must be letters, digits and _",
        ),
        ("table = 'événements'\ncolumn = 'k'".into(), "\"événements\"", "must be letters, digits and _"),
        (format!("table = '{}'\ncolumn = 'k'", "e".repeat(64)), "\"eeeeeeeeee", "longer than 63 bytes"),
        (format!("table = '{huge}'\ncolumn = 'k'"), "\"eeeeeeeeee", "(2097152 bytes) is longer than 63 bytes"),
        ("table = 'events'\ncolumn = 'k; DROP TABLE events'".into(), "\"events\"", "column: identifier"),
        (
            "table = 'events'\ncolumn = 'k'\nname = '{table}_{yyyy}_{mm}\"; DROP TABLE events; --'".into(),
            "\"events\"",
            "'\"' is not allowed",
        ),
        ("table = 'events'\ncolumn = 'k'\nname = '{table}_{yyyy}_{mm}_ü'".into(), "\"events\"", "'ü' is not allowed"),
        (
            format!("table = '{}'\ncolumn = 'k'\nname = '{{table}}_{{table}}_{{yyyy}}_{{mm}}'", "e".repeat(30)),
            "\"eeeeeeeeee",
            "(69 bytes), which is longer than 63 bytes",
        ),
        ("table = 'events'\ncolumn = 'k'\nahead = 100000".into(), "\"events\"", "at most 1000 per table"),
        (
            "table = 'events'\ncolumn = 'k'\nretention = { keep = 5000, action = 'drop' }".into(),
            "\"events\"",
            "retention keep = 5000: at most 1000 periods",
        ),
    ];
    for (spec, table, says) in &cases {
        let dir = dir(&[("001_events.sql", TABLE_SQL), ("sets.toml", &manifest(spec))]);
        let state = TempDir::new("xtask-partitions-state");
        let file = dir.path().join("sets.toml");
        let commands: [&[&str]; 2] = [
            &["e2e-setup", "--backend", "url", "--database-url", &url, "--migrations-dir"],
            &["partitions", "roll", "--database-url", &url, "--migrations-dir"],
        ];
        for args in commands {
            let o = run(xtask().env("E2E_STATE_DIR", state.path()).args(args).arg(dir.path()));
            let full = stderr(&o);
            let e = cut(&full, 2000);
            let shown = cut(spec, 60);
            assert!(!o.status.success(), "{args:?} {shown}: {e}");
            assert!(e.contains(&format!("{}: set \"s\", partitions of {table}", file.display())), "{shown}: {e}");
            assert!(e.contains(says), "{shown}: {e}");
            assert!(
                full.len() <= 2000 && full.lines().count() <= 25,
                "longer than a screen ({} bytes): {shown}: {e}",
                full.len()
            );
            assert!(!e.contains("connecting"), "{e}");
        }
        assert_eq!(
            query_i64(&rt, &c, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"),
            0,
            "no table, no tracking table: nothing touched the database ({})",
            cut(spec, 60)
        );
    }
}

/// Waits until a session of the database runs a statement containing `needle` while it waits
/// for a lock, with writes of its own (a transaction id): a roll in the middle of its work.
fn wait_for_blocked_roll(rt: &tokio::runtime::Runtime, c: &Client, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let n = query_i64(
            rt,
            c,
            &format!(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
                    AND backend_xid IS NOT NULL AND query LIKE '%{needle}%'"
            ),
        );
        if n > 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no roll waited on a lock at {needle:?} with work of its own within 30 s");
}

/// Every guarded event as text, and the trigger calls recorded.
fn guarded_state(rt: &tokio::runtime::Runtime, c: &Client) -> (Vec<String>, i64) {
    let rows = rt
        .block_on(c.query("SELECT e::text FROM guarded_events e ORDER BY event_id", &[]))
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (rows, query_i64(rt, c, "SELECT count(*) FROM guarded_events_log"))
}

#[test]
fn a_roll_killed_in_the_middle_of_moving_rows_is_completed_by_the_next() {
    let rt = rt();
    let db = FreshDb::new();
    let url = db.url().to_string();
    let fixture = guarded_fixture();
    let o = run(xtask().args(["migrate", "up", "--database-url", &url, "--migrations-dir"]).arg(&fixture));
    assert!(o.status.success(), "{}", stderr(&o));
    let roll = |now: &str| {
        let mut cmd = xtask();
        cmd.args(["partitions", "roll", "--database-url", &url, "--now", now, "--migrations-dir"]).arg(&fixture);
        cmd
    };
    let o = run(&mut roll("2026-10-15"));
    assert!(o.status.success(), "{}", stderr(&o));
    let c = connect(&rt, &url);
    // February 2027 waits in the default partition: 200 events, each referencing the one before.
    rt.block_on(c.batch_execute(
        "INSERT INTO guarded_actors VALUES ('alice');
         DO $$
         DECLARE prev bigint;
         BEGIN
             FOR i IN 1..200 LOOP
                 INSERT INTO guarded_events (event_date, occurred_at, actor_id, payload, parent_event_id, parent_event_date)
                 VALUES ('2027-02-10', '2027-02-10 08:00Z'::timestamptz + i * interval '1 minute', 'alice',
                         jsonb_build_object('i', i), prev, CASE WHEN prev IS NOT NULL THEN date '2027-02-10' END)
                 RETURNING event_id INTO prev;
             END LOOP;
             INSERT INTO guarded_events (event_date, occurred_at, actor_id, payload) VALUES ('2030-01-01', now(), 'alice', '{}');
         END $$;",
    ))
    .unwrap();
    assert_eq!(query_i64(&rt, &c, "SELECT count(*) FROM guarded_events_default"), 201);
    let before = guarded_state(&rt, &c);

    // A writer of the actors holds its lock: the roll sets the self-referencing key aside, then
    // waits to detach the default partition (which locks the tables its keys reference).
    let writer = connect(&rt, &url);
    rt.block_on(writer.batch_execute("BEGIN; INSERT INTO guarded_actors VALUES ('bob')")).unwrap();
    let mut child =
        roll("2027-01-15").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_blocked_roll(&rt, &c, "DETACH PARTITION");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    rt.block_on(writer.batch_execute("ROLLBACK")).unwrap();

    // Nothing of the killed roll remains: the default partition is attached with every row, the
    // key is in place, no partition was added.
    assert_eq!(query_i64(&rt, &c, "SELECT count(*) FROM guarded_events_default"), 201);
    assert_eq!(
        query_i64(&rt, &c, "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'guarded_events_default'::regclass"),
        1
    );
    assert_eq!(
        query_i64(
            &rt,
            &c,
            "SELECT count(*) FROM pg_constraint WHERE conname = 'guarded_events_parent_fk' AND conrelid = 'guarded_events'::regclass"
        ),
        1
    );
    assert_eq!(query_i64(&rt, &c, "SELECT count(*) FROM pg_class WHERE relname = 'guarded_events_2027_02'"), 0);
    assert_eq!(guarded_state(&rt, &c), before);

    // The next roll completes (waiting out the killed session's advisory lock if it lingers).
    let o = run(&mut roll("2027-01-15"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("created guarded_events_2027_02") && out.contains("moved 200 rows"), "{out}");
    assert_eq!(query_i64(&rt, &c, "SELECT count(*) FROM guarded_events_2027_02"), 200);
    assert_eq!(query_i64(&rt, &c, "SELECT count(*) FROM guarded_events_default"), 1);
    assert_eq!(guarded_state(&rt, &c), before, "every row as it was, and no trigger fired");
    assert_eq!(
        query_i64(
            &rt,
            &c,
            "SELECT count(*) FROM pg_constraint WHERE conname = 'guarded_events_parent_fk' AND convalidated"
        ),
        1 + 9,
        "the key is back, validated, on the parent and its nine partitions"
    );
}
