//! Other processes of this machine, as the operating system tells them: whether a pid is alive,
//! whether it is a zombie (exited, not yet reaped by its parent), and how many processes hold a
//! SysV shared memory segment. The text the system gives is parsed by pure functions; the readers
//! around them are thin.
//!
//! Linux answers from `/proc` (`/proc/<pid>/stat`, `/proc/sysvipc/shm`), readable without any
//! privilege. Elsewhere (macOS) a zombie is told by `ps -o stat=`, and shared memory is unknown.

/// Whether `pid` names a process, a zombie included (`kill(pid, 0)`; a process of another user
/// counts).
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// The state letter of a `/proc/<pid>/stat` line (pure): the field after the command name,
/// which is in parentheses and may itself hold spaces and parentheses. Read on Linux only; the
/// parser is tested everywhere.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn stat_state(stat: &str) -> Option<char> {
    let (_, after) = stat.rsplit_once(')')?;
    after.trim_start().chars().next()
}

/// Whether a process state letter is a process that has exited (pure): `Z` (zombie) or `X`
/// (dead), as Linux's `/proc` and `ps -o stat=` write them.
pub(crate) fn state_exited(state: char) -> bool {
    matches!(state, 'Z' | 'X')
}

/// Whether `pid` is a zombie: `Some(true)` when it has exited and waits for its parent to reap
/// it, `Some(false)` when it runs (or is gone), `None` when this cannot be told.
#[cfg(target_os = "linux")]
pub(crate) fn zombie(pid: i32) -> Option<bool> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => stat_state(&text).map(state_exited),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

/// Whether `pid` is a zombie, as `ps -o stat=` tells it (where there is no `/proc`).
#[cfg(not(target_os = "linux"))]
pub(crate) fn zombie(pid: i32) -> Option<bool> {
    let out = std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    // ps exits non-zero when the pid is gone.
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().chars().next() {
        Some(c) => Some(state_exited(c)),
        None if !out.status.success() => Some(false),
        None => None,
    }
}

/// How many processes are attached to the shared memory segment `shmid` whose key is `key`,
/// from the text of `/proc/sysvipc/shm` (pure): `Some(0)` when no such segment exists (removed,
/// or its id now names a segment of another key), `None` when the table cannot be read. Read on
/// Linux only; the parser is tested everywhere.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn shm_attached(table: &str, key: i64, shmid: i64) -> Option<u64> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (key_at, id_at, nattch_at) = (col("key")?, col("shmid")?, col("nattch")?);
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(id_at).and_then(|f| f.parse::<i64>().ok()) != Some(shmid) {
            continue;
        }
        if fields.get(key_at).and_then(|f| f.parse::<i64>().ok()) != Some(key) {
            return Some(0);
        }
        return fields.get(nattch_at).and_then(|f| f.parse().ok());
    }
    Some(0)
}

/// How many processes hold the SysV shared memory segment `shmid` of key `key`: `Some(0)` when
/// it is gone, `None` where this cannot be told.
#[cfg(target_os = "linux")]
pub(crate) fn shm_holders(key: i64, shmid: i64) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
    shm_attached(&table, key, shmid)
}

/// Unknown where there is no `/proc/sysvipc/shm`.
#[cfg(not(target_os = "linux"))]
pub(crate) fn shm_holders(_key: i64, _shmid: i64) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_read_after_the_last_parenthesis_of_the_command_name() {
        assert_eq!(stat_state("4242 (postgres) S 1 4242 4242 0 -1 ..."), Some('S'));
        assert_eq!(stat_state("4242 (post gres) (x)) Z 1 4242"), Some('Z'));
        assert_eq!(stat_state("garbage"), None);
        assert!(state_exited('Z') && state_exited('X'));
        assert!(!state_exited('S') && !state_exited('R') && !state_exited('T') && !state_exited('D'));
    }

    const SHM: &str = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
   7659536    1802240   600                    56  4746  4748      6   101   104   101   104 1795788946 1795788946 1795787912                  4096                     0
   6144007     229392   600                    56 21857 21858      0   101   104   101   104 1795783154 1795783156 1795782709                  4096                     0
";

    #[test]
    fn shared_memory_holders_are_counted_by_id_and_key() {
        assert_eq!(shm_attached(SHM, 7659536, 1802240), Some(6));
        assert_eq!(shm_attached(SHM, 6144007, 229392), Some(0), "a segment nobody holds");
        assert_eq!(shm_attached(SHM, 1, 1802240), Some(0), "the id now names a segment of another key");
        assert_eq!(shm_attached(SHM, 5, 5), Some(0), "no such segment");
        assert_eq!(shm_attached("", 5, 5), None);
        assert_eq!(shm_attached("a b c\n1 2 3\n", 5, 5), None, "a table of unknown columns");
    }

    #[test]
    fn this_process_is_alive_and_no_zombie() {
        let me = std::process::id() as i32;
        assert!(pid_alive(me));
        assert!(!pid_alive(0) && !pid_alive(-1));
        assert_ne!(zombie(me), Some(true));
    }
}
