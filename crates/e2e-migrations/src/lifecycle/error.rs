//! What can go wrong in the lifecycle: the workspace, the state record, the local server.
//!
//! Messages say what is wrong and where, and never name a command-line flag: the command line
//! adds its own hints (which command sets up, which flag picks a backend) as context.

use std::path::PathBuf;

use super::local::BINDIR_ENV;

/// A lifecycle failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// No folder from the starting one upwards holds `Cargo.lock`.
    #[error("no workspace: neither {} nor any folder above it holds Cargo.lock", from.display())]
    NoWorkspace {
        /// Where the search started.
        from: PathBuf,
    },
    /// Nothing is set up for this checkout.
    #[error("nothing is set up for this checkout (no {})", file.display())]
    NotSetUp {
        /// The state record that does not exist.
        file: PathBuf,
    },
    /// The state record was made in another state folder: the checkout was copied (with its
    /// `target/`) or the folder moved. What it names belongs to the other checkout.
    #[error(
        "{} was made in {}, not here (a copied checkout or a moved state folder); what it names belongs there and is left alone",
        file.display(),
        made_in.display()
    )]
    ForeignRecord {
        /// The state record.
        file: PathBuf,
        /// The state folder it was made in.
        made_in: PathBuf,
    },
    /// The state record cannot be read (truncated, edited, or written by another version).
    #[error("{} is unreadable: {reason}", file.display())]
    UnreadableRecord {
        /// The state record.
        file: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// The state record is complete for no backend (it names neither a URL nor a namespace).
    #[error("{} names the {backend} backend but no way to reach it", file.display())]
    IncompleteRecord {
        /// The state record.
        file: PathBuf,
        /// The backend it names.
        backend: String,
    },
    /// The local server is set up but not running; read-only work never starts it.
    #[error("the local PostgreSQL server of {} is not running", state_dir.display())]
    ServerDown {
        /// The state folder.
        state_dir: PathBuf,
    },
    /// The last setup was interrupted before the server was ready; read-only work does not
    /// finish it.
    #[error("the setup in {} did not finish (it was interrupted)", state_dir.display())]
    SetupIncomplete {
        /// The state folder.
        state_dir: PathBuf,
    },
    /// A server answers on this checkout's private socket, but it is not the one set up here.
    #[error("a server answers on {}, but it is not this checkout's: {why}", socket_dir.display())]
    NotOurs {
        /// The socket folder.
        socket_dir: PathBuf,
        /// What did not match.
        why: String,
    },
    /// The local server answers nothing on its socket, yet its postmaster (or a process of it)
    /// is still alive: its files are left alone, as PostgreSQL itself would not start beside it.
    #[error(
        "the local PostgreSQL server of {} does not answer: {why}; it is left alone: stop it (kill {pid}, \
         and kill -9 {pid} if it is still there after a minute; its other processes exit after it), then try again",
        data_dir.display()
    )]
    Unresponsive {
        /// Its data folder.
        data_dir: PathBuf,
        /// The pid its `postmaster.pid` names.
        pid: i32,
        /// What answered nothing, and what is still alive.
        why: String,
    },
    /// The record names a backend this build cannot reach (kube without the `kube` feature).
    #[error("the {backend} setup in {} is reached through the Kubernetes API, which this build lacks (the e2e-migrations feature \"kube\")", file.display())]
    NoKubeSupport {
        /// The state record.
        file: PathBuf,
        /// The backend.
        backend: String,
    },
    /// No PostgreSQL server binaries were found.
    #[error(
        "no PostgreSQL server binaries found (initdb and postgres; searched {}); install them \
         (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@16, or Postgres.app), \
         or set {BINDIR_ENV} to their folder",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoServerBinaries {
        /// The folders searched, in order.
        searched: Vec<PathBuf>,
    },
    /// `E2E_PG_BINDIR` names a folder that lacks a binary.
    #[error("{BINDIR_ENV}={} has no {missing}", dir.display())]
    BadBindir {
        /// The folder.
        dir: PathBuf,
        /// The missing binary.
        missing: String,
    },
    /// Running as root, with no unprivileged account to run the server as.
    #[error("running as root, and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL as (it refuses root)")]
    NoServiceAccount,
    /// A program could not be started.
    #[error("running {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// A program exited with an error.
    #[error("{} failed ({status}):\n{output}", program.display())]
    Command {
        /// The program.
        program: PathBuf,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The server did not start.
    #[error("the local PostgreSQL server did not start; last lines of {}:\n{tail}", log.display())]
    Start {
        /// The server log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// The state folder could not be locked.
    #[error("{}: cannot lock", path.display())]
    Lock {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// No free TCP port on 127.0.0.1.
    #[error("no free port on 127.0.0.1")]
    NoPort {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;

    /// A wrapped cause is said once in the chain (the CLI prints the whole chain).
    #[test]
    fn errors_with_a_cause_say_it_once() {
        let gone = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let spawn = LifecycleError::Spawn { program: "/usr/bin/initdb".into(), source: gone() };
        assert_eq!(report(&spawn), "running /usr/bin/initdb: entity not found");
        let port = LifecycleError::NoPort { source: gone() };
        assert_eq!(report(&port), "no free port on 127.0.0.1: entity not found");
        let lock = LifecycleError::Lock { path: "target/e2e".into(), source: nix::Error::EAGAIN };
        assert_eq!(report(&lock), "target/e2e: cannot lock: EAGAIN: Try again");
    }
}
