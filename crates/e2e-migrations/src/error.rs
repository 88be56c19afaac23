//! The library's error type: every failure names the file, line, set or table at fault, and a
//! database error shows its SQLSTATE, detail and hint once.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::core::{counted, cut_list, cut_list_with, report, LISTED};

/// A failed migration statement, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFailure {
    /// The migration file.
    pub file: PathBuf,
    /// 1-based line in the file (from the server's error position, else the statement's start).
    pub line: usize,
    /// 1-based column, when the server gave a position.
    pub column: Option<usize>,
    /// The SQLSTATE code, e.g. `42P01`.
    pub sqlstate: String,
    /// The server's primary message.
    pub message: String,
    /// The server's DETAIL, if any.
    pub detail: Option<String>,
    /// The server's HINT, if any.
    pub hint: Option<String>,
}

impl std::fmt::Display for SqlFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        write!(f, ": {}", self.message)?;
        if self.sqlstate != "none" {
            write!(f, " (SQLSTATE {})", self.sqlstate)?;
        }
        if let Some(d) = &self.detail {
            write!(f, "\n  detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in the library: what the core refuses ([`Error::Core`]), and what
/// the engine meets reading files and talking to PostgreSQL.
///
/// A variant that wraps a cause (`#[source]`) says what was being done, and leaves why to the
/// cause: show the whole chain ([`report`]) rather than the top message alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A folder, manifest, selection or plan the pure core refuses.
    #[error(transparent)]
    Core(#[from] crate::core::Error),
    /// Reading or writing a file or folder failed.
    #[error("{}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An entry of a migrations folder named like a migration that is not a file goose can read.
    #[error(
        "{}: {problem}; goose lists every *.sql entry of the folder and fails on this one: fix it, rename it or \
         move it out of the folder",
        path.display()
    )]
    NotAFile {
        /// The entry.
        path: PathBuf,
        /// What it is instead.
        problem: EntryProblem,
    },
    /// A migration statement failed; earlier migrations stay applied.
    #[error(
        "migration failed: {failure}{}{}",
        if applied.is_empty() { String::new() } else { format!("\n  applied before the failure: {}", cut_list(applied)) },
        if *partial_statements == 0 {
            String::new()
        } else {
            format!(
                "\n  {} of this NO TRANSACTION migration ran before the failure and {} applied; fix the failing \
                 statement and run again to resume after {}",
                counted(*partial_statements as u64, "statement", "statements"),
                if *partial_statements == 1 { "stays" } else { "stay" },
                if *partial_statements == 1 { "it" } else { "them" }
            )
        }
    )]
    Migration {
        /// Where and why.
        failure: Box<SqlFailure>,
        /// Migrations applied in this run before the failure (they stay).
        applied: Vec<String>,
        /// For a `NO TRANSACTION` migration, statements that ran before the failure (they stay).
        partial_statements: usize,
    },
    /// An advisory lock was not obtained in time.
    #[error("timed out after {:.0}s waiting for {lock}, held by {holder}; wait longer or stop the other run", waited.as_secs_f64())]
    LockTimeout {
        /// Which lock, e.g. `the migration lock`.
        lock: String,
        /// Who holds it, as the server reports (`pid 4242 (app, state: "query")`).
        holder: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A database error outside a migration statement.
    #[error("{context}")]
    Db {
        /// What we were doing.
        context: String,
        /// The driver's error.
        #[source]
        source: PgError,
    },
    /// A database URL (or key=value string) that cannot be used; the password is never shown.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, its password replaced by `***` ([`crate::db::redact`]).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached, or refused the session (authentication, no such database).
    #[error("connecting to {address} ({url})")]
    Connect {
        /// The host:port (or socket) connected to.
        address: String,
        /// The URL, its password replaced by `***`.
        url: String,
        /// Why.
        #[source]
        source: PgError,
    },
    /// No PostgreSQL answer within the connect timeout.
    #[error(
        "connecting to {address} ({url}): no PostgreSQL answer within {} s: something else may listen there, a \
         forward may be stuck, or the server is slower than that",
        timeout.as_secs_f64()
    )]
    ConnectTimeout {
        /// The host:port (or socket) connected to.
        address: String,
        /// The URL, its password replaced by `***`.
        url: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// A server that gave no complete startup (connect, authentication, session setup) within
    /// the connect timeout, while doing what `context` says.
    #[error(
        "{context}: no PostgreSQL answer within {} s (a stuck server, or one slower than that)",
        timeout.as_secs_f64()
    )]
    NoAnswer {
        /// What was being done.
        context: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// An environment variable holds a value the library cannot use.
    #[error("{var}={value:?}: {expected}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// The operating system gave no random bytes.
    #[error("no randomness for {what}")]
    Randomness {
        /// What they were for.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Rolling, pruning or listing a table's partitions stopped.
    #[error("partitions of {table}")]
    Roll {
        /// The table, as its spec names it.
        table: String,
        /// What stopped it.
        #[source]
        source: Box<crate::partitions::RollError>,
    },
    /// A test database template could not be built (see [`crate::testdb`]).
    #[error("building the test template for sets {sets}")]
    Template {
        /// The sets, comma-separated.
        sets: String,
        /// What stopped it.
        #[source]
        source: Box<Error>,
    },
    /// Where the database lives, and reaching it (see [`crate::lifecycle`]).
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    /// The Kubernetes side of a kube setup: the kubeconfig, the API server, the run, the
    /// port-forward (see [`crate::kube`]).
    #[cfg(feature = "kube")]
    #[error(transparent)]
    Kube(#[from] crate::kube::KubeError),
}

/// Why an entry named like a migration is not a file goose can read ([`Error::NotAFile`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum EntryProblem {
    /// A directory.
    Directory,
    /// A socket, a fifo, a device.
    NotRegular,
    /// A symlink that leads back to itself.
    SymlinkLoop,
    /// A symlink to nothing.
    DanglingSymlink {
        /// Where it points, when that can be read.
        target: Option<PathBuf>,
    },
    /// Its metadata cannot be read.
    Unreadable(std::io::Error),
}

impl std::fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryProblem::Directory => f.write_str("a directory named like a migration file"),
            EntryProblem::NotRegular => f.write_str("not a regular file"),
            EntryProblem::SymlinkLoop => f.write_str("a symlink loop"),
            EntryProblem::DanglingSymlink { target: Some(t) } => write!(f, "a dangling symlink to {}", t.display()),
            EntryProblem::DanglingSymlink { target: None } => f.write_str("a dangling symlink"),
            EntryProblem::Unreadable(e) => write!(f, "cannot be read ({e})"),
        }
    }
}

/// A database driver error as the cause in an error chain, said once: the server's message with
/// its SQLSTATE, DETAIL and HINT; or, for an error not from the server (refused, reset, closed),
/// the driver's words, its own cause following in the chain. The driver's error itself is
/// [`PgError::driver`] (and `Deref`).
pub struct PgError(tokio_postgres::Error);

impl PgError {
    /// The driver's error.
    pub fn driver(&self) -> &tokio_postgres::Error {
        &self.0
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError(e)
    }
}

impl std::ops::Deref for PgError {
    type Target = tokio_postgres::Error;
    fn deref(&self) -> &tokio_postgres::Error {
        &self.0
    }
}

impl std::fmt::Debug for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write_server_error(f, db),
            None => std::fmt::Display::fmt(&self.0, f),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The server's error is all in the message above; another error's cause follows it.
        match self.0.as_db_error() {
            Some(_) => None,
            None => std::error::Error::source(&self.0),
        }
    }
}

fn write_server_error(f: &mut impl std::fmt::Write, db: &tokio_postgres::error::DbError) -> std::fmt::Result {
    write!(f, "{} (SQLSTATE {})", db.message(), db.code().code())?;
    if let Some(d) = db.detail() {
        write!(f, "; detail: {d}")?;
    }
    if let Some(h) = db.hint() {
        write!(f, "; hint: {h}")?;
    }
    Ok(())
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to a driver error.
pub(crate) trait DbContext<T> {
    fn db(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DbContext<T> for Result<T, tokio_postgres::Error> {
    fn db(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Db { context: context(), source: PgError(source) })
    }
}

impl<T> DbContext<T> for Result<T, crate::db::Startup> {
    fn db(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into_error(context()))
    }
}

/// A driver error in one line: the server's message with SQLSTATE, detail and hint, or the
/// driver's words and their causes (what [`PgError`] and its causes say).
pub fn describe_db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = String::new();
            write_server_error(&mut s, db).expect("writing to a String");
            s
        }
        None => report(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_say_the_path_once_and_the_cause_once() {
        let e = Error::Io { path: "m/x.sql".into(), source: std::io::Error::from(std::io::ErrorKind::NotFound) };
        assert_eq!(report(&e), "m/x.sql: entity not found");
    }

    #[test]
    fn the_core_error_is_wrapped_transparently() {
        let e: Error = crate::core::Error::EmptySetName { list: "a,".into() }.into();
        assert_eq!(e.to_string(), "set list \"a,\": empty set name");
        assert!(std::error::Error::source(&e).is_none());
    }
}
