//! Whether the server of a data folder runs and is ours: `postmaster.pid` read (pure), the
//! judgement over what the live server says (pure), and the question asked over the private
//! socket (I/O).
//!
//! A `postmaster.pid` alone proves nothing: a copied data folder (`cp -a` of a checkout) holds
//! the original's file, naming the original's pid, and after a reboot the pid may be another
//! process's. So a server counts as ours only when it answers on our private socket folder and
//! says that its `data_directory` is our data folder, that its instance id is the one made at
//! creation, and that it started when `postmaster.pid` says (so the pid there is its own). Only
//! then is it reused or signalled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::Config;

use crate::db::Startup;

/// The custom setting that carries the instance id in the server's configuration.
pub const INSTANCE_SETTING: &str = "e2e_migrations.instance_id";

/// What `postmaster.pid` says (PostgreSQL 10 and later write these lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PidFile {
    /// The postmaster's pid.
    pub(crate) pid: i32,
    /// The data folder it was started on.
    pub(crate) data_dir: PathBuf,
    /// Its start time (unix seconds).
    pub(crate) started: i64,
    /// Its port.
    pub(crate) port: u16,
    /// Its first unix socket folder.
    pub(crate) socket_dir: Option<PathBuf>,
    /// The key and id of its SysV shared memory segment, once it made one.
    pub(crate) shm: Option<(i64, i64)>,
    /// `starting`, `stopping`, `ready` or `standby`.
    pub(crate) status: String,
}

/// Parses `postmaster.pid` (pure); `None` when it is not one (empty, truncated).
pub(crate) fn parse_pid_file(text: &str) -> Option<PidFile> {
    let lines: Vec<&str> = text.lines().collect();
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    if pid <= 0 {
        return None;
    }
    Some(PidFile {
        pid,
        data_dir: PathBuf::from(lines.get(1)?.trim_end()),
        started: lines.get(2).and_then(|l| l.trim().parse().ok()).unwrap_or(0),
        port: lines.get(3).and_then(|l| l.trim().parse().ok()).unwrap_or(0),
        socket_dir: lines.get(4).map(|l| l.trim_end()).filter(|l| !l.is_empty()).map(PathBuf::from),
        shm: lines.get(6).and_then(|l| {
            let mut f = l.split_whitespace().map(|n| n.parse::<i64>().ok());
            Some((f.next()??, f.next()??))
        }),
        status: lines.get(7).map(|s| s.trim().to_string()).unwrap_or_default(),
    })
}

/// Why a `postmaster.pid` in `data_dir` cannot belong to a live server of that folder, or
/// `None` when it may (pure over whether its pid is alive).
pub(crate) fn stale_reason(file: &PidFile, data_dir: &Path, pid_alive: bool) -> Option<String> {
    if file.data_dir != data_dir {
        return Some(format!(
            "it names the data folder {} (copied from there), so its pid {} is not this folder's server",
            file.data_dir.display(),
            file.pid
        ));
    }
    if !pid_alive {
        return Some(format!("its pid {} is gone", file.pid));
    }
    None
}

/// What the live server says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Live {
    /// `data_directory`, canonicalized where it exists.
    pub(crate) data_dir: PathBuf,
    /// The instance id setting, when set.
    pub(crate) instance_id: Option<String>,
    /// `pg_postmaster_start_time()`, unix seconds.
    pub(crate) started: i64,
}

/// Whether the live server is the one made at creation in `data_dir` with `instance_id`, and
/// the one `file` names (pure). `Err` says what differs. `instance_id` is `None` only for a
/// server of an earlier version, which carries none.
pub(crate) fn judge(live: &Live, file: &PidFile, data_dir: &Path, instance_id: Option<&str>) -> Result<(), String> {
    if live.data_dir != data_dir {
        return Err(format!("its data folder is {}, not {}", live.data_dir.display(), data_dir.display()));
    }
    match (&live.instance_id, instance_id) {
        (Some(id), Some(want)) if id == want => {}
        (None, None) => {}
        (Some(id), Some(want)) => return Err(format!("its instance id is {id}, not {want}")),
        (None, Some(_)) => return Err("it carries no instance id".to_string()),
        (Some(id), None) => return Err(format!("it carries the instance id {id}, which this folder does not name")),
    }
    // The two clocks are read a moment apart in the postmaster.
    if (live.started - file.started).abs() > 2 {
        return Err(format!(
            "it started at {} but postmaster.pid names a server started at {}",
            live.started, file.started
        ));
    }
    Ok(())
}

/// What is left of a postmaster that `postmaster.pid` names but that answers nothing: the
/// evidence [`fate`] weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remains {
    /// `kill(pid, 0)` finds the pid (a zombie counts).
    pub(crate) pid_alive: bool,
    /// The pid has exited and waits to be reaped; `None` where this cannot be told.
    pub(crate) zombie: Option<bool>,
    /// How many processes hold the server's shared memory segment (the postmaster and each of
    /// its children while they live; 0 when the segment is gone); `None` where unknown.
    pub(crate) shm_holders: Option<u64>,
    /// Something accepts connections on the server's socket.
    pub(crate) listening: bool,
}

/// What became of a postmaster that answers nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It has exited, and so have its processes: its `postmaster.pid` and socket lock file are
    /// stale. Why it is known.
    Exited(String),
    /// It, or a process of it, may still be alive: nothing of it may be removed. Why.
    Alive(String),
}

/// Weighs what is left of the postmaster `pid` (pure). PostgreSQL itself takes a lock file
/// whose pid `kill(pid, 0)` finds as held, a zombie's included, and refuses to start on a data
/// folder while a process holds its old shared memory. So a postmaster counts as exited only
/// when its pid is gone; or when it is a zombie and none of its processes holds the shared
/// memory; or when no process holds the shared memory and nothing listens on its socket (its
/// pid then names another process). Anything less is alive.
pub(crate) fn fate(pid: i32, r: &Remains) -> Fate {
    if !r.pid_alive {
        return Fate::Exited(format!("its pid {pid} is gone"));
    }
    if let Some(n) = r.shm_holders.filter(|n| *n > 0) {
        let who = if r.zombie == Some(true) {
            format!("its postmaster (pid {pid}) has exited, but")
        } else {
            format!("its postmaster (pid {pid}) is alive, and")
        };
        let many = if n == 1 { "1 process holds".to_string() } else { format!("{n} processes hold") };
        return Fate::Alive(format!("{who} {many} its shared memory"));
    }
    if r.zombie == Some(true) {
        return Fate::Exited(format!("its pid {pid} has exited (a zombie its parent has not reaped yet)"));
    }
    if r.shm_holders == Some(0) && !r.listening {
        return Fate::Exited(format!(
            "no process holds its shared memory and nothing listens on its socket, so pid {pid} is not its postmaster"
        ));
    }
    Fate::Alive(format!(
        "its postmaster (pid {pid}) is alive{}",
        if r.listening { " and holds its socket" } else { "" }
    ))
}

/// Gathers what is left of the postmaster `file` names, whose socket is in `socket_dir`.
pub(crate) async fn remains(file: &PidFile, socket_dir: &Path) -> Remains {
    let pid_alive = crate::process::pid_alive(file.pid);
    let zombie = if pid_alive { crate::process::zombie(file.pid) } else { Some(false) };
    let shm_holders = file.shm.and_then(|(key, id)| crate::process::shm_holders(key, id));
    // A listening socket takes a connection even from a postmaster that never accepts it; when
    // its queue is full the connect waits: that, too, is something listening.
    let socket = socket_dir.join(format!(".s.PGSQL.{}", file.port));
    let listening = match tokio::time::timeout(Duration::from_secs(1), tokio::net::UnixStream::connect(&socket)).await {
        Ok(Ok(_)) | Err(_) => true,
        Ok(Err(e)) => !matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound),
    };
    Remains { pid_alive, zombie, shm_holders, listening }
}

/// The socket lock files (`.s.PGSQL.<port>.lock`) in `socket_dir` that name `pid` (PostgreSQL
/// writes the owner's pid on their first line).
pub(crate) fn socket_locks_of(socket_dir: &Path, pid: i32) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(socket_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".s.PGSQL.") && n.ends_with(".lock"))
        })
        .filter(|p| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
                .is_some_and(|owner| owner == pid)
        })
        .collect()
}

/// A connection config for the maintenance database over the server's private socket in
/// `socket_dir`: peer authentication, no password (an earlier version's server takes one).
pub(crate) fn socket_config(socket_dir: &Path, port: u16, user: &str, password: Option<&str>) -> Config {
    let mut c = Config::new();
    c.host_path(socket_dir).port(port).user(user).dbname("postgres").application_name(crate::db::APPLICATION_NAME);
    if let Some(p) = password {
        c.password(p);
    }
    c
}

/// Opens a connection to the maintenance database over the private socket, within `timeout`
/// for the whole startup (the engine's connect timeout: a socket that never answers fails).
pub(crate) async fn connect_socket(
    socket_dir: &Path,
    port: u16,
    user: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<tokio_postgres::Client, Startup> {
    crate::db::start_within(socket_config(socket_dir, port, user, password), timeout).await
}

/// Asks the server on `socket_dir` what it is (connecting within `timeout`).
pub(crate) async fn ask(
    socket_dir: &Path,
    port: u16,
    user: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Live, Startup> {
    let client = connect_socket(socket_dir, port, user, password, timeout).await?;
    let row = client
        .query_one(
            "SELECT current_setting('data_directory'), current_setting($1, true),
                    floor(extract(epoch FROM pg_postmaster_start_time()))::bigint",
            &[&INSTANCE_SETTING],
        )
        .await
        .map_err(Startup::Failed)?;
    let data: String = row.get(0);
    let id: Option<String> = row.get(1);
    let data_dir = std::fs::canonicalize(&data).unwrap_or_else(|_| PathBuf::from(&data));
    Ok(Live { data_dir, instance_id: id.filter(|i| !i.is_empty()), started: row.get(2) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "4242\n/w/target/e2e/local/server/data\n1760000000\n54321\n/w/target/e2e/local/server/sock\n127.0.0.1\n  5432001     32768\nready   \n";

    #[test]
    fn pid_files_parse_and_truncated_ones_do_not() {
        let f = parse_pid_file(FILE).unwrap();
        assert_eq!(f.pid, 4242);
        assert_eq!(f.data_dir, Path::new("/w/target/e2e/local/server/data"));
        assert_eq!((f.started, f.port, f.status.as_str()), (1_760_000_000, 54321, "ready"));
        assert_eq!(f.socket_dir.as_deref(), Some(Path::new("/w/target/e2e/local/server/sock")));
        assert_eq!(f.shm, Some((5_432_001, 32768)));
        let starting = FILE.lines().take(6).collect::<Vec<_>>().join("\n");
        assert_eq!(parse_pid_file(&starting).unwrap().shm, None, "a postmaster that has no shared memory yet");
        assert_eq!(parse_pid_file(""), None);
        assert_eq!(parse_pid_file("4242\n"), None);
        assert_eq!(parse_pid_file("-1\n/x\n"), None);
    }

    #[test]
    fn a_copied_pid_file_never_names_our_server() {
        let f = parse_pid_file(FILE).unwrap();
        let copy = Path::new("/copy/target/e2e/local/server/data");
        let why = stale_reason(&f, copy, true).unwrap();
        assert!(why.contains("copied from there") && why.contains("4242"), "{why}");
        assert!(stale_reason(&f, &f.data_dir, false).unwrap().contains("gone"));
        assert_eq!(stale_reason(&f, &f.data_dir, true), None);
    }

    fn remains(pid_alive: bool, zombie: Option<bool>, shm_holders: Option<u64>, listening: bool) -> Remains {
        Remains { pid_alive, zombie, shm_holders, listening }
    }

    fn exited(r: Remains) -> bool {
        matches!(fate(4242, &r), Fate::Exited(_))
    }

    #[test]
    fn a_postmaster_has_exited_only_when_its_pid_is_gone_or_a_zombie_with_nothing_left() {
        assert!(exited(remains(false, None, None, true)), "the pid is gone, whatever else");
        assert!(exited(remains(true, Some(true), Some(0), false)), "a zombie (killed, not reaped yet)");
        assert!(exited(remains(true, Some(true), None, false)), "a zombie, shared memory unknown");
        assert!(exited(remains(true, Some(false), Some(0), false)), "the pid is another process's now");
        assert!(exited(remains(true, None, Some(0), false)));
        let Fate::Exited(why) = fate(4242, &remains(true, Some(true), Some(0), false)) else { unreachable!() };
        assert!(why.contains("4242") && why.contains("zombie"), "{why}");
    }

    #[test]
    fn a_postmaster_that_may_live_is_alive() {
        // SIGSTOPped or hung: alive, its memory held, its socket taking connections.
        let Fate::Alive(why) = fate(4242, &remains(true, Some(false), Some(7), true)) else { panic!() };
        assert!(why.contains("pid 4242") && why.contains("7 processes hold its shared memory"), "{why}");
        // Killed, but a child of it still runs: PostgreSQL would refuse to start anyway.
        let Fate::Alive(why) = fate(4242, &remains(true, Some(true), Some(1), false)) else { panic!() };
        assert!(why.contains("has exited, but 1 process holds"), "{why}");
        // Nothing to go by but a live pid (macOS, no /proc): alive.
        assert!(!exited(remains(true, None, None, false)));
        assert!(!exited(remains(true, Some(false), None, false)));
        // Memory free but something listens on the socket: not proven.
        assert!(!exited(remains(true, Some(false), Some(0), true)));
    }

    #[test]
    fn only_the_server_made_here_with_our_id_and_that_pid_file_is_ours() {
        let f = parse_pid_file(FILE).unwrap();
        let live = Live { data_dir: f.data_dir.clone(), instance_id: Some("id1".into()), started: f.started + 1 };
        assert_eq!(judge(&live, &f, &f.data_dir, Some("id1")), Ok(()));
        let other_place = Live { data_dir: "/orig/data".into(), ..live.clone() };
        assert!(judge(&other_place, &f, &f.data_dir, Some("id1")).unwrap_err().contains("/orig/data"));
        assert!(judge(&live, &f, &f.data_dir, Some("id2")).unwrap_err().contains("instance id"));
        assert!(judge(&live, &f, &f.data_dir, None).is_err(), "an id where the folder names none");
        let no_id = Live { instance_id: None, ..live.clone() };
        assert!(judge(&no_id, &f, &f.data_dir, Some("id1")).is_err());
        assert_eq!(judge(&no_id, &f, &f.data_dir, None), Ok(()), "an earlier version's server, by its folder");
        let restarted = Live { started: f.started + 60, ..live };
        assert!(judge(&restarted, &f, &f.data_dir, Some("id1")).unwrap_err().contains("started"));
    }

    #[tokio::test]
    async fn a_socket_that_never_answers_fails_within_the_connect_timeout() {
        let tmp = e2e_test_support::TempDir::new("e2e-sock");
        let dir = tmp.path().to_path_buf();
        let listener = tokio::net::UnixListener::bind(dir.join(".s.PGSQL.5555")).unwrap();
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                kept.push(s);
            }
        });
        let start = std::time::Instant::now();
        let r = ask(&dir, 5555, "e2e", None, Duration::from_millis(300)).await;
        assert!(matches!(r, Err(Startup::TimedOut(t)) if t == Duration::from_millis(300)), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        let e = connect_socket(&dir, 5555, "e2e", None, Duration::from_millis(300)).await.unwrap_err();
        let text = e.into_error("configuring the local server".into()).to_string();
        assert!(text.contains("no PostgreSQL answer within 0.3 s"), "{text}");
        held.abort();
    }
}
