//! The fault and bad-input suite, as a user meets it: a killed server, concurrent setups, and
//! every kind of bad migration file, against a real server. Each test names what it pins.

use super::*;

/// A private local server in its own state folder (so killing it disturbs no other test),
/// torn down on drop.
struct Private {
    state: TempDir,
}

impl Private {
    fn new() -> Private {
        Private { state: dir(&[]) }
    }

    fn cmd(&self) -> Command {
        let mut c = xtask();
        c.env("E2E_STATE_DIR", self.state.path());
        c
    }

    fn setup(&self, dir: &Path) -> Output {
        run(self.cmd().args(["e2e-setup", "--backend", "local", "--print-env", "--migrations-dir"]).arg(dir))
    }

    fn url(&self) -> String {
        let env = std::fs::read_to_string(self.state.path().join("connection.env")).unwrap();
        env.lines().find_map(|l| l.strip_prefix("DATABASE_URL=")).unwrap().to_string()
    }

    fn data_dir(&self) -> PathBuf {
        let here = std::fs::canonicalize(self.state.path()).unwrap();
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(here.join("state.json")).unwrap()).unwrap();
        let place = serde_json::from_value(saved["local"]["place"].clone()).unwrap();
        local::Layout::new(&here, place).data
    }

    /// The postmaster's pid, from its `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<i32> {
        let pidfile = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pidfile.lines().next()?.trim().parse().ok()
    }

    /// SIGKILLs the postmaster, and returns at once.
    fn kill_server_now(&self) -> i32 {
        let pid = self.postmaster_pid().expect("a running server");
        signal(pid, nix::sys::signal::Signal::SIGKILL);
        pid
    }

    /// SIGKILLs the postmaster and waits until it has exited (gone, or a zombie that its parent
    /// has not reaped yet).
    fn kill_server(&self) {
        let pid = self.kill_server_now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while process_state(pid).is_some_and(|s| s != 'Z') && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// The state letter `ps` gives `pid` (`Z` for a zombie), `None` once it is gone.
fn process_state(pid: i32) -> Option<char> {
    let out = Command::new("ps").args(["-o", "stat=", "-p", &pid.to_string()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().chars().next()
}

/// Makes this test process the reaper of the processes orphaned below it, one that never reaps
/// them, as PID 1 of many containers is: a postmaster killed after its setup exited then stays a
/// zombie (so `kill(pid, 0)` still finds it) for as long as this test runs. Only where each test
/// is a process of its own (nextest); elsewhere the zombie lasts as long as the system's reaper
/// takes.
fn keep_orphans_as_zombies() {
    #[cfg(target_os = "linux")]
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test") {
        nix::sys::prctl::set_child_subreaper(true).unwrap();
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = run(self.cmd().args(["e2e-teardown", "--backend", "local"]));
    }
}

/// The project's migrations plus `extra` files, in a folder of their own.
fn project_with(extra: &[(&str, &str)]) -> TempDir {
    let d = dir(extra);
    for entry in std::fs::read_dir(e2e_test_support::repo_migrations_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    d
}

fn applied_once(rt: &tokio::runtime::Runtime, url: &str) -> (i64, i64) {
    let rows = query_i64(rt, url, "SELECT count(*) FROM goose_db_version WHERE version_id > 0");
    let versions = query_i64(rt, url, "SELECT count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0");
    (rows, versions)
}

#[test]
fn tracking_survives_a_server_killed_between_runs() {
    let server = Private::new();
    let dir = project_with(&[]);
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    // Killed a moment after the run: a restart keeps every commit, and the sequence state.
    std::thread::sleep(Duration::from_secs(1));
    server.kill_server();
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("restarted"), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 applied, 3 already applied"), "{}", stderr(&o));
    // One new file: its tracking row must not collide with the rows from before the crash.
    std::fs::write(dir.path().join("030_new.sql"), "-- +goose Up\nCREATE TABLE after_crash (x int);\n").unwrap();
    let o = run(server.cmd().args(["migrate", "up", "--migrations-dir"]).arg(dir.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    // Killed right after the run: what the run reported committed is still there.
    server.kill_server();
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 applied, 4 already applied"), "{}", stderr(&o));
    let rt = rt();
    assert_eq!(applied_once(&rt, &server.url()), (4, 4));
    assert_eq!(query_i64(&rt, &server.url(), "SELECT count(*) FROM pg_class WHERE relname = 'after_crash'"), 1);
}

#[test]
fn a_setup_right_after_the_postmaster_was_killed_restarts_it() {
    // The issue's reproduction, with no pause: the killed postmaster is still found by
    // `kill(pid, 0)` (a zombie) when the next setup looks at it. Its lock files used to be
    // deleted and a new server started beside it on the same port, which PostgreSQL refused:
    // `lock file ".../.s.PGSQL.<port>.lock" already exists`.
    keep_orphans_as_zombies();
    let server = Private::new();
    let dir = project_with(&[]);
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let killed = server.kill_server_now();
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("local PostgreSQL: restarted"), "{e}");
    assert!(e.contains(&format!("pid {killed}")), "says what became of the killed postmaster: {e}");
    assert_ne!(server.postmaster_pid(), Some(killed));
    std::fs::write(dir.path().join("030_new.sql"), "-- +goose Up\nCREATE TABLE after_kill (x int);\n").unwrap();
    let o = run(server.cmd().args(["migrate", "up", "--migrations-dir"]).arg(dir.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let rt = rt();
    assert_eq!(applied_once(&rt, &server.url()), (4, 4));
    assert_eq!(query_i64(&rt, &server.url(), "SELECT count(*) FROM pg_class WHERE relname = 'after_kill'"), 1);
}

#[test]
fn a_postmaster_that_lives_but_answers_nothing_is_left_alone() {
    let server = Private::new();
    let dir = project_with(&[]);
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let pid = server.postmaster_pid().unwrap();
    // Stopped, it holds its socket and memory and answers nothing, as a hung server does.
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let o = run(server
        .cmd()
        .args(["e2e-setup", "--backend", "local", "--connect-timeout", "1", "--migrations-dir"])
        .arg(dir.path()));
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    assert!(!o.status.success(), "a second server was started beside a live one: {}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("does not answer") && e.contains(&format!("kill {pid}")), "names the pid and what to do: {e}");
    assert!(e.contains("left alone"), "{e}");
    assert_eq!(server.postmaster_pid(), Some(pid), "its postmaster.pid is kept: {e}");
    // Going again, it answers and is reused.
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("local PostgreSQL: reused"), "{}", stderr(&o));
}

#[test]
fn a_failed_start_shows_the_log_of_that_start_only() {
    let server = Private::new();
    let dir = project_with(&[]);
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    server.kill_server();
    let conf = server.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nnot_a_setting_of_postgres = 1\n");
    std::fs::write(&conf, text).unwrap();
    let o = server.setup(dir.path());
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("the local PostgreSQL server did not start") && e.contains("not_a_setting_of_postgres"), "{e}");
    // The earlier start's lines are in server.log, not in this error.
    assert!(!e.contains("ready to accept connections"), "an earlier start's lines: {e}");
}

#[test]
fn a_server_killed_in_the_middle_of_a_run_fails_clearly_and_the_rerun_succeeds() {
    let server = Private::new();
    let dir = project_with(&[]);
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(
        dir.path().join("030_slow.sql"),
        "-- +goose Up\nCREATE TABLE slow_a (x int);\nSELECT pg_sleep(5) /* slow_mid_run */;\nCREATE TABLE slow_b (x int);\n",
    )
    .unwrap();
    let rt = rt();
    let url = server.url();
    let child = server
        .cmd()
        .args(["migrate", "up", "--migrations-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_query(&rt, &url, "slow_mid_run */");
    server.kill_server();
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("030_slow.sql: the connection was lost while the migration ran"), "{e}");
    assert!(e.contains("nothing of it is applied: run again"), "{e}");

    // The rerun restarts the server and completes the run; then more migrations apply.
    let o = server.setup(dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 applied, 3 already applied"), "{}", stderr(&o));
    std::fs::write(dir.path().join("031_more.sql"), "-- +goose Up\nCREATE TABLE more_after (x int);\n").unwrap();
    let o = run(server.cmd().args(["migrate", "up", "--migrations-dir"]).arg(dir.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let url = server.url();
    assert_eq!(applied_once(&rt, &url), (5, 5));
    assert_eq!(
        query_i64(&rt, &url, "SELECT count(*) FROM pg_class WHERE relname IN ('slow_a', 'slow_b', 'more_after')"),
        3
    );
}

#[test]
fn eight_concurrent_setups_on_a_fresh_state_folder_make_one_server_and_apply_each_migration_once() {
    let state = dir(&[]);
    let children: Vec<_> = (0..8)
        .map(|_| {
            xtask()
                .env("E2E_STATE_DIR", state.path())
                .args(["e2e-setup", "--backend", "local", "--print-env"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let _teardown = Private { state };
    for o in &outputs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    let urls: std::collections::BTreeSet<String> = outputs.iter().map(stdout).collect();
    assert_eq!(urls.len(), 1, "every setup reports the same server: {urls:?}");
    let url = urls.first().unwrap().trim().strip_prefix("DATABASE_URL=").unwrap().to_string();
    let created = outputs.iter().filter(|o| stderr(o).contains("local PostgreSQL: created")).count();
    assert_eq!(created, 1, "one server created, the others reused it");
    assert_eq!(applied_once(&rt(), &url), (3, 3));
}

/// Runs `migrate up` on a fresh database with a good file and `bad`; returns stderr after
/// checking that it failed and that nothing was applied (no tracking table, no table).
fn refused(bad_name: &str, bad: &[u8]) -> String {
    let d = dir(&[("001_ok.sql", "-- +goose Up\nCREATE TABLE ok_table (x int);\n")]);
    std::fs::write(d.path().join(bad_name), bad).unwrap();
    let rt = rt();
    let db = FreshDb::new();
    let url = db.url().to_string();
    let o = run(xtask().args(["migrate", "up", "--database-url", &url, "--migrations-dir"]).arg(d.path()));
    assert!(!o.status.success(), "{bad_name} was accepted");
    assert_eq!(
        query_i64(&rt, &url, "SELECT count(*) FROM pg_class WHERE relname IN ('goose_db_version', 'ok_table')"),
        0,
        "nothing applied"
    );
    stderr(&o)
}

#[test]
fn a_file_that_is_not_utf8_is_refused_with_its_line() {
    let e = refused("002_latin1.sql", b"-- +goose Up\n-- caf\xe9\nSELECT 1;\n");
    assert!(e.contains("002_latin1.sql:2: not UTF-8"), "{e}");
}

#[test]
fn an_empty_file_is_refused() {
    let e = refused("002_empty.sql", b"");
    assert!(e.contains("002_empty.sql:1: an empty migration"), "{e}");
}

#[test]
fn a_file_with_only_a_down_section_is_refused() {
    let e = refused("002_down_only.sql", b"-- +goose Down\nDROP TABLE ok_table;\n");
    assert!(e.contains("002_down_only.sql:1: '-- +goose Down' before '-- +goose Up'"), "{e}");
}

#[test]
fn an_unterminated_statement_begin_is_refused() {
    let e = refused("002_open_block.sql", b"-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n");
    assert!(e.contains("002_open_block.sql:2: '-- +goose StatementBegin' without its '-- +goose StatementEnd'"), "{e}");
}

#[test]
fn an_unterminated_dollar_quote_is_refused() {
    let e = refused("002_open_body.sql", b"-- +goose Up\nSELECT 1;\nDO $body$ BEGIN\n  PERFORM 1;\nEND;\n");
    assert!(
        e.contains("002_open_body.sql:3:") && e.contains("a dollar-quoted body ($body$) that is never closed"),
        "{e}"
    );
}

#[test]
fn transaction_control_in_a_transactional_migration_is_refused() {
    for (sql, what) in [
        ("BEGIN;", "BEGIN"),
        ("START TRANSACTION;", "START TRANSACTION"),
        ("COMMIT;", "COMMIT"),
        ("END;", "END"),
        ("ROLLBACK;", "ROLLBACK"),
        ("ABORT;", "ABORT"),
        ("SAVEPOINT s;", "SAVEPOINT"),
        ("RELEASE SAVEPOINT s;", "RELEASE"),
        ("PREPARE TRANSACTION 'x';", "PREPARE TRANSACTION"),
    ] {
        let file = format!("-- +goose Up\nCREATE TABLE t (x int);\n{sql}\n");
        let e = refused("002_tx.sql", file.as_bytes());
        assert!(e.contains(&format!("002_tx.sql:3:1: {what} in a migration that runs in a transaction")), "{sql}: {e}");
        assert!(e.contains("-- +goose NO TRANSACTION"), "{e}");
    }
}

#[test]
fn statements_postgresql_refuses_in_a_transaction_block_are_refused() {
    for (sql, what) in [
        ("CREATE INDEX CONCURRENTLY i ON ok_table (x);", "CREATE INDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY i;", "DROP INDEX CONCURRENTLY"),
        ("REINDEX TABLE CONCURRENTLY ok_table;", "REINDEX CONCURRENTLY"),
        ("VACUUM ok_table;", "VACUUM"),
        ("CREATE DATABASE d;", "CREATE DATABASE"),
        ("ALTER SYSTEM SET work_mem = '8MB';", "ALTER SYSTEM"),
    ] {
        let file = format!("-- +goose Up\n-- +goose StatementBegin\nSELECT 1; {sql}\n-- +goose StatementEnd\n");
        let e = refused("002_cic.sql", file.as_bytes());
        assert!(e.contains(&format!("002_cic.sql:3:11: {what} cannot run inside a transaction block")), "{sql}: {e}");
    }
}

#[test]
fn the_issue_reproduction_is_refused_and_never_recorded() {
    let e = refused(
        "002_r.sql",
        b"-- +goose Up\nCREATE TABLE r (id int);\nCREATE INDEX CONCURRENTLY r_i ON r (id);\nCOMMIT;\n",
    );
    assert!(e.contains("002_r.sql:3:1: CREATE INDEX CONCURRENTLY cannot run inside a transaction block"), "{e}");
    assert!(e.contains("(and 1 more such statement in this file)"), "{e}");
}
