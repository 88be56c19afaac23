//! The library's one error type: every failure names the file, line, set or table at fault.

use std::path::PathBuf;

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

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A migration file that goose would refuse, or that cannot be read.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The file at fault.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A migration the engine refuses to run as written, found before connecting: transaction
    /// control inside its transaction, or a statement PostgreSQL refuses there (see
    /// [`crate::txblock`]).
    #[error("{file}:{line}:{column}: {message}{}", if *more == 0 { String::new() } else { format!(" (and {more} more such statements in this file)") })]
    Refused {
        /// The file at fault.
        file: PathBuf,
        /// 1-based line of the statement.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what to do.
        message: String,
        /// Further such statements in the same file.
        more: usize,
    },
    /// Reading a file or folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The sets manifest is malformed.
    #[error("{file}: {message}")]
    Manifest {
        /// The manifest file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Two migration files share a version.
    #[error("duplicate migration version {version}: {} (goose refuses a folder like this)", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" and "))]
    DuplicateVersion {
        /// The version.
        version: i64,
        /// The files that carry it.
        files: Vec<PathBuf>,
    },
    /// A set was requested that the manifest does not define.
    #[error("unknown set {}; known sets: {}", crate::ident::excerpt(name), cut_list(known))]
    UnknownSet {
        /// The requested name.
        name: String,
        /// The sets that exist.
        known: Vec<String>,
    },
    /// A set names a file that does not exist.
    #[error("set {set:?} names {file:?}, which is not a migration in {dir}")]
    MissingFile {
        /// The set.
        set: String,
        /// The file name.
        file: String,
        /// The migrations folder.
        dir: PathBuf,
    },
    /// Sets include each other in a cycle.
    #[error("set include cycle: {}", cut_list_with(cycle, " -> "))]
    IncludeCycle {
        /// The sets in the cycle, first repeated last.
        cycle: Vec<String>,
    },
    /// Applied migrations whose Up section changed since.
    #[error("applied migration changed since it was applied (checksum differs): {}; restore the file, add a new migration, or pass --accept-drift", cut_list(files))]
    Drift {
        /// The changed files.
        files: Vec<String>,
    },
    /// A migration statement failed; earlier migrations stay applied.
    #[error("migration failed: {failure}{}", if applied.is_empty() { String::new() } else { format!("\n  applied before the failure: {}", cut_list(applied)) })]
    Migration {
        /// Where and why.
        failure: Box<SqlFailure>,
        /// Migrations applied in this run before the failure (they stay).
        applied: Vec<String>,
        /// For a `NO TRANSACTION` migration, statements that ran before the failure (they stay).
        partial_statements: usize,
    },
    /// The advisory lock was not obtained in time.
    #[error("timed out after {waited_s:.0}s waiting for {holder}; pass a longer --lock-timeout or stop the other run")]
    LockTimeout {
        /// Seconds waited.
        waited_s: f64,
        /// Which lock, and who holds it, as the server reports.
        holder: String,
    },
    /// A partition spec that cannot be applied.
    #[error("partition spec for {table}: {message}")]
    Partition {
        /// The table.
        table: String,
        /// What is wrong.
        message: String,
    },
    /// A database error outside a migration statement.
    #[error("{context}: {}", describe_db_error(source))]
    Db {
        /// What we were doing.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Where the database lives, and reaching it (see [`crate::lifecycle`]).
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    /// Anything else, with a message that says what.
    #[error("{0}")]
    Other(String),
}

/// How many items a message lists before it says how many more there are.
pub const LISTED: usize = 8;

/// Joins `items` with `, `, cut after [`LISTED`] with the count of the rest (`a, b, c and 997
/// more`), so that a message naming many partitions, keys or sets stays within a screen.
pub fn cut_list<T: std::fmt::Display>(items: &[T]) -> String {
    cut_list_with(items, ", ")
}

/// [`cut_list`] with another separator.
pub fn cut_list_with<T: std::fmt::Display>(items: &[T], separator: &str) -> String {
    let shown: Vec<String> = items.iter().take(LISTED).map(|i| i.to_string()).collect();
    match items.len().saturating_sub(LISTED) {
        0 => shown.join(separator),
        more => format!("{} and {more} more", shown.join(separator)),
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to a driver error.
pub(crate) trait DbContext<T> {
    fn db(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DbContext<T> for Result<T, tokio_postgres::Error> {
    fn db(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Db { context: context(), source })
    }
}

impl<T> DbContext<T> for Result<T, crate::db::Startup> {
    fn db(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into_error(context()))
    }
}

/// Formats a driver error with SQLSTATE, detail and hint when the server sent them.
pub fn describe_db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            // Not from the server (connection refused, closed, ...): the cause says why.
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s.push_str(&format!(": {c}"));
                cause = c.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut_with_a_count() {
        assert_eq!(cut_list::<String>(&[]), "");
        assert_eq!(cut_list(&["a", "b"]), "a, b");
        let many: Vec<String> = (0..1000).map(|i| format!("t_{i}")).collect();
        assert_eq!(cut_list(&many), "t_0, t_1, t_2, t_3, t_4, t_5, t_6, t_7 and 992 more");
        assert_eq!(cut_list(&many[..LISTED]).matches(", ").count(), LISTED - 1);
        assert_eq!(cut_list_with(&many[..9], "; "), "t_0; t_1; t_2; t_3; t_4; t_5; t_6; t_7 and 1 more");
        let items: Vec<String> = (1..=12).map(|i| format!("f{i}.sql")).collect();
        let e = Error::Drift { files: items }.to_string();
        assert!(e.contains("f8.sql and 4 more") && !e.contains("f9.sql"), "{e}");
    }
}
