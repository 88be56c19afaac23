//! Reconciling a table's partitions (pure): the partitions a spec wants against those that exist, by
//! their bounds, as a plan (create, respect, report, prune).
//!
//! Existing partitions count by what they cover, not by their names: a wanted period already
//! covered (under any name, by one partition or several) is respected; one partly covered is an
//! overlap, reported and never created (PostgreSQL refuses overlapping partitions). Retention
//! prunes only partitions that are wholly older than the cutoff and carry the pattern's name for
//! exactly their period: a table someone attached by hand is reported, not dropped.

use chrono::{NaiveDate, NaiveDateTime};
use serde::Serialize;

use super::calendar::{self, Period, Wanted};
use super::spec::{PartitionSpec, RetentionAction};
use crate::core::cut_list;
use crate::ident::{self, IdentError};

/// One end of an existing partition's range, as the catalog states it (UTC for `timestamptz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Bound {
    /// `MINVALUE` (or `-infinity`): below every value.
    MinValue,
    /// A value; a `date` bound is its midnight.
    At(NaiveDateTime),
    /// `MAXVALUE` (or `infinity`): above every value.
    MaxValue,
}

impl Bound {
    /// The bound at midnight of `day`.
    pub fn day(day: NaiveDate) -> Bound {
        Bound::At(day.and_hms_opt(0, 0, 0).expect("midnight exists"))
    }

    /// The date, when the bound is a midnight.
    pub fn as_day(self) -> Option<NaiveDate> {
        match self {
            Bound::At(t) if t.time() == chrono::NaiveTime::MIN => Some(t.date()),
            _ => None,
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::MinValue => f.write_str("MINVALUE"),
            Bound::MaxValue => f.write_str("MAXVALUE"),
            Bound::At(t) => match self.as_day() {
                Some(d) => write!(f, "{d}"),
                None => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.f")),
            },
        }
    }
}

/// What an existing partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bounds {
    /// `FOR VALUES FROM (from) TO (to)`: `[from, to)`.
    Range {
        /// Inclusive lower bound.
        from: Bound,
        /// Exclusive upper bound.
        to: Bound,
    },
    /// The `DEFAULT` partition: rows no range takes.
    Default,
}

impl std::fmt::Display for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bounds::Range { from, to } => write!(f, "[{from}, {to})"),
            Bounds::Default => f.write_str("DEFAULT"),
        }
    }
}

/// A partition that exists, as read from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Existing {
    /// Its table name.
    pub name: String,
    /// Its schema when it is not the parent's (partitions may live elsewhere; we never touch those).
    pub schema: Option<String>,
    /// What it holds.
    pub bounds: Bounds,
}

/// A partition retention removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prune {
    /// The partition.
    pub name: String,
    /// Its period.
    pub period: Period,
    /// Detach or drop.
    pub action: RetentionAction,
}

/// What to do for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TablePlan {
    /// Partitions to create, oldest first.
    pub create: Vec<Wanted>,
    /// The default partition to create, when the spec wants one and there is none.
    pub create_default: Option<String>,
    /// The existing default partition: rows in it that fall in a created range must move.
    pub default: Option<Existing>,
    /// Partitions retention removes, oldest first.
    pub prune: Vec<Prune>,
    /// Wanted periods already covered (by the pattern's partition or by others).
    pub present: usize,
    /// Overlaps, partitions respected under other names, old partitions kept as not ours.
    pub notes: Vec<String>,
}

impl TablePlan {
    /// Whether the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.create_default.is_none() && self.prune.is_empty()
    }
}

/// Which kinds of action a plan may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Create wanted partitions and the default partition.
    pub create: bool,
    /// Apply retention (when the spec has it).
    pub prune: bool,
}

/// A partition the planner cannot create under the name the spec gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The name is not a plain identifier.
    #[error("partition name")]
    BadName(#[source] IdentError),
    /// A partition of the table already has the name, for another range.
    #[error("partition {name} already exists with bounds {bounds}, so it cannot be created for another range")]
    NameIsAnotherPartition {
        /// The name.
        name: String,
        /// That partition's bounds.
        bounds: Bounds,
    },
    /// Another relation of the schema (not a partition of the table) has the name.
    #[error("{name} already exists and is not a partition of {table} (detached earlier?); drop or rename it")]
    NameTaken {
        /// The name.
        name: String,
        /// The parent table.
        table: String,
    },
}

/// The period an existing range partition covers when the spec names it: it covers exactly one
/// of the spec's periods and carries the spec's name for it, in the parent's schema. Only such a
/// partition is "ours": retention may remove it, and a listing marks it as the spec's.
pub fn own_period(spec: &PartitionSpec, e: &Existing) -> Option<Period> {
    let Bounds::Range { from, to } = e.bounds else { return None };
    let day = from.as_day().filter(|d| calendar::period_start(spec.interval, *d) == *d)?;
    let period = calendar::period_at(spec.interval, day);
    let ours = Bound::day(period.to) == to && calendar::partition_name(spec, day) == e.name && e.schema.is_none();
    ours.then_some(period)
}

/// Whether the spec names `e`: the default partition under the spec's default name, or a range
/// partition of [`own_period`], in the parent's schema.
pub fn named_by_spec(spec: &PartitionSpec, e: &Existing) -> bool {
    match e.bounds {
        Bounds::Default => e.schema.is_none() && e.name == calendar::default_name(spec),
        Bounds::Range { .. } => own_period(spec, e).is_some(),
    }
}

/// Plans one table: `wanted` from [`calendar::wanted`], `existing` partitions of the parent,
/// `taken`: names among those we may create that belong to other relations of the schema,
/// `cutoff` from [`calendar::retention_cutoff`]. Errs when a name we must create is held by
/// something else.
pub fn plan_table(
    spec: &PartitionSpec,
    wanted: &[Wanted],
    existing: &[Existing],
    taken: &[String],
    cutoff: Option<NaiveDate>,
    mode: Mode,
) -> Result<TablePlan, PlanError> {
    let mut plan =
        TablePlan { default: existing.iter().find(|e| e.bounds == Bounds::Default).cloned(), ..TablePlan::default() };
    let ranges: Vec<(&Existing, Bound, Bound)> = existing
        .iter()
        .filter_map(|e| match e.bounds {
            Bounds::Range { from, to } => Some((e, from, to)),
            Bounds::Default => None,
        })
        .collect();
    let check_name = |name: &str| -> Result<(), PlanError> {
        ident::validate(name).map_err(PlanError::BadName)?;
        if let Some(e) = existing.iter().find(|e| e.name == name && e.schema.is_none()) {
            return Err(PlanError::NameIsAnotherPartition { name: name.to_string(), bounds: e.bounds });
        }
        if taken.iter().any(|t| t == name) {
            return Err(PlanError::NameTaken { name: name.to_string(), table: spec.table.clone() });
        }
        Ok(())
    };

    if mode.create {
        for w in wanted {
            let (from, to) = (Bound::day(w.period.from), Bound::day(w.period.to));
            let mut over: Vec<&(&Existing, Bound, Bound)> =
                ranges.iter().filter(|(_, f, t)| *f < to && from < *t).collect();
            over.sort_by_key(|(_, f, _)| *f);
            match over.as_slice() {
                [] => {
                    check_name(&w.name)?;
                    plan.create.push(w.clone());
                }
                [(e, f, t)] if e.name == w.name && *f == from && *t == to => plan.present += 1,
                _ => {
                    let listed =
                        cut_list(&over.iter().map(|(e, _, _)| format!("{} {}", e.name, e.bounds)).collect::<Vec<_>>());
                    if covers(&over, from, to) {
                        plan.present += 1;
                        plan.notes.push(format!(
                            "{}: {} is already covered by {listed}; respected, {} not created",
                            spec.table, w.period, w.name
                        ));
                    } else {
                        plan.notes.push(format!(
                            "{}: overlap: {} {} partly overlaps {listed}; not created (rows in the uncovered part go to the default partition, if any)",
                            spec.table, w.name, w.period
                        ));
                    }
                }
            }
        }
        if spec.default_partition && plan.default.is_none() {
            let name = calendar::default_name(spec);
            check_name(&name)?;
            plan.create_default = Some(name);
        }
    }

    if let (true, Some(cutoff), Some(retention)) = (mode.prune, cutoff, spec.retention) {
        let cut = Bound::day(cutoff);
        let mut old: Vec<&(&Existing, Bound, Bound)> = ranges.iter().filter(|(_, _, t)| *t <= cut).collect();
        old.sort_by_key(|(_, f, _)| *f);
        for (e, _, _) in old {
            match own_period(spec, e) {
                Some(period) => plan.prune.push(Prune { name: e.name.clone(), period, action: retention.action }),
                None => plan.notes.push(format!(
                    "{}: retention keeps {} {}: older than {cutoff} but not a partition this spec names, so not ours to remove",
                    spec.table, e.name, e.bounds
                )),
            }
        }
    }
    Ok(plan)
}

/// Whether the ranges (sorted by lower bound) leave no gap in `[from, to)`.
fn covers(sorted: &[&(&Existing, Bound, Bound)], from: Bound, to: Bound) -> bool {
    let mut reached = from;
    for (_, f, t) in sorted {
        if *f > reached {
            return false;
        }
        reached = reached.max(*t);
    }
    reached >= to
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitions::spec::Retention;
    use chrono::{DateTime, Utc};

    const ALL: Mode = Mode { create: true, prune: true };

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn now() -> DateTime<Utc> {
        d("2024-12-15").and_hms_opt(12, 0, 0).unwrap().and_utc()
    }

    fn part(name: &str, from: &str, to: &str) -> Existing {
        Existing {
            name: name.into(),
            schema: None,
            bounds: Bounds::Range { from: Bound::day(d(from)), to: Bound::day(d(to)) },
        }
    }

    fn default(name: &str) -> Existing {
        Existing { name: name.into(), schema: None, bounds: Bounds::Default }
    }

    fn run(spec: &PartitionSpec, existing: &[Existing]) -> TablePlan {
        let wanted = calendar::wanted(spec, now());
        plan_table(spec, &wanted, existing, &[], calendar::retention_cutoff(spec, now()), ALL).unwrap()
    }

    fn created(p: &TablePlan) -> Vec<&str> {
        p.create.iter().map(|w| w.name.as_str()).collect()
    }

    #[test]
    fn empty_table_gets_every_wanted_partition_and_a_default() {
        let p = run(&PartitionSpec::monthly("audit_events", "event_date"), &[]);
        assert_eq!(
            created(&p),
            [
                "audit_events_2024_11",
                "audit_events_2024_12",
                "audit_events_2025_01",
                "audit_events_2025_02",
                "audit_events_2025_03"
            ]
        );
        assert_eq!(p.create_default.as_deref(), Some("audit_events_default"));
        assert_eq!(p.default, None);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn second_plan_after_the_first_is_a_noop() {
        let spec = PartitionSpec::monthly("t", "k");
        let first = run(&spec, &[]);
        let mut existing: Vec<Existing> =
            first.create.iter().map(|w| part(&w.name, &w.period.from.to_string(), &w.period.to.to_string())).collect();
        existing.push(default("t_default"));
        let second = run(&spec, &existing);
        assert!(second.is_noop(), "{second:?}");
        assert_eq!(second.present, 5);
        assert_eq!(second.default.map(|e| e.name).as_deref(), Some("t_default"));
    }

    #[test]
    fn later_roll_adds_only_new_periods_and_knows_the_default() {
        let spec = PartitionSpec::monthly("t", "k");
        let existing = [
            part("t_2024_10", "2024-10-01", "2024-11-01"),
            part("t_2024_11", "2024-11-01", "2024-12-01"),
            part("t_2024_12", "2024-12-01", "2025-01-01"),
            default("t_default"),
        ];
        let p = run(&spec, &existing);
        assert_eq!(created(&p), ["t_2025_01", "t_2025_02", "t_2025_03"]);
        assert_eq!(p.default.map(|e| e.name).as_deref(), Some("t_default"));
        assert_eq!(p.create_default, None);
    }

    #[test]
    fn foreign_named_partition_covering_a_period_is_respected() {
        let spec = PartitionSpec::monthly("audit_events", "event_date");
        let p = run(
            &spec,
            &[part("audit_events_y2024m12", "2024-12-01", "2025-01-01"), part("legacy_q1", "2025-01-01", "2025-04-01")],
        );
        assert_eq!(created(&p), ["audit_events_2024_11"]);
        assert_eq!(p.present, 4);
        assert!(p.notes[0].contains("covered by audit_events_y2024m12 [2024-12-01, 2025-01-01)"), "{:?}", p.notes);
        assert!(p.notes.iter().all(|n| !n.contains("overlap")), "{:?}", p.notes);
    }

    #[test]
    fn period_covered_by_two_halves_is_respected() {
        let spec = PartitionSpec { behind: 0, ahead: 0, ..PartitionSpec::monthly("t", "k") };
        let p = run(&spec, &[part("a", "2024-11-20", "2024-12-16"), part("b", "2024-12-16", "2025-01-05")]);
        assert!(p.create.is_empty());
        assert_eq!(p.present, 1);
    }

    #[test]
    fn partial_overlap_is_reported_never_created() {
        let spec = PartitionSpec { behind: 0, ahead: 1, ..PartitionSpec::monthly("t", "k") };
        let p = run(&spec, &[part("odd", "2024-12-10", "2025-01-10")]);
        assert!(p.create.is_empty(), "{p:?}");
        assert_eq!(p.notes.len(), 2);
        assert!(
            p.notes[0].starts_with(
                "t: overlap: t_2024_12 [2024-12-01, 2025-01-01) partly overlaps odd [2024-12-10, 2025-01-10)"
            ),
            "{}",
            p.notes[0]
        );
    }

    #[test]
    fn unbounded_foreign_partition_counts() {
        let spec = PartitionSpec { behind: 1, ahead: 0, ..PartitionSpec::monthly("t", "k") };
        let old = Existing {
            name: "archive".into(),
            schema: None,
            bounds: Bounds::Range { from: Bound::MinValue, to: Bound::day(d("2024-12-01")) },
        };
        let p = run(&spec, &[old]);
        assert_eq!(created(&p), ["t_2024_12"]);
    }

    #[test]
    fn name_held_by_another_relation_is_an_error() {
        let spec = PartitionSpec::monthly("t", "k");
        let wanted = calendar::wanted(&spec, now());
        let e = plan_table(&spec, &wanted, &[], &["t_2025_01".into()], None, ALL).unwrap_err().to_string();
        assert_eq!(e, "t_2025_01 already exists and is not a partition of t (detached earlier?); drop or rename it");
        let e = plan_table(&spec, &wanted, &[part("t_2025_01", "2030-01-01", "2030-02-01")], &[], None, ALL)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists with bounds [2030-01-01, 2030-02-01)"), "{e}");
    }

    #[test]
    fn too_long_names_are_refused_not_truncated() {
        let spec = PartitionSpec::monthly(&"x".repeat(60), "k");
        let wanted = calendar::wanted(&spec, now());
        let e = crate::core::report(&plan_table(&spec, &wanted, &[], &[], None, ALL).unwrap_err());
        assert_eq!(
            e,
            format!(
                "partition name: identifier \"{}_2024_11\" is longer than 63 bytes (PostgreSQL would truncate it)",
                "x".repeat(60)
            )
        );
    }

    #[test]
    fn no_default_when_the_spec_says_so() {
        let spec = PartitionSpec { default_partition: false, ..PartitionSpec::monthly("t", "k") };
        assert_eq!(run(&spec, &[]).create_default, None);
    }

    #[test]
    fn retention_prunes_only_older_partitions_it_names() {
        let spec = PartitionSpec {
            retention: Some(Retention { keep: 2, action: RetentionAction::Detach }),
            ..PartitionSpec::monthly("t", "k")
        };
        let existing = [
            part("t_2024_08", "2024-08-01", "2024-09-01"),
            part("t_2024_09", "2024-09-01", "2024-10-01"),
            part("t_2024_10", "2024-10-01", "2024-11-01"),
            part("t_2024_11", "2024-11-01", "2024-12-01"),
            part("hand_made", "2024-07-01", "2024-08-01"),
            part("t_2024_07", "2024-07-15", "2024-07-20"),
            default("t_default"),
        ];
        let p = run(&spec, &existing);
        let pruned: Vec<&str> = p.prune.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(pruned, ["t_2024_08", "t_2024_09"]);
        assert!(p.prune.iter().all(|x| x.action == RetentionAction::Detach));
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes.iter().any(|n| n.contains("keeps hand_made")));
        assert!(p.notes.iter().any(|n| n.contains("keeps t_2024_07 [2024-07-15, 2024-07-20)")));
    }

    #[test]
    fn prune_mode_creates_nothing_and_roll_mode_can_skip_retention() {
        let spec = PartitionSpec {
            retention: Some(Retention { keep: 1, action: RetentionAction::Drop }),
            ..PartitionSpec::monthly("t", "k")
        };
        let existing = [part("t_2024_01", "2024-01-01", "2024-02-01")];
        let wanted = calendar::wanted(&spec, now());
        let cutoff = calendar::retention_cutoff(&spec, now());
        let only_prune =
            plan_table(&spec, &wanted, &existing, &[], cutoff, Mode { create: false, prune: true }).unwrap();
        assert!(only_prune.create.is_empty() && only_prune.create_default.is_none());
        assert_eq!(only_prune.prune.len(), 1);
        let no_prune = plan_table(&spec, &wanted, &existing, &[], cutoff, Mode { create: true, prune: false }).unwrap();
        assert!(no_prune.prune.is_empty());
        assert_eq!(no_prune.create.len(), 5);
    }
}
