//! The machine-wide lock of a Kind cluster, and the note an interrupted `kind create cluster`
//! leaves beside it.
//!
//! A Kind cluster is machine-wide, so the checkouts that share it take turns: a setup holds
//! the lock from `kind get clusters` until its namespace (its claim on the cluster) exists, a
//! teardown from `kind get clusters` until the cluster is deleted or kept. So no teardown
//! counts the checkouts using a cluster while a setup is joining it, and two setups never
//! create, recreate or pick a port slot of the same cluster at once.
//!
//! The lock is an `flock` (Linux and macOS) on `kind-<cluster>.lock` in the user's cache folder
//! ([`lock_dir`]); the kernel releases it when its holder exits, however it exits. The file
//! stays (removing an flock file races with the next holder); it holds a line saying who holds
//! the lock, for the message of whoever waits.
//!
//! Before `kind create cluster` (and `kind delete cluster`) the holder writes
//! `kind-<cluster>.creating` and removes it once the cluster is made (or gone). A note found there
//! means that a create or delete was interrupted (the process killed): the cluster, if any, is
//! half made or half deleted, and no checkout can have joined it, since every
//! setup takes the lock and reads the note before it joins. The next setup redoes the create;
//! a teardown deletes the remains.
//!
//! The folder is per user: users who share one container engine should give their clusters
//! different names (`cluster.name` in `e2e.toml`).

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::progress::Step;

/// How long a setup or teardown waits for another one's turn with the same cluster (a cold
/// create takes a minute or two).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The folder of the locks (pure): `<home>/.cache/e2e-migrations`, where home is the one the
/// user database gives this user (`passwd_home`), else `$HOME`. Not `$XDG_CACHE_HOME` nor a
/// `$HOME` that `sudo` kept: every process of one user must find the same lock, and root must
/// not leave a lock file in a user's folder that the user then cannot open.
pub(crate) fn lock_dir(passwd_home: Option<&Path>, home: Option<&OsStr>) -> Result<PathBuf> {
    let home = passwd_home.map(Path::to_path_buf).or_else(|| home.map(PathBuf::from)).filter(|p| p.is_absolute());
    match home {
        Some(home) => Ok(home.join(".cache").join("e2e-migrations")),
        None => bail!(
            "no folder for the machine-wide Kind lock: this user has no home folder (set HOME to an absolute path)"
        ),
    }
}

/// This user's home folder, as the user database says.
fn passwd_home() -> Option<PathBuf> {
    nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.dir)
}

/// The lock file and the create note of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockPaths {
    /// The cluster's name.
    pub(crate) cluster: String,
    /// `kind-<cluster>.lock`.
    pub(crate) lock: PathBuf,
    /// `kind-<cluster>.creating`.
    pub(crate) creating: PathBuf,
}

impl LockPaths {
    /// The paths of `cluster` (a DNS label, checked with the settings) in `dir` (pure).
    pub(crate) fn new(dir: &Path, cluster: &str) -> LockPaths {
        LockPaths {
            cluster: cluster.to_string(),
            lock: dir.join(format!("kind-{cluster}.lock")),
            creating: dir.join(format!("kind-{cluster}.creating")),
        }
    }

    /// The paths of `cluster` in this user's lock folder.
    pub(crate) fn of_user(cluster: &str) -> Result<LockPaths> {
        let dir = lock_dir(passwd_home().as_deref(), std::env::var_os("HOME").as_deref())?;
        Ok(LockPaths::new(&dir, cluster))
    }
}

/// Who holds a lock, as its file says: `e2e-setup in /w/app (pid 4242, since 12:00:00Z)`.
pub(crate) fn holder_line(command: &str, checkout: &Path, pid: u32, since: chrono::DateTime<chrono::Utc>) -> String {
    format!("{command} in {} (pid {pid}, since {})", checkout.display(), since.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// The lock of one cluster, held until dropped.
pub(crate) struct ClusterLock {
    paths: LockPaths,
    _file: Flock<fs::File>,
}

impl ClusterLock {
    /// Takes the lock of the cluster at `paths` for `holder` (see [`holder_line`]), waiting at
    /// most `wait` while another process holds it; `step` says whom it waits for.
    pub(crate) async fn acquire(paths: &LockPaths, holder: &str, wait: Duration, step: &Step) -> Result<ClusterLock> {
        let dir = paths.lock.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let start = Instant::now();
        let mut said = None;
        let mut file = loop {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&paths.lock)
                .with_context(|| format!("opening the Kind lock {}", paths.lock.display()))?;
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => break locked,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    let other = read_holder(&paths.lock);
                    if start.elapsed() >= wait {
                        bail!(
                            "Kind cluster {} is busy: {other} holds its lock {}, and this command waited {} s \
                             for it; wait until it ends, or stop that process if it hangs",
                            paths.cluster,
                            paths.lock.display(),
                            wait.as_secs()
                        );
                    }
                    if said.as_ref() != Some(&other) {
                        step.note(format!("waiting for {other}, which works on this Kind cluster"));
                        step.detail(format!("waiting for {other} (lock {})", paths.lock.display()));
                        said = Some(other);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err((_, e)) => return Err(e).with_context(|| format!("locking {}", paths.lock.display())),
            }
        };
        let write = |f: &mut fs::File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(format!("{holder}\n").as_bytes())
        };
        write(&mut file).with_context(|| format!("writing {}", paths.lock.display()))?;
        // `kind create` / `kind delete` inherit the lock: a holder killed while kind works on the
        // cluster (kill -9, the OOM killer) leaves the lock held until kind itself ends
        nix::fcntl::fcntl(&*file, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
            .with_context(|| format!("letting child processes inherit {}", paths.lock.display()))?;
        Ok(ClusterLock { paths: paths.clone(), _file: file })
    }

    /// The note of an interrupted `kind create cluster`, if one was left (who, and when).
    pub(crate) fn interrupted_create(&self) -> Option<String> {
        let text = fs::read_to_string(&self.paths.creating).ok()?;
        let text = text.trim();
        Some(if text.is_empty() { "an earlier setup".to_string() } else { text.to_string() })
    }

    /// Writes the note before `kind create cluster` (or the delete of a recreate): `who`.
    pub(crate) fn note_create(&self, who: &str) -> Result<()> {
        e2e_migrations::lifecycle::record::write_private(&self.paths.creating, format!("{who}\n").as_bytes())?;
        Ok(())
    }

    /// Removes the note: the cluster is made, or gone.
    pub(crate) fn clear_create(&self) -> Result<()> {
        match fs::remove_file(&self.paths.creating) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.paths.creating.display())),
        }
    }
}

/// Who holds the lock, as its file says (the holder may not have written it yet).
fn read_holder(lock: &Path) -> String {
    let mut text = String::new();
    let _ = fs::File::open(lock).and_then(|mut f| f.read_to_string(&mut text));
    match text.trim() {
        "" => "another setup or teardown".to_string(),
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2e_test_support::TempDir;

    #[test]
    fn the_lock_folder_is_the_users_cache() {
        let dir = |p: Option<&str>, h: Option<&str>| lock_dir(p.map(Path::new), h.map(OsStr::new));
        assert_eq!(
            dir(Some("/home/u"), Some("/h")).unwrap(),
            Path::new("/home/u/.cache/e2e-migrations"),
            "passwd first"
        );
        assert_eq!(
            dir(Some("/var/root"), Some("/Users/u")).unwrap(),
            Path::new("/var/root/.cache/e2e-migrations"),
            "sudo's HOME"
        );
        assert_eq!(dir(None, Some("/h")).unwrap(), Path::new("/h/.cache/e2e-migrations"));
        assert!(dir(None, Some("rel")).unwrap_err().to_string().contains("set HOME"));
        assert!(dir(None, None).unwrap_err().to_string().contains("set HOME"));
        let p = LockPaths::new(Path::new("/c/e2e-migrations"), "e2e");
        assert_eq!(p.lock, Path::new("/c/e2e-migrations/kind-e2e.lock"));
        assert_eq!(p.creating, Path::new("/c/e2e-migrations/kind-e2e.creating"));
    }

    /// One checkout's teardown cannot count the users of a cluster while another's setup is
    /// joining it: the second taker waits for the first, and says whom it waits for.
    #[test]
    fn a_second_taker_waits_for_the_first_and_names_it() {
        let tmp = TempDir::new("xtask-kind-lock");
        let paths = LockPaths::new(&tmp.join("locks"), "e2e");
        e2e_test_support::rt().block_on(async {
            let step = Step::start("cluster e2e");
            let first = ClusterLock::acquire(&paths, "e2e-setup in /w/a (pid 1)", LOCK_WAIT, &step).await.unwrap();
            let e = ClusterLock::acquire(&paths, "e2e-teardown in /w/b (pid 2)", Duration::from_millis(300), &step)
                .await
                .err()
                .expect("the lock is held");
            let e = e.to_string();
            assert!(e.starts_with("Kind cluster e2e is busy: e2e-setup in /w/a (pid 1) holds its lock"), "{e}");
            // the lock passes to `kind create` / `kind delete`, so killing only xtask frees nothing
            let flags = nix::fcntl::fcntl(&*first._file, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert_eq!(flags & nix::fcntl::FdFlag::FD_CLOEXEC.bits(), 0, "the lock is closed on exec");
            drop(first);
            let second =
                ClusterLock::acquire(&paths, "e2e-teardown in /w/b (pid 2)", Duration::from_millis(300), &step)
                    .await
                    .unwrap();
            assert_eq!(fs::read_to_string(&paths.lock).unwrap(), "e2e-teardown in /w/b (pid 2)\n");
            drop(second);
        });
    }

    #[test]
    fn an_interrupted_create_leaves_a_note_until_cleared() {
        let tmp = TempDir::new("xtask-kind-lock-note");
        let paths = LockPaths::new(tmp.path(), "e2e");
        e2e_test_support::rt().block_on(async {
            let step = Step::start("cluster e2e");
            let lock = ClusterLock::acquire(&paths, "e2e-setup in /w/a (pid 1)", LOCK_WAIT, &step).await.unwrap();
            assert_eq!(lock.interrupted_create(), None);
            lock.note_create("e2e-setup in /w/a (pid 1)").unwrap();
            drop(lock);
            let lock = ClusterLock::acquire(&paths, "e2e-setup in /w/b (pid 2)", LOCK_WAIT, &step).await.unwrap();
            assert_eq!(lock.interrupted_create().as_deref(), Some("e2e-setup in /w/a (pid 1)"));
            lock.clear_create().unwrap();
            lock.clear_create().unwrap();
            assert_eq!(lock.interrupted_create(), None);
        });
    }
}
