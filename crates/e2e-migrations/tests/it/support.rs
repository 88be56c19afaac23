//! Test support: the workspace's shared fixtures (`e2e-test-support`), and what only these tests
//! need.

use e2e_migrations::lifecycle::local::LocalServer;
pub use e2e_test_support::{FreshDb, TempDir};
use tokio_postgres::Client;

/// A temporary migrations folder holding `files`.
pub fn folder(files: &[(&str, &str)]) -> TempDir {
    TempDir::with_files("e2e-mig", files)
}

/// The local server the tests run on (for its log); fails when the tests were pointed at another.
pub fn local_server() -> &'static LocalServer {
    e2e_test_support::endpoint().local.as_ref().expect("these tests read the local server's log: unset DATABASE_URL")
}

/// Runs a query returning one i64.
pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}
