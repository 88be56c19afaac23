//! Test support: the shared local server and a fresh empty database per test.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use e2e_migrations::db;
use e2e_migrations::lifecycle::local::{self, LocalServer, StartOptions};
use e2e_migrations::lifecycle::Workspace;
use tokio_postgres::Client;

static SERVER: OnceLock<LocalServer> = OnceLock::new();

/// This checkout's local server (started on first use, shared by every test and test binary).
pub fn server() -> &'static LocalServer {
    SERVER.get_or_init(|| {
        // A runtime of its own, on a thread of its own: callers are inside a test's runtime.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            let ws = Workspace::current().expect("the workspace");
            rt.block_on(local::ensure_running(&ws, &StartOptions::default())).expect("local PostgreSQL server")
        })
        .join()
        .expect("starting the local server")
    })
}

/// A fresh, empty database for one test; dropped by [`FreshDb::drop_db`].
pub struct FreshDb {
    pub name: String,
    pub url: String,
}

impl FreshDb {
    /// Creates `t_<random>`.
    pub async fn new() -> FreshDb {
        let s = server();
        let name = format!("t_{}", uuid_like());
        let admin = db::connect(&s.url_for("postgres")).await.expect("connect to postgres");
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.expect("create database");
        FreshDb { url: s.url_for(&name), name }
    }

    /// Connects to it.
    pub async fn connect(&self) -> Client {
        db::connect(&self.url).await.expect("connect to the test database")
    }

    /// Drops it (forcing other sessions off).
    pub async fn drop_db(self) {
        let admin = db::connect(&server().url_for("postgres")).await.expect("connect to postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await
            .expect("drop database");
    }
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    getrandom_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom_bytes(b: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(b)).expect("/dev/urandom");
}

/// A temporary migrations folder with the given files, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(files: &[(&str, &str)]) -> TempDir {
        let dir = std::env::temp_dir().join(format!("e2e-mig-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a query returning one i64.
pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}
