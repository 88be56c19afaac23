//! Migration engine tests: apply, rerun, drift, failures, concurrency, goose edge cases.

use std::time::Duration;

use e2e_migrations::{migrator, Error, Options, Project};

use crate::support::{count, folder, FreshDb};

fn up_down(up: &str, down: &str) -> String {
    format!("-- +goose Up\n{up}\n-- +goose Down\n{down}\n")
}

async fn up_all(db: &FreshDb, project: &Project) -> e2e_migrations::Result<migrator::Report> {
    let mut c = db.connect().await;
    let sel = project.select(&[])?;
    migrator::up(&mut c, &project.folder, &sel.migrations, &Options::default()).await
}

#[tokio::test]
async fn fresh_apply_then_rerun_applies_nothing() {
    let db = FreshDb::new();
    let project = Project::load(&e2e_test_support::repo_migrations_dir()).unwrap();
    let first = up_all(&db, &project).await.unwrap();
    let names: Vec<&str> = first.applied.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "013_create_audit_events_table.sql",
            "015_create_workflow_catalog_table.sql",
            "021_create_notification_audit_table.sql"
        ]
    );
    let c = db.connect().await;
    for t in ["audit_events", "remediation_workflow_catalog", "notification_audit"] {
        assert_eq!(count(&c, &format!("SELECT count(*) FROM pg_class WHERE relname = '{t}'")).await, 1, "{t}");
    }
    // goose's own view: its marker row plus one applied row per version.
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id = 0").await, 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id IN (13, 15, 21) AND is_applied").await,
        3
    );
    assert_eq!(count(&c, "SELECT count(*) FROM e2e_migrations_meta WHERE statements_done IS NULL").await, 3);

    let second = up_all(&db, &project).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, 3);
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version").await, 4);
    drop(c);
}

#[tokio::test]
async fn every_down_section_reverts_cleanly() {
    let db = FreshDb::new();
    let project = Project::load(&e2e_test_support::repo_migrations_dir()).unwrap();
    up_all(&db, &project).await.unwrap();
    let mut c = db.connect().await;
    let sel = project.select(&[]).unwrap();
    let r = migrator::down(&mut c, &project.folder, &sel.migrations, Some(0), &Options::default()).await.unwrap();
    assert_eq!(r.applied.len(), 3);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('goose_db_version', 'e2e_migrations_meta')").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id > 0").await, 0);
    // And up again: the Down sections left nothing behind that blocks a reapply.
    assert_eq!(up_all(&db, &project).await.unwrap().applied.len(), 3);
    drop(c);
}

#[tokio::test]
async fn drift_is_refused_unless_accepted() {
    let dir = folder(&[("001_a.sql", &up_down("CREATE TABLE a (x int);", "DROP TABLE a;"))]);
    let db = FreshDb::new();
    up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();
    dir.write("001_a.sql", &up_down("CREATE TABLE a (x bigint);", "DROP TABLE a;"));
    let changed = Project::load(dir.path()).unwrap();
    let err = up_all(&db, &changed).await.unwrap_err();
    assert!(matches!(err, Error::Core(e2e_migrations::core::Error::Drift { .. })), "{err}");
    assert!(err.to_string().contains("001_a.sql"), "{err}");

    // Only line endings changed: not drift.
    dir.write("001_a.sql", &up_down("CREATE TABLE a (x int);", "DROP TABLE a;").replace('\n', "\r\n"));
    up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();

    // Accepted deliberately: recorded, and the next run is clean.
    dir.write("001_a.sql", &up_down("CREATE TABLE a (x bigint);", "DROP TABLE a;"));
    let mut c = db.connect().await;
    let sel = changed.select(&[]).unwrap();
    let opts = Options { accept_drift: true, ..Options::default() };
    let r = migrator::up(&mut c, &changed.folder, &sel.migrations, &opts).await.unwrap();
    assert_eq!(r.drift_accepted.len(), 1);
    up_all(&db, &changed).await.unwrap();
    drop(c);
}

#[tokio::test]
async fn failing_migration_is_located_and_leaves_nothing_behind() {
    let dir = folder(&[
        ("001_ok.sql", &up_down("CREATE TABLE ok (x int);", "DROP TABLE ok;")),
        (
            "002_bad.sql",
            "-- +goose Up\nCREATE TABLE half (x int);\nINSERT INTO half VALUES (1);\nCREATE TABLE broken (\n  y no_such_type\n);\n-- +goose Down\nDROP TABLE half;\n",
        ),
        ("003_later.sql", &up_down("CREATE TABLE later (x int);", "DROP TABLE later;")),
    ]);
    let db = FreshDb::new();
    let err = up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap_err();
    let Error::Migration { failure, applied, .. } = &err else { panic!("unexpected error: {err}") };
    assert_eq!(failure.file, dir.path().join("002_bad.sql"));
    assert_eq!((failure.line, failure.column), (5, Some(5)), "{err}");
    assert_eq!(failure.sqlstate, "42704");
    assert!(failure.message.contains("no_such_type"));
    assert_eq!(applied, &["001_ok.sql".to_string()]);
    let text = err.to_string();
    assert!(text.contains("002_bad.sql:5:5") && text.contains("SQLSTATE 42704"), "{text}");

    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname IN ('ok')").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname IN ('half', 'broken', 'later')").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id > 0").await, 1);
    // The session is usable and the lock was released: a later run gets it at once.
    let fixed = folder(&[("001_ok.sql", &up_down("CREATE TABLE ok (x int);", "DROP TABLE ok;"))]);
    up_all(&db, &Project::load(fixed.path()).unwrap()).await.unwrap();
    drop(c);
}

#[tokio::test]
async fn runtime_error_without_position_names_the_statement_line() {
    let dir = folder(&[(
        "001_dup.sql",
        "-- +goose Up\nCREATE TABLE u (x int UNIQUE);\nINSERT INTO u VALUES (1);\nINSERT INTO u VALUES (1);\n",
    )]);
    let db = FreshDb::new();
    let err = up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap_err();
    let Error::Migration { failure, .. } = &err else { panic!("{err}") };
    assert_eq!((failure.line, failure.sqlstate.as_str()), (4, "23505"));
    assert!(failure.detail.as_deref().unwrap_or("").contains("(x)=(1)"), "{err}");
}

#[tokio::test]
async fn goose_edge_cases_apply() {
    let dir = folder(&[
        // Numeric order: 20 before 100, although "100" < "20" as text.
        ("100_alter.sql", &up_down("ALTER TABLE base ADD COLUMN y int;", "ALTER TABLE base DROP COLUMN y;")),
        ("20_base.sql", &up_down("CREATE TABLE base (x int);", "DROP TABLE base;")),
        // A DO body with semicolons, outside StatementBegin/End (goose would split it).
        (
            "101_do.sql",
            "-- +goose Up\nDO $$\nBEGIN\n  INSERT INTO base (x) VALUES (1);\n  INSERT INTO base (x) VALUES (2);\nEND\n$$;\n-- +goose Down\nDELETE FROM base;\n",
        ),
        // The same inside StatementBegin/End, with a tagged body and a string holding ';'.
        (
            "102_fn.sql",
            "-- +goose Up\n-- +goose StatementBegin\nCREATE FUNCTION semi() RETURNS text AS $fn$\nBEGIN\n  RETURN 'a;b';\nEND;\n$fn$ LANGUAGE plpgsql;\n-- +goose StatementEnd\n-- +goose Down\nDROP FUNCTION semi();\n",
        ),
        // NO TRANSACTION: CREATE INDEX CONCURRENTLY cannot run in a transaction.
        (
            "103_cic.sql",
            "-- +goose Up\n-- +goose NO TRANSACTION\nCREATE INDEX CONCURRENTLY base_x ON base (x);\n-- +goose Down\n-- +goose NO TRANSACTION\nDROP INDEX CONCURRENTLY base_x;\n",
        ),
        // No annotations at all: all Up (with a warning).
        ("104_plain.sql", "INSERT INTO base (x, y) VALUES (3, 3);\n"),
    ]);
    let project = Project::load(dir.path()).unwrap();
    assert!(project.folder.warnings.iter().any(|w| w.contains("104_plain.sql") && w.contains("goose itself rejects")));
    assert!(project.folder.warnings.iter().any(|w| w.contains("101_do.sql:4")), "{:?}", project.folder.warnings);
    let db = FreshDb::new();
    let r = up_all(&db, &project).await.unwrap();
    let order: Vec<i64> = r.applied.iter().map(|a| a.version).collect();
    assert_eq!(order, [20, 100, 101, 102, 103, 104]);
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM base").await, 3);
    let s: String = c.query_one("SELECT semi()", &[]).await.unwrap().get(0);
    assert_eq!(s, "a;b");
    assert_eq!(count(&c, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'base_x' AND i.indisvalid").await, 1);
}

#[tokio::test]
async fn lower_version_applied_after_higher_is_not_skipped() {
    let dir = folder(&[("005_b.sql", &up_down("CREATE TABLE b (x int);", "DROP TABLE b;"))]);
    let db = FreshDb::new();
    up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();
    dir.write("003_a.sql", &up_down("CREATE TABLE a (x int);", "DROP TABLE a;"));
    let r = up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();
    assert_eq!(r.applied.iter().map(|a| a.version).collect::<Vec<_>>(), [3]);
}

#[tokio::test]
async fn eight_concurrent_runners_apply_each_migration_once() {
    let files: Vec<(String, String)> = (1..=30)
        .map(|v| {
            (
                format!("{v:03}_t.sql"),
                up_down(
                    &format!("CREATE TABLE t{v} (x int);\nCREATE INDEX t{v}_x ON t{v} (x);\nINSERT INTO t{v} SELECT generate_series(1, 100);"),
                    &format!("DROP TABLE t{v};"),
                ),
            )
        })
        .chain(std::iter::once((
            "031_cic.sql".to_string(),
            "-- +goose Up\n-- +goose NO TRANSACTION\nCREATE INDEX CONCURRENTLY t1_cic ON t1 (x);\n".to_string(),
        )))
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dir = folder(&refs);
    let db = FreshDb::new();
    let project = std::sync::Arc::new(Project::load(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let project = project.clone();
        let url = db.url().to_string();
        tasks.push(tokio::spawn(async move {
            let mut c = e2e_migrations::db::connect(&url).await.unwrap();
            let sel = project.select(&[]).unwrap();
            let opts = Options { lock_timeout: Duration::from_secs(60), ..Options::default() };
            migrator::up(&mut c, &project.folder, &sel.migrations, &opts).await
        }));
    }
    let mut total_applied = 0;
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(90), t).await.expect("no deadlock").unwrap().unwrap();
        total_applied += r.applied.len();
    }
    assert_eq!(total_applied, 31, "every migration applied exactly once across the runners");
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM (SELECT version_id FROM goose_db_version WHERE version_id > 0 GROUP BY version_id HAVING count(*) = 1) v").await, 31);
    assert_eq!(count(&c, "SELECT count(*) FROM t30").await, 100);
}

async fn down_one(db: &FreshDb, project: &Project) -> e2e_migrations::Result<migrator::Report> {
    let mut c = db.connect().await;
    let sel = project.select(&[])?;
    migrator::down(&mut c, &project.folder, &sel.migrations, None, &Options::default()).await
}

#[tokio::test]
async fn down_reverts_the_most_recently_applied_version_as_goose_does() {
    let dir = folder(&[("005_b.sql", &up_down("CREATE TABLE b (x int);", "DROP TABLE b;"))]);
    let db = FreshDb::new();
    up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();
    dir.write("003_a.sql", &up_down("CREATE TABLE a (x int);", "DROP TABLE a;"));
    let project = Project::load(dir.path()).unwrap();
    up_all(&db, &project).await.unwrap();
    // 3 was applied after 5: goose's `down` reverts 3.
    let r = down_one(&db, &project).await.unwrap();
    assert_eq!(r.applied.iter().map(|a| a.version).collect::<Vec<_>>(), [3]);
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname IN ('a', 'b')").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id = 5").await, 1);
    drop(c);
}

#[tokio::test]
async fn down_refuses_when_the_newest_applied_version_has_no_file() {
    let dir = folder(&[
        ("001_a.sql", &up_down("CREATE TABLE a (x int);", "DROP TABLE a;")),
        ("002_b.sql", &up_down("CREATE TABLE b (x int);", "DROP TABLE b;")),
    ]);
    let db = FreshDb::new();
    up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();
    std::fs::remove_file(dir.path().join("002_b.sql")).unwrap();
    let err = down_one(&db, &Project::load(dir.path()).unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("version 2 (the most recently applied version) has no file"), "{err}");
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname IN ('a', 'b')").await, 2, "nothing reverted");
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id > 0").await, 2);
    drop(c);
}

#[tokio::test]
async fn a_symlinked_migration_is_applied() {
    let shared = folder(&[("table.sql", &up_down("CREATE TABLE linked (x int);", "DROP TABLE linked;"))]);
    let dir = folder(&[("001_a.sql", &up_down("CREATE TABLE a (x int);", "DROP TABLE a;"))]);
    std::os::unix::fs::symlink(shared.path().join("table.sql"), dir.path().join("002_linked.sql")).unwrap();
    let db = FreshDb::new();
    let r = up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();
    assert_eq!(r.applied.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["001_a.sql", "002_linked.sql"]);
    let c = db.connect().await;
    assert_eq!(count(&c, "SELECT count(*) FROM pg_class WHERE relname = 'linked'").await, 1);
    drop(c);
}

#[tokio::test]
async fn a_sequence_behind_its_tracking_rows_is_repaired() {
    let dir = folder(&[("001_a.sql", &up_down("CREATE TABLE a (x int);", "DROP TABLE a;"))]);
    let db = FreshDb::new();
    up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();
    let c = db.connect().await;
    // What a crash with wal_level = minimal left: the sequence back at 1, the rows at 2.
    c.batch_execute("SELECT setval(pg_get_serial_sequence('goose_db_version', 'id'), 1)").await.unwrap();
    dir.write("002_b.sql", &up_down("CREATE TABLE b (x int);", "DROP TABLE b;"));
    let r = up_all(&db, &Project::load(dir.path()).unwrap()).await.unwrap();
    assert_eq!(r.applied.len(), 1);
    assert_eq!(count(&c, "SELECT count(*) FROM goose_db_version WHERE version_id = 2").await, 1);
    drop(c);
}

/// A `NO TRANSACTION` migration that failed on its second statement resumes once that statement
/// is fixed: the first, which ran and stays applied, is not run again (it would fail: the table
/// exists), and the version is then recorded with the fixed file's checksum.
#[tokio::test]
async fn a_no_transaction_migration_resumes_after_its_failing_statement_is_fixed() {
    let file = |second: &str| format!("-- +goose Up\n-- +goose NO TRANSACTION\nCREATE TABLE nt (id int);\n{second}\n");
    let dir = folder(&[("001_nt.sql", &file("CREATE INDEX CONCURRENTLY nt_i ON nt (no_such_column);"))]);
    let db = FreshDb::new();
    let mut c = db.connect().await;
    async fn run(c: &mut tokio_postgres::Client, dir: &std::path::Path) -> e2e_migrations::Result<migrator::Report> {
        let project = Project::load(dir).unwrap();
        let sel: Vec<_> = project.folder.migrations.iter().collect();
        migrator::up(c, &project.folder, &sel, &Options::default()).await
    }
    let e = run(&mut c, dir.path()).await.unwrap_err().to_string();
    assert!(e.contains("001_nt.sql:4") && e.contains("no_such_column"), "{e}");
    assert!(e.contains("1 statement of this NO TRANSACTION migration ran before the failure and stays applied"), "{e}");
    std::fs::write(dir.path().join("001_nt.sql"), file("CREATE INDEX CONCURRENTLY nt_i ON nt (id);")).unwrap();
    let report = run(&mut c, dir.path()).await.expect("resumes after statement 1");
    assert_eq!(report.applied.len(), 1);
    let project = Project::load(dir.path()).unwrap();
    let (sum, done): (String, Option<i32>) = {
        let r = c.query_one("SELECT checksum, statements_done FROM e2e_migrations_meta", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((sum.as_str(), done), (project.folder.migrations[0].checksum.as_str(), None));
    assert_eq!(count(&c, "SELECT count(*) FROM pg_indexes WHERE indexname = 'nt_i'").await, 1);
}
