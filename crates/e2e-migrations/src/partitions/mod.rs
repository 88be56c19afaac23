//! Partitions that roll from today's date: the spec, the calendar, the planner, the SQL, the roll.

mod spec;

pub use spec::{Interval, PartitionSpec, Retention, RetentionAction};
