//! Isolated databases for tests: one template per fingerprint, cloned per test, with a shared pool.
//!
//! ```no_run
//! # async fn demo() -> e2e_migrations::Result<()> {
//! use e2e_migrations::TestDatabase;
//! let db = TestDatabase::new(&["audit"]).await?; // sets applied, partitions rolled
//! let client = db.connect().await?;
//! client.batch_execute("SELECT 1 FROM audit_events").await.unwrap();
//! # Ok(()) }
//! // dropped (DROP DATABASE ... WITH (FORCE)) when `db` goes out of scope
//! ```
//!
//! How it works:
//! - The [`Fingerprint`] of a request is the sorted sets, the version, name and checksum of every
//!   selected migration (and its final SQL, after `ENVSUB`), the partition specs and the UTC day.
//!   The template database `e2e_tpl_<hash>_<sets>` is built once per fingerprint: under an
//!   advisory lock keyed by the fingerprint on the `postgres` database, the first process builds
//!   it under a temporary name with [`crate::apply::migrate_and_roll`], marks it `IS_TEMPLATE`,
//!   `ALLOW_CONNECTIONS false` and renames it into place; the others wait and find it. A changed
//!   migration is a new fingerprint, hence a new template, never a stale one; older templates of
//!   the same sets are reaped.
//! - A test's database is `CREATE DATABASE e2e_t_... TEMPLATE e2e_tpl_...`, or, faster, a ready
//!   clone `e2e_r_<hash>_...` claimed from the pool by renaming it (atomic: two processes never
//!   get the same one). The pool lives in the server, so it is shared by every test binary and
//!   process (nextest runs each test in its own process); each process tops it up in the
//!   background to [`POOL_ENV`] (default [`DEFAULT_POOL`]) ready clones.
//! - Names carry the creating process (host tag, pid, start time), so that the leftovers of a
//!   crashed run are reaped by the next one: a test's database, a build or a scratch database
//!   ([`scratch_name`]) once its process is gone and it is a minute old (a day when made on another
//!   host); a ready clone once its template is gone; a template once another of the same sets has
//!   replaced it for ten minutes. A database with sessions, or one this module did not name, is
//!   never touched.
//! - All database work of this module runs on a private runtime, so a [`TestDatabase`] can be
//!   made in one `#[tokio::test]` and dropped anywhere; `Drop` waits for the `DROP DATABASE`.
//!
//! The server is handed in ([`Builder::server_url`]) or, when none is, resolved once per process
//! by [`crate::lifecycle::resolve()`]: `DATABASE_URL` when set, else what this checkout's
//! `cargo xtask e2e-setup` left (for the kube backend, with the `kube` feature, through a local
//! port-forward listener), else this checkout's local server (started on demand, shared by all
//! test binaries). This module never decides where the database lives. The role needs
//! `CREATEDB`.
//!
//! The files: `fingerprint` and `names` are pure (what a template holds, what a name says, what
//! to reap); `engine` does the database work; `endpoint` asks the lifecycle for the server.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::Result;
use crate::{db, Project};

mod endpoint;
mod engine;
mod fingerprint;
mod names;

use engine::{engine, on_engine, pool_size_from, sqlstate, this_process, Server};
pub use fingerprint::{Fingerprint, FingerprintMigration};
pub use names::{parse_name, DbName, Owner};

/// Environment variable: how many ready clones per fingerprint the pool keeps (0 turns it off).
pub const POOL_ENV: &str = "E2E_TEST_DB_POOL";
/// Ready clones kept per fingerprint when [`POOL_ENV`] is not set.
pub const DEFAULT_POOL: usize = 2;
/// The maintenance database used for `CREATE DATABASE`, the template lock and reaping.
pub(crate) const MAINTENANCE_DB: &str = "postgres";
/// Every database this module makes starts with this prefix.
pub(crate) const PREFIX: &str = "e2e_";
/// Leftovers of a dead process on this host are reaped once this old.
pub(crate) const DEAD_OWNER_MIN_AGE: Duration = Duration::from_secs(60);
/// Leftovers made on another host (whose processes we cannot see) are reaped once this old.
pub(crate) const FOREIGN_MIN_AGE: Duration = Duration::from_secs(24 * 3600);
/// A template of the same sets but another fingerprint is reaped once this old.
pub(crate) const OLD_TEMPLATE_MIN_AGE: Duration = Duration::from_secs(10 * 60);
/// How long to wait for another process building the same template.
pub(crate) const TEMPLATE_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// Bumped when the template layout changes, so that old templates are not reused.
const FORMAT: u32 = 1;

/// A name for an empty database that a test makes itself rather than clone from a template
/// (`e2e_s_<host>_<pid>_<start>_<n>`): owned by this process like a [`TestDatabase`]'s, so that
/// if the process dies before dropping it, the reaper of a later run drops it. Unique within the
/// process, and across processes on one server. The name needs no quoting.
pub fn scratch_name() -> String {
    names::scratch_name(this_process(), engine::next_seq())
}

/// A database of its own for one test, with the requested sets applied and partitions rolled.
/// Dropped (`DROP DATABASE ... WITH (FORCE)`) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    server: Option<Arc<Server>>,
}

impl TestDatabase {
    /// A fresh database with `sets` of the workspace's migrations (`migrations/` at the root of
    /// the checkout the test runs in, or `$E2E_MIGRATIONS_DIR`) on the server of this checkout
    /// (see the module's documentation).
    pub async fn new(sets: &[&str]) -> Result<TestDatabase> {
        Pool::new(sets).await?.get().await
    }

    /// For more control: another project, server, instant or pool size; many databases of one
    /// request from one [`Pool`].
    pub fn builder(sets: &[&str]) -> Builder {
        Builder::new(sets)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `postgres://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a connection to it on the caller's runtime.
    pub async fn connect(&self) -> Result<Client> {
        db::connect(&self.url).await
    }

    /// Drops it now and reports the outcome (dropping the value does the same, but can only
    /// print a failure).
    pub async fn close(mut self) -> Result<()> {
        let server = self.server.take().expect("not closed yet");
        let name = self.name.clone();
        let s = server.clone();
        let r = on_engine(async move { s.drop_database(&name).await }).await;
        server.in_flight.wait(Duration::from_secs(30));
        r
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        let name = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = server.clone();
        engine().rt.spawn(async move {
            let _ = tx.send(s.drop_database(&name).await);
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: {} (a later run reaps it)", crate::error::report(&e)),
            Err(_) => eprintln!("warning: timed out dropping the test database {} (a later run reaps it)", self.name),
        }
        // Let background refills finish, so the next process finds the pool full.
        server.in_flight.wait(Duration::from_secs(30));
    }
}

/// Settings for [`TestDatabase`]s beyond the defaults.
#[derive(Debug, Clone)]
pub struct Builder {
    sets: Vec<String>,
    project: Option<Project>,
    server_url: Option<String>,
    now: Option<DateTime<Utc>>,
    ready: Option<usize>,
}

impl Builder {
    /// Defaults: the project from the environment, the server from the environment, now, and
    /// the pool size from [`POOL_ENV`].
    pub fn new(sets: &[&str]) -> Builder {
        Builder {
            sets: sets.iter().map(|s| s.to_string()).collect(),
            project: None,
            server_url: None,
            now: None,
            ready: None,
        }
    }

    /// Another migrations folder.
    pub fn project(mut self, project: Project) -> Builder {
        self.project = Some(project);
        self
    }

    /// Another server: any database URL on it (`postgres://...` or key=value pairs); the others
    /// are reached by naming another database in it. The role needs `CREATEDB`.
    pub fn server_url(mut self, url: impl Into<String>) -> Builder {
        self.server_url = Some(url.into());
        self
    }

    /// Roll partitions as of this instant (the fingerprint takes its UTC day).
    pub fn now(mut self, now: DateTime<Utc>) -> Builder {
        self.now = Some(now);
        self
    }

    /// Ready clones kept ahead (0: none, every test clones the template itself).
    pub fn ready(mut self, n: usize) -> Builder {
        self.ready = Some(n);
        self
    }

    /// Resolves everything and makes sure the template exists.
    pub async fn pool(self) -> Result<Pool> {
        let project = match self.project {
            Some(p) => p,
            None => Project::load_default()?,
        };
        let now = self.now.unwrap_or_else(process_now);
        let fp = Fingerprint::new(&project, &self.sets, now)?;
        let ready = match self.ready {
            Some(n) => n,
            None => pool_size_from(std::env::var(POOL_ENV).ok().as_deref())?,
        };
        let url = match self.server_url {
            Some(u) => u,
            None => endpoint::default_server_url().await?,
        };
        let server = Server::get(&url)?;
        let project = Arc::new(project);
        let (s, fp2, p) = (server.clone(), fp.clone(), project.clone());
        let template = on_engine(async move {
            let t = s.template(&fp2, &p, now).await;
            s.reap_in_background();
            t
        })
        .await?;
        Ok(Pool { server, fp, template, ready, project, now })
    }
}

/// The instant this process first asked for a test database: one process, one fingerprint day.
fn process_now() -> DateTime<Utc> {
    static NOW: OnceLock<DateTime<Utc>> = OnceLock::new();
    *NOW.get_or_init(Utc::now)
}

/// Test databases of one fingerprint, from a pool of ready clones shared by every process.
#[derive(Debug, Clone)]
pub struct Pool {
    server: Arc<Server>,
    fp: Fingerprint,
    template: String,
    ready: usize,
    project: Arc<Project>,
    now: DateTime<Utc>,
}

impl Pool {
    /// A pool with the defaults (see [`Builder::new`]).
    pub async fn new(sets: &[&str]) -> Result<Pool> {
        Builder::new(sets).pool().await
    }

    /// Waits until the pool holds its ready clones.
    pub async fn warm(&self) -> Result<()> {
        let (s, t, h, n) = (self.server.clone(), self.template.clone(), self.fp.short(), self.ready);
        on_engine(async move { s.refill_now(&t, &h, n).await }).await
    }

    /// A database: a ready clone if there is one (a rename, about a millisecond), else a fresh
    /// clone of the template; then the pool is topped up in the background.
    pub async fn get(&self) -> Result<TestDatabase> {
        let hash = self.fp.short();
        let name = names::owned_name('t', &hash, this_process(), engine::next_seq());
        let (s, n, h, ready) = (self.server.clone(), name.clone(), hash.clone(), self.ready);
        let (fp, project, now) = (self.fp.clone(), self.project.clone(), self.now);
        on_engine(async move {
            let mut template = fp.template_name();
            if ready > 0 && s.claim(&h, &n).await? {
                s.refill(template, h, ready);
                return Ok(());
            }
            match s.clone_template(&template, &n).await {
                Ok(()) => {}
                // The template was reaped (another run, another day): build it again, once.
                Err(e) if sqlstate(&e) == Some(&SqlState::UNDEFINED_DATABASE) => {
                    s.forget_template(&h).await;
                    template = s.template(&fp, &project, now).await?;
                    s.clone_template(&template, &n).await?;
                }
                Err(e) => return Err(e),
            }
            s.refill(template, h, ready);
            Ok(())
        })
        .await?;
        let url = db::with_database(&self.server.url, &name)?;
        Ok(TestDatabase { name, url, server: Some(self.server.clone()) })
    }
}
