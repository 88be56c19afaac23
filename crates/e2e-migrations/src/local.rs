//! The embedded default: a throwaway PostgreSQL server started from the machine's own server
//! binaries, listening on 127.0.0.1 and a private unix socket, with test-speed settings.
//!
//! Its state lives in a folder under the workspace's `target/` (see [`default_state_dir`]):
//! `state.json` (0600: it holds the generated password) says where the data folder is, which
//! port the server listens on and which account runs it. Running as root, the server runs as an
//! unprivileged system account (PostgreSQL refuses root); when that account cannot reach the
//! folder under `target/` (a private parent), the data goes to a private folder under the system
//! temporary folder instead, and the tool says so.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The superuser and database the local server is set up with.
pub const USER: &str = "e2e";
/// The database created for the tests.
pub const DATABASE: &str = "e2e";
/// Environment variable naming the folder of `initdb`, `postgres` (overrides the search).
pub const BINDIR_ENV: &str = "E2E_PG_BINDIR";

/// What setup leaves behind for the local server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Superuser name.
    pub user: String,
    /// Generated password.
    pub password: String,
    /// Database for the tests.
    pub database: String,
    /// The folder holding `data/`, `sock/` and `server.log`.
    pub data_root: PathBuf,
    /// Where `initdb` and `postgres` were found.
    pub bindir: PathBuf,
    /// The account the server runs as, when started by root.
    pub run_as: Option<String>,
}

impl LocalState {
    /// The `postgres://` URL of the test database.
    pub fn url(&self) -> String {
        self.url_for(&self.database)
    }

    /// The URL of another database on the same server.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{}:{}@127.0.0.1:{}/{}", self.user, self.password, self.port, database)
    }

    /// The data folder (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.data_root.join("data")
    }

    /// The private unix socket folder.
    pub fn socket_dir(&self) -> PathBuf {
        self.data_root.join("sock")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.data_root.join("server.log")
    }
}

/// The local server's state folder: `local/` under [`crate::state_root`].
pub fn default_state_dir() -> PathBuf {
    crate::state_root().join("local")
}

/// Candidate folders for the server binaries, in search order (pure).
pub fn bindir_candidates(
    env_bindir: Option<&Path>,
    path_var: Option<&str>,
    pg_config_bindir: Option<&Path>,
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
    // The usual distribution folders, newest version first.
    for base in ["/usr/lib/postgresql", "/usr/pgsql", "/opt/homebrew/opt", "/usr/local/opt"] {
        let mut versions: Vec<PathBuf> = fs::read_dir(base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| {
                        n.to_string_lossy().starts_with(char::is_numeric)
                            || n.to_string_lossy().starts_with("postgresql")
                    })
                    .unwrap_or(false)
            })
            .collect();
        versions.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
        c.extend(versions.into_iter().map(|v| v.join("bin")));
    }
    c.push(PathBuf::from("/usr/local/pgsql/bin"));
    c
}

fn version_key(p: &Path) -> u32 {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.chars().filter(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap_or(0)
}

/// Finds the folder holding both `initdb` and `postgres`.
pub fn find_bindir() -> Result<PathBuf> {
    let env = std::env::var_os(BINDIR_ENV).map(PathBuf::from);
    if let Some(d) = &env {
        if !d.join("initdb").is_file() {
            return Err(Error::Server(format!("{BINDIR_ENV}={} has no initdb", d.display())));
        }
    }
    let path = std::env::var("PATH").ok();
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    for dir in bindir_candidates(env.as_deref(), path.as_deref(), pg_config.as_deref()) {
        let initdb = dir.join("initdb");
        if initdb.is_file() {
            // `initdb` on PATH is often a symlink into the real bindir, where `postgres` lives.
            let real = fs::canonicalize(&initdb).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or(dir);
            if real.join("postgres").is_file() {
                return Ok(real);
            }
        }
    }
    Err(Error::Server(format!(
        "no PostgreSQL server binaries found (initdb and postgres, searched PATH, pg_config --bindir and /usr/lib/postgresql/*/bin); \
         install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@16), \
         set {BINDIR_ENV} to their folder, or use --database-url"
    )))
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
    Err(Error::Server("running as root, and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL as (it refuses root)".into()))
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

fn random_password() -> Result<String> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| Error::Server(format!("no randomness for a password: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::Server(format!("no free port on 127.0.0.1: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::Server(e.to_string()))?.port())
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

/// A lock file serialising setup and teardown of one state folder across processes.
struct StateLock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

fn lock_state(state_dir: &Path) -> Result<StateLock> {
    fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
    let path = state_dir.join(".lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Server(format!("{}: cannot lock: {e}", path.display())))?;
    Ok(StateLock(lock))
}

fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}

/// Reads the saved state, if setup ran.
pub fn read_state(state_dir: &Path) -> Result<Option<LocalState>> {
    crate::state::read_json(&state_file(state_dir))
}

use crate::state::write_private;

/// The postmaster's pid and status from `postmaster.pid`, when the file exists and that pid is
/// still our server: a stale file (after a reboot or a crash) may name a pid that another
/// process has since taken, which must never be signalled.
fn postmaster(data_dir: &Path) -> Option<(i32, String)> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if !is_our_postmaster(&cmdline, data_dir) {
        return None;
    }
    Some((pid, lines.get(7).map(|s| s.trim().to_string()).unwrap_or_default()))
}

/// Whether a process command line (NUL-separated) is `postgres -D <data_dir>` (pure).
pub fn is_our_postmaster(cmdline: &[u8], data_dir: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_postgres = args.first().map(|a| a.ends_with(b"postgres") || a.ends_with(b"postmaster")).unwrap_or(false);
    let data = data_dir.as_os_str().as_encoded_bytes();
    is_postgres && args.windows(2).any(|w| w[0] == b"-D" && w[1] == data)
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn is_running(state: &LocalState) -> bool {
    match postmaster(&state.data_dir()) {
        Some((pid, status)) => {
            alive(pid)
                && status == "ready"
                && TcpStream::connect_timeout(
                    &SocketAddrV4::new(Ipv4Addr::LOCALHOST, state.port).into(),
                    Duration::from_secs(1),
                )
                .is_ok()
        }
        None => false,
    }
}

/// What [`ensure_running`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The server was already up.
    Reused,
    /// The data folder existed; the server was started again.
    Restarted,
    /// A new data folder was made.
    Created,
}

fn run_as(cmd: &mut Command, acct: &Option<Account>) {
    if let Some(a) = acct {
        cmd.uid(a.uid).gid(a.gid);
        cmd.env("HOME", "/");
    }
}

fn chown(path: &Path, acct: &Option<Account>) -> Result<()> {
    if let Some(a) = acct {
        std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid)).map_err(io_err(path))?;
    }
    Ok(())
}

/// Starts the local server if it is not running (creating it on first use) and returns its state.
/// Safe to call from many processes at once: one sets it up, the others wait and reuse it.
pub fn ensure_running(state_dir: &Path) -> Result<(LocalState, Started)> {
    let _lock = lock_state(state_dir)?;
    if let Some(state) = read_state(state_dir)? {
        if is_running(&state) {
            return Ok((state, Started::Reused));
        }
        if state.data_dir().join("PG_VERSION").is_file() {
            let acct = service_account()?;
            let mut state = state;
            start_server(&mut state, &acct)?;
            write_private(&state_file(state_dir), &serde_json::to_vec_pretty(&state).expect("serialisable"))?;
            return Ok((state, Started::Restarted));
        }
        // A state without data: a half-made setup; start over.
        remove_data(&state)?;
    }
    let state = create(state_dir)?;
    Ok((state, Started::Created))
}

fn data_root_for(state_dir: &Path, acct: &Option<Account>) -> Result<PathBuf> {
    fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
    let state_dir = fs::canonicalize(state_dir).map_err(io_err(state_dir))?;
    let preferred = state_dir.join("server");
    // Unix socket paths are limited to about 107 bytes.
    let short_enough = preferred.join("sock/.s.PGSQL.65535").as_os_str().len() < 100;
    let reachable = acct.as_ref().map(|a| reachable_by(&state_dir, a)).unwrap_or(true);
    if short_enough && reachable {
        return Ok(preferred);
    }
    let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let fallback = std::env::temp_dir().join(format!("e2e-postgres-{tag}"));
    tracing::warn!(
        "{} is {}; the server's data goes to {} instead",
        state_dir.display(),
        if reachable {
            "too deep for a unix socket path"
        } else {
            "not reachable by the server's account (a private parent folder)"
        },
        fallback.display()
    );
    Ok(fallback)
}

/// Creates `dir` anew, mode 0700, not following a symlink planted in its place (the fallback
/// folder has a predictable name in a world-writable folder): whatever is there is removed
/// (a symlink itself, not its target), then the folder is made without `create_dir_all`, so
/// that a folder someone else made in between is an error rather than adopted.
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(dir).map_err(io_err(dir))?,
        Ok(_) => fs::remove_file(dir).map_err(io_err(dir))?,
        Err(_) => {}
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::DirBuilder::new().mode(0o700).create(dir).map_err(io_err(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

fn create(state_dir: &Path) -> Result<LocalState> {
    let bindir = find_bindir()?;
    let acct = service_account()?;
    if let Some(a) = &acct {
        tracing::info!("running as root: PostgreSQL runs as the unprivileged account '{}'", a.name);
    }
    let data_root = data_root_for(state_dir, &acct)?;
    make_private_dir(&data_root)?;
    chown(&data_root, &acct)?;
    let mut state = LocalState {
        port: 0,
        user: USER.to_string(),
        password: random_password()?,
        database: DATABASE.to_string(),
        data_root: data_root.clone(),
        bindir: bindir.clone(),
        run_as: acct.as_ref().map(|a| a.name.clone()),
    };
    // Save first, so that teardown finds and removes a half-made setup.
    write_private(&state_file(state_dir), &serde_json::to_vec_pretty(&state).expect("serialisable"))?;

    let pwfile = data_root.join("pwfile");
    write_private(&pwfile, state.password.as_bytes())?;
    chown(&pwfile, &acct)?;
    let mut initdb = Command::new(bindir.join("initdb"));
    initdb
        .arg("-D")
        .arg(state.data_dir())
        .args([
            "-U",
            USER,
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdin(Stdio::null());
    run_as(&mut initdb, &acct);
    let out =
        initdb.output().map_err(|e| Error::Server(format!("running {}: {e}", bindir.join("initdb").display())))?;
    let _ = fs::remove_file(&pwfile);
    if !out.status.success() {
        return Err(Error::Server(format!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let sock = state.socket_dir();
    fs::create_dir_all(&sock).map_err(io_err(&sock))?;
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o700)).map_err(io_err(&sock))?;
    chown(&sock, &acct)?;
    let conf = state.data_dir().join("postgresql.conf");
    let mut f = fs::OpenOptions::new().append(true).open(&conf).map_err(io_err(&conf))?;
    f.write_all(b"\ninclude_if_exists = 'e2e.conf'\n").map_err(io_err(&conf))?;
    start_server(&mut state, &acct)?;
    write_private(&state_file(state_dir), &serde_json::to_vec_pretty(&state).expect("serialisable"))?;
    create_database(&state)?;
    Ok(state)
}

fn create_database(state: &LocalState) -> Result<()> {
    let out = Command::new(state.bindir.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &state.port.to_string(), "-U", &state.user, &state.database])
        .env("PGPASSWORD", &state.password)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Server(format!("running createdb: {e}")))?;
    if !out.status.success() {
        return Err(Error::Server(format!(
            "createdb {} failed: {}",
            state.database,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn start_server(state: &mut LocalState, acct: &Option<Account>) -> Result<()> {
    let pidfile = state.data_dir().join("postmaster.pid");
    if pidfile.exists() && postmaster(&state.data_dir()).is_none() {
        // Left by a server that is gone (its pid may now be another process's).
        fs::remove_file(&pidfile).map_err(io_err(&pidfile))?;
    }
    let mut last_err = String::new();
    for _attempt in 0..3 {
        state.port = free_port()?;
        let conf = state.data_dir().join("e2e.conf");
        fs::write(&conf, server_conf(state.port, &state.socket_dir())).map_err(io_err(&conf))?;
        chown(&conf, acct)?;
        let log = state.log_file();
        let logf = fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&log).map_err(io_err(&log))?;
        chown(&log, acct)?;
        let mut cmd = Command::new(state.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(state.data_dir())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(io_err(&log))?)
            .stderr(logf)
            // Its own process group: a Ctrl-C in the terminal does not stop the shared server.
            .process_group(0);
        run_as(&mut cmd, acct);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Server(format!("starting {}: {e}", state.bindir.join("postgres").display())))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_err = format!("postgres exited ({status}); last lines of {}:\n{}", log.display(), tail(&log, 15));
                break;
            }
            if is_running(state) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(Error::Server(format!(
                    "postgres did not become ready within 60s; see {}:\n{}",
                    log.display(),
                    tail(&log, 15)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Most likely the port was taken between choosing and binding it: try another.
    }
    Err(Error::Server(last_err))
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn remove_data(state: &LocalState) -> Result<()> {
    if state.data_root.exists() {
        fs::remove_dir_all(&state.data_root).map_err(io_err(&state.data_root))?;
    }
    Ok(())
}

/// Stops the server (fast shutdown) and removes its data and state. Returns false when there
/// was nothing to remove.
pub fn teardown(state_dir: &Path) -> Result<bool> {
    let Some(state) = read_state(state_dir)? else {
        return Ok(false);
    };
    let _lock = lock_state(state_dir)?;
    if let Some((pid, _)) = postmaster(&state.data_dir()) {
        stop_pid(pid);
    }
    remove_data(&state)?;
    let f = state_file(state_dir);
    fs::remove_file(&f).map_err(io_err(&f))?;
    Ok(true)
}

fn stop_pid(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    let p = nix::unistd::Pid::from_raw(pid);
    for (sig, wait) in [(Signal::SIGINT, 30_000), (Signal::SIGQUIT, 5_000), (Signal::SIGKILL, 5_000)] {
        if kill(p, sig).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(wait);
        while Instant::now() < deadline {
            if !alive(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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
    fn only_our_own_postmaster_is_recognised() {
        let data = Path::new("/t/server/data");
        assert!(is_our_postmaster(b"/usr/lib/postgresql/15/bin/postgres\0-D\0/t/server/data\0", data));
        assert!(!is_our_postmaster(b"/usr/lib/postgresql/15/bin/postgres\0-D\0/other/data\0", data));
        assert!(!is_our_postmaster(b"/usr/bin/vim\0-D\0/t/server/data\0", data));
        assert!(!is_our_postmaster(b"", data));
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let base = std::env::temp_dir().join(format!("e2e-local-test-{}", std::process::id()));
        let target = base.join("victim");
        fs::create_dir_all(&target).unwrap();
        let link = base.join("fallback");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        make_private_dir(&link).unwrap();
        let m = fs::symlink_metadata(&link).unwrap();
        assert!(m.is_dir() && !m.file_type().is_symlink());
        assert_eq!(m.mode() & 0o777, 0o700);
        assert!(target.is_dir(), "the symlink's target is left alone");
        fs::remove_dir_all(&base).unwrap();
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
    fn candidates_start_with_override_then_path() {
        let c = bindir_candidates(Some(Path::new("/x")), Some("/a:/b"), Some(Path::new("/c")));
        assert_eq!(&c[..4], &[PathBuf::from("/x"), PathBuf::from("/a"), PathBuf::from("/b"), PathBuf::from("/c")]);
    }
}
