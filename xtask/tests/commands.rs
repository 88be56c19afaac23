//! `migrate new`, `doctor` and `completions` as a user runs them: stdout holds only data, bad
//! input is refused with nothing written, and the migrations folder stays valid.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use e2e_test_support::process::{run, stderr, stdout};
use e2e_test_support::TempDir;

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env_remove("DATABASE_URL").env_remove("E2E_MIGRATIONS_DIR").stdin(Stdio::null());
    c
}

/// A copy of the project's migrations folder.
fn project_copy() -> TempDir {
    let d = TempDir::new("xtask-migrate-new");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    d
}

fn listing(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn migrate_new(dir: &Path, args: &[&str]) -> Output {
    run(xtask().args(["migrate", "new"]).args(args).arg("--migrations-dir").arg(dir))
}

#[test]
fn migrate_new_writes_the_next_version_and_adds_it_to_the_set() {
    let d = project_copy();
    let before = std::fs::read_to_string(d.join("sets.toml")).unwrap();
    let o = migrate_new(d.path(), &["add_widgets", "--set", "audit"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = std::fs::canonicalize(d.path()).unwrap();
    let path = dir.join("022_add_widgets.sql");
    assert_eq!(stdout(&o), format!("{}\n", path.display()), "stdout holds only the new file's path");
    assert!(stderr(&o).contains("added 022_add_widgets.sql to set audit"), "{}", stderr(&o));
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.contains("\n-- +goose Up\n") && file.contains("\n-- +goose Down\n"), "{file}");

    // Only the set's files line changed; comments and layout are kept.
    let after = std::fs::read_to_string(d.join("sets.toml")).unwrap();
    let expected = before.replace(
        "files = [\"013_create_audit_events_table.sql\"]",
        "files = [\"013_create_audit_events_table.sql\", \"022_add_widgets.sql\"]",
    );
    assert_ne!(before, expected, "the test's replacement must match the manifest");
    assert_eq!(after, expected);

    // The folder is still valid, with the new file in the set.
    let project = e2e_migrations::Project::load(d.path()).unwrap();
    let audit = project.select(&["audit".to_string()]).unwrap();
    let names: Vec<&str> = audit.migrations.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["013_create_audit_events_table.sql", "022_add_widgets.sql"]);
    assert!(audit.warnings.is_empty(), "{:?}", audit.warnings);

    // The next one follows it.
    let o = migrate_new(d.path(), &["more_widgets", "--set", "workflow"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim_end().ends_with("/023_more_widgets.sql"), "{}", stdout(&o));
}

#[test]
fn migrate_new_refuses_bad_input_and_writes_nothing() {
    let d = project_copy();
    let before = listing(d.path());
    let cases: &[(&[&str], &str)] = &[
        (&["add_widgets", "--set", "audti"], r#"unknown set "audti"; known sets: audit, notification, workflow"#),
        (&["add_widgets"], "--set SET is required"),
        (&["add widgets", "--set", "audit"], r#"migration name "add widgets" is not an identifier"#),
        (&["add_widgets", "--set", "audit", "--version", "15"], "--version 15: version 15 already exists: "),
    ];
    for (args, want) in cases {
        let o = migrate_new(d.path(), args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?}: {}", stdout(&o));
        assert_eq!(listing(d.path()), before, "{args:?} changed the folder");
    }
    let o = migrate_new(d.path(), &["from_production", "--set", "notification", "--version", "30"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim_end().ends_with("/030_from_production.sql"), "{}", stdout(&o));
}

#[test]
fn doctor_reports_json_changes_nothing_and_fails_without_server_binaries() {
    let state = TempDir::new("xtask-doctor");
    let o = run(xtask().env("E2E_STATE_DIR", state.path()).args(["doctor", "--output", "json"]));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is the JSON report");
    let local = report["backends"].as_array().unwrap().iter().find(|b| b["backend"] == "local").unwrap().clone();
    assert_eq!(o.status.success(), local["ready"] == true, "exit code follows the local backend: {report}");
    assert_eq!(report["local_ready"], local["ready"]);
    let names: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in ["postgresql", "kind", "container engine", "kubectl", "kube context", "disk", "previous setup"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0, "doctor writes nothing");

    let o = run(xtask()
        .env("E2E_STATE_DIR", state.path())
        .env("E2E_PG_BINDIR", state.join("no-such-bindir"))
        .arg("doctor"));
    assert!(!o.status.success());
    let out = stdout(&o);
    assert!(out.contains("missing  postgresql"), "{out}");
    assert!(out.contains("fix: "), "{out}");
    assert!(stderr(&o).contains("the local default cannot run on this machine"), "{}", stderr(&o));
}

#[test]
fn completions_print_a_script_per_shell_on_stdout() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(xtask().args(["completions", shell]));
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        for sub in ["e2e-setup", "e2e-teardown", "migrate", "partitions", "doctor", "completions"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
    }
    let o = run(xtask().args(["completions", "powershell"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("possible values: bash, zsh, fish"), "{}", stderr(&o));
}
