//! What a migration run and a partition roll tell an observer, against a real server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_migrations::progress::{Event, Observer};
use e2e_migrations::{migrator, partitions, Options, Project};

use crate::support::{folder, FreshDb};

/// An observer that keeps every event.
fn recorder() -> (Observer, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    (Observer::new(move |e| keep.lock().unwrap().push(e.clone())), seen)
}

fn with(observer: &Observer) -> Options {
    Options { observer: Some(observer.clone()), ..Options::default() }
}

/// The events without their durations (which vary), as text.
fn shape(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Applied { index, total, name, .. } => format!("applied {name} ({index} of {total})"),
            Event::LockTaken { lock, .. } => format!("took {lock}"),
            other => other.to_string(),
        })
        .collect()
}

fn migration(up: &str) -> String {
    format!("-- +goose Up\n{up}\n-- +goose Down\nSELECT 1;\n")
}

#[tokio::test]
async fn the_observer_sees_the_plan_then_each_migration_of_the_folder_in_order() {
    let dir = folder(&[
        ("001_a.sql", &migration("CREATE TABLE a (x int);\nCREATE INDEX a_x ON a (x);")),
        ("002_b.sql", &migration("CREATE TABLE b (x int);")),
    ]);
    let db = FreshDb::new();
    let mut c = db.connect().await;
    let (o, seen) = recorder();

    let project = Project::load(dir.path()).unwrap();
    let sel = project.select(&[]).unwrap();
    migrator::up(&mut c, &project.folder, &sel.migrations, &with(&o)).await.unwrap();
    assert_eq!(
        shape(&seen.lock().unwrap()),
        [
            "2 to run, 0 already applied",
            "applying 001_a.sql (1 of 2, 2 statements)",
            "applied 001_a.sql (1 of 2)",
            "applying 002_b.sql (2 of 2, 1 statement)",
            "applied 002_b.sql (2 of 2)",
        ]
    );

    // a folder that grew, with a migration outside a transaction: only the new ones are run
    dir.write(
        "003_c.sql",
        &migration("-- +goose NO TRANSACTION\nCREATE TABLE c (x int);\nCREATE INDEX CONCURRENTLY c_x ON c (x);"),
    );
    seen.lock().unwrap().clear();
    let project = Project::load(dir.path()).unwrap();
    let sel = project.select(&[]).unwrap();
    migrator::up(&mut c, &project.folder, &sel.migrations, &with(&o)).await.unwrap();
    assert_eq!(
        shape(&seen.lock().unwrap()),
        ["1 to run, 2 already applied", "applying 003_c.sql (1 of 1, 2 statements)", "applied 003_c.sql (1 of 1)"]
    );

    seen.lock().unwrap().clear();
    migrator::up(&mut c, &project.folder, &sel.migrations, &with(&o)).await.unwrap();
    assert_eq!(shape(&seen.lock().unwrap()), ["0 to run, 3 already applied"], "nothing to do is said too");

    seen.lock().unwrap().clear();
    migrator::down(&mut c, &project.folder, &sel.migrations, Some(1), &with(&o)).await.unwrap();
    assert_eq!(
        shape(&seen.lock().unwrap()),
        ["2 to run, 0 already applied", "reverting 003_c.sql (1 of 2)", "reverting 002_b.sql (2 of 2)"]
    );
    drop(c);
}

#[tokio::test]
async fn a_failed_migration_is_announced_but_never_reported_applied() {
    let dir = folder(&[
        ("001_a.sql", &migration("CREATE TABLE a (x int);")),
        ("002_bad.sql", &migration("CREATE TABLE a (x int);")),
    ]);
    let db = FreshDb::new();
    let mut c = db.connect().await;
    let (o, seen) = recorder();
    let project = Project::load(dir.path()).unwrap();
    let sel = project.select(&[]).unwrap();
    migrator::up(&mut c, &project.folder, &sel.migrations, &with(&o)).await.unwrap_err();
    assert_eq!(
        shape(&seen.lock().unwrap()),
        [
            "2 to run, 0 already applied",
            "applying 001_a.sql (1 of 2, 1 statement)",
            "applied 001_a.sql (1 of 2)",
            "applying 002_bad.sql (2 of 2, 1 statement)",
        ]
    );
    drop(c);
}

#[tokio::test]
async fn a_wait_for_the_migration_lock_says_who_holds_it_then_that_it_is_over() {
    let dir = folder(&[("001_a.sql", &migration("CREATE TABLE a (x int);"))]);
    let db = FreshDb::new();
    let holder = db.connect().await;
    holder.batch_execute("SET application_name = 'lock-holder'").await.unwrap();
    holder.query_one("SELECT pg_advisory_lock($1)", &[&e2e_migrations::db::LOCK_ID]).await.unwrap();
    let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

    let (o, seen) = recorder();
    let url = db.url().to_string();
    let run = tokio::spawn(async move {
        let mut c = e2e_migrations::db::connect(&url).await.unwrap();
        let project = Project::load(dir.path()).unwrap();
        let sel = project.select(&[]).unwrap();
        let opts = Options { lock_timeout: Duration::from_secs(30), ..with(&o) };
        migrator::up(&mut c, &project.folder, &sel.migrations, &opts).await
    });
    let start = Instant::now();
    while seen.lock().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no word of the wait");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = seen.lock().unwrap()[0].clone();
    let Event::LockWaiting { lock, holder: who, timeout } = first else { panic!("first event: {first:?}") };
    assert_eq!((lock.as_str(), timeout), ("the migration lock", Duration::from_secs(30)));
    assert!(who.starts_with(&format!("pid {pid} (lock-holder, idle")), "{who}");
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing else while it waits");

    holder.query_one("SELECT pg_advisory_unlock($1)", &[&e2e_migrations::db::LOCK_ID]).await.unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.applied.len(), 1);
    let events = shape(&seen.lock().unwrap());
    assert_eq!(
        events[1..],
        [
            "took the migration lock",
            "1 to run, 0 already applied",
            "applying 001_a.sql (1 of 1, 1 statement)",
            "applied 001_a.sql (1 of 1)"
        ]
    );
    drop(holder);
}

#[tokio::test]
async fn a_roll_names_each_table_it_moves_on_to() {
    let db = FreshDb::new();
    let mut c = db.connect().await;
    let project = Project::load(&e2e_test_support::repo_migrations_dir()).unwrap();
    let sel = project.select(&[]).unwrap();
    migrator::up(&mut c, &project.folder, &sel.migrations, &Options::default()).await.unwrap();
    let (o, seen) = recorder();
    let opts = partitions::RollOptions { observer: Some(o), ..partitions::RollOptions::default() };
    let now = chrono::DateTime::parse_from_rfc3339("2024-06-15T12:00:00Z").unwrap().to_utc();
    partitions::roll(&mut c, &sel.partitions, now, &opts).await.unwrap();
    let want: Vec<String> = sel
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| format!("rolling {} ({} of {})", p.table, i + 1, sel.partitions.len()))
        .collect();
    assert!(!want.is_empty(), "the bundled sets declare partitioned tables");
    assert_eq!(shape(&seen.lock().unwrap()), want);
    drop(c);
}

/// Advisory locks belong to a database: a session holding the same key in another database of
/// the server (another service's tests, a shared CI server) neither blocks this run nor is the
/// holder to name. Here eight sessions of another database share the key, so that a lookup
/// across databases would name one of them nearly always.
#[tokio::test]
async fn the_holder_named_for_a_lock_wait_is_the_one_in_this_database() {
    let here = FreshDb::new();
    let elsewhere = FreshDb::new();
    let mut others = Vec::new();
    for _ in 0..8 {
        let c = elsewhere.connect().await;
        c.batch_execute("SET application_name = 'other-database'").await.unwrap();
        c.query_one("SELECT pg_advisory_lock_shared($1)", &[&e2e_migrations::db::LOCK_ID]).await.unwrap();
        others.push(c);
    }
    let holder = here.connect().await;
    holder.batch_execute("SET application_name = 'this-database'").await.unwrap();
    holder.query_one("SELECT pg_advisory_lock($1)", &[&e2e_migrations::db::LOCK_ID]).await.unwrap();
    let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

    let c = here.connect().await;
    let e = e2e_migrations::db::lock(&c, Duration::from_millis(300)).await.unwrap_err();
    let e2e_migrations::Error::LockTimeout { holder: who, .. } = &e else { panic!("{e}") };
    assert!(who.starts_with(&format!("pid {pid} (this-database, idle")), "{who}");
    drop((c, holder, others));
}
