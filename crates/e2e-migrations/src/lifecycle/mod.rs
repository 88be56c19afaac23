//! The lifecycle: the one owner of where the database lives and how to reach it.
//!
//! - [`workspace`]: the checkout a command runs in (found from the current folder), its
//!   `migrations/` and its own state folder;
//! - [`record`]: what setup leaves there (`state.json`, `connection.env`);
//! - [`local`]: the local backend (a throwaway server from the machine's binaries), with
//!   `postmaster` (is it running, is it ours) and [`cache`] (cold starts from a copy);
//! - [`resolve`](mod@resolve): from a URL (if any) and the state to a reachable [`Endpoint`] (pure decision,
//!   then I/O);
//! - [`fault`]: the test hook that kills setup at a given step.
//!
//! The rule: a checkout's state belongs to that checkout. A record names the state folder it
//! was made in; one read elsewhere (a checkout copied with its `target/`, a state folder moved)
//! is never followed. A server is reused, stopped or its folder deleted only once it proved, on
//! a live connection over the private socket, to be the one made here.
//!
//! The Kind and Kubernetes steps stay in the command line (xtask); the library is what they and
//! the test crates share. The engine (migrations, partitions, test databases) is handed a URL
//! and never decides where the database lives.

pub mod cache;
pub mod error;
pub mod fault;
pub mod local;
pub(crate) mod postmaster;
pub mod record;
pub mod resolve;
pub mod workspace;

use std::fs;
use std::path::Path;

pub use error::LifecycleError;
pub use record::{BackendKind, Phase, Record, Saved, SetupState};
pub use resolve::{resolve, Access, Endpoint, Origin, Route};
pub use workspace::{EnvVars, Workspace};

use crate::error::{Error, Result};

/// A lock on a state folder, held while setup or teardown changes it (an `flock` on the folder
/// itself, so that no lock file is ever left behind).
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

/// Locks the folder `dir` (made if missing) with an `flock` on the folder itself, exclusive or
/// shared, waiting for the holder of a conflicting one.
pub(crate) fn lock_dir(dir: &Path, exclusive: bool) -> Result<nix::fcntl::Flock<fs::File>> {
    fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let f = fs::File::open(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let how = if exclusive { nix::fcntl::FlockArg::LockExclusive } else { nix::fcntl::FlockArg::LockShared };
    Ok(nix::fcntl::Flock::lock(f, how)
        .map_err(|(_, source)| LifecycleError::Lock { path: dir.to_path_buf(), source })?)
}

/// Locks the state folder `dir` (waiting for another setup or teardown to finish).
pub async fn lock_state(dir: &Path) -> Result<StateLock> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || Ok(StateLock(lock_dir(&dir, true)?)))
        .await
        .expect("the lock task does not panic")
}

/// What this checkout's state folder holds (creates nothing).
pub fn read_saved(ws: &Workspace) -> Result<Saved> {
    match fs::canonicalize(&ws.state_dir) {
        Ok(here) => record::read(&here),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::Missing),
        Err(source) => Err(Error::Io { path: ws.state_dir.clone(), source }),
    }
}

/// Saves what a setup made (`phase` [`Phase::Creating`] before it changes anything, so that
/// teardown can find a half-made setup; [`Phase::Ready`] after). The instance id and the local
/// server's part of an existing record of this checkout are kept, so that a server set up
/// earlier stays reachable by teardown.
pub async fn save_setup(ws: &Workspace, setup: SetupState, phase: Phase) -> Result<Record> {
    let here = ws.canonical_state_dir()?;
    let _lock = lock_state(&here).await?;
    let mut rec = match record::read(&here)? {
        Saved::Ours(mut rec) => {
            rec.setup = setup;
            rec.phase = phase;
            rec
        }
        _ => Record {
            format: record::RECORD_FORMAT,
            made_in: here.clone(),
            instance_id: crate::secret::random_hex(16, "an instance id")?,
            phase,
            setup,
            local: None,
        },
    };
    if rec.setup.backend == BackendKind::Local {
        match &rec.local {
            Some(l) => rec.setup.database_url = Some(l.url()),
            None => {
                return Err(LifecycleError::IncompleteRecord {
                    file: record::record_file(&here),
                    backend: BackendKind::Local.name().into(),
                }
                .into())
            }
        }
    }
    record::write(&here, &rec)?;
    Ok(rec)
}

/// Removes the record and env file (after the backend's own teardown).
pub async fn forget(ws: &Workspace) -> Result<()> {
    let Ok(here) = fs::canonicalize(&ws.state_dir) else {
        return Ok(());
    };
    let _lock = lock_state(&here).await?;
    record::remove(&here)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_state_lock_leaves_no_file_behind() {
        let tmp = e2e_test_support::TempDir::new("e2e-lock-test");
        let dir = tmp.path().to_path_buf();
        let lock = lock_state(&dir).await.unwrap();
        let dir2 = dir.clone();
        let waiter = tokio::spawn(async move { lock_state(&dir2).await.map(|_| ()) });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "a second locker waits");
        drop(lock);
        waiter.await.unwrap().unwrap();
        assert_eq!(tmp.entries(), 0);
    }
}
