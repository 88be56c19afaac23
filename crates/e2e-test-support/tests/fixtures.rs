//! The fixtures against the real server: dropped on every path, named so that the reaper and
//! the leftover check find what a crashed test left.

use std::time::{Duration, Instant};

use e2e_migrations::testdb::{parse_name, DbName};
use e2e_migrations::{db, TestDatabase};
use e2e_test_support::leftovers::{left_behind, snapshot};
use e2e_test_support::{endpoint, rt, FreshDb, TempDir};

/// Whether a database of this name is on the server.
fn exists(name: &str) -> bool {
    let admin = db::with_database(&endpoint().url, "postgres").unwrap();
    let name = name.to_string();
    rt().block_on(async move {
        let c = db::connect(&admin).await.unwrap();
        c.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().get::<_, i64>(0)
            == 1
    })
}

fn execute(sql: &str) {
    let admin = db::with_database(&endpoint().url, "postgres").unwrap();
    rt().block_on(async {
        let c = db::connect(&admin).await.unwrap();
        c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
}

#[test]
fn a_fresh_database_is_dropped_even_when_the_test_panics() {
    let (name_tx, name_rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        rt().block_on(async {
            let db = FreshDb::new();
            let _c = db.connect().await;
            name_tx.send(db.name().to_string()).unwrap();
            panic!("a failing test");
        })
    })
    .join();
    assert!(failed.is_err(), "the test panicked");
    let name = name_rx.recv().unwrap();
    assert!(!exists(&name), "{name} is left behind");
    let kept = FreshDb::new();
    assert!(exists(kept.name()));
}

#[test]
fn a_fresh_database_is_empty_named_for_this_process_and_gone_after_its_scope() {
    let db = FreshDb::new();
    let Some(DbName::Scratch { owner }) = parse_name(db.name()) else { panic!("{} is not a scratch name", db.name()) };
    assert_eq!(owner.pid, std::process::id());
    let tables: i64 = rt().block_on(async {
        let c = db.connect().await;
        c.query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[]).await.unwrap().get(0)
    });
    assert_eq!(tables, 0);
    let name = db.name().to_string();
    drop(db);
    assert!(!exists(&name));
}

#[test]
fn a_forgotten_fresh_database_is_named_by_the_leftover_check() {
    let before = snapshot().unwrap();
    let dropped = FreshDb::new();
    let dropped_name = dropped.name().to_string();
    drop(dropped);
    let forgotten = FreshDb::new();
    let name = forgotten.name().to_string();
    std::mem::forget(forgotten);
    let after = snapshot().unwrap();
    execute(&format!("DROP DATABASE {}", e2e_migrations::ident::quote(&name)));
    // Other tests run at the same time: look for these two only.
    let left = left_behind(&before, &after);
    assert!(left.contains(&name), "{name} not in {left:?}");
    assert!(!left.contains(&dropped_name), "{dropped_name} in {left:?}");
}

/// Before scratch names (`cli_...`, `t_...`), what a killed test left stayed on the server for
/// good: the reaper did not know the name.
#[test]
fn a_scratch_database_of_a_dead_process_is_reaped_by_the_next_run() {
    let Some(DbName::Scratch { owner: me }) = parse_name(&e2e_migrations::testdb::scratch_name()) else {
        panic!("a scratch name")
    };
    // A process that has exited, on this host, that started long ago.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let name = format!("e2e_s_{}_{dead}_1_{}", me.host, e2e_test_support::tag());
    execute(&format!("CREATE DATABASE {}", e2e_migrations::ident::quote(&name)));
    assert_eq!(parse_name(&name).map(|n| matches!(n, DbName::Scratch { .. })), Some(true), "{name}");
    // A test database: its process reaps the leftovers on the server (in the background).
    let db = rt().block_on(TestDatabase::new(&["audit"])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while exists(&name) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let reaped = !exists(&name);
    if !reaped {
        execute(&format!("DROP DATABASE IF EXISTS {}", e2e_migrations::ident::quote(&name)));
    }
    drop(db);
    assert!(reaped, "{name} was not reaped");
}

#[test]
fn a_temporary_folder_holds_its_files_and_is_removed_when_dropped() {
    let dir = TempDir::with_files("support", &[("a.sql", "SELECT 1;")]);
    dir.write("b.sql", "SELECT 2;");
    assert_eq!(std::fs::read_to_string(dir.join("a.sql")).unwrap(), "SELECT 1;");
    assert_eq!(std::fs::read_to_string(dir.join("b.sql")).unwrap(), "SELECT 2;");
    let path = dir.path().to_path_buf();
    assert!(path.file_name().unwrap().to_string_lossy().starts_with("support-"));
    drop(dir);
    assert!(!path.exists());
    assert_ne!(e2e_test_support::tag(), e2e_test_support::tag());
}
