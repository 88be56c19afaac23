//! The up-front transaction check against PostgreSQL itself, and the guard behind it: a failed
//! or transaction-ending migration is never recorded as applied.

use std::path::Path;

use e2e_migrations::source::{checksum, Folder, Migration};
use e2e_migrations::{goose, migrator, txblock, Error, Options, Project};

use crate::support::{count, folder, local_server, FreshDb};

async fn up(db: &FreshDb, folder: &Folder) -> e2e_migrations::Result<migrator::Report> {
    let mut c = db.connect().await;
    let sel: Vec<&Migration> = folder.migrations.iter().collect();
    migrator::up(&mut c, folder, &sel, &Options::default()).await
}

/// A folder built without `source::parse_folder`, so without the up-front check: what the
/// migrator does when a statement slips past it.
fn unchecked_folder(dir: &Path, files: &[(&str, &str)]) -> Folder {
    let migrations = files
        .iter()
        .map(|(name, text)| {
            let sql = goose::parse(text, &|_| None).unwrap();
            let version = e2e_migrations::source::version_of(name).unwrap();
            Migration { version, name: name.to_string(), path: dir.join(name), checksum: checksum(&sql.up_text), sql }
        })
        .collect();
    Folder { dir: dir.to_path_buf(), migrations, warnings: Vec::new() }
}

const ISSUE_FILE: &str = "-- +goose Up\nCREATE TABLE r (id int);\nCREATE INDEX CONCURRENTLY r_i ON r (id);\nCOMMIT;\n";

#[tokio::test]
async fn a_failed_migration_with_its_own_commit_is_refused_before_connecting() {
    let dir = folder(&[("001_r.sql", ISSUE_FILE)]);
    let err = Project::load(dir.path()).unwrap_err();
    let Error::Core(e2e_migrations::core::Error::Refused { file, line, message, more, .. }) = &err else {
        panic!("{err}")
    };
    assert_eq!((file, *line, *more), (&dir.path().join("001_r.sql"), 3, 1), "{err}");
    assert!(message.contains("CREATE INDEX CONCURRENTLY cannot run inside a transaction block"), "{err}");
    assert!(message.contains("-- +goose NO TRANSACTION"), "{err}");
}

#[tokio::test]
async fn a_failed_migration_is_never_recorded_even_past_the_check() {
    let tmp = folder(&[]);
    let folder = unchecked_folder(tmp.path(), &[("001_r.sql", ISSUE_FILE)]);
    let db = FreshDb::new();
    let err = up(&db, &folder).await.unwrap_err();
    let Error::Migration { failure, .. } = &err else { panic!("{err}") };
    assert_eq!((failure.line, failure.sqlstate.as_str()), (3, "25001"), "{err}");
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id = 1").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM e2e_migrations_meta WHERE version_id = 1").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'r'").await, 0);
    // The session is clean: a fixed file applies on the same connection's next run.
    let fixed = unchecked_folder(tmp.path(), &[("001_r.sql", "-- +goose Up\nCREATE TABLE r (id int);\n")]);
    up(&db, &fixed).await.unwrap();
    drop(c);
}

#[tokio::test]
async fn a_commit_the_check_cannot_see_is_never_recorded() {
    // The first migration turns standard_conforming_strings off for the session; in the second,
    // PostgreSQL then reads `'x\''` as a whole string and runs the COMMIT after it, where the
    // check (reading quotes as standard) sees one string up to `--'`.
    let dir = folder(&[
        ("001_legacy_strings.sql", "-- +goose Up\nSET standard_conforming_strings = off;\n"),
        (
            "002_hidden_commit.sql",
            "-- +goose Up\nCREATE TABLE hidden_a (x int);\nSELECT 'x\\''; COMMIT; --';\nCREATE TABLE hidden_b (x int);\n",
        ),
    ]);
    let project = Project::load(dir.path()).expect("the check cannot see the COMMIT");
    let db = FreshDb::new();
    let err = up(&db, &project.folder).await.unwrap_err();
    let Error::Migration { failure, applied, .. } = &err else { panic!("{err}") };
    assert_eq!(applied, &["001_legacy_strings.sql".to_string()]);
    assert_eq!(failure.file, dir.path().join("002_hidden_commit.sql"));
    assert!(failure.message.contains("ended the migration's transaction before the tracking rows"), "{err}");
    assert!(failure.message.contains("NOT recorded"), "{err}");
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id = 2").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM e2e_migrations_meta WHERE version_id = 2").await, 0);
    assert_eq!(
        count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'hidden_b'").await,
        0,
        "after the COMMIT: rolled back"
    );
    drop(c);
}

/// Statements the server reads in a file where the check reads fewer: with
/// standard_conforming_strings off, `'x\' /* '` is one string to the server, which then runs the
/// SELECTs that the check reads as a comment; the last one fails with an error that has no
/// position, so only the count of completed statements places it.
fn hidden_statements(selects: usize) -> String {
    let hidden: String = (0..selects).map(|i| format!(" SELECT {i};")).collect();
    format!("-- +goose Up\nCREATE TABLE hidden_c (x int);\nSELECT 'x\\' /* ';{hidden} SELECT 1/0; -- */;\n")
}

#[tokio::test]
async fn a_failure_after_statements_the_check_cannot_see_is_not_blamed_on_the_tracking_rows() {
    // 3 hidden SELECTs bring the count to the tracking rows; 8 past the end of the string.
    for selects in [3, 8] {
        let dir = folder(&[
            ("001_legacy_strings.sql", "-- +goose Up\nSET standard_conforming_strings = off;\n"),
            ("002_hidden.sql", &hidden_statements(selects)),
        ]);
        let project = Project::load(dir.path()).expect("the check reads one statement");
        let db = FreshDb::new();
        let err = up(&db, &project.folder).await.unwrap_err();
        let Error::Migration { failure, .. } = &err else { panic!("{err}") };
        assert_eq!(failure.file, dir.path().join("002_hidden.sql"));
        assert_eq!(failure.sqlstate, "22012", "{err}");
        assert!(
            !failure.message.contains("tracking rows") && !failure.message.contains("COMMIT ("),
            "{selects}: {err}"
        );
        assert!(failure.message.contains("up-front check could not see"), "{selects}: {err}");
        assert!(failure.message.contains("division by zero"), "{err}");
        let c = db.connect().await;
        assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id = 2").await, 0);
    }
}

#[tokio::test]
async fn a_deferred_constraint_that_fails_at_commit_is_said_to_fail_at_commit() {
    let dir = folder(&[(
        "001_deferred.sql",
        "-- +goose Up\nCREATE TABLE parent (id int PRIMARY KEY);\n\
         CREATE TABLE child (p int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);\n\
         INSERT INTO child VALUES (1);\n",
    )]);
    let db = FreshDb::new();
    let err = up(&db, &Project::load(dir.path()).unwrap().folder).await.unwrap_err();
    let Error::Migration { failure, .. } = &err else { panic!("{err}") };
    assert_eq!(failure.sqlstate, "23503", "{err}");
    assert!(failure.message.contains("at COMMIT"), "{err}");
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'child'").await, 0);
}

#[tokio::test]
async fn nothing_is_sent_after_a_failed_statement() {
    let marker = format!("boom_{}", std::process::id());
    let file = format!(
        "-- +goose Up\nCREATE TABLE f (x int);\nDO $$ BEGIN RAISE EXCEPTION '{marker}'; END $$;\nINSERT INTO f VALUES (1);\nINSERT INTO f VALUES (2);\n"
    );
    let dir = folder(&[("001_f.sql", &file)]);
    let db = FreshDb::new();
    let err = up(&db, &Project::load(dir.path()).unwrap().folder).await.unwrap_err();
    let Error::Migration { failure, .. } = &err else { panic!("{err}") };
    assert_eq!(failure.line, 3, "{err}");
    // The server's log: after the failure, the same backend logged no "current transaction is
    // aborted" for statements sent behind the failed one.
    let log = std::fs::read_to_string(&local_server().layout.log).unwrap();
    let at = log.find(&marker).expect("the failure is in the server log");
    let line_start = log[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let pid =
        log[line_start..].split('[').nth(1).and_then(|s| s.split(']').next()).expect("log line has a pid").to_string();
    let after: Vec<&str> = log[at..].lines().filter(|l| l.contains(&format!("[{pid}]"))).collect();
    assert!(!after.iter().any(|l| l.contains("current transaction is aborted")), "{after:#?}");
}

#[tokio::test]
async fn duration_ms_is_recorded_for_each_kind_of_migration() {
    let dir = folder(&[
        ("001_tx.sql", "-- +goose Up\nSELECT pg_sleep(0.05);\n"),
        ("002_nt.sql", "-- +goose Up\n-- +goose NO TRANSACTION\nSELECT pg_sleep(0.05);\n"),
    ]);
    let db = FreshDb::new();
    up(&db, &Project::load(dir.path()).unwrap().folder).await.unwrap();
    let c = db.connect().await;
    let rows =
        c.query("SELECT version_id, duration_ms FROM e2e_migrations_meta ORDER BY version_id", &[]).await.unwrap();
    let durations: Vec<(i64, Option<f64>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(durations.len(), 2);
    for (v, d) in durations {
        let d = d.unwrap_or_else(|| panic!("version {v}: duration_ms is NULL"));
        assert!((50.0..60_000.0).contains(&d), "version {v}: duration_ms {d}");
    }
    drop(c);
}

/// Every statement the check refuses as "not in a transaction block" is refused by PostgreSQL
/// there too (SQLSTATE 25001), and every look-alike it lets through runs in a transaction block.
#[tokio::test]
async fn the_check_agrees_with_postgresql_on_what_runs_in_a_transaction_block() {
    let db = FreshDb::new();
    let c = db.connect().await;
    c.batch_execute(
        "CREATE TABLE cc (x int PRIMARY KEY); CREATE INDEX cc_x ON cc (x);
         CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x; CREATE UNIQUE INDEX mv_x ON mv (x);
         CREATE TABLE parted (d date) PARTITION BY RANGE (d);
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
         CREATE TYPE en AS ENUM ('a');",
    )
    .await
    .unwrap();
    let name = db.name();
    let refused = [
        "VACUUM".to_string(),
        "VACUUM (ANALYZE) cc".to_string(),
        "CREATE INDEX CONCURRENTLY cc_y ON cc (x)".to_string(),
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS cc_u ON cc (x)".to_string(),
        "DROP INDEX CONCURRENTLY cc_x".to_string(),
        "REINDEX TABLE CONCURRENTLY cc".to_string(),
        "REINDEX (CONCURRENTLY) INDEX cc_x".to_string(),
        "REINDEX SCHEMA public".to_string(),
        format!("REINDEX DATABASE {name}"),
        format!("REINDEX SYSTEM {name}"),
        "CREATE DATABASE e2e_never".to_string(),
        "DROP DATABASE IF EXISTS e2e_never".to_string(),
        "CREATE TABLESPACE e2e_never LOCATION '/nonexistent'".to_string(),
        "DROP TABLESPACE IF EXISTS e2e_never".to_string(),
        "ALTER SYSTEM SET work_mem = '4MB'".to_string(),
        format!("ALTER DATABASE {name} SET TABLESPACE pg_default"),
        "CLUSTER".to_string(),
        "CLUSTER VERBOSE".to_string(),
        "DISCARD ALL".to_string(),
        "ALTER TABLE parted DETACH PARTITION parted_1 CONCURRENTLY".to_string(),
        "CREATE SUBSCRIPTION e2e_never CONNECTION 'host=127.0.0.1 port=1' PUBLICATION p".to_string(),
        "COMMIT PREPARED 'e2e_never'".to_string(),
        "ROLLBACK PREPARED 'e2e_never'".to_string(),
    ];
    for sql in &refused {
        let s = txblock::split(sql);
        let r = txblock::classify(&s.chars, &s.statements[0].tokens);
        assert!(r.is_some(), "the check lets {sql:?} through");
        c.batch_execute("BEGIN").await.unwrap();
        let e = c.batch_execute(sql).await.expect_err(sql);
        c.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(e.code().map(|c| c.code()), Some("25001"), "{sql}: {e:?}");
    }
    let allowed = [
        "ANALYZE cc",
        "REINDEX TABLE cc",
        "REINDEX (CONCURRENTLY false) TABLE cc",
        "CLUSTER cc USING cc_pkey",
        "DISCARD PLANS",
        "CHECKPOINT",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
        "ALTER TYPE en ADD VALUE 'b'",
        "ALTER TABLE parted DETACH PARTITION parted_1",
        "CREATE SUBSCRIPTION e2e_off CONNECTION 'host=127.0.0.1 port=1' PUBLICATION p WITH (connect = false)",
        "PREPARE q (int) AS SELECT $1",
        "COPY cc TO '/dev/null'",
    ];
    for sql in allowed {
        let s = txblock::split(sql);
        let r = txblock::classify(&s.chars, &s.statements[0].tokens);
        assert_eq!(r, None, "{sql}");
        c.batch_execute("BEGIN").await.unwrap();
        let result = c.batch_execute(sql).await;
        c.batch_execute("ROLLBACK").await.unwrap();
        result.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    drop(c);
}
