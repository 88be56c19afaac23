//! Progress as a user sees it: plain timed lines into a pipe, errors only with `--quiet`, a
//! spinner on a terminal (a pseudo-terminal here) that leaves stdout's data alone.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_migrations::db::{self, LOCK_ID};

use super::{rt, run, stderr, stdout, xtask, FreshDb, TempDir};

/// `e2e-setup --backend url` of the audit set on `url`, with its state in `state`.
fn setup(state: &TempDir, url: &str) -> Command {
    let mut c = xtask();
    c.env("E2E_STATE_DIR", state.path()).args([
        "e2e-setup",
        "--backend",
        "url",
        "--sets",
        "audit",
        "--now",
        "2024-06-15",
        "--database-url",
        url,
    ]);
    c
}

/// A session on `url` holding the migration lock until it is dropped.
struct LockHolder {
    rt: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
    pid: i32,
}

impl LockHolder {
    fn new(url: &str, name: &str) -> LockHolder {
        let rt = rt();
        let (client, pid) = rt.block_on(async {
            let c = db::connect(url).await.unwrap();
            c.batch_execute(&format!("SET application_name = '{name}'")).await.unwrap();
            c.query_one("SELECT pg_advisory_lock($1)", &[&LOCK_ID]).await.unwrap();
            let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
            (c, pid)
        });
        LockHolder { rt, client: Some(client), pid }
    }

    fn release(&mut self) {
        if let Some(c) = self.client.take() {
            self.rt.block_on(c.query_one("SELECT pg_advisory_unlock($1)", &[&LOCK_ID])).unwrap();
        }
    }
}

/// Gives a setup started meanwhile the time to find the lock held and say so (it does after
/// 200 ms of waiting).
fn let_it_wait() {
    std::thread::sleep(Duration::from_millis(1500));
}

/// The step lines of a plain run: `  what: outcome (N ms)`.
fn step_line<'a>(text: &'a str, what: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("  {what}")))
        .unwrap_or_else(|| panic!("no {what:?} line in:\n{text}"));
    assert!(line.ends_with(" ms)") || line.ends_with(" s)"), "a timed line: {line:?}");
    line
}

#[test]
fn into_a_pipe_each_step_is_one_timed_line_and_a_wait_for_the_lock_says_who_holds_it() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    let state = TempDir::new("xtask-cli-state");
    let mut holder = LockHolder::new(&url, "plain-holder");
    let child = setup(&state, &url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let_it_wait();
    holder.release();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains('\x1b') && !err.contains('\r'), "no escape codes or redraws in a pipe: {err:?}");
    assert!(step_line(&err, "connect").starts_with("  connect: postgres://"), "{err}");
    assert!(step_line(&err, "migrations (audit)").starts_with("  migrations (audit): 1 applied, 0 already applied ("));
    assert!(step_line(&err, "partitions").starts_with("  partitions: "), "{err}");
    let waiting = format!("    waiting for the migration lock, held by pid {} (plain-holder, ", holder.pid);
    assert!(err.lines().any(|l| l.starts_with(&waiting)), "the wait has a line of its own:\n{err}");
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn quiet_prints_errors_only_before_or_after_the_command_and_leaves_stdout_alone() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    let state = TempDir::new("xtask-cli-state");
    let o = run(setup(&state, &url).arg("--print-env"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("migrations (audit)"), "{}", stderr(&o));
    let data = stdout(&o);
    assert_eq!(data, format!("DATABASE_URL={url}\n"));

    let o = run(setup(&state, &url).args(["--print-env", "--quiet"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "E2E_LOG=info in the environment too");
    assert_eq!(stdout(&o), data);
    let args = setup(&state, &url).get_args().map(|a| a.to_owned()).collect::<Vec<_>>();
    let o = run(xtask().env("E2E_STATE_DIR", state.path()).arg("-q").args(args));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!((stderr(&o).as_str(), stdout(&o).as_str()), ("", ""), "`cargo xtask -q e2e-setup ...`");

    let o = run(xtask().env("E2E_STATE_DIR", state.path()).args([
        "--quiet",
        "e2e-setup",
        "--backend",
        "url",
        "--connect-timeout",
        "1",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
    ]));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.starts_with("error: ") && err.contains("127.0.0.1:1"), "only the error: {err}");
    assert!(!err.contains("backend:"), "{err}");
}

/// Runs `cmd` with stderr on a pseudo-terminal of 120 columns and stdout piped; `during` runs
/// while it does, with what the terminal has received so far. Returns (terminal bytes, output).
fn on_a_terminal(cmd: &mut Command, during: impl FnOnce(&dyn Fn() -> String)) -> (String, Output) {
    let size = nix::pty::Winsize { ws_row: 30, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(&size, None).unwrap();
    let child: Child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(pty.slave)).spawn().unwrap();
    // the child holds the terminal's only other end now: reading ends when it exits
    cmd.stderr(Stdio::null());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        let mut master = std::fs::File::from(pty.master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let so_far = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    during(&so_far);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    (so_far(), out)
}

/// Waits until the terminal shows `want`.
fn until(so_far: &dyn Fn() -> String, want: &str) {
    let start = Instant::now();
    while !so_far().contains(want) {
        assert!(start.elapsed() < Duration::from_secs(30), "the terminal never showed {want:?}:\n{}", so_far());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn on_a_terminal_a_spinner_shows_the_wait_for_the_lock_and_stdout_keeps_only_the_data() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    let state = TempDir::new("xtask-cli-state");
    let piped = run(setup(&state, &url).arg("--print-env"));
    assert!(piped.status.success(), "{}", stderr(&piped));

    let mut holder = LockHolder::new(&url, "tty-holder");
    let mut cmd = setup(&state, &url);
    cmd.arg("--print-env").env("TERM", "xterm-256color").env_remove("NO_COLOR");
    let (shown, out) = on_a_terminal(&mut cmd, |so_far| {
        until(
            so_far,
            &format!("migrations (audit): waiting for the migration lock, held by pid {} (tty-holder", holder.pid),
        );
        holder.release();
    });
    assert!(out.status.success(), "{shown}");
    assert_eq!(stdout(&out), stdout(&piped), "stdout is the same data with a spinner on stderr");
    assert!(shown.contains("\x1b["), "the spinner redraws its line: {shown:?}");
    assert!(shown.contains("  migrations (audit): 0 applied, 1 already applied ("), "the done line: {shown:?}");
    assert!(!stdout(&out).contains('\x1b'));
}

#[test]
fn a_dumb_terminal_or_no_color_gets_plain_lines() {
    let db = FreshDb::new();
    let url = db.url().to_string();
    let state = TempDir::new("xtask-cli-state");
    for (key, value) in [("TERM", "dumb"), ("NO_COLOR", "1")] {
        let mut cmd = setup(&state, &url);
        cmd.env("TERM", "xterm-256color").env(key, value);
        let (shown, out) = on_a_terminal(&mut cmd, |_| {});
        assert!(out.status.success(), "{shown}");
        assert!(!shown.contains('\x1b'), "{key}={value}: no escape codes: {shown:?}");
        assert!(shown.contains("  migrations (audit): "), "{key}={value}: {shown:?}");
    }
}
