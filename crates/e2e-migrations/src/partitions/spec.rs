//! The declared partitioning of a table, as written in the sets manifest.

use serde::{Deserialize, Serialize};

/// The period one partition covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// One calendar day (UTC).
    Daily,
    /// One ISO week, Monday to Monday.
    Weekly,
    /// One calendar month.
    #[default]
    Monthly,
    /// One calendar year.
    Yearly,
}

impl Interval {
    /// The default partition name pattern for this interval.
    pub fn default_pattern(self) -> &'static str {
        match self {
            Interval::Daily => "{table}_{yyyy}_{mm}_{dd}",
            Interval::Weekly => "{table}_{yyyy}_w{ww}",
            Interval::Monthly => "{table}_{yyyy}_{mm}",
            Interval::Yearly => "{table}_{yyyy}",
        }
    }
}

/// What retention does with partitions older than `keep` periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionAction {
    /// `ALTER TABLE ... DETACH PARTITION`: the table stays, outside the parent.
    Detach,
    /// `DROP TABLE`: the rows are gone.
    Drop,
}

impl RetentionAction {
    /// `detach` or `drop`.
    pub fn verb(self) -> &'static str {
        match self {
            RetentionAction::Detach => "detach",
            RetentionAction::Drop => "drop",
        }
    }
}

/// Retention: partitions wholly older than `keep` periods before the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Periods kept behind the current one (older ones are pruned).
    pub keep: u32,
    /// Detach or drop.
    pub action: RetentionAction,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn yes() -> bool {
    true
}

/// A partitioned table's declaration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// The parent table, optionally schema-qualified (`schema.table`).
    pub table: String,
    /// The partition key column (a `date` or `timestamp[tz]` range key).
    pub column: String,
    /// The period of one partition.
    #[serde(default)]
    pub interval: Interval,
    /// Periods kept behind the current one.
    #[serde(default = "one")]
    pub behind: u32,
    /// Periods created ahead of the current one.
    #[serde(default = "three")]
    pub ahead: u32,
    /// Name pattern: `{table}`, `{yyyy}`, `{mm}`, `{dd}`, `{ww}` (ISO week), `{q}` (quarter).
    #[serde(default)]
    pub name: Option<String>,
    /// Whether a `DEFAULT` partition catches rows outside every range.
    #[serde(default = "yes")]
    pub default_partition: bool,
    /// Optional retention; off by default.
    #[serde(default)]
    pub retention: Option<Retention>,
}

impl PartitionSpec {
    /// A monthly spec with the defaults (1 behind, 3 ahead, default partition, no retention).
    pub fn monthly(table: &str, column: &str) -> PartitionSpec {
        PartitionSpec {
            table: table.to_string(),
            column: column.to_string(),
            interval: Interval::Monthly,
            behind: 1,
            ahead: 3,
            name: None,
            default_partition: true,
            retention: None,
        }
    }

    /// The name pattern in force.
    pub fn pattern(&self) -> &str {
        self.name.as_deref().unwrap_or(self.interval.default_pattern())
    }

    /// The table name without its schema.
    pub fn table_name(&self) -> &str {
        self.table.rsplit_once('.').map(|(_, t)| t).unwrap_or(&self.table)
    }

    /// The schema, if the table is qualified.
    pub fn schema(&self) -> Option<&str> {
        self.table.rsplit_once('.').map(|(s, _)| s)
    }

    /// Checks names and the pattern (pure); the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for part in self.table.split('.') {
            crate::ident::validate(part).map_err(|e| format!("table: {e}"))?;
        }
        if self.table.split('.').count() > 2 {
            return Err(format!("table {:?}: at most schema.table", self.table));
        }
        crate::ident::validate(&self.column).map_err(|e| format!("column: {e}"))?;
        let p = self.pattern();
        let needs: &[&str] = match self.interval {
            Interval::Daily => &["{yyyy}", "{mm}", "{dd}"],
            Interval::Weekly => &["{yyyy}", "{ww}"],
            Interval::Monthly => &["{yyyy}", "{mm}"],
            Interval::Yearly => &["{yyyy}"],
        };
        for n in needs {
            if !p.contains(n) {
                return Err(format!(
                    "name pattern {p:?} lacks {n}, so two {:?} partitions would share a name",
                    self.interval
                ));
            }
        }
        let mut rest = p;
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').ok_or_else(|| format!("name pattern {p:?}: unclosed {{"))? + start;
            let key = &rest[start + 1..end];
            if !matches!(key, "table" | "yyyy" | "mm" | "dd" | "ww" | "q") {
                return Err(format!(
                    "name pattern {p:?}: unknown placeholder {{{key}}} (known: table, yyyy, mm, dd, ww, q)"
                ));
            }
            rest = &rest[end + 1..];
        }
        if let Some(r) = self.retention {
            if r.keep < self.behind {
                return Err(format!(
                    "retention keeps {} periods but behind = {}: the roll would create partitions that retention removes",
                    r.keep, self.behind
                ));
            }
        }
        Ok(())
    }
}
