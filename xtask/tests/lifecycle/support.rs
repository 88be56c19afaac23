//! Test support: checkouts in a temporary folder, running xtask in them, asking their servers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_test_support::process::env_lines;
pub use e2e_test_support::process::{stderr, stdout};
use e2e_test_support::rt;
pub use e2e_test_support::TempDir;

/// This repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A checkout: a folder with `Cargo.lock` and `migrations/`. Dropping it tears down its local
/// server (best effort) so that a failed test leaves no server running.
pub struct Checkout {
    pub root: PathBuf,
    /// Extra environment for every command.
    pub env: Vec<(String, String)>,
}

impl Checkout {
    /// A new checkout at `root` with a copy of this repository's migrations.
    pub fn new(root: &Path) -> Checkout {
        std::fs::create_dir_all(root.join("migrations")).unwrap();
        std::fs::write(root.join("Cargo.lock"), "# a checkout for the lifecycle tests\nversion = 4\n").unwrap();
        for e in std::fs::read_dir(repo_root().join("migrations")).unwrap().flatten() {
            std::fs::copy(e.path(), root.join("migrations").join(e.file_name())).unwrap();
        }
        Checkout { root: root.to_path_buf(), env: vec![("E2E_CACHE".into(), "off".into())] }
    }

    /// An existing folder (a copy) as a checkout.
    pub fn at(root: &Path) -> Checkout {
        Checkout { root: root.to_path_buf(), env: vec![("E2E_CACHE".into(), "off".into())] }
    }

    /// The xtask binary in this checkout, in a process group of its own (so that a killed
    /// setup takes its children, not the test).
    pub fn xtask(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.current_dir(&self.root)
            .env_remove("DATABASE_URL")
            .env_remove("E2E_MIGRATIONS_DIR")
            .env_remove("E2E_STATE_DIR")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("E2E_CACHE_DIR")
            .env_remove("E2E_FAULT_AT")
            .env_remove("E2E_BACKEND")
            .env_remove("E2E_CONFIG")
            .env("E2E_LOG", "info")
            .stdin(Stdio::null())
            .process_group(0);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs xtask with `args`, within `limit` (killed and failed after it).
    pub fn run_within(&self, args: &[&str], limit: Duration) -> Output {
        let child = self.xtask().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_within(child, limit, &format!("xtask {}", args.join(" ")))
    }

    /// Runs xtask with `args` (at most two minutes).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_within(args, Duration::from_secs(120))
    }

    /// Sets up the local backend with `sets`; returns `DATABASE_URL`.
    pub fn setup(&self, sets: &str) -> String {
        let o = self.run(&["e2e-setup", "--backend", "local", "--sets", sets, "--print-env"]);
        assert!(o.status.success(), "setup in {}: {}", self.root.display(), stderr(&o));
        url_of(&o)
    }

    /// Tears down.
    pub fn teardown(&self) -> Output {
        self.run(&["e2e-teardown"])
    }

    /// The default state folder.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("target/e2e")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if self.root.join("Cargo.lock").exists() {
            let _ = self.run_within(&["e2e-teardown", "--backend", "local"], Duration::from_secs(60));
        }
    }
}

/// Waits for `child`, killing its process group after `limit`.
pub fn wait_within(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            kill_group(child.id());
            let o = child.wait_with_output().unwrap();
            panic!("{what} did not finish within {limit:?}; stderr:\n{}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL to the process group led by `pid`.
pub fn kill_group(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
}

/// The `DATABASE_URL=` line of `--print-env` output.
pub fn url_of(o: &Output) -> String {
    env_lines(&stdout(o))
        .into_iter()
        .find_map(|(k, v)| (k == "DATABASE_URL").then_some(v))
        .unwrap_or_else(|| panic!("no DATABASE_URL in {:?}", stdout(o)))
}

/// Runs a query returning one text value (`None` when the server cannot be reached).
pub fn query_text(url: &str, sql: &str) -> Option<String> {
    rt().block_on(async {
        let c = e2e_migrations::db::connect(url).await.ok()?;
        let row = c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        Some(row.get::<_, String>(0))
    })
}

/// Runs statements (panics on failure).
pub fn execute(url: &str, sql: &str) {
    rt().block_on(async {
        let c = e2e_migrations::db::connect(url).await.unwrap();
        c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
}

/// The data folder of the server behind `url`, if it answers.
pub fn data_dir_of(url: &str) -> Option<PathBuf> {
    query_text(url, "SELECT current_setting('data_directory')").map(PathBuf::from)
}

/// Every file under `dir` whose name satisfies `pick`.
pub fn files_named(dir: &Path, pick: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            out.extend(files_named(&p, pick));
        } else if pick(&e.file_name().to_string_lossy()) {
            out.push(p);
        }
    }
    out
}

/// `cp -a from to`.
pub fn cp_a(from: &Path, to: &Path) {
    let s = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(s.success(), "cp -a {} {}", from.display(), to.display());
}
