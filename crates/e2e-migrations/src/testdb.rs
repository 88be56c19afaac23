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
//!   it under a temporary name with [`crate::apply::apply_sets`], marks it `IS_TEMPLATE`,
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
//! The server: `DATABASE_URL` when set, else the connection `cargo xtask e2e-setup` left (see
//! [`crate::state`]; for `--backend kube`, with the `kube` feature, through a local port-forward
//! listener), else the local default server (started on demand, shared by all test binaries).
//! The role needs `CREATEDB`.

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
use crate::state::{BackendKind, SetupState};
use crate::{apply, db, local, state, Options, Project};

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

// ---------------------------------------------------------------------------------------------
// The fingerprint (pure)
// ---------------------------------------------------------------------------------------------

/// One selected migration, as it enters the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FingerprintMigration {
    /// The goose version.
    pub version: i64,
    /// The file name.
    pub name: String,
    /// The checksum of its Up section.
    pub checksum: String,
    /// SHA-256 of the Up statements as they run (after `ENVSUB`), and the transaction mode.
    pub statements: String,
}

/// Everything a template's content depends on; equal fingerprints give equal databases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// Layout version of templates.
    pub format: u32,
    /// The requested sets, sorted and deduplicated (`all` when none).
    pub sets: Vec<String>,
    /// The selected migrations in version order.
    pub migrations: Vec<FingerprintMigration>,
    /// The partition specs of the sets.
    pub partitions: Vec<PartitionSpec>,
    /// The UTC day the partitions are rolled for.
    pub date: NaiveDate,
}

impl Fingerprint {
    /// The fingerprint of `sets` of `project` as of `now` (pure; validates the sets).
    pub fn new(project: &Project, sets: &[String], now: DateTime<Utc>) -> Result<Fingerprint> {
        let mut sorted: Vec<String> = sets.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        if sorted.is_empty() {
            sorted.push(crate::sets::ALL.to_string());
        }
        let selection = project.select(&sorted)?;
        let migrations = selection
            .migrations
            .iter()
            .map(|m| {
                let mut h = Sha256::new();
                h.update(if m.sql.no_transaction { b"notx\n" as &[u8] } else { b"tx\n" });
                for s in &m.sql.up {
                    h.update(s.sql.as_bytes());
                    h.update(b"\n;\n");
                }
                FingerprintMigration {
                    version: m.version,
                    name: m.name.clone(),
                    checksum: m.checksum.clone(),
                    statements: hex(&h.finalize()),
                }
            })
            .collect();
        Ok(Fingerprint {
            format: FORMAT,
            sets: sorted,
            migrations,
            partitions: selection.partitions,
            date: now.date_naive(),
        })
    }

    /// Hex SHA-256 of the canonical JSON form.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(serde_json::to_vec(self).expect("serialisable")))
    }

    /// The first 12 hex digits of [`Fingerprint::hash`], used in database names.
    pub fn short(&self) -> String {
        self.hash()[..HASH_LEN].to_string()
    }

    /// The advisory lock key for building this template (not goose's [`db::LOCK_ID`], so that
    /// building a template never waits for a migration elsewhere on the server).
    pub fn lock_key(&self) -> i64 {
        let h = Sha256::digest(format!("e2e-migrations template {}", self.hash()));
        i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
    }

    /// The sets as they appear in names: `audit_workflow`, only `[a-z0-9_]`, at most 24 bytes.
    pub fn label(&self) -> String {
        sets_label(&self.sets)
    }

    /// The template database's name.
    pub fn template_name(&self) -> String {
        template_name(&self.short(), &self.label())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const HASH_LEN: usize = 12;
const LABEL_LEN: usize = 24;

/// The sets as they appear in template names (pure): lower-case `[a-z0-9_]`, joined by `_`,
/// cut to 24 bytes.
pub fn sets_label(sets: &[String]) -> String {
    let joined = sets.join("_").to_ascii_lowercase();
    let mut s: String = joined.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    s.truncate(LABEL_LEN);
    s
}

/// `e2e_tpl_<hash>_<label>`.
pub fn template_name(short_hash: &str, label: &str) -> String {
    format!("{PREFIX}tpl_{short_hash}_{label}")
}

// ---------------------------------------------------------------------------------------------
// Names and reaping (pure)
// ---------------------------------------------------------------------------------------------

/// The process that made a database: host tag, pid, process start (unix seconds), sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// 4 hex digits from the host name and pid namespace.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When the process first used this module (unix seconds).
    pub start: u64,
}

/// What a database made by this module is, read back from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbName {
    /// A finished template: `e2e_tpl_<hash>_<label>`.
    Template {
        /// The fingerprint's short hash.
        hash: String,
        /// The sets label.
        label: String,
    },
    /// A template being built: `e2e_b_<hash>_<host>_<pid>_<start>_<n>`.
    Build {
        /// The fingerprint's short hash.
        hash: String,
        /// Who builds it.
        owner: Owner,
    },
    /// A ready clone in the pool: `e2e_r_<hash>_<host>_<pid>_<start>_<n>`.
    Ready {
        /// The template's short hash.
        hash: String,
        /// Who made it.
        owner: Owner,
    },
    /// A test's database: `e2e_t_<hash>_<host>_<pid>_<start>_<n>`.
    Test {
        /// The template's short hash.
        hash: String,
        /// The test process.
        owner: Owner,
    },
}

/// A per-process database name: `e2e_<kind>_<hash>_<host>_<pid>_<start base 36>_<n base 36>`.
pub fn owned_name(kind: char, short_hash: &str, owner: &Owner, n: u64) -> String {
    format!("{PREFIX}{kind}_{short_hash}_{}_{}_{}_{}", owner.host, owner.pid, base36(owner.start), base36(n))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Reads a name made by this module back (pure); `None` for anything else.
pub fn parse_name(name: &str) -> Option<DbName> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(t) = rest.strip_prefix("tpl_") {
        let (hash, label) = t.split_once('_')?;
        return is_hash(hash).then(|| DbName::Template { hash: hash.into(), label: label.into() });
    }
    let parts: Vec<&str> = rest.split('_').collect();
    let [kind, hash, host, pid, start, n] = parts.as_slice() else {
        return None;
    };
    if !is_hash(hash) || host.len() != 4 || !host.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let owner = Owner { host: host.to_string(), pid: pid.parse().ok()?, start: u64::from_str_radix(start, 36).ok()? };
    u64::from_str_radix(n, 36).ok()?;
    let hash = hash.to_string();
    match *kind {
        "b" => Some(DbName::Build { hash, owner }),
        "r" => Some(DbName::Ready { hash, owner }),
        "t" => Some(DbName::Test { hash, owner }),
        _ => None,
    }
}

fn is_hash(s: &str) -> bool {
    s.len() == HASH_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the reaper knows when it looks at the server.
pub struct ReapContext<'a> {
    /// This process.
    pub me: &'a Owner,
    /// Now, unix seconds.
    pub now: u64,
    /// Short hashes of the finished templates on the server.
    pub templates: &'a BTreeSet<String>,
    /// The fingerprints this process uses, by label (their templates are never reaped).
    pub current: &'a HashMap<String, String>,
    /// Whether a pid on this host is alive.
    pub pid_alive: &'a (dyn Fn(u32) -> bool + Sync),
}

/// One database as the reaper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its name.
    pub name: String,
    /// Sessions connected to it now.
    pub sessions: i64,
    /// For templates: when it was built (unix seconds), from its comment.
    pub built_at: Option<u64>,
}

/// Why the reaper drops a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reap {
    /// A test or build database whose process is gone.
    DeadOwner,
    /// A test or build database from another host, older than [`FOREIGN_MIN_AGE`].
    ForeignAndOld,
    /// A ready clone whose template is gone (a changed migration, another day).
    OrphanReady,
    /// A template of the same sets with another fingerprint, older than [`OLD_TEMPLATE_MIN_AGE`].
    Superseded,
}

/// Decides whether to drop `db` (pure). Never drops a database with sessions, one of this
/// process, one not made by this module, or a template this process uses.
pub fn reap_decision(db: &Seen, ctx: &ReapContext<'_>) -> Option<Reap> {
    if db.sessions > 0 {
        return None;
    }
    let age = |start: u64| Duration::from_secs(ctx.now.saturating_sub(start));
    match parse_name(&db.name)? {
        DbName::Template { hash, label } => {
            let current = ctx.current.get(&label)?; // only sets this process uses
            let old_enough = db.built_at.map(|b| age(b) >= OLD_TEMPLATE_MIN_AGE).unwrap_or(true);
            (*current != hash && old_enough).then_some(Reap::Superseded)
        }
        DbName::Ready { hash, .. } => (!ctx.templates.contains(&hash)).then_some(Reap::OrphanReady),
        DbName::Build { owner, .. } | DbName::Test { owner, .. } => {
            if owner == *ctx.me {
                None
            } else if owner.host == ctx.me.host {
                (!(ctx.pid_alive)(owner.pid) && age(owner.start) >= DEAD_OWNER_MIN_AGE).then_some(Reap::DeadOwner)
            } else {
                (age(owner.start) >= FOREIGN_MIN_AGE).then_some(Reap::ForeignAndOld)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Where the server is (pure choice, thin I/O)
// ---------------------------------------------------------------------------------------------

/// Replaces the database of a `postgres://` URL (or a `key=value` connection string) (pure).
pub fn swap_database(url: &str, database: &str) -> Result<String> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(Error::Other(format!(
                "database URL {}: expected postgres:// or postgresql://",
                db::redact(url)
            )));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        // The authority ends at the first '/' after the last '@' (passwords may hold '/').
        let auth_start = before_query.rfind('@').map(|i| i + 1).unwrap_or(0);
        let authority_end = before_query[auth_start..].find('/').map(|i| i + auth_start).unwrap_or(before_query.len());
        let mut out = format!("{scheme}://{}/{database}", &before_query[..authority_end]);
        if let Some(q) = query {
            let kept: Vec<&str> = q.split('&').filter(|kv| !kv.starts_with("dbname=")).collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        return Ok(out);
    }
    if url.contains('=') {
        let mut parts: Vec<String> =
            url.split_whitespace().filter(|kv| !kv.starts_with("dbname=")).map(str::to_string).collect();
        parts.push(format!("dbname={database}"));
        return Ok(parts.join(" "));
    }
    Err(Error::Other(format!("database URL {:?}: expected postgres://... or key=value pairs", db::redact(url))))
}

/// Where the test databases go, as chosen from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetChoice {
    /// A server given by URL (from `DATABASE_URL` or the state e2e-setup left).
    Url {
        /// Any database URL on that server.
        url: String,
        /// Where it came from, for messages.
        from: String,
    },
    /// The local default server (started on demand).
    Local,
    /// A namespace of a cluster (`e2e-setup --backend kube`), reached through a local
    /// port-forward listener.
    #[cfg(feature = "kube")]
    Kube(crate::kube::Target),
}

/// Picks the server (pure): `DATABASE_URL`, else what e2e-setup left, else the local default.
/// A kube setup without a host URL is an error that says what to do.
pub fn choose_target(env_url: Option<String>, setup: Option<&SetupState>) -> Result<TargetChoice> {
    if let Some(url) = env_url.filter(|u| !u.trim().is_empty()) {
        return Ok(TargetChoice::Url { url, from: "DATABASE_URL".into() });
    }
    match setup {
        Some(s) => match &s.database_url {
            Some(url) => Ok(TargetChoice::Url { url: url.clone(), from: format!("the {:?} setup in {}", s.backend, state::state_file(&crate::state_root()).display()) }),
            #[cfg(feature = "kube")]
            None if s.backend == BackendKind::Kube && s.namespace.is_some() => Ok(TargetChoice::Kube(crate::kube::Target {
                kubeconfig: s.kubeconfig.clone(),
                context: s.context.clone(),
                namespace: s.namespace.clone().expect("checked"),
            })),
            None if s.backend == BackendKind::Kube || s.backend == BackendKind::Kind => Err(Error::Other(format!(
                "e2e-setup used the {:?} backend, which leaves no URL reachable from this host; test databases need one: \
                 port-forward PostgreSQL (e.g. kubectl -n {} port-forward svc/postgres 5432) and set DATABASE_URL",
                s.backend,
                s.namespace.as_deref().unwrap_or("<namespace>")
            ))),
            None => Err(Error::Other(format!("the setup state in {} has no database URL; rerun cargo xtask e2e-setup", state::state_file(&crate::state_root()).display()))),
        },
        None => Ok(TargetChoice::Local),
    }
}

/// A server that test databases are made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Any database URL on the server; others are derived by swapping the database name.
    pub url: String,
}

impl Target {
    /// A server by URL (the role needs `CREATEDB`).
    pub fn url(url: impl Into<String>) -> Target {
        Target { url: url.into() }
    }

    /// `DATABASE_URL`, else the state `cargo xtask e2e-setup` left, else the local default
    /// server (started if needed, shared by every test binary).
    pub fn from_env() -> Result<Target> {
        let setup = state::read(&crate::state_root())?;
        match choose_target(std::env::var("DATABASE_URL").ok(), setup.as_ref())? {
            TargetChoice::Url { url, .. } => Ok(Target { url }),
            TargetChoice::Local => {
                let (server, _) = local::ensure_running(&local::default_state_dir())?;
                Ok(Target { url: server.url() })
            }
            #[cfg(feature = "kube")]
            TargetChoice::Kube(kube) => Ok(Target { url: kube_forward_url(kube)? }),
        }
    }

    /// The URL of `database` on this server.
    pub fn url_for(&self, database: &str) -> Result<String> {
        swap_database(&self.url, database)
    }
}

/// The URL of a local port-forward listener to the cluster's PostgreSQL, started once per
/// namespace on the engine's runtime and kept for the life of the process.
#[cfg(feature = "kube")]
fn kube_forward_url(target: crate::kube::Target) -> Result<String> {
    static FORWARDS: OnceLock<Mutex<HashMap<String, crate::kube::LocalForward>>> = OnceLock::new();
    let key = format!("{:?}|{:?}|{}", target.kubeconfig, target.context, target.namespace);
    let mut forwards = FORWARDS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = forwards.get(&key) {
        return Ok(f.url.clone());
    }
    // A thread of its own: blocking on the engine from inside a caller's runtime would panic.
    let handle = engine().rt.handle().clone();
    let forward = std::thread::spawn(move || handle.block_on(target.local_forward()))
        .join()
        .map_err(|_| Error::Other("starting the port-forward panicked".to_string()))??;
    let url = forward.url.clone();
    forwards.insert(key, forward);
    Ok(url)
}

// ---------------------------------------------------------------------------------------------
// The engine: a private runtime and per-server state
// ---------------------------------------------------------------------------------------------

struct Engine {
    rt: tokio::runtime::Runtime,
    me: Owner,
    seq: AtomicU64,
    servers: Mutex<HashMap<String, Arc<Server>>>,
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("e2e-testdb")
            .enable_all()
            .build()
            .expect("the test database runtime");
        let start = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Engine {
            rt,
            me: Owner { host: host_tag(), pid: std::process::id(), start },
            seq: AtomicU64::new(0),
            servers: Mutex::new(HashMap::new()),
        }
    })
}

/// 4 hex digits of the host name and pid namespace: pids are comparable only within one.
fn host_tag() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    hex(&Sha256::digest(format!("{}|{ns}", host.trim())))[..4].to_string()
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// In-flight background refills, so that `Drop` can let them finish before the process exits.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    done: Condvar,
}

impl InFlight {
    fn start(&self) {
        *self.count.lock().expect("lock") += 1;
    }
    fn finish(&self) {
        let mut c = self.count.lock().expect("lock");
        *c -= 1;
        self.done.notify_all();
    }
    fn wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut c = self.count.lock().expect("lock");
        while *c > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            c = self.done.wait_timeout(c, left).expect("lock").0;
        }
    }
}

struct Server {
    target: Target,
    maintenance_url: String,
    admin: tokio::sync::Mutex<Option<Arc<Client>>>,
    templates: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<String>>>>,
    current: Mutex<HashMap<String, String>>,
    refilling: Mutex<BTreeSet<String>>,
    in_flight: InFlight,
    reaped: tokio::sync::OnceCell<()>,
}

impl Server {
    fn get(target: &Target) -> Result<Arc<Server>> {
        let e = engine();
        let mut servers = e.servers.lock().expect("lock");
        if let Some(s) = servers.get(&target.url) {
            return Ok(s.clone());
        }
        let s = Arc::new(Server {
            target: target.clone(),
            maintenance_url: target.url_for(MAINTENANCE_DB)?,
            admin: tokio::sync::Mutex::new(None),
            templates: tokio::sync::Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            refilling: Mutex::new(BTreeSet::new()),
            in_flight: InFlight::default(),
            reaped: tokio::sync::OnceCell::new(),
        });
        servers.insert(target.url.clone(), s.clone());
        Ok(s)
    }

    /// Runs statements on the cached maintenance connection (reconnecting once if it broke).
    async fn admin_execute(&self, sql: &str, context: impl Fn() -> String) -> Result<()> {
        self.with_admin(
            |c| {
                let sql = sql.to_string();
                async move { c.batch_execute(&sql).await }
            },
            context,
        )
        .await
    }

    async fn admin_query(&self, sql: &str, param: &str) -> Result<Vec<tokio_postgres::Row>> {
        let param = param.to_string();
        self.with_admin(
            |c| {
                let (sql, param) = (sql.to_string(), param.clone());
                async move { c.query(&sql, &[&param]).await }
            },
            || format!("querying the catalog of {}", db::redact(&self.maintenance_url)),
        )
        .await
    }

    async fn with_admin<T, F, Fut>(&self, f: F, context: impl Fn() -> String) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        // A Client is a cheap handle onto the connection task: clone it out of the lock so that
        // statements from several tasks pipeline instead of queueing on the mutex.
        let mut attempt = 0;
        loop {
            let client = {
                let mut guard = self.admin.lock().await;
                match guard.as_ref() {
                    Some(c) if !c.is_closed() => c.clone(),
                    _ => {
                        let c = Arc::new(db::connect(&self.maintenance_url).await?);
                        *guard = Some(c.clone());
                        c
                    }
                }
            };
            match f(client.clone()).await {
                Err(e) if attempt == 0 && client.is_closed() => {
                    tracing::debug!("maintenance connection broke ({e}); reconnecting");
                    attempt += 1;
                }
                r => return r.db(&context),
            }
        }
    }

    /// The template for `fp`, built if missing (once per process, under the fingerprint's lock
    /// across processes).
    async fn template(&self, fp: &Fingerprint, project: &Project, now: DateTime<Utc>) -> Result<String> {
        let hash = fp.short();
        self.current.lock().expect("lock").insert(fp.label(), hash.clone());
        let cell = self.templates.lock().await.entry(hash.clone()).or_default().clone();
        let name = cell.get_or_try_init(|| self.ensure_template(fp, project, now)).await?.clone();
        Ok(name)
    }

    async fn forget_template(&self, hash: &str) {
        self.templates.lock().await.remove(hash);
    }

    async fn template_exists(&self, name: &str) -> Result<bool> {
        Ok(!self.admin_query("SELECT 1 FROM pg_database WHERE datname = $1", name).await?.is_empty())
    }

    async fn ensure_template(&self, fp: &Fingerprint, project: &Project, now: DateTime<Utc>) -> Result<String> {
        let name = fp.template_name();
        if self.template_exists(&name).await? {
            return Ok(name);
        }
        // A dedicated session holds the lock while the template is built.
        let lock = db::connect(&self.maintenance_url).await?;
        let key = fp.lock_key();
        let what = format!("the template {name} (sets {})", fp.sets.join(","));
        db::lock_key(&lock, key, TEMPLATE_LOCK_TIMEOUT, &format!("the lock on building {what}")).await?;
        let result = async {
            if self.template_exists(&name).await? {
                return Ok(name.clone());
            }
            self.build_template(fp, project, now, &name).await?;
            Ok(name.clone())
        }
        .await;
        let unlocked = lock
            .query_one("SELECT pg_advisory_unlock($1)", &[&key])
            .await
            .db(|| format!("releasing the lock on {what}"));
        let name = result?;
        unlocked?;
        Ok(name)
    }

    async fn build_template(&self, fp: &Fingerprint, project: &Project, now: DateTime<Utc>, name: &str) -> Result<()> {
        let e = engine();
        let build = owned_name('b', &fp.short(), &e.me, e.seq.fetch_add(1, Ordering::Relaxed));
        let started = Instant::now();
        self.admin_execute(&format!("CREATE DATABASE {}", quote(&build)), || {
            format!("creating {build} to build the template {name}")
        })
        .await?;
        let result = async {
            let mut client = db::connect(&self.target.url_for(&build)?).await?;
            apply::apply_sets(&mut client, project, &fp.sets, &Options::default(), now).await?;
            drop(client);
            let comment = serde_json::json!({
                "made_by": "e2e-migrations testdb",
                "built_at": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                "fingerprint": fp,
            });
            self.admin_execute(
                &format!(
                    "COMMENT ON DATABASE {b} IS {c}; ALTER DATABASE {b} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true",
                    b = quote(&build),
                    c = literal(&comment.to_string())
                ),
                || format!("marking {build} as a template"),
            )
            .await?;
            // Renaming waits (up to 5 s, server side) for the build session to go away.
            self.admin_execute(&format!("ALTER DATABASE {} RENAME TO {}", quote(&build), quote(name)), || {
                format!("renaming {build} to {name}")
            })
            .await
        }
        .await;
        if let Err(err) = result {
            let cleanup = format!(
                "ALTER DATABASE {b} WITH IS_TEMPLATE false; DROP DATABASE IF EXISTS {b} WITH (FORCE)",
                b = quote(&build)
            );
            if let Err(e) = self.admin_execute(&cleanup, || format!("dropping the failed build {build}")).await {
                tracing::warn!("could not drop the failed build {build}: {e} (a later run reaps it)");
            }
            return Err(match err {
                Error::Other(m) => Error::Other(format!("building the template for sets {}: {m}", fp.sets.join(","))),
                other => other,
            });
        }
        tracing::info!(
            "built the test template {name} (sets {}) in {:.0} ms",
            fp.sets.join(","),
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// Claims a ready clone of `hash` by renaming it to `to`; false when the pool is empty.
    async fn claim(&self, hash: &str, to: &str) -> Result<bool> {
        let pattern = format!("{PREFIX}r\\_{hash}\\_%");
        let rows = self
            .admin_query("SELECT datname::text FROM pg_database WHERE datname LIKE $1 ORDER BY datname", &pattern)
            .await?;
        for row in rows {
            let ready: String = row.get(0);
            let sql = format!("ALTER DATABASE {} RENAME TO {}", quote(&ready), quote(to));
            match self.admin_execute(&sql, || format!("claiming the ready clone {ready}")).await {
                Ok(()) => return Ok(true),
                // Another process took it first, or something is connected to it: try the next.
                Err(e) if matches!(sqlstate(&e), Some(c) if *c == SqlState::UNDEFINED_DATABASE || *c == SqlState::OBJECT_IN_USE) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    async fn clone_template(&self, template: &str, to: &str) -> Result<()> {
        self.admin_execute(&format!("CREATE DATABASE {} TEMPLATE {}", quote(to), quote(template)), || {
            format!("creating {to} from the template {template}")
        })
        .await
    }

    /// Tops the pool of `hash` up to `size` ready clones, in the background.
    fn refill(self: &Arc<Self>, template: String, hash: String, size: usize) {
        if size == 0 || !self.refilling.lock().expect("lock").insert(hash.clone()) {
            return;
        }
        self.in_flight.start();
        let server = self.clone();
        engine().rt.spawn(async move {
            if let Err(e) = server.refill_now(&template, &hash, size).await {
                tracing::warn!("could not refill the pool of {template}: {e}");
            }
            server.refilling.lock().expect("lock").remove(&hash);
            server.in_flight.finish();
        });
    }

    async fn refill_now(&self, template: &str, hash: &str, size: usize) -> Result<()> {
        let pattern = format!("{PREFIX}r\\_{hash}\\_%");
        let have =
            self.admin_query("SELECT datname::text FROM pg_database WHERE datname LIKE $1", &pattern).await?.len();
        if have >= size {
            return Ok(());
        }
        // Its own session, so that claims and drops do not queue behind CREATE DATABASE.
        let client = db::connect(&self.maintenance_url).await?;
        let e = engine();
        for _ in have..size {
            let name = owned_name('r', hash, &e.me, e.seq.fetch_add(1, Ordering::Relaxed));
            client
                .batch_execute(&format!("CREATE DATABASE {} TEMPLATE {}", quote(&name), quote(template)))
                .await
                .db(|| format!("creating the ready clone {name} of {template}"))?;
        }
        Ok(())
    }

    async fn drop_database(&self, name: &str) -> Result<()> {
        self.admin_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(name)), || {
            format!("dropping the test database {name}")
        })
        .await
    }

    /// Drops what dead processes left (once per process and server, in the background).
    fn reap_in_background(self: &Arc<Self>) {
        if self.reaped.initialized() {
            return;
        }
        let server = self.clone();
        engine().rt.spawn(async move {
            let _ = server
                .reaped
                .get_or_init(|| async {
                    match server.reap().await {
                        Ok(dropped) if !dropped.is_empty() => {
                            tracing::info!("reaped {} leftover test databases: {}", dropped.len(), dropped.join(", "))
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("could not reap leftover test databases: {e}"),
                    }
                })
                .await;
        });
    }

    async fn reap(&self) -> Result<Vec<String>> {
        let pattern = format!("{}%", PREFIX.replace('_', "\\_"));
        let rows = self
            .admin_query(
                "SELECT d.datname::text,
                        (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid),
                        shobj_description(d.oid, 'pg_database')
                   FROM pg_database d WHERE d.datname LIKE $1",
                &pattern,
            )
            .await?;
        let seen: Vec<Seen> = rows
            .iter()
            .map(|r| {
                let comment: Option<String> = r.get(2);
                let built_at =
                    comment.and_then(|c| serde_json::from_str::<TemplateComment>(&c).ok()).map(|c| c.built_at);
                Seen { name: r.get(0), sessions: r.get(1), built_at }
            })
            .collect();
        let templates: BTreeSet<String> = seen
            .iter()
            .filter_map(|s| match parse_name(&s.name) {
                Some(DbName::Template { hash, .. }) => Some(hash),
                _ => None,
            })
            .collect();
        let current = self.current.lock().expect("lock").clone();
        let ctx = ReapContext {
            me: &engine().me,
            now: unix_now(),
            templates: &templates,
            current: &current,
            pid_alive: &pid_alive,
        };
        let mut dropped = Vec::new();
        for s in &seen {
            let Some(why) = reap_decision(s, &ctx) else {
                continue;
            };
            let sql = match why {
                Reap::Superseded => {
                    format!("ALTER DATABASE {n} WITH IS_TEMPLATE false; DROP DATABASE {n}", n = quote(&s.name))
                }
                _ => format!("DROP DATABASE {}", quote(&s.name)),
            };
            match self.admin_execute(&sql, || format!("reaping {}", s.name)).await {
                Ok(()) => dropped.push(format!("{} ({why:?})", s.name)),
                // In use after all (a session arrived, a clone in progress): a later run tries again.
                Err(e) => tracing::debug!("not reaping {}: {e}", s.name),
            }
        }
        Ok(dropped)
    }
}

#[derive(Deserialize)]
struct TemplateComment {
    built_at: u64,
}

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(e: &Error) -> Option<&SqlState> {
    match e {
        Error::Db { source, .. } => source.code(),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `fut` on the module's runtime and awaits it from any runtime.
async fn on_engine<T: Send + 'static>(fut: impl std::future::Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    engine().rt.spawn(fut).await.map_err(|e| Error::Other(format!("the test database task failed: {e}")))?
}

/// The pool size from [`POOL_ENV`] (pure over the value).
pub fn pool_size_from(value: Option<&str>) -> Result<usize> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_POOL),
        Some(v) => v.parse().map_err(|_| {
            Error::Other(format!("{POOL_ENV}={v:?}: expected a number of ready databases (0 turns the pool off)"))
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The public API
// ---------------------------------------------------------------------------------------------

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
    /// A fresh database with `sets` of the project's migrations (`$E2E_MIGRATIONS_DIR` or the
    /// bundled folder) on the server from the environment (see [`Target::from_env`]).
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
            Ok(Err(e)) => eprintln!("warning: {e} (a later run reaps it)"),
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
            None => tokio::task::spawn_blocking(Target::from_env)
                .await
                .map_err(|e| Error::Other(format!("finding the database server: {e}")))??,
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

    fn setup(backend: BackendKind, url: Option<&str>) -> SetupState {
        SetupState {
            backend,
            database_url: url.map(str::to_string),
            kubeconfig: None,
            context: None,
            namespace: Some("e2e".into()),
            cluster: None,
            owned: true,
            sets: vec![],
        }
    }

    #[test]
    fn target_is_env_then_setup_then_local() {
        let from_setup = setup(BackendKind::Local, Some("postgres://s/e2e"));
        assert!(
            matches!(choose_target(Some("postgres://env/x".into()), Some(&from_setup)).unwrap(), TargetChoice::Url { url, .. } if url == "postgres://env/x")
        );
        assert!(
            matches!(choose_target(None, Some(&from_setup)).unwrap(), TargetChoice::Url { url, .. } if url == "postgres://s/e2e")
        );
        assert_eq!(choose_target(Some(" ".into()), None).unwrap(), TargetChoice::Local);
        let kube_setup = setup(BackendKind::Kube, None);
        #[cfg(feature = "kube")]
        assert!(
            matches!(choose_target(None, Some(&kube_setup)).unwrap(), TargetChoice::Kube(t) if t.namespace == "e2e"),
            "a kube setup is reached through a port-forward"
        );
        #[cfg(not(feature = "kube"))]
        {
            let e = choose_target(None, Some(&kube_setup)).unwrap_err().to_string();
            assert!(e.contains("Kube backend") && e.contains("DATABASE_URL") && e.contains("-n e2e"), "{e}");
        }
    }

    #[test]
    fn pool_size_comes_from_the_environment() {
        assert_eq!(pool_size_from(None).unwrap(), DEFAULT_POOL);
        assert_eq!(pool_size_from(Some("0")).unwrap(), 0);
        assert!(pool_size_from(Some("many")).unwrap_err().to_string().contains(POOL_ENV));
    }
}
