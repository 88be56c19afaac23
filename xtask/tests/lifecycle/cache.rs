//! The server cache: a cold setup starts from a copy of a migrated server, and a changed
//! migration or another date never reuses a stale copy.

use crate::support::{query_text, stderr, url_of, Checkout, TempDir};

fn setup(c: &Checkout, extra: &[&str]) -> (String, String) {
    let mut args = vec!["e2e-setup", "--backend", "local", "--sets", "audit,workflow", "--print-env"];
    args.extend_from_slice(extra);
    let o = c.run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    (url_of(&o), stderr(&o))
}

fn instance_id(c: &Checkout) -> String {
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.state_dir().join("state.json")).unwrap()).unwrap();
    rec["instance_id"].as_str().unwrap().to_string()
}

fn down(c: &Checkout) {
    let o = c.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_cold_setup_starts_from_the_cache_and_a_changed_migration_or_day_does_not() {
    let tmp = TempDir::new("cache");
    let mut c = Checkout::new(&tmp.path().join("a"));
    c.env = vec![("E2E_CACHE_DIR".into(), tmp.path().join("cache").display().to_string())];

    let (_, log) = setup(&c, &[]);
    assert!(log.contains("local PostgreSQL: created on"), "{log}");
    assert!(log.contains("server cache: stored for the next cold start"), "{log}");
    let first = instance_id(&c);
    down(&c);

    let (url, log) = setup(&c, &[]);
    assert!(log.contains("created from the cache"), "{log}");
    assert_ne!(instance_id(&c), first, "a server made from the cache has an instance id of its own");
    let tables = "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class \
                  WHERE relname IN ('audit_events', 'remediation_workflow_catalog')";
    assert_eq!(query_text(&url, tables).as_deref(), Some("audit_events,remediation_workflow_catalog"));
    down(&c);

    // A changed migration is another key: initdb and the migrations again, never the stale copy.
    let file = c.root.join("migrations/015_create_workflow_catalog_table.sql");
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replacen("-- +goose Down", "CREATE TABLE cache_probe (id int);\n\n-- +goose Down", 1);
    assert_ne!(text, changed);
    std::fs::write(&file, changed).unwrap();
    let (url, log) = setup(&c, &[]);
    assert!(log.contains("local PostgreSQL: created on") && !log.contains("from the cache"), "{log}");
    assert_eq!(
        query_text(&url, "SELECT count(*)::text FROM pg_class WHERE relname = 'cache_probe'").as_deref(),
        Some("1")
    );
    down(&c);

    // Another day is another key too (partitions are rolled for a day).
    let (_, log) = setup(&c, &["--now", "2031-01-15"]);
    assert!(!log.contains("from the cache"), "{log}");
    down(&c);
}
