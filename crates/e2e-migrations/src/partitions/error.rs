//! What stops a roll, a prune or a listing of one table: [`RollError`], each variant saying what
//! to do, and "rolled back" when the transaction was (nothing of the table changed).

use std::time::Duration;

use super::bounds::BoundError;
use super::calendar::Period;
use super::sql::DirectKey;
use crate::core::{cut_list, cut_list_with};
use crate::error::PgError;

/// What stopped a roll, a prune or a listing of one table ([`crate::Error::Roll`]); each says what to
/// do, and "rolled back" when the transaction was (nothing of the table changed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RollError {
    /// The table does not exist.
    #[error("the table does not exist (apply the migrations that create it before rolling its partitions)")]
    NoTable,
    /// The table is not partitioned.
    #[error(
        "the table is not partitioned ({}); it needs PARTITION BY RANGE ({column}) in the migration that creates it",
        relkind_words(*relkind)
    )]
    NotPartitioned {
        /// Its `pg_class.relkind` (`r` an ordinary table, `v` a view, ...).
        relkind: char,
        /// The spec's key column.
        column: String,
    },
    /// The table is partitioned otherwise than by a range of the spec's column.
    #[error("the table is partitioned by {keydef}, not by RANGE ({column})")]
    WrongKey {
        /// Its partition key, as `pg_get_partkeydef` prints it.
        keydef: String,
        /// The spec's key column.
        column: String,
    },
    /// The key column's type cannot be rolled.
    #[error("the partition key {column} is of type {type_name}; rolling needs date, timestamp or timestamptz")]
    KeyType {
        /// The key column.
        column: String,
        /// Its type.
        type_name: String,
    },
    /// A partition's bound cannot be read.
    #[error("partition {partition}")]
    Bound {
        /// The partition.
        partition: String,
        /// What is wrong with its bound.
        #[source]
        source: BoundError,
    },
    /// The table was dropped and created again between reading it and locking it.
    #[error("the table was replaced while rolling; run again")]
    Replaced,
    /// Other sessions kept the table's locks through every attempt.
    #[error(
        "could not lock the table in {attempts} attempts of {} ms each ({:.1}s): other sessions keep it busy, {holders}; \
         last attempt: {context}",
        attempt_timeout.as_millis(),
        waited.as_secs_f64()
    )]
    Busy {
        /// Attempts made.
        attempts: u32,
        /// How long each attempt waited for a lock.
        attempt_timeout: Duration,
        /// How long all attempts took.
        waited: Duration,
        /// Who held the locks after the last attempt.
        holders: Holders,
        /// The step of the last attempt that waited.
        context: String,
        /// The server's error that ended it (a lock timeout, or a deadlock).
        #[source]
        source: PgError,
    },
    /// A foreign key declared against the default partition itself references rows that must
    /// move: the roll cannot set such a key aside, and moving the rows would break it (or cascade).
    #[error("{}", direct_key_refusal(table, default, key, *rows, set_aside))]
    KeyOnDefault {
        /// The parent table.
        table: String,
        /// The default partition.
        default: String,
        /// The key.
        key: Box<DirectKey>,
        /// Rows of the key's table that reference rows that must move.
        rows: i64,
        /// The keys that reference the table, which the roll can set aside.
        set_aside: Vec<String>,
    },
    /// A foreign key refused moving rows out of the default partition.
    #[error(
        "cannot move rows of the new ranges out of the default partition {default}: foreign key {constraint} \
         stopped it ({context}); rolled back, nothing changed"
    )]
    MoveRefusedByKey {
        /// The default partition.
        default: String,
        /// The key.
        constraint: String,
        /// The step that failed.
        context: String,
        /// The server's error.
        #[source]
        source: PgError,
    },
    /// Fewer or more rows were copied out of the default partition than were counted there.
    #[error("counted {counted} rows of {period} in the default partition {default} but copied {copied}; rolled back")]
    CopyMismatch {
        /// The default partition.
        default: String,
        /// The period moved.
        period: Period,
        /// Rows counted.
        counted: u64,
        /// Rows copied.
        copied: u64,
    },
    /// Fewer or more rows were deleted from the default partition than were copied out of it.
    #[error(
        "copied {copied} rows out of the default partition {default} but deleted {deleted} there (a rule or row \
         security on it?); rolled back"
    )]
    DeleteMismatch {
        /// The default partition.
        default: String,
        /// Rows copied.
        copied: u64,
        /// Rows deleted.
        deleted: u64,
    },
    /// A key set aside while rows moved does not hold when added back.
    #[error(
        "foreign key {key} of {key_table} does not hold when added back (it was set aside while rows moved); the row \
         that breaks it was there before the roll; rolled back, nothing changed"
    )]
    KeyBroken {
        /// The key.
        key: String,
        /// The table that declares it.
        key_table: String,
        /// The server's error.
        #[source]
        source: PgError,
    },
    /// Rows left reference rows in partitions that retention would remove.
    #[error(
        "retention cannot remove {}: rows left in {key_table} still reference rows there through foreign key {key}; \
         rolled back, nothing removed: delete or update the referencing rows first, or keep more periods",
        cut_list(pruned)
    )]
    RetentionReferenced {
        /// The partitions retention would remove.
        pruned: Vec<String>,
        /// The key.
        key: String,
        /// The table that declares it.
        key_table: String,
        /// The server's error.
        #[source]
        source: PgError,
    },
    /// A PL/pgSQL function raised the error that stopped the roll (a trigger's, or an event
    /// trigger's refusing the roll's DDL).
    #[error("stopped by {}; rolled back, nothing changed ({context})", who_runs(function, triggers))]
    StoppedBy {
        /// The function that raised.
        function: String,
        /// The triggers and event triggers that run it.
        triggers: Vec<String>,
        /// The step that failed.
        context: String,
        /// The server's error.
        #[source]
        source: PgError,
    },
    /// Creating the window's partitions ran out of the server's lock slots.
    #[error(
        "creating {partitions} partitions in one transaction ran out of lock slots (each partition and each of its \
         indexes holds a lock until commit): raise max_locks_per_transaction, or roll a smaller window (behind, \
         ahead); rolled back"
    )]
    OutOfLockSlots {
        /// Partitions being created.
        partitions: usize,
        /// The server's error.
        #[source]
        source: PgError,
    },
}

/// Who held a busy table's locks ([`RollError::Busy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holders {
    /// Sessions, one line each (`pid 4242 (app, state: "query") holding RowExclusiveLock on t`).
    Sessions(Vec<String>),
    /// Nobody any more: they released their locks since the last attempt.
    Released,
    /// Finding them failed, for this reason.
    Unknown(String),
}

impl std::fmt::Display for Holders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holders::Sessions(h) => write!(f, "held by {}", cut_list_with(h, "; ")),
            Holders::Released => f.write_str("they have released their locks since"),
            Holders::Unknown(why) => write!(f, "and finding who holds the locks failed: {why}"),
        }
    }
}

/// The triggers that run `function`, or the function alone when none is known (pure).
fn who_runs(function: &str, triggers: &[String]) -> String {
    match triggers {
        [] => format!("function {function}()"),
        _ => format!("{}, which runs {function}()", cut_list(triggers)),
    }
}

/// `pg_class.relkind` in words.
fn relkind_words(relkind: char) -> &'static str {
    match relkind {
        'r' => "an ordinary table",
        'v' => "a view",
        'm' => "a materialized view",
        'f' => "a foreign table",
        _ => "not a table",
    }
}

/// The message of [`RollError::KeyOnDefault`] (pure); `set_aside`: the keys that reference the
/// table.
fn direct_key_refusal(table: &str, default: &str, key: &DirectKey, rows: i64, set_aside: &[String]) -> String {
    let theirs = if set_aside.is_empty() {
        format!("no key references {table} itself")
    } else {
        format!(
            "it is not one of the keys that reference {table} ({}), which the roll can set aside",
            cut_list(set_aside)
        )
    };
    let effect = match key.on_delete {
        'c' => format!("moving them would delete those rows of {}", key.table),
        'n' => format!("moving them would set the key of those rows of {} to null", key.table),
        'd' => format!("moving them would set the key of those rows of {} to its default", key.table),
        _ => "moving them would break it".to_string(),
    };
    format!(
        "cannot move rows of the new ranges out of the default partition {default}: foreign key {} of {} references that partition itself ({}), and rows there are still referenced by {rows} rows of {}; {theirs}, and {effect}; reference {table} rather than one of its partitions, or move the referencing rows first; rolled back, nothing changed",
        key.name,
        key.table,
        key.on_delete_words(),
        key.table
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_that_stops_a_roll_is_named_never_taken_for_a_key() {
        let m = who_runs("guarded_ddl_freeze", &["event trigger guarded_ddl_freeze (ddl_command_start)".to_string()]);
        assert_eq!(m, "event trigger guarded_ddl_freeze (ddl_command_start), which runs guarded_ddl_freeze()");
        assert!(!m.contains("foreign key"));
        assert_eq!(who_runs("f", &[]), "function f()");
    }

    #[test]
    fn a_key_on_the_default_partition_is_named_with_what_moving_would_do() {
        let key = DirectKey {
            schema: "public".into(),
            table: "notes".into(),
            name: "fk_notes_event".into(),
            columns: vec!["event_id".into()],
            referenced: vec!["event_id".into()],
            on_delete: 'c',
        };
        let m = direct_key_refusal("audit_events", "audit_events_default", &key, 2, &["fk_audit_events_parent".into()]);
        assert_eq!(
            m,
            "cannot move rows of the new ranges out of the default partition audit_events_default: foreign key fk_notes_event of notes references that partition itself (ON DELETE CASCADE), and rows there are still referenced by 2 rows of notes; it is not one of the keys that reference audit_events (fk_audit_events_parent), which the roll can set aside, and moving them would delete those rows of notes; reference audit_events rather than one of its partitions, or move the referencing rows first; rolled back, nothing changed"
        );
    }
}
