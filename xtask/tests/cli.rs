//! The command line as a user runs it: exit codes, stdout/stderr, bad input, a killed run.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_migrations::db;
use e2e_migrations::lifecycle::local;
use e2e_test_support::process::{run, stderr, stdout};
use e2e_test_support::{rt, FreshDb, TempDir};

#[path = "cli/faults.rs"]
mod faults;
#[path = "cli/progress.rs"]
mod progress;

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    xtask_env(&mut c);
    c
}

/// The environment `xtask` runs in here, also for a shell that runs it.
fn xtask_env(c: &mut Command) -> &mut Command {
    c.env_remove("DATABASE_URL").env_remove("E2E_MIGRATIONS_DIR").env_remove("E2E_BACKEND").env("E2E_LOG", "info")
}

/// A temporary folder holding `files`.
fn dir(files: &[(&str, &str)]) -> TempDir {
    TempDir::with_files("xtask-cli", files)
}

fn query_i64(rt: &tokio::runtime::Runtime, url: &str, sql: &str) -> i64 {
    rt.block_on(async {
        let c = db::connect(url).await.unwrap();
        c.query_one(sql, &[]).await.unwrap().get(0)
    })
}

/// `(version, state)` of each migration in `migrate status --output json`'s output.
fn migration_states(o: &Output) -> Vec<(i64, String)> {
    let v: serde_json::Value = serde_json::from_str(&stdout(o)).unwrap();
    v["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["version"].as_i64().unwrap(), m["state"].as_str().unwrap().to_string()))
        .collect()
}

const UNREACHABLE: &str = "postgres://nobody:x@127.0.0.1:1/none";

#[test]
fn duplicate_versions_are_rejected_before_connecting() {
    let d = dir(&[("013_a.sql", "-- +goose Up\nSELECT 1;\n"), ("13_b.sql", "-- +goose Up\nSELECT 2;\n")]);
    let o = run(xtask().args(["migrate", "up", "--database-url", UNREACHABLE, "--migrations-dir"]).arg(d.path()));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("duplicate migration version 13") && e.contains("013_a.sql") && e.contains("13_b.sql"), "{e}");
    assert!(!e.contains("connecting"), "validation must come before any connection: {e}");
}

#[test]
fn unknown_set_is_named_with_the_known_ones() {
    let o = run(xtask().args(["migrate", "up", "--database-url", UNREACHABLE, "--sets", "audit,nope"]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown set \"nope\"; known sets: all, audit, notification, workflow"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn goose_syntax_errors_name_file_and_line() {
    let d = dir(&[("001_a.sql", "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n")]);
    let o = run(xtask().args(["migrate", "plan", "--database-url", UNREACHABLE, "--migrations-dir"]).arg(d.path()));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("001_a.sql:2:") && e.contains("StatementEnd"), "{e}");
}

#[test]
fn unreachable_database_is_an_error_not_success() {
    let o = run(xtask().args(["migrate", "status", "--database-url", UNREACHABLE]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("connecting to 127.0.0.1:1 (postgres://nobody:***@127.0.0.1:1/none)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn status_and_plan_report_as_json() {
    let rt = rt();
    let db = FreshDb::new();
    let url = db.url().to_string();
    let o = run(xtask().args(["migrate", "plan", "--output", "json", "--sets", "workflow", "--database-url", &url]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["migrations"][0]["file"], "015_create_workflow_catalog_table.sql");
    assert!(v["migrations"][0]["statements"].as_array().unwrap().len() > 3);
    assert_eq!(
        query_i64(&rt, &url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
        0,
        "plan changes nothing"
    );

    let o = run(xtask().args(["migrate", "up", "--sets", "workflow", "--database-url", &url]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(xtask().args(["migrate", "status", "--output", "json", "--database-url", &url]));
    let states = migration_states(&o);
    assert_eq!(states, [(13, "pending".into()), (15, "applied".into()), (21, "pending".into())]);
}

#[test]
fn migrate_status_of_some_sets_lists_every_other_applied_migration_too() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    for set in ["workflow", "notification"] {
        let o = run(xtask().args(["migrate", "up", "--sets", set, "--database-url", &url]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = run(xtask().args(["migrate", "status", "--sets", "workflow", "--output", "json", "--database-url", &url]));
    assert!(o.status.success(), "{}", stderr(&o));
    let states = migration_states(&o);
    // 21 is applied (by notification), 13 is pending in a set not asked for.
    assert_eq!(states, [(15, "applied".into()), (21, "applied".into())]);
    let o = run(xtask().args(["migrate", "status", "--sets", "workflow", "--database-url", &url]));
    assert!(stdout(&o).contains("021_create_notification_audit_table.sql"), "{}", stdout(&o));
    // plan stays the sets' own: nothing of theirs is pending
    let o = run(xtask().args(["migrate", "plan", "--sets", "workflow", "--output", "json", "--database-url", &url]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["migrations"].as_array().unwrap().len(), 0, "{v}");
}

/// Waits until a session of `url`'s server runs a query containing `needle`.
fn wait_for_query(rt: &tokio::runtime::Runtime, url: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let n = query_i64(
            rt,
            url,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{needle}%' AND pid <> pg_backend_pid() AND state = 'active'"),
        );
        if n > 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no session ran {needle} within 30s");
}

#[test]
fn a_run_killed_mid_migration_is_completed_by_the_next() {
    let rt = rt();
    let db = FreshDb::new();
    let url = db.url().to_string();
    let d = dir(&[
        ("001_a.sql", "-- +goose Up\nCREATE TABLE a (x int);\n"),
        ("002_slow.sql", "-- +goose Up\nCREATE TABLE b (x int);\nSELECT pg_sleep(1.5) /* slow_tx */;\nINSERT INTO b VALUES (1);\n"),
        (
            "003_slow_nt.sql",
            "-- +goose Up\n-- +goose NO TRANSACTION\nCREATE TABLE c (x int);\nSELECT pg_sleep(1.5) /* slow_nt */;\nINSERT INTO c VALUES (1);\n",
        ),
    ]);
    let start = |dir: &Path| {
        xtask()
            .args(["migrate", "up", "--database-url", &url, "--migrations-dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Killed inside the transactional migration: nothing of 002 remains.
    let mut child = start(d.path());
    wait_for_query(&rt, &url, "slow_tx */");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Killed inside the NO TRANSACTION migration, after its first statement.
    let o = {
        let mut child = start(d.path());
        wait_for_query(&rt, &url, "slow_nt */");
        child.kill().unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(!o.status.success());
    assert_eq!(query_i64(&rt, &url, "SELECT count(*) FROM b"), 1, "002 completed by the second run");
    assert_eq!(query_i64(&rt, &url, "SELECT count(*) FROM pg_class WHERE relname = 'c'"), 1);
    assert_eq!(query_i64(&rt, &url, "SELECT count(*) FROM goose_db_version WHERE version_id = 3"), 0);

    // The next run resumes 003 after its first statement (CREATE TABLE c is not repeated).
    let o = run(xtask().args(["migrate", "up", "--database-url", &url, "--migrations-dir"]).arg(d.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming after statement 1"), "{}", stderr(&o));
    assert_eq!(query_i64(&rt, &url, "SELECT count(*) FROM c"), 1);
    assert_eq!(
        query_i64(&rt, &url, "SELECT count(*) FROM goose_db_version WHERE version_id > 0 AND is_applied"),
        3,
        "each version recorded once"
    );
}

#[test]
fn local_setup_is_reused_and_teardown_is_idempotent() {
    let state = dir(&[]);
    let setup = |extra: &[&str]| {
        run(xtask()
            .env("E2E_STATE_DIR", state.path())
            .args(["e2e-setup", "--backend", "local", "--sets", "audit,workflow"])
            .args(extra))
    };
    let o = setup(&["--print-env"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout holds only KEY=VALUE data: {out:?}");
    let url = lines[0].strip_prefix("DATABASE_URL=").expect("DATABASE_URL=...");
    assert!(url.starts_with("postgres://e2e:") && url.contains("@127.0.0.1:"), "{url}");
    assert!(!stderr(&o).contains(url.split('@').next().unwrap().rsplit(':').next().unwrap()), "no password in logs");
    let rt = rt();
    assert_eq!(
        query_i64(
            &rt,
            url,
            "SELECT count(*) FROM pg_class WHERE relname IN ('audit_events', 'remediation_workflow_catalog')"
        ),
        2
    );
    let env_file = state.path().join("connection.env");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&env_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let o = setup(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("reused on 127.0.0.1"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());

    let down = || run(xtask().env("E2E_STATE_DIR", state.path()).args(["e2e-teardown"]));
    let o = down();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped and removed"), "{}", stderr(&o));
    assert!(!env_file.exists());
    let o = down();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing is set up in this checkout"), "{}", stderr(&o));
}

#[test]
fn print_env_shell_is_eval_safe_and_exports() {
    // A URL no shell may read unquoted: `&` (a background job), spaces, a command substitution,
    // both quotes. `eval` of plain KEY=VALUE lines neither exported it nor kept it whole.
    let db = FreshDb::new();
    let url = format!("{}?application_name=it's a \"b\" $(touch pwned) `touch pwned2`&connect_timeout=10", db.url());
    let state = dir(&[]);
    // The URL reaches setup as a flag; the shells' environment holds no DATABASE_URL.
    let script = format!(
        "env=$('{}' e2e-setup --backend url --sets notification --database-url \"$URL\" --print-env=shell) || exit 1
         eval \"$env\" && sh -c 'printf %s \"$DATABASE_URL\"'",
        env!("CARGO_BIN_EXE_xtask")
    );
    // Run in a folder of the workspace (where a substitution that ran would leave its file).
    let cwd = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("print-env-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let o = run(xtask_env(Command::new("sh").current_dir(&cwd).args(["-c", &script]))
        .env("E2E_STATE_DIR", state.path())
        .env("URL", &url));
    let ran = cwd.join("pwned").exists() || cwd.join("pwned2").exists();
    std::fs::remove_dir_all(&cwd).unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), url, "the child shell sees the URL, exported and whole");
    assert!(!ran, "a command substitution in the value ran");
    // The plain form is what nextest's $NEXTEST_ENV reads: KEY=VALUE, as it is.
    let o = run(xtask().env("E2E_STATE_DIR", state.path()).args([
        "e2e-setup",
        "--backend",
        "url",
        "--sets",
        "notification",
        "--print-env",
        "--database-url",
        &url,
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("DATABASE_URL={url}\n"));
}

#[test]
fn a_dependency_s_log_does_not_repeat_the_error() {
    // kube-rs logs its own ERROR line for a failed request, which the error then says again.
    let state = dir(&[(
        "kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
         contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\ncurrent-context: ctx\n\
         users:\n- name: u\n  user:\n    token: t\n",
    )]);
    let o = run(xtask()
        .env_remove("E2E_LOG")
        .env("KUBECONFIG", state.path().join("kubeconfig"))
        .env("E2E_STATE_DIR", state.path().join("state"))
        .args(["e2e-setup", "--backend", "kube", "--context", "ctx", "--namespace", "e2e-logs"]));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("error: reaching the API server of context ctx"), "{e}");
    assert!(!e.contains("ERROR"), "a dependency's log line: {e}");
    // E2E_LOG still chooses: asked for, the dependency's logs are there.
    let o = run(xtask()
        .env("E2E_LOG", "info")
        .env("KUBECONFIG", state.path().join("kubeconfig"))
        .env("E2E_STATE_DIR", state.path().join("state"))
        .args(["e2e-setup", "--backend", "kube", "--context", "ctx", "--namespace", "e2e-logs"]));
    assert!(stderr(&o).contains("ERROR"), "{}", stderr(&o));
}

#[test]
fn the_fault_hook_kills_only_its_own_process_outside_a_group_of_its_own() {
    // A shell leads the group and runs setup in it, as an interactive shell without job control
    // or a harness does: the hook must not take the shell down with setup.
    let db = FreshDb::new();
    let state = dir(&[]);
    let script = format!(
        "'{}' e2e-setup --backend url --sets notification --database-url \"$URL\"; echo \"survived: $?\"",
        env!("CARGO_BIN_EXE_xtask")
    );
    let cwd = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = run(xtask_env(Command::new("sh").current_dir(cwd).args(["-c", &script]))
        .env("E2E_FAULT_AT", "migrations")
        .env("E2E_STATE_DIR", state.path())
        .env("URL", db.url())
        .process_group(0));
    assert!(stderr(&o).contains("E2E_FAULT_AT=migrations"), "the hook fired: {}", stderr(&o));
    assert_eq!(stdout(&o), "survived: 137\n", "the shell survived; setup died of SIGKILL: {o:?}");
}

#[test]
fn missing_server_binaries_say_what_to_install() {
    let state = dir(&[]);
    let o = run(xtask()
        .env("E2E_STATE_DIR", state.path())
        .env("E2E_PG_BINDIR", state.path().join("no-such-bindir"))
        .args(["e2e-setup", "--backend", "local"]));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("E2E_PG_BINDIR=") && e.contains("has no initdb"), "{e}");
}

#[test]
fn a_private_parent_folder_moves_the_data_where_the_server_account_can_reach_it() {
    if !nix_is_root() {
        eprintln!("skipped: only root runs the server as another account");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let private = dir(&[]);
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = private.path().join("checkout/target/e2e");
    let o = run(xtask().env("E2E_STATE_DIR", &state).args([
        "e2e-setup",
        "--backend",
        "local",
        "--sets",
        "notification",
        "--print-env",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("not reachable by the server's account"), "{}", stderr(&o));
    let url = stdout(&o).trim().strip_prefix("DATABASE_URL=").unwrap().to_string();
    assert_eq!(query_i64(&rt(), &url, "SELECT count(*) FROM pg_class WHERE relname = 'notification_audit'"), 1);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["local"]["place"], "temp", "{saved}");
    let data_root = local::temp_root(&std::fs::canonicalize("/tmp").unwrap(), &state.canonicalize().unwrap());
    assert!(data_root.join("data/PG_VERSION").is_file(), "{data_root:?}");
    assert!(!data_root.starts_with(private.path()), "{data_root:?}");
    let o = run(xtask().env("E2E_STATE_DIR", &state).args(["e2e-teardown"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!data_root.exists(), "teardown removes the relocated data too");
}

fn nix_is_root() -> bool {
    // A file this process makes is owned by its effective uid.
    let probe = dir(&[("owner", "")]);
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(probe.path().join("owner")).unwrap()) == 0
}

/// A listener on 127.0.0.1 that accepts connections and never answers (kept open).
fn silent_listener() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

#[test]
fn a_port_that_is_not_postgresql_fails_within_the_connect_timeout() {
    let port = silent_listener();
    let url = format!("postgres://u:pw@127.0.0.1:{port}/db");
    let start = Instant::now();
    let o = run(xtask().args(["migrate", "status", "--connect-timeout", "1", "--database-url", &url]));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&format!("connecting to 127.0.0.1:{port}")) && e.contains("within 1 s"), "{e}");
    // What to do is said once, by the hint, with the flag.
    assert_eq!(e.matches("raise").count(), 1, "{e}");
    assert!(e.contains("\nhint: raise the limit with --connect-timeout SECONDS"), "{e}");
    // The environment variable sets it too (and partitions share the flag).
    let o = run(xtask().env("E2E_CONNECT_TIMEOUT", "1").args(["partitions", "list", "--database-url", &url]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("within 1 s"), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(60), "no hang");
    let o = run(xtask().env("E2E_CONNECT_TIMEOUT", "soon").args(["migrate", "status", "--database-url", &url]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("E2E_CONNECT_TIMEOUT") || stderr(&o).contains("connect-timeout"), "{}", stderr(&o));
}

#[test]
fn no_password_in_any_output_for_any_form_of_connection_string() {
    let port = silent_listener();
    let forms = [
        format!("postgres://u:Pw0rdA1@127.0.0.1:{port}/db"),
        format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable&password=Pw0rdA1"),
        format!("host=127.0.0.1 port={port} user=u password='Pw0rdA1 with space' dbname=db"),
        format!("postgres://u:Pw0rd@A1@127.0.0.1:{port}/db"),
        format!("host=127.0.0.1 port={port} password=Pw0rdA1 stray dbname=db"),
    ];
    // a state folder of its own: this checkout's setup is not to be replaced
    let state = TempDir::new("xtask-cli-state");
    for url in &forms {
        for args in [
            vec!["migrate", "status", "--connect-timeout", "1", "--database-url", url],
            vec!["e2e-setup", "--backend", "url", "--connect-timeout", "1", "--database-url", url],
        ] {
            let o = run(xtask().env("E2E_STATE_DIR", state.path()).args(&args));
            assert!(!o.status.success(), "{args:?}");
            let all = format!("{}{}", stdout(&o), stderr(&o));
            assert!(!all.contains("Pw0rd"), "{args:?} shows the password:\n{all}");
            assert!(all.contains("127.0.0.1"), "{args:?} names the address:\n{all}");
        }
    }
}

/// The `error: ...` text of a failed run (up to the end of stderr; log lines come before it).
fn error_text(o: &Output) -> String {
    let e = stderr(o);
    match e.find("error: ") {
        Some(at) => e[at..].trim_end().to_string(),
        None => panic!("no error in:\n{e}"),
    }
}

#[test]
fn a_database_error_says_what_was_done_then_its_sqlstate_detail_and_hint_once() {
    let rt = rt();
    let db = FreshDb::new();
    let url = db.url().to_string();
    // goose's table as a view that refuses to be read, with a detail and a hint.
    rt.block_on(async {
        let c = db::connect(&url).await.unwrap();
        c.batch_execute(
            "CREATE FUNCTION refuse() RETURNS TABLE (id int, version_id bigint, is_applied boolean) LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'not readable' USING DETAIL = 'the detail', HINT = 'the hint'; END $$;
             CREATE VIEW goose_db_version AS SELECT * FROM refuse();",
        )
        .await
        .unwrap();
    });
    let o = run(xtask().args(["migrate", "status", "--database-url", &url]));
    assert!(!o.status.success());
    assert_eq!(
        error_text(&o),
        "error: reading goose_db_version: not readable (SQLSTATE P0001); detail: the detail; hint: the hint"
    );
}

#[test]
fn a_failed_migration_says_its_file_line_sqlstate_detail_and_hint_once() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    let d = dir(&[
        ("001_a.sql", "-- +goose Up\nCREATE TABLE a (x int);\n"),
        (
            "002_b.sql",
            "-- +goose Up\nCREATE TABLE b (x int);\nDO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', HINT = 'the hint'; END $$;\n",
        ),
    ]);
    let o = run(xtask().args(["migrate", "up", "--database-url", &url, "--migrations-dir"]).arg(d.path()));
    assert!(!o.status.success());
    assert_eq!(
        error_text(&o),
        format!(
            "error: migration failed: {}:3: boom (SQLSTATE P0001)\n  detail: the detail\n  hint: the hint\n  applied \
             before the failure: 001_a.sql",
            d.path().join("002_b.sql").display()
        )
    );
}

#[test]
fn drift_is_refused_and_the_flag_that_accepts_it_is_named_by_the_cli() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    let d = dir(&[("001_a.sql", "-- +goose Up\nCREATE TABLE a (x int);\n")]);
    let up = |d: &TempDir, extra: &[&str]| {
        run(xtask().args(["migrate", "up", "--database-url", &url]).args(extra).arg("--migrations-dir").arg(d.path()))
    };
    assert!(up(&d, &[]).status.success());
    std::fs::write(d.path().join("001_a.sql"), "-- +goose Up\nCREATE TABLE a (x bigint);\n").unwrap();
    let o = up(&d, &[]);
    assert!(!o.status.success());
    let e = error_text(&o);
    assert!(e.starts_with("error: applied migration changed since it was applied (checksum differs): "), "{e}");
    assert!(e.ends_with("\nhint: pass --accept-drift to keep the applied version and record the new checksum"), "{e}");
    assert!(up(&d, &["--accept-drift"]).status.success());
}

/// A migration whose Up section holds no statement (a `migrate new` template not filled in yet)
/// is recorded as goose records it, and said so: SQL added to it later would never run.
#[test]
fn an_empty_up_section_is_applied_with_a_warning() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    let d = dir(&[("001_empty.sql", "-- +goose Up\n-- +goose Down\n")]);
    let o = run(xtask().args(["migrate", "up", "--database-url", &url, "--migrations-dir"]).arg(d.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("applied 001_empty.sql (0 statements"), "{e}");
    assert!(e.contains("warning: 001_empty.sql has no statement in its Up section"), "{e}");
    assert!(e.contains("cargo xtask migrate down"), "{e}");
}

/// A `--migrations-dir` that does not exist is named with the flag; one that holds no migration
/// is said to hold none.
#[test]
fn a_missing_or_empty_migrations_dir_is_named() {
    let o = run(xtask().args(["migrate", "plan", "--database-url", UNREACHABLE, "--migrations-dir", "no/such/dir"]));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--migrations-dir (or E2E_MIGRATIONS_DIR) ") && e.contains("no/such/dir: no such folder"),
        "{e}"
    );
    assert!(!e.contains("connecting"), "{e}");
    let empty = dir(&[]);
    let o = run(xtask().args(["migrate", "plan", "--database-url", UNREACHABLE, "--migrations-dir"]).arg(empty.path()));
    assert!(stderr(&o).contains("holds no migration (NNN_name.sql): nothing to apply"), "{}", stderr(&o));
}

/// A Down section that fails says that it was the revert, where, and that the version stays.
#[test]
fn a_failing_down_section_is_named_as_the_revert() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    let d =
        dir(&[("001_a.sql", "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE no_such_table;\n")]);
    let o = run(xtask().args(["migrate", "up", "--database-url", &url, "--migrations-dir"]).arg(d.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(xtask().args(["migrate", "down", "--database-url", &url, "--migrations-dir"]).arg(d.path()));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("reverting failed in a Down section: that version stays applied"), "{e}");
    assert!(e.contains("001_a.sql:4") && e.contains("no_such_table"), "{e}");
    let rt = rt();
    assert_eq!(query_i64(&rt, &url, "SELECT count(*) FROM goose_db_version WHERE version_id = 1"), 1, "still applied");
}
