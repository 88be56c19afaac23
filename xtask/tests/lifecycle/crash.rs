//! A setup killed at any moment is completed or cleanly redone by the next setup, with no
//! manual step; a corrupt state file does not stop setup or teardown.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{
    data_dir_of, files_named, kill_group, query_text, stderr, url_of, wait_within, Checkout, TempDir,
};

/// The next setup must finish well before the old failure mode's 60 s wait.
const NEXT_SETUP_LIMIT: Duration = Duration::from_secs(40);

fn next_setup_succeeds(c: &Checkout, sets: &str) -> String {
    let o = c.run_within(&["e2e-setup", "--backend", "local", "--sets", sets, "--print-env"], NEXT_SETUP_LIMIT);
    assert!(o.status.success(), "the setup after the killed one failed: {}", stderr(&o));
    let url = url_of(&o);
    assert_eq!(query_text(&url, "SELECT current_database()::text").as_deref(), Some("e2e"));
    url
}

/// The tables and partitions the sets bring are there.
fn assert_applied(url: &str) {
    let n =
        query_text(url, "SELECT count(*)::text FROM pg_class WHERE relname IN ('audit_events', 'notification_audit')");
    assert_eq!(n.as_deref(), Some("2"), "migrations applied");
    let parts = query_text(url, "SELECT count(*)::text FROM pg_inherits WHERE inhparent = 'audit_events'::regclass");
    assert!(parts.unwrap().parse::<i64>().unwrap() >= 5, "partitions rolled");
}

#[test]
fn setup_killed_during_initdb_is_redone_by_the_next() {
    let tmp = TempDir::new("kill-initdb");
    let c = Checkout::new(&tmp.path().join("a"));
    // Killed from outside, the moment initdb has started writing the data folder.
    let child = c
        .xtask()
        .args(["e2e-setup", "--backend", "local", "--sets", "audit,notification"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_named(&c.state_dir(), &|n| n == "PG_VERSION").is_empty() {
        assert!(Instant::now() < deadline, "initdb never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    kill_group(child.id());
    let o = wait_within(child, Duration::from_secs(10), "the killed setup");
    assert!(!o.status.success());
    let url = next_setup_succeeds(&c, "audit,notification");
    assert_applied(&url);
    assert!(
        files_named(&c.root.join("target"), &|n| n == "pwfile").is_empty(),
        "a password file was left in the data folder"
    );
    let o = c.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Kills setup with the documented test hook at `step`, then checks that the next setup
/// completes, and that teardown leaves no server running.
fn killed_at(step: &str) {
    let tmp = TempDir::new(&format!("kill-{step}"));
    let c = Checkout::new(&tmp.path().join("a"));
    let child = c
        .xtask()
        .env("E2E_FAULT_AT", step)
        .args(["e2e-setup", "--backend", "local", "--sets", "audit,notification"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_within(child, Duration::from_secs(60), "the setup to be killed");
    assert!(!o.status.success(), "setup was not killed at {step}: {}", stderr(&o));
    assert!(stderr(&o).contains(&format!("E2E_FAULT_AT={step}")), "{}", stderr(&o));
    let url = next_setup_succeeds(&c, "audit,notification");
    assert_applied(&url);
    let data = data_dir_of(&url).unwrap();
    let o = c.teardown();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(data_dir_of(&url).is_none(), "teardown left the server running");
    assert!(!data.exists(), "teardown left {}", data.display());
}

#[test]
fn setup_killed_at_initdb_by_the_hook_is_redone_by_the_next() {
    killed_at("initdb");
}

#[test]
fn setup_killed_between_server_start_and_database_creation_is_completed_by_the_next() {
    killed_at("start");
}

#[test]
fn setup_killed_after_database_creation_is_completed_by_the_next() {
    killed_at("database");
}

#[test]
fn setup_killed_after_migrations_is_completed_by_the_next() {
    killed_at("migrations");
}

#[test]
fn setup_killed_after_partitions_is_completed_by_the_next() {
    killed_at("partitions");
}

/// Makes every state file under the state folder (not the server's own files) unreadable JSON.
fn corrupt_state(c: &Checkout) -> usize {
    let files: Vec<_> = files_named(&c.state_dir(), &|n| n.ends_with(".json"))
        .into_iter()
        .filter(|f| !f.strip_prefix(c.state_dir()).unwrap().starts_with("local/server"))
        .collect();
    for f in &files {
        std::fs::write(f, "{\"format\": 2, \"made_in\": \"/tr").unwrap();
    }
    files.len()
}

#[test]
fn a_corrupt_state_file_is_reported_and_teardown_still_removes_the_server() {
    let tmp = TempDir::new("corrupt");
    let c = Checkout::new(&tmp.path().join("a"));
    let url = c.setup("audit");
    let data = data_dir_of(&url).unwrap();
    assert!(corrupt_state(&c) > 0);
    let o = c.teardown();
    assert!(o.status.success(), "teardown failed on a corrupt state file: {}", stderr(&o));
    assert!(stderr(&o).contains("unreadable"), "the corrupt file is reported: {}", stderr(&o));
    assert!(data_dir_of(&url).is_none(), "the server keeps running after teardown");
    assert!(!data.exists());
}

#[test]
fn a_corrupt_state_file_does_not_stop_the_next_setup() {
    let tmp = TempDir::new("corrupt-setup");
    let c = Checkout::new(&tmp.path().join("a"));
    let old = c.setup("audit");
    assert!(corrupt_state(&c) > 0);
    let o = c.run_within(&["e2e-setup", "--backend", "local", "--sets", "audit", "--print-env"], NEXT_SETUP_LIMIT);
    assert!(o.status.success(), "setup failed on a corrupt state file: {}", stderr(&o));
    assert!(stderr(&o).contains("unreadable"), "the corrupt file is reported: {}", stderr(&o));
    let new = url_of(&o);
    assert_eq!(query_text(&new, "SELECT current_database()::text").as_deref(), Some("e2e"));
    if old != new {
        assert!(data_dir_of(&old).is_none(), "the server of the unreadable state was left running");
    }
}
