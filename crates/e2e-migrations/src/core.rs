//! The pure core: parsing, planning and rendering over plain data, and the errors they return.
//!
//! The core modules read no file, no environment variable and no clock, and know nothing of the
//! database driver, Kubernetes or processes: [`crate::fs`] reads a migrations folder and hands
//! them its text, and the engine ([`crate::migrator`], [`crate::partitions::roll()`],
//! [`crate::testdb`]) hands them what the database reports and the instant to plan for. So every
//! decision they make is tested without I/O. They are, in [`MODULES`]:
//! - [`crate::scan`], [`crate::goose`], [`crate::txblock`]: reading goose-format SQL as goose
//!   and PostgreSQL do;
//! - [`crate::batch`]: one migration as one guarded simple-query string;
//! - [`crate::source`], [`crate::sets`], [`crate::plan`]: a folder, its named sets, and what a
//!   database has applied against what a selection wants;
//! - [`crate::ident`]: identifiers validated and quoted;
//! - [`crate::progress`]: the events a run reports to an observer;
//! - [`crate::partitions::spec`], [`crate::partitions::calendar`], [`crate::partitions::reconcile`],
//!   [`crate::partitions::sql`], [`crate::partitions::bounds`]: partitions declared, dated,
//!   planned, written as SQL, and their bounds read as the catalog prints them;
//! - this module: [`Error`], and cutting long lists (and counting nouns) for messages.
//!
//! The library's [`crate::Error`] wraps [`Error`] ([`crate::Error::Core`]), so a caller of the
//! engine sees one type.

use std::path::PathBuf;

use crate::ident::excerpt;
use crate::partitions::reconcile::PlanError;
use crate::partitions::spec::SpecError;

/// The core's source files, relative to the library's `src/`: the one list of what must stay
/// pure. xtask's tidy test reads it and refuses an import of I/O, the clock or a client in any of
/// them.
pub const MODULES: &[&str] = &[
    "core.rs",
    "scan.rs",
    "goose.rs",
    "txblock.rs",
    "batch.rs",
    "source.rs",
    "sets.rs",
    "plan.rs",
    "ident.rs",
    "progress.rs",
    "partitions/spec.rs",
    "partitions/calendar.rs",
    "partitions/reconcile.rs",
    "partitions/sql.rs",
    "partitions/bounds.rs",
];

/// What the core refuses: a folder, a manifest, a selection or a plan that cannot be carried
/// out. Every variant names the file, line, set, table or version at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A migration file that goose would refuse to parse.
    #[error("{}:{line}: {message}", file.display())]
    Parse {
        /// The file at fault.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A migration file that is not UTF-8.
    #[error(
        "{}:{line}: not UTF-8 (byte 0x{byte:02x} at column {column}); goose and PostgreSQL read migrations as \
         UTF-8: save the file as UTF-8",
        file.display()
    )]
    NotUtf8 {
        /// The file at fault.
        file: PathBuf,
        /// 1-based line of the first byte that is not UTF-8.
        line: usize,
        /// 1-based column (in characters) of that byte.
        column: usize,
        /// The byte.
        byte: u8,
    },
    /// A `*.sql` file whose name carries no goose version (`NNN_description.sql`).
    #[error(
        "{}: not a goose migration name: expected NNN_description.sql with NNN above 0 (goose refuses a folder \
         holding it); rename it or move it out of the folder",
        file.display()
    )]
    NotAMigrationName {
        /// The file at fault.
        file: PathBuf,
    },
    /// A migration the engine refuses to run as written, found before connecting: transaction
    /// control inside its transaction, or a statement PostgreSQL refuses there (see
    /// [`crate::txblock`]).
    #[error(
        "{}:{line}:{column}: {message}{}",
        file.display(),
        match more { 0 => String::new(), 1 => " (and 1 more such statement in this file)".to_string(), n => format!(" (and {n} more such statements in this file)") }
    )]
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
    /// Two migration files share a version.
    #[error(
        "duplicate migration version {version}: {} (goose refuses a folder like this)",
        files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    DuplicateVersion {
        /// The version.
        version: i64,
        /// The files that carry it.
        files: Vec<PathBuf>,
    },
    /// The sets manifest is not valid TOML, or holds a key the manifest does not know.
    #[error("{}: {}{message}", file.display(), line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    ManifestSyntax {
        /// The manifest file.
        file: PathBuf,
        /// 1-based line, when the TOML parser gave a position.
        line: Option<usize>,
        /// The TOML parser's message.
        message: String,
    },
    /// The manifest defines the implicit set `all`.
    #[error("{}: the set \"all\" is implicit (every file) and cannot be defined", file.display())]
    ManifestDefinesAll {
        /// The manifest file.
        file: PathBuf,
    },
    /// A set includes a set the manifest does not define.
    #[error(
        "{}: set {} includes unknown set {}; known sets: {}",
        file.display(),
        excerpt(set),
        excerpt(include),
        cut_list(known)
    )]
    UnknownInclude {
        /// The manifest file.
        file: PathBuf,
        /// The including set.
        set: String,
        /// The set it names.
        include: String,
        /// The sets that exist.
        known: Vec<String>,
    },
    /// A set includes `all`.
    #[error("{}: set {} includes \"all\", which already holds every set", file.display(), excerpt(set))]
    IncludesAll {
        /// The manifest file.
        file: PathBuf,
        /// The including set.
        set: String,
    },
    /// A set declares a partition spec that cannot be applied.
    #[error("{}: set {}, partitions of {}", file.display(), excerpt(set), excerpt(table))]
    ManifestSpec {
        /// The manifest file.
        file: PathBuf,
        /// The set.
        set: String,
        /// The spec's table.
        table: String,
        /// What is wrong with the spec.
        #[source]
        source: Box<SpecError>,
    },
    /// Two selected sets declare different partition specs for one table.
    #[error("{}: table {} has two different partition specs in the selected sets", file.display(), excerpt(table))]
    ConflictingSpecs {
        /// The manifest file.
        file: PathBuf,
        /// The table.
        table: String,
    },
    /// A set was requested that the manifest does not define.
    #[error("unknown set {}; known sets: {}", excerpt(name), cut_list(known))]
    UnknownSet {
        /// The requested name.
        name: String,
        /// The sets that exist.
        known: Vec<String>,
    },
    /// A set names a file that does not exist.
    #[error("set {set:?} names {file:?}, which is not a migration in {}", dir.display())]
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
    /// A comma-separated list of set names holds an empty one.
    #[error("set list {list:?}: empty set name")]
    EmptySetName {
        /// The list as given.
        list: String,
    },
    /// Applied migrations whose Up section changed since.
    #[error(
        "applied migration changed since it was applied (checksum differs): {}; restore the file, add a new \
         migration, or accept the drift (which records the new checksum)",
        cut_list(files)
    )]
    Drift {
        /// The changed files.
        files: Vec<String>,
    },
    /// A `NO TRANSACTION` migration that stopped part-way, whose file changed since.
    #[error(
        "{}: a NO TRANSACTION run stopped after statement {done} of it, and the file has changed since; those \
         {done} statements of the earlier version stay applied: finish or undo them by hand, then `DELETE FROM \
         e2e_migrations_meta WHERE version_id = {version}` and run again",
        file.display()
    )]
    PartialChanged {
        /// The migration file.
        file: PathBuf,
        /// Its version.
        version: i64,
        /// Statements of the earlier version that ran.
        done: usize,
    },
    /// A version that `down` would revert has no file in the folder.
    #[error(
        "cannot revert: version {} ({}) has no file in {}; restore its file to revert it as goose would (or, if \
         it is gone for good, delete its rows from goose_db_version by hand)",
        cut_list(versions),
        match to { None => "the most recently applied version".to_string(), Some(t) => format!("applied above {t}") },
        dir.display()
    )]
    DownWithoutFile {
        /// The versions without a file (the newest one alone when `to` is `None`).
        versions: Vec<i64>,
        /// The version `down` reverts to, if given.
        to: Option<i64>,
        /// The migrations folder.
        dir: PathBuf,
    },
    /// A migration `down` would revert has no Down section.
    #[error("{}: no '-- +goose Down' section, so it cannot be reverted (nothing was reverted)", file.display())]
    NoDownSection {
        /// The migration file.
        file: PathBuf,
    },
    /// A partition spec that cannot be applied (given to a roll or to
    /// [`crate::partitions::partition_sql`]).
    #[error("partition spec for {table}")]
    InvalidSpec {
        /// The spec's table.
        table: String,
        /// What is wrong with it.
        #[source]
        source: Box<SpecError>,
    },
    /// Planning a table's partitions found a partition it cannot create.
    #[error("partitions of {table}")]
    PartitionPlan {
        /// The table.
        table: String,
        /// What stands in the way.
        #[source]
        source: PlanError,
    },
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// `n` and the noun for that many (pure): `1 row`, `0 rows`, `2 statements`.
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// An error and its causes as one line, `outer: cause: root cause`: how a report shows an error
/// whose messages each say one thing (what was being done, then why), never repeating a cause.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(counted(1, "row", "rows"), "1 row");
        assert_eq!(counted(0, "row", "rows"), "0 rows");
        assert_eq!(counted(2, "statement", "statements"), "2 statements");
    }

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

    #[test]
    fn a_report_walks_the_causes_once() {
        let e = Error::InvalidSpec {
            table: "t".into(),
            source: Box::new(SpecError::Column(crate::ident::IdentError::Empty)),
        };
        assert_eq!(e.to_string(), "partition spec for t");
        assert_eq!(report(&e), "partition spec for t: column: empty identifier");
    }
}
