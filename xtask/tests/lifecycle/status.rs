//! Read-only commands never start a server; `status` shows the setup at a glance and changes
//! nothing.

use crate::support::{execute, files_named, query_text, stderr, stdout, Checkout, TempDir};

/// What a read-only command could change: the state folder's files (names and contents) and,
/// when the server is up, its databases, tables, partitions and applied versions.
fn snapshot(c: &Checkout, url: Option<&str>) -> String {
    let mut out = String::new();
    let mut files = files_named(&c.root.join("target"), &|_| true);
    files.retain(|f| !f.components().any(|p| p.as_os_str() == "data" || p.as_os_str() == "sock"));
    files.sort();
    for f in files {
        let text = std::fs::read(&f).map(|b| b.len()).unwrap_or(0);
        out.push_str(&format!("{} {text}\n", f.strip_prefix(&c.root).unwrap().display()));
    }
    if let Some(url) = url {
        for sql in [
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
            "SELECT string_agg(version_id::text || is_applied::text, ',' ORDER BY id) FROM goose_db_version",
            "SELECT pg_postmaster_start_time()::text",
        ] {
            out.push_str(&format!("{sql}: {:?}\n", query_text(url, sql)));
        }
    }
    out
}

fn stop_server(c: &Checkout) {
    let pid_file = c.state_dir().join("local/server/data/postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap().lines().next().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pid_file.exists() {
        assert!(std::time::Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn no_server_files(c: &Checkout) -> bool {
    files_named(&c.root.join("target"), &|n| n == "PG_VERSION" || n == "state.json").is_empty()
}

#[test]
fn read_only_commands_never_start_a_server() {
    let tmp = TempDir::new("readonly");
    let c = Checkout::new(&tmp.path().join("a"));
    for args in [&["migrate", "status"][..], &["migrate", "plan"], &["partitions", "list"]] {
        let o = c.run(args);
        assert!(!o.status.success(), "{args:?} with nothing set up: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("nothing is set up for this checkout"), "{args:?}: {e}");
        assert!(e.contains("hint: set up first: `cargo xtask e2e-setup"), "{args:?}: {e}");
        assert!(no_server_files(&c), "{args:?} started a server");
    }
    let o = c.run(&["status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(none)") && stderr(&o).contains("cargo xtask e2e-setup"), "{}", stdout(&o));
    assert!(no_server_files(&c), "status started a server");

    // Set up, then stopped (a reboot): read-only commands say so and leave it stopped.
    c.setup("audit");
    stop_server(&c);
    let before = snapshot(&c, None);
    for args in [&["migrate", "status"][..], &["migrate", "plan"], &["partitions", "list"]] {
        let o = c.run(args);
        assert!(!o.status.success(), "{args:?} on a stopped server: {}", stderr(&o));
        assert!(stderr(&o).contains("is not running"), "{args:?}: {}", stderr(&o));
    }
    let o = c.run(&["status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("backend:     local (ours, down)"), "{}", stdout(&o));
    assert!(!c.state_dir().join("local/server/data/postmaster.pid").exists(), "a read-only command started the server");
    assert_eq!(snapshot(&c, None), before, "a read-only command changed the state folder");
}

#[test]
fn status_shows_sets_migrations_gaps_partitions_and_test_databases_and_changes_nothing() {
    let tmp = TempDir::new("status");
    let c = Checkout::new(&tmp.path().join("a"));
    // notification without workflow: 013 and 021 applied, 015 pending below 021.
    let url = c.setup("audit,notification");
    // A row older than every partition waits in the default partition.
    execute(
        &url,
        "INSERT INTO audit_events (event_date, event_type, event_category, event_action, event_outcome, actor_type, \
         actor_id, resource_type, resource_id, correlation_id, event_data) \
         VALUES (DATE '1999-01-01', 't', 'c', 'a', 'success', 'user', 'a', 'r', 'i', 'x', '{}')",
    );
    let admin = url.rsplit_once('/').unwrap().0.to_string() + "/postgres";
    execute(&admin, "CREATE DATABASE e2e_tpl_0123456789ab_audit");
    execute(&admin, "CREATE DATABASE e2e_r_0123456789ab_ab12_7_1_1");

    let before = snapshot(&c, Some(&url));
    let o = c.run(&["status", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["backend"].as_str(), v["ours"].as_bool(), v["up"].as_bool()),
        (Some("local"), Some(true), Some(true))
    );
    let url_shown = v["url"].as_str().unwrap();
    assert!(
        url_shown.contains(":***@") && !url_shown.contains(url.split('@').next().unwrap().rsplit(':').next().unwrap())
    );
    let sets: Vec<(String, String)> = v["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        sets,
        [
            ("audit".into(), "complete".into()),
            ("notification".into(), "complete".into()),
            ("workflow".into(), "none".into())
        ]
    );
    assert_eq!(v["gaps"], serde_json::json!([15]));
    assert!(stderr(&o).contains("-allow-missing"), "the gap is warned about: {}", stderr(&o));
    let p = &v["partitions"][0];
    assert_eq!(p["table"], "public.audit_events");
    assert_eq!(p["default_rows"], 1);
    assert!(p["partitions"].as_i64().unwrap() >= 5 && p["from"].is_string() && p["to"].is_string(), "{p}");
    assert_eq!(v["test_databases"]["templates"][0]["name"], "e2e_tpl_0123456789ab_audit");
    assert_eq!(v["test_databases"]["templates"][0]["ready"], 1);
    let o = c.run(&["status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for needle in [
        "backend:     local (ours, up)",
        "workflow none (0/1)",
        "public.audit_events (monthly)",
        "1 rows in the default",
    ] {
        assert!(stdout(&o).contains(needle), "{needle:?} missing in:\n{}", stdout(&o));
    }
    assert_eq!(snapshot(&c, Some(&url)), before, "status changed something");
}

/// A migrations folder with a broken file still shows the setup and its server, then fails
/// naming the file: the user sees where the database is while fixing the file.
#[test]
fn status_with_a_broken_migration_file_still_shows_the_setup_then_names_the_file() {
    let tmp = TempDir::new("status-broken");
    let c = Checkout::new(&tmp.path().join("a"));
    c.setup("audit");
    std::fs::write(c.root.join("migrations/030_bad.sql"), "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n")
        .unwrap();
    let o = c.run(&["status"]);
    assert!(!o.status.success(), "an invalid folder is an error");
    assert!(stdout(&o).contains("backend:     local (ours, up)"), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("invalid migrations") && e.contains("030_bad.sql:2"), "{e}");
}
