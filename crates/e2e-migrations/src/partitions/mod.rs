//! Partitions that roll from today's date: the spec, the calendar, the reconciliation, the SQL, the roll.
//!
//! From pure to I/O:
//! - [`spec`]: a table's declared partitioning, as written in `sets.toml`;
//! - [`calendar`]: the partitions a spec wants at an instant (UTC), their ranges and names;
//! - [`reconcile`]: wanted against existing (by bounds, not names): create, respect, report, prune;
//! - [`sql`]: the statements, quoted and bounded by the key's type; [`partition_sql`];
//! - [`bounds`]: a partition bound as the catalog prints it, read into [`reconcile::Bounds`];
//! - [`catalog`]: the table, its key and its partitions with bounds, read from the server;
//! - [`roll()`], [`prune()`], [`list()`]: doing it under the migrations' advisory lock.

pub mod bounds;
pub mod calendar;
pub mod catalog;
mod error;
pub mod reconcile;
mod roll;
pub mod spec;
pub mod sql;

pub use error::{Holders, RollError};
pub use roll::{list, prune, roll, Listed, Listing, RollOptions, RollReport};
pub use spec::{Interval, PartitionSpec, Retention, RetentionAction};
pub use sql::{partition_sql, KeyType};
