//! The embedded default: a throwaway PostgreSQL server started from the machine's own server
//! binaries, listening on 127.0.0.1 and a private unix socket, with test-speed settings.
//!
//! Its files are derived from the state folder, never read from the record: `local/server/`
//! holds `data/` (PGDATA), `sock/` (the private socket folder, 0700) and `server.log`. Running
//! as root, the server runs as an unprivileged system account (PostgreSQL refuses root); when
//! that account cannot reach the state folder (a private parent), or the folder is too deep for
//! a unix socket path (104 bytes on macOS), the files go to `/tmp/e2e-postgres-<hash of the
//! state folder>` instead, and the tool says so.
//!
//! Made so that a setup killed at any moment is completed or cleanly redone by the next:
//! - the record is written first, so that teardown finds a half-made server;
//! - `initdb` (or a copy from the [`super::cache`]) fills `data.init-<random>`, the whole
//!   configuration is written there, and only then is it renamed to `data`: a `data` folder is
//!   complete, anything else is a leftover to remove;
//! - no password goes to `initdb`: the private socket uses peer authentication, and the
//!   generated password is set over it, as a SCRAM verifier, after every start (so it is in no
//!   file but the 0600 record, and a cached copy carries none);
//! - the test database is created idempotently on every setup;
//! - a server is reused, stopped or its folder deleted only after it proved to be ours
//!   (a question asked on a live connection over the private socket).
//!
//! A server that answers nothing is judged by what is left of it (`postmaster::fate`): its
//! lock files are removed only once its postmaster and every process of it have exited (a
//! killed postmaster may linger as a zombie until its parent reaps it); one that lives on is
//! left alone, and the error names its pid.
//!
//! Portable to Linux and macOS: `postmaster.pid` (read as `pg_ctl` reads it), `kill(pid, 0)`
//! and the proof over the socket; `/proc` (Linux) or `ps` (elsewhere) only to tell a zombie.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::process::Command;

use super::cache::{self, CacheRequest};
use super::error::LifecycleError;
use super::fault::{fault_point, FaultStep};
use super::lock_state;
use super::postmaster::{self, PidFile, INSTANCE_SETTING};
use super::record::{self, BackendKind, DataPlace, LocalRecord, Phase, Record, Saved, SetupState, RECORD_FORMAT};
use super::workspace::Workspace;
use crate::db::Startup;
use crate::error::{DbContext, Error, Result};
use crate::ident::{literal, quote};
use crate::secret;

/// The superuser and database the local server is set up with.
pub const USER: &str = "e2e";
/// The database created for the tests.
pub const DATABASE: &str = "e2e";
/// Environment variable naming the folder of `initdb` and `postgres` (overrides the search).
pub const BINDIR_ENV: &str = "E2E_PG_BINDIR";

/// Unix socket paths must fit `sun_path` (104 bytes on macOS, 108 on Linux), with a margin.
const SOCKET_PATH_MAX: usize = 100;

/// Where the server's files are (derived from the canonical state folder and the place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The folder holding all of them.
    pub root: PathBuf,
    /// PGDATA.
    pub data: PathBuf,
    /// The private socket folder.
    pub sock: PathBuf,
    /// The server log.
    pub log: PathBuf,
}

impl Layout {
    /// The files for `place` of the canonical state folder `state_dir` (pure over the temp base).
    pub(crate) fn at(state_dir: &Path, place: DataPlace, temp_base: &Path) -> Layout {
        let root = match place {
            DataPlace::State => state_dir.join("local").join("server"),
            DataPlace::Temp => temp_root(temp_base, state_dir),
        };
        Layout { data: root.join("data"), sock: root.join("sock"), log: root.join("server.log"), root }
    }

    /// The files for `place` of the canonical state folder `state_dir` (`/tmp` for the fallback).
    pub fn new(state_dir: &Path, place: DataPlace) -> Layout {
        Layout::at(state_dir, place, &temp_base())
    }
}

/// `/tmp`, canonical (on macOS it is `/private/tmp`). Not `$TMPDIR`: on macOS that is too long
/// for a socket path, and when root runs setup it may be private to root.
fn temp_base() -> PathBuf {
    fs::canonicalize("/tmp").unwrap_or_else(|_| PathBuf::from("/tmp"))
}

/// The fallback folder of a state folder: `<base>/e2e-postgres-<12 hex digits>` (pure).
pub fn temp_root(base: &Path, state_dir: &Path) -> PathBuf {
    let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    base.join(format!("e2e-postgres-{tag}"))
}

/// Where the server's files go (pure): in the state folder, unless its socket path would be
/// too long or the server's account cannot reach it.
pub(crate) fn choose_place(state_dir: &Path, reachable: bool) -> DataPlace {
    let sock = Layout::at(state_dir, DataPlace::State, Path::new("/tmp")).sock.join(".s.PGSQL.65535");
    if sock.as_os_str().len() < SOCKET_PATH_MAX && reachable {
        DataPlace::State
    } else {
        DataPlace::Temp
    }
}

/// Candidate folders for the server binaries, in search order (pure over `list`, which names
/// the entries of a folder).
pub fn bindir_candidates(
    env_bindir: Option<&Path>,
    path_var: Option<&str>,
    pg_config_bindir: Option<&Path>,
    list: &dyn Fn(&Path) -> Vec<String>,
) -> Vec<PathBuf> {
    let mut c: Vec<PathBuf> = Vec::new();
    if let Some(d) = env_bindir {
        c.push(d.to_path_buf());
    }
    if let Some(p) = path_var {
        c.extend(std::env::split_paths(p));
    }
    if let Some(d) = pg_config_bindir {
        c.push(d.to_path_buf());
    }
    // Distribution folders (Debian, RHEL), Homebrew (Apple silicon, Intel), Postgres.app:
    // newest version first.
    for base in
        ["/usr/lib/postgresql", "/opt/homebrew/opt", "/usr/local/opt", "/Applications/Postgres.app/Contents/Versions"]
    {
        let base = Path::new(base);
        let mut versions: Vec<String> = list(base)
            .into_iter()
            .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()) || n.starts_with("postgresql") || n == "latest")
            .collect();
        versions.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        c.extend(versions.into_iter().map(|v| base.join(v).join("bin")));
    }
    for rhel in list(Path::new("/usr")).into_iter().filter(|n| n.starts_with("pgsql-")) {
        c.push(Path::new("/usr").join(rhel).join("bin"));
    }
    c.extend(["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin"].map(PathBuf::from));
    c
}

/// Sorts `latest` first, then by the number in the name.
fn version_key(name: &str) -> u32 {
    if name == "latest" {
        return u32::MAX;
    }
    name.chars().filter(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap_or(0)
}

fn list_dir(dir: &Path) -> Vec<String> {
    fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// The binaries the local backend runs.
const BINARIES: [&str; 2] = ["initdb", "postgres"];

/// Finds the folder holding `initdb` and `postgres`.
pub fn find_bindir() -> Result<PathBuf> {
    let env = std::env::var_os(BINDIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = &env {
        if let Some(missing) = BINARIES.iter().find(|b| !d.join(b).is_file()) {
            return Err(LifecycleError::BadBindir { dir: d.clone(), missing: missing.to_string() }.into());
        }
        return Ok(d.clone());
    }
    let path = std::env::var("PATH").ok();
    let pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = bindir_candidates(None, path.as_deref(), pg_config.as_deref(), &list_dir);
    for dir in &candidates {
        let initdb = dir.join("initdb");
        if initdb.is_file() {
            // `initdb` on PATH is often a symlink into the real bindir, where the others live.
            let real =
                fs::canonicalize(&initdb).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or(dir.clone());
            if BINARIES.iter().all(|b| real.join(b).is_file()) {
                return Ok(real);
            }
        }
    }
    let mut searched: Vec<PathBuf> = Vec::new();
    for c in candidates {
        if !searched.contains(&c) {
            searched.push(c);
        }
    }
    Err(LifecycleError::NoServerBinaries { searched }.into())
}

/// An unprivileged account to run the server as.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

fn service_account() -> Result<Option<Account>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
            return Ok(Some(Account { name: name.to_string(), uid: u.uid.as_raw(), gid: u.gid.as_raw() }));
        }
    }
    Err(LifecycleError::NoServiceAccount.into())
}

/// The name of the user running this process (the one the socket's peer authentication admits).
fn os_user() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
}

/// Whether `uid`/`gid` can traverse every ancestor of `path` (pure over the modes given).
pub fn can_traverse(ancestors: &[(u32, u32, u32)], uid: u32, gid: u32) -> bool {
    ancestors.iter().all(|&(mode, owner, group)| {
        if owner == uid {
            mode & 0o100 != 0
        } else if group == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    })
}

fn reachable_by(path: &Path, acct: &Account) -> bool {
    let mut modes = Vec::new();
    for a in path.ancestors() {
        match fs::metadata(a) {
            Ok(m) => modes.push((m.mode(), m.uid(), m.gid())),
            Err(_) => continue, // not created yet: we create it with access
        }
    }
    can_traverse(&modes, acct.uid, acct.gid)
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(|source| LifecycleError::NoPort { source })?;
    Ok(l.local_addr().map_err(|source| LifecycleError::NoPort { source })?.port())
}

fn port_free(port: u16) -> bool {
    port != 0 && TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// The settings file the server reads (`include`d from postgresql.conf): loopback only, a
/// private socket, and durability traded for speed where that is safe for a throwaway server.
///
/// The speed settings survive the server being killed (`kill -9`, OOM) at any moment; only a
/// crash of the machine itself can lose data (`fsync = off`, `full_page_writes = off`: the
/// operating system's page cache outlives the server's processes). Two settings that do not
/// survive a killed server are deliberately left at their defaults:
/// - `synchronous_commit = off` lets the server report a commit before its WAL is written, so
///   the last commits before a kill are lost (applied migrations and their tracking rows vanish);
/// - `wal_level = minimal` skips WAL for a table created in the same transaction and logs its
///   pages at commit instead, and for a sequence those pages claim 32 values as already logged:
///   after a kill, an identity column (goose's `goose_db_version.id`) hands out ids again that
///   its table already holds.
pub fn server_conf(port: u16, socket_dir: &Path) -> String {
    format!(
        "# written by e2e-migrations: a throwaway test server\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{sock}'\n\
         unix_socket_permissions = 0700\n\
         max_connections = 300\n\
         shared_buffers = 128MB\n\
         fsync = off\n\
         full_page_writes = off\n\
         max_wal_size = 4GB\n\
         checkpoint_timeout = 1h\n\
         password_encryption = 'scram-sha-256'\n\
         log_min_messages = warning\n\
         log_min_error_statement = panic\n",
        sock = socket_dir.display().to_string().replace('\'', "''"),
    )
}

/// The line that carries the instance id (pure).
pub(crate) fn instance_conf(instance_id: &str) -> String {
    format!("# this server's identity, checked on the live server before it is reused or stopped\n{INSTANCE_SETTING} = '{instance_id}'\n")
}

/// The instance id in an `e2e.conf` text (pure).
pub(crate) fn parse_instance_id(conf: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == INSTANCE_SETTING).then(|| v.trim().trim_matches('\'').to_string()).filter(|v| !v.is_empty())
    })
}

/// `pg_hba.conf` (pure): the superuser over the private socket by peer authentication (only the
/// users mapped in `pg_ident.conf`), anyone over TCP on 127.0.0.1 by password.
pub(crate) fn hba_conf() -> String {
    format!(
        "# written by e2e-migrations\n\
         # TYPE  DATABASE  USER  ADDRESS       METHOD\n\
         local   all       {USER}   peer map=e2e\n\
         host    all       all   127.0.0.1/32  scram-sha-256\n"
    )
}

/// `pg_ident.conf` (pure): the operating-system user that set the server up may log in as the
/// superuser over the socket.
pub(crate) fn ident_conf(os_user: &str) -> String {
    let name = if os_user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        os_user.to_string()
    } else {
        format!("\"{}\"", os_user.replace('"', "\"\""))
    };
    format!("# written by e2e-migrations\n# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\ne2e  {name}  {USER}\n")
}

/// What [`ensure_running`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The server was already up.
    Reused,
    /// The data folder existed; the server was started again.
    Restarted,
    /// A new data folder was made by `initdb`.
    Created,
    /// A new data folder was copied from the server cache.
    FromCache,
}

impl Started {
    /// The word progress lines use.
    pub fn word(self) -> &'static str {
        match self {
            Started::Reused => "reused",
            Started::Restarted => "restarted",
            Started::Created => "created",
            Started::FromCache => "created from the cache",
        }
    }
}

/// The local server, running and ours.
#[derive(Debug, Clone)]
pub struct LocalServer {
    /// Its part of the record (port, user, password).
    pub local: LocalRecord,
    /// Its files.
    pub layout: Layout,
    /// Its instance id.
    pub instance_id: String,
    /// What was done to get it running.
    pub started: Started,
    /// What was found and cleaned up on the way (a copied record, a leftover of a killed setup).
    pub notes: Vec<String>,
}

impl LocalServer {
    /// The URL of the test database.
    pub fn url(&self) -> String {
        self.local.url()
    }

    /// The URL of another database on the server.
    pub fn url_for(&self, database: &str) -> String {
        self.local.url_for(database)
    }
}

/// Options of [`ensure_running`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Take a new server's data folder from the cache entry of this content, when there is one.
    pub cache: Option<CacheRequest>,
}

fn with_account(cmd: &mut Command, acct: &Option<Account>, dir: &Path) {
    if let Some(a) = acct {
        cmd.uid(a.uid).gid(a.gid).env("HOME", "/");
    }
    // A folder the server's account can enter (initdb refuses an unreadable one).
    cmd.current_dir(dir);
}

fn chown(path: &Path, acct: &Option<Account>) -> Result<()> {
    if let Some(a) = acct {
        std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid)).map_err(io_err(path))?;
    }
    Ok(())
}

/// Writes `path` atomically with `mode`, owned by the server's account.
fn write_owned(path: &Path, text: &str, mode: u32, acct: &Option<Account>) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    }
    chown(&tmp, acct)?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Creates `dir` anew, mode 0700, not following a symlink planted in its place (the fallback
/// folder has a predictable name in a world-writable folder): whatever is there is removed
/// (a symlink itself, not its target), then the folder is made without `create_dir_all`, so
/// that a folder someone else made in between is an error rather than adopted.
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    remove_path(dir)?;
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::DirBuilder::new().mode(0o700).create(dir).map_err(io_err(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// Removes a folder, or a file or symlink in its place (never what a symlink points to).
fn remove_path(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io_err(p)),
        Ok(_) => fs::remove_file(p).map_err(io_err(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io { path: p.to_path_buf(), source }),
    }
}

/// The last `n` lines of `text` (pure).
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read_pid_file(data: &Path) -> Option<PidFile> {
    fs::read_to_string(data.join("postmaster.pid")).ok().and_then(|t| postmaster::parse_pid_file(&t))
}

/// How to log in when asking a server what it is.
#[derive(Debug, Clone)]
struct Login {
    user: String,
    /// An earlier version's server takes a password, also over the socket.
    password: Option<String>,
    /// How long a connection may take to be ready (the engine's connect timeout).
    timeout: Duration,
}

/// What a data folder's server is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// Running, and proven ours: this pid is its postmaster.
    Ours { pid: i32, port: u16 },
    /// Not running; a `postmaster.pid` left behind is stale, for this reason (its postmaster and
    /// every process of it have exited, so its lock files may go).
    Down { stale: Option<String> },
    /// Something answers on our socket that is not the server made here.
    NotOurs(String),
    /// `postmaster.pid` names a postmaster that answers nothing, yet it (or a process of it) is
    /// still alive after [`GONE_PATIENCE`]: nothing of it may be removed or started over.
    Hung { pid: i32, why: String },
}

/// How long a postmaster that answers nothing but is still alive gets to go away (one killed a
/// moment ago, whose processes are still exiting) before it counts as hung.
const GONE_PATIENCE: Duration = Duration::from_secs(10);

/// The postmasters this process started: its own children, which it alone can reap once they
/// exit (until then `kill(pid, 0)` finds them, as zombies).
fn started_here() -> &'static std::sync::Mutex<Vec<i32>> {
    static STARTED: std::sync::OnceLock<std::sync::Mutex<Vec<i32>>> = std::sync::OnceLock::new();
    STARTED.get_or_init(Default::default)
}

/// Reaps `pid` if it is a postmaster this process started and it has exited.
fn reap_if_ours(pid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut started = started_here().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !started.contains(&pid) {
        return;
    }
    match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => {}
        _ => started.retain(|p| *p != pid),
    }
}

/// Asks the server of `layout` what it is (see [`super::postmaster`]). `instance_id` is the id
/// made at creation; `None` only for an earlier version's server, which carries none.
///
/// When nothing answers, what is left of the postmaster that `postmaster.pid` names decides
/// ([`postmaster::fate`]): exited (a killed postmaster, maybe a zombie not reaped yet) is
/// [`Probe::Down`] with a stale file; still alive, it gets [`GONE_PATIENCE`] to go, and is
/// [`Probe::Hung`] after that.
async fn probe(layout: &Layout, instance_id: Option<&str>, login: &Login) -> Probe {
    let Some(mut file) = read_pid_file(&layout.data) else {
        return Probe::Down { stale: None };
    };
    let data = fs::canonicalize(&layout.data).unwrap_or_else(|_| layout.data.clone());
    // A server killed while starting comes up within seconds; one stopping goes away.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut patience: Option<Instant> = None;
    loop {
        if let Some(why) = postmaster::stale_reason(&file, &data, crate::process::pid_alive(file.pid)) {
            return Probe::Down { stale: Some(why) };
        }
        let (silence, settling) =
            match postmaster::ask(&layout.sock, file.port, &login.user, login.password.as_deref(), login.timeout).await
            {
                Ok(live) => {
                    return match postmaster::judge(&live, &file, &data, instance_id) {
                        Ok(()) => Probe::Ours { pid: file.pid, port: file.port },
                        Err(why) => Probe::NotOurs(why),
                    };
                }
                Err(Startup::TimedOut(t)) => (
                    format!("nothing answered on {} within {} s", layout.sock.display(), t.as_secs_f64()),
                    matches!(file.status.as_str(), "starting" | "stopping"),
                ),
                Err(Startup::Failed(e)) => {
                    let settling = e.code() == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW)
                        || matches!(file.status.as_str(), "starting" | "stopping");
                    if e.as_db_error().is_some() && !settling {
                        return Probe::NotOurs(format!("it refused us: {}", crate::error::describe_db_error(&e)));
                    }
                    let why = format!(
                        "no server of this folder answers on {} ({})",
                        layout.sock.display(),
                        crate::error::describe_db_error(&e)
                    );
                    (why, settling)
                }
            };
        reap_if_ours(file.pid);
        match postmaster::fate(file.pid, &postmaster::remains(&file, &layout.sock).await) {
            postmaster::Fate::Exited(why) => return Probe::Down { stale: Some(format!("{silence}; {why}")) },
            postmaster::Fate::Alive(why) => {
                let waited_enough = if settling {
                    Instant::now() > deadline
                } else {
                    Instant::now() > *patience.get_or_insert_with(|| Instant::now() + GONE_PATIENCE)
                };
                if waited_enough {
                    return Probe::Hung { pid: file.pid, why: format!("{silence}, yet {why}") };
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(if settling { 50 } else { 100 })).await;
        match read_pid_file(&layout.data) {
            Some(f) => file = f,
            None => return Probe::Down { stale: None },
        }
    }
}

/// Removes the lock files of a postmaster that has exited ([`Probe::Down`] with a stale file):
/// `postmaster.pid`, and the socket lock files in our private socket folder that name its pid
/// (PostgreSQL takes one whose pid is still found, a zombie's too, as held).
fn remove_stale_locks(layout: &Layout) -> Result<()> {
    if let Some(file) = read_pid_file(&layout.data) {
        for lock in postmaster::socket_locks_of(&layout.sock, file.pid) {
            remove_path(&lock)?;
        }
    }
    remove_path(&layout.data.join("postmaster.pid"))
}

/// Stops the proven postmaster `pid` of `data`: fast shutdown (SIGINT, as `pg_ctl stop -m fast`
/// sends), then immediate (SIGQUIT), then SIGKILL. The pid is signalled directly, not re-read
/// from a file, because it is the one that proved to be ours. Done is when its
/// `postmaster.pid` is gone (as `pg_ctl` waits), or the process has exited: an exited postmaster
/// may stay a zombie for a while where nothing reaps orphans promptly.
async fn stop_pid(pid: i32, data: &Path) {
    use nix::sys::signal::{kill, Signal};
    let p = nix::unistd::Pid::from_raw(pid);
    let pid_file = data.join("postmaster.pid");
    for (sig, wait) in [(Signal::SIGINT, 30_000), (Signal::SIGQUIT, 5_000), (Signal::SIGKILL, 5_000)] {
        if kill(p, sig).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(wait);
        let mut round = 0u32;
        while Instant::now() < deadline {
            reap_if_ours(pid);
            if !pid_file.exists() || !crate::process::pid_alive(pid) {
                return;
            }
            // (where `ps` tells it, not every round)
            if round % 10 == 9 && crate::process::zombie(pid) == Some(true) {
                return;
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn run(program: &Path, cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| LifecycleError::Spawn { program: program.to_path_buf(), source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(LifecycleError::Command {
        program: program.to_path_buf(),
        status: out.status.to_string(),
        output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
            .trim()
            .to_string(),
    }
    .into())
}

/// `initdb` into `into` (no password: the socket uses peer authentication, TCP is refused until
/// the configuration is replaced).
async fn initdb(bindir: &Path, into: &Path, root: &Path, acct: &Option<Account>) -> Result<()> {
    let program = bindir.join("initdb");
    let mut cmd = Command::new(&program);
    cmd.arg("-D").arg(into).args([
        "-U",
        USER,
        "--auth-local=peer",
        "--auth-host=reject",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]);
    with_account(&mut cmd, acct, root);
    if !super::fault::armed(FaultStep::Initdb) {
        return run(&program, &mut cmd).await;
    }
    // The test hook: kill this process (and initdb) while initdb is half-way.
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|source| LifecycleError::Spawn { program: program.clone(), source })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !into.join("PG_VERSION").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    super::fault::fault_point_with(FaultStep::Initdb, &child.id().into_iter().collect::<Vec<_>>());
    unreachable!("the fault hook kills this process")
}

/// Writes the whole configuration into a data folder that is not running.
fn configure(data: &Path, layout: &Layout, port: u16, instance_id: &str, acct: &Option<Account>) -> Result<()> {
    write_owned(&data.join("pg_hba.conf"), &hba_conf(), 0o600, acct)?;
    write_owned(&data.join("pg_ident.conf"), &ident_conf(&os_user()), 0o600, acct)?;
    write_e2e_conf(data, layout, port, instance_id, acct)?;
    let conf = data.join("postgresql.conf");
    let text = fs::read_to_string(&conf).map_err(io_err(&conf))?;
    if !text.contains("include_if_exists = 'e2e.conf'") {
        let mut f = fs::OpenOptions::new().append(true).open(&conf).map_err(io_err(&conf))?;
        f.write_all(b"\ninclude_if_exists = 'e2e.conf'\n").map_err(io_err(&conf))?;
    }
    for stale in ["postmaster.pid", "postmaster.opts"] {
        remove_path(&data.join(stale))?;
    }
    Ok(())
}

fn write_e2e_conf(data: &Path, layout: &Layout, port: u16, instance_id: &str, acct: &Option<Account>) -> Result<()> {
    let text = format!("{}{}", server_conf(port, &layout.sock), instance_conf(instance_id));
    write_owned(&data.join("e2e.conf"), &text, 0o600, acct)
}

fn prepare_files(layout: &Layout, acct: &Option<Account>) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !layout.sock.is_dir() {
        fs::DirBuilder::new().mode(0o700).create(&layout.sock).map_err(io_err(&layout.sock))?;
    }
    fs::set_permissions(&layout.sock, fs::Permissions::from_mode(0o700)).map_err(io_err(&layout.sock))?;
    chown(&layout.sock, acct)?;
    fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&layout.log).map_err(io_err(&layout.log))?;
    chown(&layout.log, acct)
}

/// Starts the server on a free port (the preferred one if free), trying another port when the
/// chosen one was taken in between (or its socket lock file is held), and waits until it is
/// ready as `pg_ctl start -w` does: its `postmaster.pid` names it and says `ready`. `postgres`
/// is run directly, not through `pg_ctl`, because `pg_ctl` hands the data folder's path to
/// `/bin/sh` inside double quotes: a checkout path holding `$(...)` or a backquote would run as
/// a command.
async fn start(
    layout: &Layout,
    local: &mut LocalRecord,
    instance_id: &str,
    acct: &Option<Account>,
    prefer: Option<u16>,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    prepare_files(layout, acct)?;
    let program = local.bindir.join("postgres");
    let mut last = String::new();
    for attempt in 0..3 {
        let port = match prefer.filter(|p| attempt == 0 && port_free(*p)) {
            Some(p) => p,
            None => free_port()?,
        };
        write_e2e_conf(&layout.data, layout, port, instance_id, acct)?;
        let before = fs::metadata(&layout.log).map(|m| m.len()).unwrap_or(0);
        let log = fs::OpenOptions::new().append(true).open(&layout.log).map_err(io_err(&layout.log))?;
        let mut cmd = std::process::Command::new(&program);
        cmd.arg("-D")
            .arg(&layout.data)
            .current_dir(&layout.root)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(io_err(&layout.log))?)
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal (or a killed setup) leaves it.
            .process_group(0);
        if let Some(a) = acct {
            cmd.uid(a.uid).gid(a.gid).env("HOME", "/");
        }
        let mut child = cmd.spawn().map_err(|source| LifecycleError::Spawn { program: program.clone(), source })?;
        let pid = child.id() as i32;
        started_here().lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(pid);
        let deadline = Instant::now() + Duration::from_secs(60);
        let exited = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if read_pid_file(&layout.data).is_some_and(|f| f.pid == pid && f.status == "ready") {
                local.port = port;
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        started_here().lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|p| *p != pid);
        let log_text = fs::read(&layout.log).unwrap_or_default();
        let new = String::from_utf8_lossy(log_text.get(before as usize..).unwrap_or(&log_text)).into_owned();
        last = match exited {
            Some(status) => format!("postgres exited ({status})\n{}", last_lines(&new, 15)),
            None => format!("postgres was not ready within 60 s\n{}", last_lines(&new, 15)),
        };
        if !start_failed_on_port(&new) {
            break;
        }
    }
    Err(LifecycleError::Start { log: layout.log.clone(), tail: last }.into())
}

/// Whether a failed start's log says the port was the trouble (pure): taken in between, or its
/// socket lock file held by a pid that is still found (another port gets another lock file).
pub(crate) fn start_failed_on_port(log: &str) -> bool {
    log.contains("could not bind")
        || log.contains("Address already in use")
        || (log.contains("lock file \"") && log.contains(".s.PGSQL.") && log.contains("already exists"))
}

/// After every start, over the private socket: the generated password (as a SCRAM verifier, so
/// the server never sees it in clear) and the test database, made if missing.
async fn finish(layout: &Layout, local: &LocalRecord, timeout: Duration) -> Result<()> {
    let what = || format!("configuring the local server over {}", layout.sock.display());
    let client = postmaster::connect_socket(&layout.sock, local.port, &local.user, None, timeout).await.db(what)?;
    let verifier = postgres_protocol::password::scram_sha_256(local.password.as_bytes());
    client
        .batch_execute(&format!("ALTER ROLE {} PASSWORD {}", quote(&local.user), literal(&verifier)))
        .await
        .db(|| format!("setting the password of {}", local.user))?;
    let exists =
        !client.query("SELECT 1 FROM pg_database WHERE datname = $1", &[&local.database]).await.db(what)?.is_empty();
    if !exists {
        match client.batch_execute(&format!("CREATE DATABASE {}", quote(&local.database))).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e).db(|| format!("creating the database {}", local.database)),
        }
    }
    fault_point(FaultStep::Database);
    Ok(())
}

/// The error for a postmaster of `layout` that answers nothing yet lives on.
fn unresponsive(layout: &Layout, pid: i32, why: String) -> Error {
    LifecycleError::Unresponsive { data_dir: layout.data.clone(), pid, why }.into()
}

fn data_complete(layout: &Layout, instance_id: &str) -> bool {
    layout.data.join("PG_VERSION").is_file()
        && fs::read_to_string(layout.data.join("e2e.conf")).ok().and_then(|t| parse_instance_id(&t)).as_deref()
            == Some(instance_id)
}

fn write_record(here: &Path, rec: &mut Record) -> Result<()> {
    if let Some(l) = &rec.local {
        rec.setup.database_url = Some(l.url());
    }
    record::write(here, rec)
}

/// Starts the local server of this checkout if it is not running (creating it on first use) and
/// returns it. Safe to call from many processes at once: one sets it up, the others wait for
/// the state folder's lock and reuse it.
pub async fn ensure_running(ws: &Workspace, opts: &StartOptions) -> Result<LocalServer> {
    let here = ws.canonical_state_dir()?;
    let _lock = lock_state(&here).await?;
    let acct = service_account()?;
    let saved = record::read(&here)?;
    let mut notes = Vec::new();
    if let Saved::Ours(rec) = &saved {
        // Also under another backend's record, which keeps an earlier local server.
        if rec.local.is_some() {
            if let Some(server) = reuse_or_restart(&here, rec.clone(), &acct, ws.connect_timeout, &mut notes).await? {
                return Ok(server);
            }
        }
    }
    describe(&saved, &here, &mut notes);
    clean_leftovers(&here, &saved, ws.connect_timeout, &mut notes).await?;
    create(&here, &acct, opts, ws.connect_timeout, notes).await
}

/// Says what an unusable record means, for [`LocalServer::notes`] and teardown.
fn describe(saved: &Saved, here: &Path, notes: &mut Vec<String>) {
    let file = record::record_file(here);
    match saved {
        Saved::Foreign { made_in, .. } => notes.push(format!(
            "{} was made in {} (a copied checkout or a moved state folder): what it names is left alone",
            file.display(),
            made_in.display()
        )),
        Saved::Unreadable { reason } => notes.push(format!(
            "{} is unreadable ({reason}): removing what is provably this checkout's; \
             a cluster or namespace it may have named is not touched",
            file.display()
        )),
        Saved::Legacy { .. } => {
            notes.push(format!("{} holds an earlier version's state: replacing it", here.display()))
        }
        Saved::Missing | Saved::Ours(_) => {}
    }
}

async fn reuse_or_restart(
    here: &Path,
    mut rec: Record,
    acct: &Option<Account>,
    timeout: Duration,
    notes: &mut Vec<String>,
) -> Result<Option<LocalServer>> {
    let mut local = rec.local.clone().expect("checked by the caller");
    let layout = Layout::new(here, local.place);
    let login = Login { user: local.user.clone(), password: None, timeout };
    let started = match probe(&layout, Some(&rec.instance_id), &login).await {
        Probe::Ours { port, .. } => {
            local.port = port;
            Started::Reused
        }
        Probe::NotOurs(why) => return Err(LifecycleError::NotOurs { socket_dir: layout.sock, why }.into()),
        Probe::Hung { pid, why } => return Err(unresponsive(&layout, pid, why)),
        Probe::Down { stale } => {
            if !data_complete(&layout, &rec.instance_id) {
                notes.push(format!(
                    "{} is incomplete (a setup was killed while making it): starting over",
                    layout.data.display()
                ));
                return Ok(None);
            }
            if let Some(why) = stale {
                notes.push(format!("removed a stale postmaster.pid: {why}"));
                remove_stale_locks(&layout)?;
            }
            let prefer = local.port;
            start(&layout, &mut local, &rec.instance_id, acct, Some(prefer)).await?;
            fault_point(FaultStep::Start);
            Started::Restarted
        }
    };
    // A server that reached Ready has its password and database; otherwise (a setup killed
    // after the start) finish what it did not.
    if started != Started::Reused || rec.phase != Phase::Ready {
        finish(&layout, &local, timeout).await?;
    }
    if started != Started::Reused || rec.phase != Phase::Ready || rec.local.as_ref() != Some(&local) {
        rec.phase = Phase::Ready;
        rec.local = Some(local.clone());
        write_record(here, &mut rec)?;
    }
    Ok(Some(LocalServer { local, layout, instance_id: rec.instance_id, started, notes: std::mem::take(notes) }))
}

/// Removes what a killed, copied or unreadable setup left in this state folder's own places:
/// a server there is stopped only after it proved to be the one made in that folder. Says
/// whether it stopped one.
async fn clean_leftovers(here: &Path, saved: &Saved, timeout: Duration, notes: &mut Vec<String>) -> Result<bool> {
    let mut stopped = false;
    let login = match saved {
        Saved::Legacy { password, user } => {
            Login { user: user.clone().unwrap_or_else(|| USER.to_string()), password: password.clone(), timeout }
        }
        _ => Login { user: USER.to_string(), password: None, timeout },
    };
    for place in [DataPlace::State, DataPlace::Temp] {
        let layout = Layout::new(here, place);
        if fs::symlink_metadata(&layout.root).is_err() {
            continue;
        }
        let id = fs::read_to_string(layout.data.join("e2e.conf")).ok().and_then(|t| parse_instance_id(&t));
        match probe(&layout, id.as_deref(), &login).await {
            Probe::Ours { pid, .. } => {
                stop_pid(pid, &layout.data).await;
                stopped = true;
                notes.push(format!("stopped the server left running on {} (pid {pid})", layout.data.display()));
            }
            Probe::NotOurs(why) => {
                return Err(LifecycleError::NotOurs { socket_dir: layout.sock, why }.into());
            }
            Probe::Hung { pid, why } => return Err(unresponsive(&layout, pid, why)),
            Probe::Down { stale: Some(why) } => {
                notes.push(format!("{}: a stale postmaster.pid ({why}); nothing signalled", layout.data.display()))
            }
            Probe::Down { stale: None } => {}
        }
        remove_path(&layout.root)?;
        notes.push(format!("removed {}", layout.root.display()));
    }
    Ok(stopped)
}

async fn create(
    here: &Path,
    acct: &Option<Account>,
    opts: &StartOptions,
    timeout: Duration,
    mut notes: Vec<String>,
) -> Result<LocalServer> {
    let bindir = find_bindir()?;
    if let Some(a) = acct {
        notes.push(format!("running as root: PostgreSQL runs as the unprivileged account '{}'", a.name));
    }
    let reachable = acct.as_ref().map(|a| reachable_by(here, a)).unwrap_or(true);
    let place = choose_place(here, reachable);
    let layout = Layout::new(here, place);
    if place == DataPlace::Temp {
        notes.push(format!(
            "{} is {}; the server's files go to {} instead",
            here.display(),
            if reachable {
                "too deep for a unix socket path"
            } else {
                "not reachable by the server's account (a private parent folder)"
            },
            layout.root.display()
        ));
    }
    let mut rec = Record {
        format: RECORD_FORMAT,
        made_in: here.to_path_buf(),
        instance_id: secret::random_hex(16, "an instance id")?,
        phase: Phase::Creating,
        setup: SetupState::local(),
        local: Some(LocalRecord {
            place,
            port: 0,
            user: USER.to_string(),
            password: secret::password()?,
            database: DATABASE.to_string(),
            bindir: bindir.clone(),
            run_as: acct.as_ref().map(|a| a.name.clone()),
        }),
    };
    // First, so that teardown finds a half-made server.
    record::write(here, &rec)?;
    make_private_dir(&layout.root)?;
    chown(&layout.root, acct)?;
    let init = layout.root.join(format!("data.init-{}", secret::random_hex(4, "a folder name")?));
    let key = match &opts.cache {
        Some(c) => cache::entry_key(c, &pg_version(&bindir).await?, &os_user(), acct.as_ref().map(|a| a.name.as_str())),
        None => String::new(),
    };
    let from_cache = match &opts.cache {
        Some(c) => match cache::restore(&c.dir, &key, &init, acct.as_ref().map(|a| (a.uid, a.gid))) {
            Ok(hit) => hit,
            Err(e) => {
                tracing::warn!("the server cache could not be used ({}); running initdb", crate::error::report(&e));
                remove_path(&init)?;
                false
            }
        },
        None => false,
    };
    if !from_cache {
        initdb(&bindir, &init, &layout.root, acct).await?;
    }
    configure(&init, &layout, 0, &rec.instance_id, acct)?;
    fs::rename(&init, &layout.data).map_err(io_err(&layout.data))?;
    let mut local = rec.local.clone().expect("set above");
    start(&layout, &mut local, &rec.instance_id, acct, None).await?;
    fault_point(FaultStep::Start);
    finish(&layout, &local, timeout).await?;
    rec.phase = Phase::Ready;
    rec.local = Some(local.clone());
    write_record(here, &mut rec)?;
    let started = if from_cache { Started::FromCache } else { Started::Created };
    Ok(LocalServer { local, layout, instance_id: rec.instance_id, started, notes })
}

/// The server's version line (`postgres (PostgreSQL) 15.6`), part of the cache key.
async fn pg_version(bindir: &Path) -> Result<String> {
    let program = bindir.join("postgres");
    let out = Command::new(&program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| LifecycleError::Spawn { program: program.clone(), source })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Stores the running server's data folder in the cache for `request`, for the next cold start:
/// the password is cleared, the server stopped cleanly, its folder copied, and the server
/// started again (on the same port if it is free) and returned. Meant right after a setup that
/// created the server and applied everything. A cache that cannot be written is a warning.
pub async fn store_in_cache(ws: &Workspace, server: LocalServer, request: &CacheRequest) -> Result<LocalServer> {
    let here = ws.canonical_state_dir()?;
    let _lock = lock_state(&here).await?;
    let acct = service_account()?;
    let Saved::Ours(mut rec) = record::read(&here)? else {
        return Ok(server);
    };
    if rec.instance_id != server.instance_id {
        return Ok(server);
    }
    let mut local = server.local.clone();
    let layout = server.layout.clone();
    let login = Login { user: local.user.clone(), password: None, timeout: ws.connect_timeout };
    let Probe::Ours { pid, .. } = probe(&layout, Some(&rec.instance_id), &login).await else {
        return Ok(server);
    };
    let key = cache::entry_key(request, &pg_version(&local.bindir).await?, &os_user(), local.run_as.as_deref());
    let client = postmaster::connect_socket(&layout.sock, local.port, &local.user, None, ws.connect_timeout)
        .await
        .db(|| format!("connecting over {}", layout.sock.display()))?;
    client
        .batch_execute(&format!("ALTER ROLE {} PASSWORD NULL", quote(&local.user)))
        .await
        .db(|| "clearing the password before caching".to_string())?;
    drop(client);
    stop_pid(pid, &layout.data).await;
    if let Err(e) = cache::store(&request.dir, &key, &layout.data, &request.label) {
        tracing::warn!("could not store the server in the cache: {}", crate::error::report(&e));
    }
    let prefer = local.port;
    start(&layout, &mut local, &rec.instance_id, &acct, Some(prefer)).await?;
    finish(&layout, &local, ws.connect_timeout).await?;
    rec.local = Some(local.clone());
    write_record(&here, &mut rec)?;
    Ok(LocalServer { local, ..server })
}

/// The local server, only if it is set up, running and ours (starts nothing, changes nothing).
pub async fn running(ws: &Workspace) -> Result<LocalServer> {
    let here = match fs::canonicalize(&ws.state_dir) {
        Ok(h) => h,
        Err(_) => return Err(LifecycleError::NotSetUp { file: record::record_file(&ws.state_dir) }.into()),
    };
    let file = record::record_file(&here);
    let rec = match record::read(&here)? {
        Saved::Ours(r) => r,
        Saved::Missing | Saved::Legacy { .. } => return Err(LifecycleError::NotSetUp { file }.into()),
        Saved::Foreign { made_in, .. } => return Err(LifecycleError::ForeignRecord { file, made_in }.into()),
        Saved::Unreadable { reason } => return Err(LifecycleError::UnreadableRecord { file, reason }.into()),
    };
    let Some(mut local) = rec.local.clone() else {
        return Err(LifecycleError::NotSetUp { file }.into());
    };
    if rec.phase != Phase::Ready {
        return Err(LifecycleError::SetupIncomplete { state_dir: here }.into());
    }
    let layout = Layout::new(&here, local.place);
    let login = Login { user: local.user.clone(), password: None, timeout: ws.connect_timeout };
    match probe(&layout, Some(&rec.instance_id), &login).await {
        Probe::Ours { port, .. } => {
            local.port = port;
            Ok(LocalServer { local, layout, instance_id: rec.instance_id, started: Started::Reused, notes: Vec::new() })
        }
        Probe::Down { .. } => Err(LifecycleError::ServerDown { state_dir: here }.into()),
        Probe::NotOurs(why) => Err(LifecycleError::NotOurs { socket_dir: layout.sock, why }.into()),
        Probe::Hung { pid, why } => Err(unresponsive(&layout, pid, why)),
    }
}

/// What [`inspect`] found (read-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The server's files.
    pub layout: Layout,
    /// Whether it runs and proved ours.
    pub up: bool,
    /// Why it is not ours, when something else answers on its socket.
    pub not_ours: Option<String>,
    /// A stale `postmaster.pid`, and why it is stale.
    pub stale: Option<String>,
    /// A postmaster that answers nothing yet is still alive, and what is known of it.
    pub hung: Option<String>,
}

/// Looks at the local server of a record without changing anything (connecting within
/// `timeout`).
pub async fn inspect(here: &Path, rec: &Record, timeout: Duration) -> Option<Inspection> {
    let local = rec.local.as_ref()?;
    let layout = Layout::new(here, local.place);
    let login = Login { user: local.user.clone(), password: None, timeout };
    let (up, not_ours, stale, hung) = match probe(&layout, Some(&rec.instance_id), &login).await {
        Probe::Ours { .. } => (true, None, None, None),
        Probe::NotOurs(why) => (false, Some(why), None, None),
        Probe::Down { stale } => (false, None, stale, None),
        Probe::Hung { why, .. } => (false, None, None, Some(why)),
    };
    Some(Inspection { layout, up, not_ours, stale, hung })
}

/// What [`teardown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// Whether anything of the local backend was there.
    pub found: bool,
    /// Whether a running server (proven ours) was stopped.
    pub stopped: bool,
    /// What was stopped or removed, and what was found on the way.
    pub notes: Vec<String>,
}

/// Stops the local server (once proven ours) and removes its files and the record. A record
/// that is unreadable, or was made elsewhere, does not stop it: what this state folder's own
/// places hold is found and removed, and the notes say what was left alone.
pub async fn teardown(ws: &Workspace) -> Result<TeardownReport> {
    let Ok(here) = fs::canonicalize(&ws.state_dir) else {
        return Ok(TeardownReport::default());
    };
    let _lock = lock_state(&here).await?;
    let saved = record::read(&here)?;
    let mut notes = Vec::new();
    let mut stopped = false;
    let found_files =
        [DataPlace::State, DataPlace::Temp].iter().any(|p| fs::symlink_metadata(Layout::new(&here, *p).root).is_ok());
    if let Saved::Ours(rec) = &saved {
        if let Some(local) = &rec.local {
            let layout = Layout::new(&here, local.place);
            let login = Login { user: local.user.clone(), password: None, timeout: ws.connect_timeout };
            match probe(&layout, Some(&rec.instance_id), &login).await {
                Probe::Ours { pid, .. } => {
                    stop_pid(pid, &layout.data).await;
                    stopped = true;
                    notes.push(format!("stopped the server (pid {pid})"));
                }
                Probe::NotOurs(why) => {
                    return Err(LifecycleError::NotOurs { socket_dir: layout.sock, why }.into());
                }
                Probe::Hung { pid, why } => return Err(unresponsive(&layout, pid, why)),
                Probe::Down { .. } => {}
            }
        }
    }
    describe(&saved, &here, &mut notes);
    stopped |= clean_leftovers(&here, &saved, ws.connect_timeout, &mut notes).await?;
    let _ = fs::remove_dir(here.join("local"));
    let found = found_files
        || match &saved {
            Saved::Missing => false,
            Saved::Ours(rec) => rec.setup.backend == BackendKind::Local || rec.local.is_some(),
            _ => true,
        };
    match saved {
        // Another backend's setup, which kept an earlier local server: keep its record.
        Saved::Ours(mut rec) if rec.setup.backend != BackendKind::Local => {
            if rec.local.take().is_some() {
                record::write(&here, &rec)?;
            }
        }
        Saved::Missing => {}
        _ => record::remove(&here)?,
    }
    Ok(TeardownReport { found, stopped, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traverse_checks_owner_group_other() {
        // owner root, mode 0700: another account cannot pass.
        assert!(!can_traverse(&[(0o40700, 0, 0)], 101, 104));
        assert!(can_traverse(&[(0o40755, 0, 0)], 101, 104));
        assert!(can_traverse(&[(0o40710, 0, 104)], 101, 104));
        assert!(can_traverse(&[(0o40700, 101, 104)], 101, 104));
        assert!(!can_traverse(&[(0o40755, 0, 0), (0o40750, 0, 0)], 101, 104));
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let base = e2e_test_support::TempDir::new("e2e-local-test");
        let target = base.join("victim");
        fs::create_dir_all(&target).unwrap();
        let link = base.join("fallback");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        make_private_dir(&link).unwrap();
        let m = fs::symlink_metadata(&link).unwrap();
        assert!(m.is_dir() && !m.file_type().is_symlink());
        assert_eq!(m.mode() & 0o777, 0o700);
        assert!(target.is_dir(), "the symlink's target is left alone");
    }

    #[test]
    fn another_port_is_tried_when_the_port_or_its_socket_lock_file_is_taken() {
        assert!(start_failed_on_port("LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"));
        assert!(start_failed_on_port(
            "FATAL:  lock file \"/s/sock/.s.PGSQL.5555.lock\" already exists\nHINT:  Is another postmaster (PID 7) using socket file"
        ));
        assert!(!start_failed_on_port("FATAL:  lock file \"postmaster.pid\" already exists"), "the data folder's own");
        assert!(!start_failed_on_port("FATAL:  unrecognized configuration parameter"));
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
    }

    #[test]
    fn server_conf_is_loopback_only() {
        let c = server_conf(5555, Path::new("/tmp/s"));
        assert!(c.contains("listen_addresses = '127.0.0.1'"));
        assert!(c.contains("port = 5555"));
        assert!(c.contains("unix_socket_directories = '/tmp/s'"));
    }

    #[test]
    fn server_conf_keeps_commits_and_sequences_when_the_server_is_killed() {
        let c = server_conf(5555, Path::new("/tmp/s"));
        assert!(!c.contains("synchronous_commit"), "asynchronous commit loses the last commits on a kill: {c}");
        assert!(!c.contains("wal_level"), "wal_level = minimal loses sequence state on a kill: {c}");
    }

    #[test]
    fn the_instance_id_reads_back_from_the_settings_file() {
        let conf = format!("{}{}", server_conf(1, Path::new("/s")), instance_conf("0a1b"));
        assert_eq!(parse_instance_id(&conf).as_deref(), Some("0a1b"));
        assert_eq!(parse_instance_id(&server_conf(1, Path::new("/s"))), None);
    }

    #[test]
    fn the_socket_admits_only_the_setup_user_by_peer_and_tcp_takes_a_password() {
        let hba = hba_conf();
        assert!(hba.contains("local   all       e2e   peer map=e2e"), "{hba}");
        assert!(hba.contains("host    all       all   127.0.0.1/32  scram-sha-256"), "{hba}");
        assert!(!hba.contains("trust"));
        assert!(ident_conf("alice").ends_with("e2e  alice  e2e\n"));
        assert!(ident_conf("a b\"c").ends_with("e2e  \"a b\"\"c\"  e2e\n"));
    }

    #[test]
    fn candidates_start_with_override_then_path_then_known_installs() {
        let list = |dir: &Path| -> Vec<String> {
            match dir.to_str().unwrap() {
                "/usr/lib/postgresql" => vec!["14".into(), "16".into()],
                "/opt/homebrew/opt" => vec!["postgresql@15".into(), "openssl@3".into(), "postgresql@17".into()],
                "/Applications/Postgres.app/Contents/Versions" => vec!["16".into(), "latest".into()],
                "/usr" => vec!["bin".into(), "pgsql-13".into()],
                _ => vec![],
            }
        };
        let c = bindir_candidates(Some(Path::new("/x")), Some("/a:/b"), Some(Path::new("/c")), &list);
        let c: Vec<&str> = c.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            c,
            [
                "/x",
                "/a",
                "/b",
                "/c",
                "/usr/lib/postgresql/16/bin",
                "/usr/lib/postgresql/14/bin",
                "/opt/homebrew/opt/postgresql@17/bin",
                "/opt/homebrew/opt/postgresql@15/bin",
                "/Applications/Postgres.app/Contents/Versions/latest/bin",
                "/Applications/Postgres.app/Contents/Versions/16/bin",
                "/usr/pgsql-13/bin",
                "/usr/local/pgsql/bin",
                "/opt/homebrew/bin",
                "/usr/local/bin",
            ]
        );
    }

    #[test]
    fn the_files_move_to_tmp_when_the_socket_path_would_be_too_long_or_unreachable() {
        assert_eq!(choose_place(Path::new("/home/me/src/app/target/e2e"), true), DataPlace::State);
        assert_eq!(choose_place(Path::new("/home/me/src/app/target/e2e"), false), DataPlace::Temp);
        let deep = PathBuf::from("/Users/someone/Library/Mobile Documents/com~apple~CloudDocs/projects/app/target/e2e");
        assert_eq!(choose_place(&deep, true), DataPlace::Temp);
        let t = Layout::at(&deep, DataPlace::Temp, Path::new("/private/tmp"));
        assert!(t.sock.join(".s.PGSQL.65535").as_os_str().len() < SOCKET_PATH_MAX, "{:?}", t.sock);
        assert_ne!(
            temp_root(Path::new("/tmp"), Path::new("/a/e2e")),
            temp_root(Path::new("/tmp"), Path::new("/b/e2e"))
        );
    }
}
