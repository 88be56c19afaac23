//! This workspace's test fixtures, shared by the library's tests, the CLI's tests and the
//! lifecycle tests: temporary folders ([`TempDir`]), fresh empty databases on this checkout's
//! server ([`FreshDb`]), random tags ([`tag`]), this repository's `migrations/` folder
//! ([`repo_migrations_dir`]), a runtime for a test's own async work ([`rt`]),
//! running a command and reading what it printed ([`process`]), and what a test run left behind
//! on that server ([`leftovers`]).
//!
//! Every fixture cleans up when dropped, also when the test panics. A database this crate makes
//! is named by [`e2e_migrations::testdb::scratch_name`], so that what a killed test process could
//! not drop is dropped by the test-database reaper of a later run (once the process is gone), and
//! `.ci/run` names it if it is still there when the test command ends.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use e2e_migrations::lifecycle::{self, Access, Endpoint, Workspace};
use e2e_migrations::{db, ident};

pub mod leftovers;
pub mod process;

/// This repository's `migrations/` folder, for its own tests (a path compiled in: commands and
/// `TestDatabase` read the migrations of the workspace they run in instead).
pub fn repo_migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
}

/// 12 random hex digits, for names that must not collide between tests and processes.
pub fn tag() -> String {
    e2e_migrations::secret::random_hex(6, "a test tag").expect("random bytes from the operating system")
}

/// A temporary folder `<temp>/<prefix>-<tag>`, removed with its content when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// An empty folder.
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", tag()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// A folder holding `files` (name, text).
    pub fn with_files(prefix: &str, files: &[(&str, &str)]) -> TempDir {
        let dir = TempDir::new(prefix);
        for (name, text) in files {
            dir.write(name, text);
        }
        dir
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside it.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// Writes (or replaces) the file `name` inside it.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// How many entries it holds (a command that must write nothing leaves it at 0).
    pub fn entries(&self) -> usize {
        std::fs::read_dir(&self.0).unwrap_or_else(|e| panic!("reading {}: {e}", self.0.display())).count()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runtime this crate's database work runs on: its own, so that fixtures work the same from
/// a plain `#[test]`, from a `#[tokio::test]`, and in a `Drop` during a panic, and so that a
/// port-forward the endpoint needs stays alive.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("e2e-test-support")
            .enable_all()
            .build()
            .expect("the test-support runtime")
    })
}

/// A current-thread runtime for a test's own async work (connections it makes and uses itself).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime")
}

/// Runs `fut` on this crate's runtime and waits for it, from any thread or runtime.
pub(crate) fn block_on<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("the test-support task panicked")
}

/// This checkout's server, as the test databases find it: `DATABASE_URL`, else what
/// `cargo xtask e2e-setup` left, else the local server (started, or created, on demand).
/// Resolved once per process and kept (with any port-forward it needs) for its life.
pub fn endpoint() -> &'static Endpoint {
    static ENDPOINT: OnceLock<Endpoint> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        block_on(async {
            let ws = Workspace::current()?;
            let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
            lifecycle::resolve(&ws, url.as_deref(), Access::StartIfNeeded).await
        })
        .unwrap_or_else(|e| panic!("finding this checkout's database server: {}", e2e_migrations::error::report(&e)))
    })
}

/// A fresh, empty database for one test on this checkout's server, dropped (`DROP DATABASE ...
/// WITH (FORCE)`) when the value is dropped: at the end of the test, and also when it panics.
#[derive(Debug)]
pub struct FreshDb {
    name: String,
    url: String,
    admin_url: String,
}

impl FreshDb {
    /// Creates one on this checkout's server ([`endpoint`]).
    #[allow(clippy::new_without_default)] // it makes a database: not what a default should do
    pub fn new() -> FreshDb {
        let server_url = &endpoint().url;
        let name = e2e_migrations::testdb::scratch_name();
        let url = db::with_database(server_url, &name).expect("a database URL");
        let admin_url = db::with_database(server_url, "postgres").expect("a database URL");
        let sql = format!("CREATE DATABASE {}", ident::quote(&name));
        let admin = admin_url.clone();
        block_on(async move {
            let c = db::connect(&admin).await?;
            c.batch_execute(&sql)
                .await
                .map_err(|e| e2e_migrations::Error::Db { context: format!("running {sql}"), source: e.into() })
        })
        .unwrap_or_else(|e| panic!("creating a test database: {}", e2e_migrations::error::report(&e)));
        FreshDb { name, url, admin_url }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL (with the password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection to it, on the caller's runtime.
    pub async fn connect(&self) -> tokio_postgres::Client {
        db::connect(&self.url).await.unwrap_or_else(|e| panic!("{}", e2e_migrations::error::report(&e)))
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident::quote(&self.name));
        let admin = self.admin_url.clone();
        let dropped = block_on(async move {
            let c = db::connect(&admin).await.map_err(|e| e2e_migrations::error::report(&e))?;
            c.batch_execute(&sql).await.map_err(|e| e2e_migrations::error::describe_db_error(&e))
        });
        // Never a panic in a drop: it would abort a test that is already panicking. The name
        // is one the reaper knows, and the CI's leftover check names it.
        if let Err(e) = dropped {
            eprintln!("warning: could not drop the test database {}: {e}", self.name);
        }
    }
}
