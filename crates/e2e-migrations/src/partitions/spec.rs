//! The declared partitioning of a table, as written in the sets manifest.

use serde::{Deserialize, Serialize};

use crate::ident::{self, excerpt, IdentError};

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

    /// Checks names, bounds and the name pattern (pure), before any database is touched. Values
    /// from the manifest are echoed cut to a line ([`crate::ident::excerpt`]), never in full.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.table.split('.').count() > 2 {
            return Err(SpecError::TooQualified { table: self.table.clone() });
        }
        for part in self.table.split('.') {
            ident::validate(part).map_err(SpecError::Table)?;
        }
        ident::validate(&self.column).map_err(SpecError::Column)?;
        let window = u64::from(self.behind) + 1 + u64::from(self.ahead);
        if window > u64::from(MAX_PERIODS) {
            return Err(SpecError::WindowTooLarge { behind: self.behind, ahead: self.ahead });
        }
        let p = self.pattern();
        let bad_pattern = |problem| SpecError::Pattern { pattern: p.to_string(), problem };
        check_pattern(p).map_err(bad_pattern)?;
        let needs: &[&'static str] = match self.interval {
            Interval::Daily => &["{yyyy}", "{mm}", "{dd}"],
            Interval::Weekly => &["{yyyy}", "{ww}"],
            Interval::Monthly => &["{yyyy}", "{mm}"],
            Interval::Yearly => &["{yyyy}"],
        };
        if let Some(n) = needs.iter().find(|n| !p.contains(**n)) {
            return Err(bad_pattern(PatternProblem::Lacks { placeholder: n, interval: self.interval }));
        }
        // Every placeholder renders to a fixed width (4-digit years), so one name shows them all.
        let sample = super::calendar::partition_name(self, SAMPLE_DAY);
        if sample.len() > ident::MAX_LEN {
            return Err(bad_pattern(PatternProblem::NamesTooLong { sample }));
        }
        if let Err(source) = ident::validate(&sample) {
            return Err(bad_pattern(PatternProblem::BadNames { sample, source }));
        }
        if self.default_partition {
            ident::validate(&super::calendar::default_name(self)).map_err(SpecError::DefaultName)?;
        }
        if let Some(r) = self.retention {
            if r.keep > MAX_PERIODS {
                return Err(SpecError::KeepTooLarge { keep: r.keep });
            }
            if r.keep < self.behind {
                return Err(SpecError::KeepBelowBehind { keep: r.keep, behind: self.behind });
            }
        }
        Ok(())
    }
}

/// Why a partition spec cannot be applied (see [`PartitionSpec::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The table names more than a schema and a table.
    #[error("table {}: at most schema.table", excerpt(table))]
    TooQualified {
        /// The table as written.
        table: String,
    },
    /// The table (or its schema) is not a plain identifier.
    #[error("table")]
    Table(#[source] IdentError),
    /// The key column is not a plain identifier.
    #[error("column")]
    Column(#[source] IdentError),
    /// `behind + 1 + ahead` is more than [`MAX_PERIODS`].
    #[error(
        "behind = {behind} and ahead = {ahead} make a window of {} periods; at most {MAX_PERIODS} per table (a roll \
         creates them all in one transaction)",
        u64::from(*behind) + 1 + u64::from(*ahead)
    )]
    WindowTooLarge {
        /// Periods behind.
        behind: u32,
        /// Periods ahead.
        ahead: u32,
    },
    /// The name pattern cannot make the partitions' names.
    #[error("name pattern {}{problem}", excerpt(pattern))]
    Pattern {
        /// The pattern in force.
        pattern: String,
        /// What is wrong with it.
        problem: PatternProblem,
    },
    /// The default partition's name (`{table}_default`) is not a plain identifier.
    #[error("default partition (use a shorter table name or default_partition = false)")]
    DefaultName(#[source] IdentError),
    /// Retention keeps more than [`MAX_PERIODS`] periods.
    #[error("retention keep = {keep}: at most {MAX_PERIODS} periods")]
    KeepTooLarge {
        /// The `keep` given.
        keep: u32,
    },
    /// Retention keeps fewer periods than the roll creates behind the current one.
    #[error(
        "retention keeps {keep} periods but behind = {behind}: the roll would create partitions that retention \
         removes"
    )]
    KeepBelowBehind {
        /// The `keep` given.
        keep: u32,
        /// The `behind` given.
        behind: u32,
    },
}

/// What is wrong with a name pattern ([`SpecError::Pattern`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternProblem {
    /// A `{` without its `}`.
    Unclosed,
    /// A placeholder the pattern language does not know.
    UnknownPlaceholder {
        /// The text between the braces.
        key: String,
    },
    /// A character outside letters, digits, `_` and the placeholders.
    BadChar {
        /// The character.
        found: char,
    },
    /// A placeholder the interval needs for distinct names is missing.
    Lacks {
        /// The placeholder, e.g. `{mm}`.
        placeholder: &'static str,
        /// The spec's interval.
        interval: Interval,
    },
    /// The names it makes are longer than PostgreSQL keeps.
    NamesTooLong {
        /// A name it makes.
        sample: String,
    },
    /// The names it makes are not plain identifiers (they start with a digit, say).
    BadNames {
        /// A name it makes.
        sample: String,
        /// Why that name is refused.
        source: IdentError,
    },
}

impl std::fmt::Display for PatternProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternProblem::Unclosed => f.write_str(": unclosed {"),
            PatternProblem::UnknownPlaceholder { key } => write!(
                f,
                ": unknown placeholder {{{}}} (known: table, yyyy, mm, dd, ww, q)",
                key.chars().take(ident::EXCERPT_CHARS).collect::<String>()
            ),
            PatternProblem::BadChar { found } => write!(
                f,
                ": {found:?} is not allowed (letters, digits, _ and the placeholders {{table}}, {{yyyy}}, {{mm}}, \
                 {{dd}}, {{ww}}, {{q}})"
            ),
            PatternProblem::Lacks { placeholder, interval } => {
                write!(f, " lacks {placeholder}, so two {interval:?} partitions would share a name")
            }
            PatternProblem::NamesTooLong { sample } => {
                // (an excerpt of a long name says its length itself)
                let mut name = excerpt(sample);
                if !name.ends_with(" bytes)") {
                    name.push_str(&format!(" ({} bytes)", sample.len()));
                }
                write!(
                    f,
                    " makes partition names such as {name}, which is longer than {} bytes (PostgreSQL would truncate it)",
                    ident::MAX_LEN
                )
            }
            PatternProblem::BadNames { sample, source } => {
                write!(f, " makes partition names such as {}: {source}", excerpt(sample))
            }
        }
    }
}

/// The most periods a table's window (`behind + 1 + ahead`) may span, and the most retention's
/// `keep` may say. A roll creates its window in one transaction, holding a lock on every
/// partition and index it creates (PostgreSQL has `max_locks_per_transaction` times
/// `max_connections` lock slots in all), so a larger window is a typo, never a plan: `ahead =
/// 100000` would run the server out of shared memory.
pub const MAX_PERIODS: u32 = 1000;

/// The day a pattern is rendered on to check the names it makes (any day makes names of the
/// same length, until the year 9999).
const SAMPLE_DAY: chrono::NaiveDate = match chrono::NaiveDate::from_ymd_opt(2000, 1, 3) {
    Some(d) => d,
    None => panic!("2000-01-03 exists"),
};

/// Checks a name pattern's syntax (pure): placeholders are known and closed, and the text
/// around them is letters, digits and `_` only, so that no character of the pattern needs
/// quoting in SQL.
fn check_pattern(p: &str) -> Result<(), PatternProblem> {
    let mut rest = p;
    while let Some(c) = rest.chars().next() {
        if c == '{' {
            let end = rest.find('}').ok_or(PatternProblem::Unclosed)?;
            let key = &rest[1..end];
            if !matches!(key, "table" | "yyyy" | "mm" | "dd" | "ww" | "q") {
                return Err(PatternProblem::UnknownPlaceholder { key: key.to_string() });
            }
            rest = &rest[end + 1..];
        } else if c.is_ascii_alphanumeric() || c == '_' {
            rest = &rest[1..];
        } else {
            return Err(PatternProblem::BadChar { found: c });
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn spec(table: &str) -> PartitionSpec {
        PartitionSpec::monthly(table, "event_date")
    }

    fn with_pattern(pattern: &str) -> PartitionSpec {
        PartitionSpec { name: Some(pattern.to_string()), ..spec("audit_events") }
    }

    /// The error, which must fit on one line of a screen.
    fn refused(s: &PartitionSpec) -> String {
        let e = crate::core::report(&s.validate().unwrap_err());
        assert!(e.len() <= 300 && !e.contains('\n'), "{} bytes: {e}", e.len());
        e
    }

    #[test]
    fn the_project_defaults_and_legacy_patterns_pass() {
        assert_eq!(spec("audit_events").validate(), Ok(()));
        assert_eq!(spec("audit.audit_events").validate(), Ok(()));
        assert_eq!(with_pattern("{table}_y{yyyy}m{mm}").validate(), Ok(()));
        assert_eq!(with_pattern("p_{yyyy}_q{q}_{mm}_{table}").validate(), Ok(()));
        let daily = PartitionSpec { interval: Interval::Daily, ..spec("t") };
        assert_eq!(daily.validate(), Ok(()));
    }

    #[test]
    fn hostile_table_and_column_names_are_rejected_not_quoted() {
        for table in [
            "audit\"events",
            "audit_events; DROP TABLE users",
            "\"; DROP TABLE audit_events; --",
            "audit events",
            "événements",
            "audit_events\u{0}",
            "",
            "a..b",
            "1audit",
            "a.b.c",
        ] {
            let e = refused(&spec(table));
            assert!(e.starts_with("table"), "{table:?}: {e}");
        }
        let e = refused(&spec(&"x".repeat(64)));
        assert!(e.contains("longer than 63 bytes"), "{e}");
        let e = refused(&PartitionSpec::monthly("audit_events", "event_date\"; DROP TABLE x; --"));
        assert!(e.starts_with("column: identifier \"event_date\\\"; DROP TABLE x; --\""), "{e}");
    }

    #[test]
    fn patterns_with_characters_that_need_quoting_are_rejected() {
        for (pattern, bad) in [
            ("{table}_{yyyy}_{mm}\"; DROP TABLE audit_events; --", "'\"'"),
            ("{table}-{yyyy}-{mm}", "'-'"),
            ("{table} {yyyy}_{mm}", "' '"),
            ("{table}_{yyyy}_{mm};", "';'"),
            ("{table}_{yyyy}_{mm}'", "'\\''"),
            ("{table}_{yyyy}_{mm}_é", "'é'"),
            ("{table}.{yyyy}_{mm}", "'.'"),
            ("{table}_{yyyy}_{mm}}", "'}'"),
        ] {
            let e = refused(&with_pattern(pattern));
            assert!(e.contains(&format!("{bad} is not allowed")), "{pattern:?}: {e}");
        }
        assert!(refused(&with_pattern("{table}_{yyyy}_{mm")).contains("unclosed {"));
        assert!(refused(&with_pattern("{table}_{yyyy}_{mm}_{x; DROP}")).contains("unknown placeholder {x; DROP}"));
    }

    #[test]
    fn table_expansions_that_overflow_63_bytes_are_rejected_up_front() {
        let e = refused(&PartitionSpec { name: Some("{table}_{table}_{yyyy}_{mm}".into()), ..spec(&"t".repeat(30)) });
        assert!(e.contains("(69 bytes), which is longer than 63 bytes (PostgreSQL would truncate it)"), "{e}");
        // A name long enough to be cut in the message says its length once.
        let e = refused(&PartitionSpec { name: Some("{table}_{table}_{yyyy}_{mm}".into()), ..spec(&"t".repeat(40)) });
        assert_eq!(e.matches("89 bytes").count(), 1, "{e}");
        assert!(e.contains("\"... (89 bytes), which is longer than 63 bytes (PostgreSQL would truncate it)"), "{e}");
        // 56 + "_2000_01" is 64 bytes: one too many.
        let e = refused(&spec(&"t".repeat(56)));
        assert!(e.contains("(64 bytes), which"), "{e}");
        let mut fits = spec(&"t".repeat(55));
        assert_eq!(fits.validate(), Ok(()));
        // The default partition's name is the table's and `_default`.
        fits.table = "t".repeat(56);
        fits.name = Some("p{yyyy}{mm}".into());
        let e = refused(&fits);
        assert!(
            e.starts_with("default partition (use a shorter table name or default_partition = false): identifier"),
            "{e}"
        );
        fits.default_partition = false;
        assert_eq!(fits.validate(), Ok(()));
    }

    #[test]
    fn a_pattern_that_makes_names_starting_with_a_digit_is_rejected() {
        let e = refused(&with_pattern("{yyyy}_{mm}_{table}"));
        assert!(e.contains("makes partition names such as \"2000_01_audit_events\""), "{e}");
    }

    #[test]
    fn window_and_retention_are_bounded() {
        let e = refused(&PartitionSpec { ahead: 100_000, ..spec("t") });
        assert_eq!(
            e,
            "behind = 1 and ahead = 100000 make a window of 100002 periods; at most 1000 per table (a roll creates them all in one transaction)"
        );
        let e = refused(&PartitionSpec { behind: u32::MAX, ahead: u32::MAX, ..spec("t") });
        assert!(e.contains("8589934591 periods"), "{e}");
        assert_eq!(PartitionSpec { behind: 499, ahead: 500, ..spec("t") }.validate(), Ok(()));
        assert!(PartitionSpec { behind: 500, ahead: 500, ..spec("t") }.validate().is_err());
        let keep =
            |keep| PartitionSpec { retention: Some(Retention { keep, action: RetentionAction::Drop }), ..spec("t") };
        assert_eq!(keep(1000).validate(), Ok(()));
        assert_eq!(refused(&keep(5000)), "retention keep = 5000: at most 1000 periods");
        assert!(refused(&keep(0)).contains("behind = 1"));
    }

    #[test]
    fn huge_values_are_echoed_cut_to_a_line() {
        let huge = format!("{}\"; DROP TABLE x; --", "a".repeat(2 << 20));
        for s in [spec(&huge), with_pattern(&huge), PartitionSpec::monthly("t", &huge)] {
            let e = refused(&s);
            assert!(e.contains("bytes)"), "{e}");
        }
    }
}
