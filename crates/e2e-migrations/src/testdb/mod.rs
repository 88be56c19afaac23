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
//!   crashed run are reaped by the next one ([`reap_decision`]).
//! - All database work of this module runs on a private runtime, so a [`TestDatabase`] can be
//!   made in one `#[tokio::test]` and dropped anywhere; `Drop` waits for the `DROP DATABASE`.
//!
//! The server is handed in ([`Builder::target`]) or, when none is, resolved once per process by
//! [`crate::lifecycle::resolve()`]: `DATABASE_URL` when set, else what this checkout's
//! `cargo xtask e2e-setup` left (for `--backend kube`, with the `kube` feature, through a local
//! port-forward listener), else this checkout's local server (started on demand, shared by all
//! test binaries). This module never decides where the database lives. The role needs
//! `CREATEDB`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{DbContext, Error, Result};
use crate::ident::{literal, quote};
use crate::partitions::PartitionSpec;
use crate::{apply, db, Options, Project};

/// Environment variable: how many ready clones per fingerprint the pool keeps (0 turns it off).
pub const POOL_ENV: &str = "E2E_TEST_DB_POOL";
/// Ready clones kept per fingerprint when [`POOL_ENV`] is not set.
pub const DEFAULT_POOL: usize = 2;
/// The maintenance database used for `CREATE DATABASE`, the template lock and reaping.
pub const MAINTENANCE_DB: &str = "postgres";
/// Every database this module makes starts with this prefix.
pub const PREFIX: &str = "e2e_";
/// Leftovers of a dead process on this host are reaped once this old.
pub const DEAD_OWNER_MIN_AGE: Duration = Duration::from_secs(60);
/// Leftovers made on another host (whose processes we cannot see) are reaped once this old.
pub const FOREIGN_MIN_AGE: Duration = Duration::from_secs(24 * 3600);
/// A template of the same sets but another fingerprint is reaped once this old.
pub const OLD_TEMPLATE_MIN_AGE: Duration = Duration::from_secs(10 * 60);
/// How long to wait for another process building the same template.
pub const TEMPLATE_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// Bumped when the template layout changes, so that old templates are not reused.
const FORMAT: u32 = 1;

mod engine;
mod fingerprint;
mod names;
mod target;

use engine::*;
pub use fingerprint::*;
pub use names::*;
pub use target::*;

/// A database of its own for one test, with the requested sets applied and partitions rolled.
/// Dropped (`DROP DATABASE ... WITH (FORCE)`) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    template: String,
    server: Option<Arc<Server>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("maintenance_url", &db::redact(&self.maintenance_url)).finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// A fresh database with `sets` of the workspace's migrations (`migrations/` at the root of
    /// the checkout the test runs in, or `$E2E_MIGRATIONS_DIR`) on the server of this checkout
    /// (see the module's documentation).
    pub async fn new(sets: &[&str]) -> Result<TestDatabase> {
        Pool::new(sets).await?.get().await
    }

    /// A pool for `sets` that keeps `ready` clones prepared ahead, shared across processes;
    /// [`Pool::get`] then hands one out at once.
    pub async fn pool(sets: &[&str], ready: usize) -> Result<Pool> {
        let pool = Builder::new(sets).ready(ready).pool().await?;
        pool.warm().await?;
        Ok(pool)
    }

    /// For more control: another project, server, instant or pool size.
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

    /// The template it was cloned from.
    pub fn template(&self) -> &str {
        &self.template
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
    target: Option<Target>,
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
            target: None,
            now: None,
            ready: None,
        }
    }

    /// Another migrations folder.
    pub fn project(mut self, project: Project) -> Builder {
        self.project = Some(project);
        self
    }

    /// Another server.
    pub fn target(mut self, target: Target) -> Builder {
        self.target = Some(target);
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
        let target = match self.target {
            Some(t) => t,
            None => target::default_target().await?,
        };
        let server = Server::get(&target)?;
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

    /// One database.
    pub async fn build(self) -> Result<TestDatabase> {
        self.pool().await?.get().await
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

    /// The fingerprint its databases are built from.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fp
    }

    /// The template's name.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Waits until the pool holds its ready clones.
    pub async fn warm(&self) -> Result<()> {
        let (s, t, h, n) = (self.server.clone(), self.template.clone(), self.fp.short(), self.ready);
        on_engine(async move { s.refill_now(&t, &h, n).await }).await
    }

    /// A database: a ready clone if there is one (a rename, about a millisecond), else a fresh
    /// clone of the template; then the pool is topped up in the background.
    pub async fn get(&self) -> Result<TestDatabase> {
        let e = engine();
        let hash = self.fp.short();
        let name = owned_name('t', &hash, &e.me, e.seq.fetch_add(1, Ordering::Relaxed));
        let (s, n, h, ready) = (self.server.clone(), name.clone(), hash.clone(), self.ready);
        let (fp, project, now) = (self.fp.clone(), self.project.clone(), self.now);
        let template = on_engine(async move {
            let mut template = fp.template_name();
            if ready > 0 && s.claim(&h, &n).await? {
                s.refill(template.clone(), h, ready);
                return Ok(template);
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
            s.refill(template.clone(), h, ready);
            Ok(template)
        })
        .await?;
        let url = self.server.target.url_for(&name)?;
        Ok(TestDatabase { name, url, template, server: Some(self.server.clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse_folder;
    use std::path::Path;

    fn project(audit_body: &str) -> Project {
        let f = |n: &str, b: &str| (n.to_string(), format!("-- +goose Up\n{b}\n-- +goose Down\nSELECT 1;\n"));
        let folder = parse_folder(
            Path::new("m"),
            vec![f("013_audit.sql", audit_body), f("015_workflow.sql", "CREATE TABLE w (id int);")],
            &|_| None,
        )
        .unwrap();
        let manifest = crate::Manifest::parse(
            Path::new("m/sets.toml"),
            "[sets.audit]\nfiles=[\"013_audit.sql\"]\n[[sets.audit.partitions]]\ntable=\"a\"\ncolumn=\"d\"\n\
             [sets.workflow]\nfiles=[\"015_workflow.sql\"]\n",
        )
        .unwrap();
        Project { folder, manifest: Some(manifest) }
    }

    fn at(day: &str) -> DateTime<Utc> {
        NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(12, 0, 0).unwrap().and_utc()
    }

    fn sets(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fingerprint_ignores_set_order_and_time_of_day() {
        let p = project("CREATE TABLE a (d date);");
        let a = Fingerprint::new(&p, &sets(&["workflow", "audit"]), at("2025-03-10")).unwrap();
        let b = Fingerprint::new(
            &p,
            &sets(&["audit", "workflow", "audit"]),
            at("2025-03-10") + chrono::Duration::hours(11),
        )
        .unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.sets, ["audit", "workflow"]);
        assert_eq!(a.migrations.len(), 2);
        assert_eq!(a.partitions.len(), 1);
    }

    #[test]
    fn fingerprint_changes_with_migration_day_sets_and_spec() {
        let p = project("CREATE TABLE a (d date);");
        let base = Fingerprint::new(&p, &sets(&["audit"]), at("2025-03-10")).unwrap();
        let edited =
            Fingerprint::new(&project("CREATE TABLE a (d date, x int);"), &sets(&["audit"]), at("2025-03-10")).unwrap();
        let next_day = Fingerprint::new(&p, &sets(&["audit"]), at("2025-03-11")).unwrap();
        let other_sets = Fingerprint::new(&p, &sets(&["audit", "workflow"]), at("2025-03-10")).unwrap();
        let mut spec = base.clone();
        spec.partitions[0].ahead = 6;
        let hashes: BTreeSet<String> =
            [&base, &edited, &next_day, &other_sets, &spec].iter().map(|f| f.hash()).collect();
        assert_eq!(hashes.len(), 5, "every change must give a new template");
        assert_ne!(base.lock_key(), edited.lock_key());
        assert_ne!(base.lock_key(), db::LOCK_ID);
    }

    #[test]
    fn unknown_set_is_refused_before_any_database() {
        let e = Fingerprint::new(&project("SELECT 1;"), &sets(&["audti"]), at("2025-03-10")).unwrap_err();
        assert!(e.to_string().contains("unknown set \"audti\""), "{e}");
    }

    #[test]
    fn names_fit_postgres_and_parse_back() {
        let fp = Fingerprint::new(&project("SELECT 1;"), &sets(&["audit", "workflow"]), at("2025-03-10")).unwrap();
        let tpl = fp.template_name();
        assert!(tpl.starts_with("e2e_tpl_") && tpl.ends_with("_audit_workflow"), "{tpl}");
        assert_eq!(parse_name(&tpl), Some(DbName::Template { hash: fp.short(), label: "audit_workflow".into() }));
        let owner = Owner { host: "ab12".into(), pid: 4_194_304, start: 1_760_000_000 };
        let t = owned_name('t', &fp.short(), &owner, u64::MAX);
        assert!(t.len() <= crate::ident::MAX_LEN, "{t} is {} bytes", t.len());
        crate::ident::validate(&t).unwrap();
        assert_eq!(parse_name(&t), Some(DbName::Test { hash: fp.short(), owner: owner.clone() }));
        assert_eq!(
            parse_name(&owned_name('r', &fp.short(), &owner, 7)),
            Some(DbName::Ready { hash: fp.short(), owner: owner.clone() })
        );
        assert_eq!(
            parse_name(&owned_name('b', &fp.short(), &owner, 0)),
            Some(DbName::Build { hash: fp.short(), owner })
        );
        for foreign in
            ["e2e", "postgres", "e2e_tpl_xyz_audit", "e2e_t_0123456789ab_zz12_1_1_1", "e2e_q_0123456789ab_ab12_1_1_1"]
        {
            assert_eq!(parse_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn long_set_lists_are_cut_to_a_label() {
        let l = sets_label(&sets(&["audit", "workflow", "notification", "extra-set"]));
        assert_eq!(l, "audit_workflow_notificat");
        assert!(template_name(&"0".repeat(12), &l).len() <= crate::ident::MAX_LEN);
    }

    struct Fixture {
        me: Owner,
        templates: BTreeSet<String>,
        current: HashMap<String, String>,
    }

    const NOW: u64 = 1_760_000_000;
    const H1: &str = "aaaaaaaaaaaa";
    const H2: &str = "bbbbbbbbbbbb";

    fn fixture() -> Fixture {
        Fixture {
            me: Owner { host: "ab12".into(), pid: 100, start: NOW - 5 },
            templates: [H1.to_string()].into(),
            current: [("audit".to_string(), H1.to_string())].into(),
        }
    }

    fn decide(f: &Fixture, name: &str, sessions: i64, built_at: Option<u64>, alive: &[u32]) -> Option<Reap> {
        let alive = alive.to_vec();
        let pid_alive = move |p: u32| alive.contains(&p);
        let ctx =
            ReapContext { me: &f.me, now: NOW, templates: &f.templates, current: &f.current, pid_alive: &pid_alive };
        reap_decision(&Seen { name: name.into(), sessions, built_at }, &ctx)
    }

    #[test]
    fn reaps_test_databases_of_dead_processes_on_this_host_once_old_enough() {
        let f = fixture();
        let dead_old = owned_name('t', H1, &Owner { host: "ab12".into(), pid: 7, start: NOW - 3600 }, 0);
        assert_eq!(decide(&f, &dead_old, 0, None, &[]), Some(Reap::DeadOwner));
        assert_eq!(decide(&f, &dead_old, 1, None, &[]), None, "a session is connected");
        assert_eq!(decide(&f, &dead_old, 0, None, &[7]), None, "the process is alive");
        let dead_young = owned_name('b', H1, &Owner { host: "ab12".into(), pid: 7, start: NOW - 10 }, 0);
        assert_eq!(decide(&f, &dead_young, 0, None, &[]), None, "too young to be sure");
        let mine = owned_name('t', H1, &f.me, 3);
        assert_eq!(decide(&f, &mine, 0, None, &[]), None, "this process's own");
    }

    #[test]
    fn foreign_hosts_are_reaped_only_after_a_day() {
        let f = fixture();
        let hour = owned_name('t', H1, &Owner { host: "ffff".into(), pid: 7, start: NOW - 3600 }, 0);
        assert_eq!(decide(&f, &hour, 0, None, &[]), None);
        let days = owned_name('t', H1, &Owner { host: "ffff".into(), pid: 7, start: NOW - 2 * 86400 }, 0);
        assert_eq!(decide(&f, &days, 0, None, &[]), Some(Reap::ForeignAndOld));
    }

    #[test]
    fn ready_clones_live_as_long_as_their_template() {
        let f = fixture();
        let dead = Owner { host: "ab12".into(), pid: 7, start: NOW - 3600 };
        assert_eq!(
            decide(&f, &owned_name('r', H1, &dead, 0), 0, None, &[]),
            None,
            "a pool is shared: its maker may be gone"
        );
        assert_eq!(decide(&f, &owned_name('r', H2, &dead, 0), 0, None, &[]), Some(Reap::OrphanReady));
    }

    #[test]
    fn superseded_templates_of_the_same_sets_are_reaped() {
        let f = fixture();
        let old = template_name(H2, "audit");
        assert_eq!(decide(&f, &old, 0, Some(NOW - 3600), &[]), Some(Reap::Superseded));
        assert_eq!(decide(&f, &old, 0, Some(NOW - 30), &[]), None, "just built by another run");
        assert_eq!(decide(&f, &template_name(H1, "audit"), 0, None, &[]), None, "the current one");
        assert_eq!(decide(&f, &template_name(H2, "workflow"), 0, None, &[]), None, "sets this process does not use");
        assert_eq!(decide(&f, "e2e", 0, None, &[]), None, "not ours");
    }

    #[test]
    fn database_urls_swap_their_database() {
        let s = |u: &str| swap_database(u, "postgres").unwrap();
        assert_eq!(s("postgres://u:p@127.0.0.1:5432/e2e"), "postgres://u:p@127.0.0.1:5432/postgres");
        assert_eq!(s("postgresql://u:p/w@h/e2e?sslmode=disable"), "postgresql://u:p/w@h/postgres?sslmode=disable");
        assert_eq!(s("postgres://h:5432"), "postgres://h:5432/postgres");
        assert_eq!(s("postgres://h/db?dbname=x&application_name=a"), "postgres://h/postgres?application_name=a");
        assert_eq!(s("host=h user=u dbname=e2e"), "host=h user=u dbname=postgres");
        assert!(swap_database("mysql://h/db", "x").unwrap_err().to_string().contains("postgres://"));
    }

    #[test]
    fn pool_size_comes_from_the_environment() {
        assert_eq!(pool_size_from(None).unwrap(), DEFAULT_POOL);
        assert_eq!(pool_size_from(Some("0")).unwrap(), 0);
        assert!(pool_size_from(Some("many")).unwrap_err().to_string().contains(POOL_ENV));
    }
}
