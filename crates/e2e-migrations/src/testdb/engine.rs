//! The engine: a private runtime, per-server state, templates, the pool and reaping (I/O).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::fingerprint::{hex, Fingerprint};
use super::names::{owned_name, parse_name, reap_decision, DbName, Owner, Reap, ReapContext, Seen};
use super::{DEFAULT_POOL, MAINTENANCE_DB, POOL_ENV, PREFIX, TEMPLATE_LOCK_TIMEOUT};
use crate::error::{report, DbContext, Error, Result};
use crate::ident::{literal, quote};
use crate::{apply, db, Options, Project};

pub(super) struct Engine {
    pub(super) rt: tokio::runtime::Runtime,
    servers: Mutex<HashMap<String, Arc<Server>>>,
}

pub(super) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("e2e-testdb")
            .enable_all()
            .build()
            .expect("the test database runtime");
        Engine { rt, servers: Mutex::new(HashMap::new()) }
    })
}

/// This process, as the names of its databases carry it (the start is when it first asked).
pub(super) fn this_process() -> &'static Owner {
    static ME: OnceLock<Owner> = OnceLock::new();
    ME.get_or_init(|| Owner { host: host_tag(), pid: std::process::id(), start: unix_now() })
}

/// The next number for a name of this process.
pub(super) fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// 8 hex digits (32 bits) of the host name and pid namespace: pids are comparable only within
/// one, and two hosts sharing a server are told apart but for a 1 in 4 billion chance.
fn host_tag() -> String {
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    hex(&Sha256::digest(format!("{}|{}", host.trim(), pid_namespace())))[..8].to_string()
}

/// The pid namespace this process is in (containers on one host may share its name, not pids).
#[cfg(target_os = "linux")]
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default()
}

/// Elsewhere (macOS) there are no pid namespaces: the host name alone tells hosts apart.
#[cfg(not(target_os = "linux"))]
fn pid_namespace() -> String {
    String::new()
}

/// Whether the owner `pid` of a database name is alive on this host.
fn pid_alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(crate::process::pid_alive)
}

/// In-flight background refills, so that `Drop` can let them finish before the process exits.
#[derive(Default)]
pub(super) struct InFlight {
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
    pub(super) fn wait(&self, timeout: Duration) {
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

/// One server test databases are made on, and what this process knows of it.
pub(super) struct Server {
    /// Any database URL on the server; the others are this URL naming another database.
    pub(super) url: String,
    maintenance_url: String,
    admin: tokio::sync::Mutex<Option<Arc<Client>>>,
    templates: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<String>>>>,
    current: Mutex<HashMap<String, String>>,
    refilling: Mutex<BTreeSet<String>>,
    pub(super) in_flight: InFlight,
    reaped: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("maintenance_url", &db::redact(&self.maintenance_url)).finish_non_exhaustive()
    }
}

impl Server {
    /// The server of `url` (one per server URL and process).
    pub(super) fn get(url: &str) -> Result<Arc<Server>> {
        let e = engine();
        let mut servers = e.servers.lock().expect("lock");
        if let Some(s) = servers.get(url) {
            return Ok(s.clone());
        }
        let s = Arc::new(Server {
            url: url.to_string(),
            maintenance_url: db::with_database(url, MAINTENANCE_DB)?,
            admin: tokio::sync::Mutex::new(None),
            templates: tokio::sync::Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            refilling: Mutex::new(BTreeSet::new()),
            in_flight: InFlight::default(),
            reaped: tokio::sync::OnceCell::new(),
        });
        servers.insert(url.to_string(), s.clone());
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
                    tracing::debug!("maintenance connection broke ({}); reconnecting", report(&e));
                    attempt += 1;
                }
                r => return r.db(&context),
            }
        }
    }

    /// The template for `fp`, built if missing (once per process, under the fingerprint's lock
    /// across processes).
    pub(super) async fn template(&self, fp: &Fingerprint, project: &Project, now: DateTime<Utc>) -> Result<String> {
        let hash = fp.short();
        self.current.lock().expect("lock").insert(fp.label(), hash.clone());
        let cell = self.templates.lock().await.entry(hash.clone()).or_default().clone();
        let name = cell.get_or_try_init(|| self.ensure_template(fp, project, now)).await?.clone();
        Ok(name)
    }

    pub(super) async fn forget_template(&self, hash: &str) {
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
        let result: Result<String> = async {
            if self.template_exists(&name).await? {
                return Ok(name.clone());
            }
            self.build_template(fp, project, now, &name).await?;
            Ok::<_, Error>(name.clone())
        }
        .await;
        let unlocked = db::unlock_key(&lock, key, &format!("the lock on {what}")).await;
        let name = result?;
        unlocked?;
        Ok(name)
    }

    async fn build_template(&self, fp: &Fingerprint, project: &Project, now: DateTime<Utc>, name: &str) -> Result<()> {
        let build = owned_name('b', &fp.short(), this_process(), next_seq());
        let started = Instant::now();
        self.admin_execute(&format!("CREATE DATABASE {}", quote(&build)), || {
            format!("creating {build} to build the template {name}")
        })
        .await?;
        let result = async {
            let mut client = db::connect(&db::with_database(&self.url, &build)?).await?;
            apply::migrate_and_roll(&mut client, project, &fp.sets, &Options::default(), now).await?;
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
                tracing::warn!("could not drop the failed build {build}: {} (a later run reaps it)", report(&e));
            }
            return Err(Error::Template { sets: fp.sets.join(","), source: Box::new(err) });
        }
        tracing::info!(
            "built the test template {name} (sets {}) in {:.0} ms",
            fp.sets.join(","),
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// Claims a ready clone of `hash` by renaming it to `to`; false when the pool is empty.
    pub(super) async fn claim(&self, hash: &str, to: &str) -> Result<bool> {
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

    pub(super) async fn clone_template(&self, template: &str, to: &str) -> Result<()> {
        self.admin_execute(&format!("CREATE DATABASE {} TEMPLATE {}", quote(to), quote(template)), || {
            format!("creating {to} from the template {template}")
        })
        .await
    }

    /// Tops the pool of `hash` up to `size` ready clones, in the background.
    pub(super) fn refill(self: &Arc<Self>, template: String, hash: String, size: usize) {
        if size == 0 || !self.refilling.lock().expect("lock").insert(hash.clone()) {
            return;
        }
        self.in_flight.start();
        let server = self.clone();
        engine().rt.spawn(async move {
            if let Err(e) = server.refill_now(&template, &hash, size).await {
                tracing::warn!("could not refill the pool of {template}: {}", report(&e));
            }
            server.refilling.lock().expect("lock").remove(&hash);
            server.in_flight.finish();
        });
    }

    pub(super) async fn refill_now(&self, template: &str, hash: &str, size: usize) -> Result<()> {
        let pattern = format!("{PREFIX}r\\_{hash}\\_%");
        let have =
            self.admin_query("SELECT datname::text FROM pg_database WHERE datname LIKE $1", &pattern).await?.len();
        if have >= size {
            return Ok(());
        }
        // Its own session, so that claims and drops do not queue behind CREATE DATABASE.
        let client = db::connect(&self.maintenance_url).await?;
        for _ in have..size {
            let name = owned_name('r', hash, this_process(), next_seq());
            client
                .batch_execute(&format!("CREATE DATABASE {} TEMPLATE {}", quote(&name), quote(template)))
                .await
                .db(|| format!("creating the ready clone {name} of {template}"))?;
        }
        Ok(())
    }

    pub(super) async fn drop_database(&self, name: &str) -> Result<()> {
        self.admin_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(name)), || {
            format!("dropping the test database {name}")
        })
        .await
    }

    /// Drops what dead processes left (once per process and server, in the background).
    pub(super) fn reap_in_background(self: &Arc<Self>) {
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
                        Err(e) => tracing::warn!("could not reap leftover test databases: {}", report(&e)),
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
            me: this_process(),
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
                Err(e) => tracing::debug!("not reaping {}: {}", s.name, report(&e)),
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
pub(super) fn sqlstate(e: &Error) -> Option<&SqlState> {
    match e {
        Error::Db { source, .. } => source.code(),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `fut` on the module's runtime and awaits it from any runtime. A panic in it is the
/// caller's panic (the runtime lives as long as the process, so the task is never cancelled).
pub(super) async fn on_engine<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match engine().rt.spawn(fut).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the test database task was cancelled: {e}"),
    }
}

/// The pool size from [`POOL_ENV`] (pure over the value).
pub(super) fn pool_size_from(value: Option<&str>) -> Result<usize> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_POOL),
        Some(v) => v.parse().map_err(|_| Error::InvalidEnv {
            var: POOL_ENV,
            value: v.to_string(),
            expected: "expected a number of ready databases (0 turns the pool off)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_comes_from_the_environment() {
        assert_eq!(pool_size_from(None).unwrap(), DEFAULT_POOL);
        assert_eq!(pool_size_from(Some("0")).unwrap(), 0);
        let e = pool_size_from(Some("many")).unwrap_err().to_string();
        assert_eq!(e, "E2E_TEST_DB_POOL=\"many\": expected a number of ready databases (0 turns the pool off)");
    }
}
