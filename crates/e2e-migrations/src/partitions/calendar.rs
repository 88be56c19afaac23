//! The calendar (pure): which periods a spec wants at an instant, their `[from, to)` dates and names.
//!
//! Every period starts at midnight UTC: a day, an ISO week (Monday), the 1st of a month, January
//! 1st. The current period is the one holding `now` (in UTC); a spec wants `behind` periods before
//! it and `ahead` after it, so `behind + 1 + ahead` partitions cover one contiguous window.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use serde::Serialize;

use super::spec::{Interval, PartitionSpec};

/// A range of dates, `[from, to)`: the bounds of one partition, or a window of several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Period {
    /// First day in the range.
    pub from: NaiveDate,
    /// First day after the range.
    pub to: NaiveDate,
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", self.from, self.to)
    }
}

/// A partition the spec wants: its name and its period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wanted {
    /// The partition's table name (without schema), from the spec's name pattern.
    pub name: String,
    /// The dates it holds.
    pub period: Period,
}

/// The start of the period of `interval` that holds `day`.
pub fn period_start(interval: Interval, day: NaiveDate) -> NaiveDate {
    match interval {
        Interval::Daily => day,
        Interval::Weekly => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
        Interval::Monthly => day.with_day(1).expect("day 1 exists"),
        Interval::Yearly => NaiveDate::from_ymd_opt(day.year(), 1, 1).expect("January 1st exists"),
    }
}

/// The start of the period `n` periods after (or before, for negative `n`) the one starting at
/// `start`, which must be a period start.
pub fn shift(interval: Interval, start: NaiveDate, n: i64) -> NaiveDate {
    let magnitude = n.unsigned_abs();
    let shifted = match interval {
        Interval::Daily | Interval::Weekly => {
            let days = Days::new(magnitude * if interval == Interval::Weekly { 7 } else { 1 });
            if n >= 0 {
                start.checked_add_days(days)
            } else {
                start.checked_sub_days(days)
            }
        }
        Interval::Monthly | Interval::Yearly => {
            let months =
                u32::try_from(magnitude * if interval == Interval::Yearly { 12 } else { 1 }).unwrap_or(u32::MAX);
            if n >= 0 {
                start.checked_add_months(Months::new(months))
            } else {
                start.checked_sub_months(Months::new(months))
            }
        }
    };
    shifted.unwrap_or_else(|| panic!("{n} {interval:?} periods from {start} is outside the calendar"))
}

/// The period of `interval` that starts at `from` (a period start).
pub fn period_at(interval: Interval, from: NaiveDate) -> Period {
    Period { from, to: shift(interval, from, 1) }
}

/// The period of `interval` holding `day`.
pub fn period_of(interval: Interval, day: NaiveDate) -> Period {
    period_at(interval, period_start(interval, day))
}

/// The name the spec's pattern gives the partition starting at `from`.
///
/// Placeholders: `{table}` (without schema), `{yyyy}`, `{mm}`, `{dd}` (of `from`), `{ww}` (ISO
/// week, two digits) and `{q}` (quarter, 1-4). For weekly partitions `{yyyy}` is the ISO
/// week-numbering year, so that `{yyyy}_w{ww}` never repeats: Monday 2024-12-30 is `2025_w01`.
pub fn partition_name(spec: &PartitionSpec, from: NaiveDate) -> String {
    let iso = from.iso_week();
    let year = if spec.interval == Interval::Weekly { iso.year() } else { from.year() };
    spec.pattern()
        .replace("{table}", spec.table_name())
        .replace("{yyyy}", &format!("{year:04}"))
        .replace("{mm}", &format!("{:02}", from.month()))
        .replace("{dd}", &format!("{:02}", from.day()))
        .replace("{ww}", &format!("{:02}", iso.week()))
        .replace("{q}", &format!("{}", (from.month() - 1) / 3 + 1))
}

/// The name of the spec's default partition: `{table}_default`.
pub fn default_name(spec: &PartitionSpec) -> String {
    format!("{}_default", spec.table_name())
}

/// The period holding `now` (UTC).
pub fn current(spec: &PartitionSpec, now: DateTime<Utc>) -> Period {
    period_of(spec.interval, now.date_naive())
}

/// The partitions a spec wants at `now`, oldest first: `behind`, the current one, `ahead`.
pub fn wanted(spec: &PartitionSpec, now: DateTime<Utc>) -> Vec<Wanted> {
    let start = current(spec, now).from;
    (-i64::from(spec.behind)..=i64::from(spec.ahead))
        .map(|n| {
            let period = period_at(spec.interval, shift(spec.interval, start, n));
            Wanted { name: partition_name(spec, period.from), period }
        })
        .collect()
}

/// The whole window the wanted partitions cover at `now`.
pub fn window(spec: &PartitionSpec, now: DateTime<Utc>) -> Period {
    let start = current(spec, now).from;
    Period {
        from: shift(spec.interval, start, -i64::from(spec.behind)),
        to: shift(spec.interval, start, i64::from(spec.ahead) + 1),
    }
}

/// With retention on: the first day kept. Partitions that end on or before it are pruned.
pub fn retention_cutoff(spec: &PartitionSpec, now: DateTime<Utc>) -> Option<NaiveDate> {
    let r = spec.retention?;
    Some(shift(spec.interval, current(spec, now).from, -i64::from(r.keep)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn show(w: &[Wanted]) -> Vec<String> {
        w.iter().map(|w| format!("{} {}", w.name, w.period)).collect()
    }

    #[test]
    fn monthly_default_is_one_behind_current_three_ahead() {
        let spec = PartitionSpec::monthly("audit_events", "event_date");
        assert_eq!(
            show(&wanted(&spec, at("2024-07-15T12:00:00Z"))),
            [
                "audit_events_2024_06 [2024-06-01, 2024-07-01)",
                "audit_events_2024_07 [2024-07-01, 2024-08-01)",
                "audit_events_2024_08 [2024-08-01, 2024-09-01)",
                "audit_events_2024_09 [2024-09-01, 2024-10-01)",
                "audit_events_2024_10 [2024-10-01, 2024-11-01)",
            ]
        );
    }

    #[test]
    fn december_rolls_into_next_year() {
        let spec = PartitionSpec::monthly("audit_events", "event_date");
        let names: Vec<String> = wanted(&spec, at("2024-12-15T00:00:00Z")).into_iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            [
                "audit_events_2024_11",
                "audit_events_2024_12",
                "audit_events_2025_01",
                "audit_events_2025_02",
                "audit_events_2025_03"
            ]
        );
        assert_eq!(window(&spec, at("2024-12-15T00:00:00Z")), Period { from: d("2024-11-01"), to: d("2025-04-01") });
    }

    #[test]
    fn end_of_february_in_leap_and_common_years() {
        let spec = PartitionSpec::monthly("t", "k");
        let leap = wanted(&spec, at("2024-02-29T23:59:59Z"));
        assert_eq!(leap[1].period, Period { from: d("2024-02-01"), to: d("2024-03-01") });
        let common = wanted(&spec, at("2023-02-28T23:59:59Z"));
        assert_eq!(common[1].period, Period { from: d("2023-02-01"), to: d("2023-03-01") });
        assert_eq!(common[0].period.from, d("2023-01-01"));
    }

    #[test]
    fn now_is_read_in_utc() {
        let spec = PartitionSpec::monthly("t", "k");
        // 23:30 on Jan 31st in New York is already February in UTC.
        let now = DateTime::parse_from_rfc3339("2024-01-31T23:30:00-05:00").unwrap().with_timezone(&Utc);
        assert_eq!(current(&spec, now).from, d("2024-02-01"));
    }

    #[test]
    fn weekly_is_iso_monday_to_monday_named_by_iso_year() {
        let spec =
            PartitionSpec { interval: Interval::Weekly, behind: 0, ahead: 1, ..PartitionSpec::monthly("t", "k") };
        // Tuesday 2024-12-31 is in ISO week 1 of 2025, which starts on Monday 2024-12-30.
        assert_eq!(
            show(&wanted(&spec, at("2024-12-31T08:00:00Z"))),
            ["t_2025_w01 [2024-12-30, 2025-01-06)", "t_2025_w02 [2025-01-06, 2025-01-13)"]
        );
        // Sunday belongs to the week that started the Monday before.
        assert_eq!(period_start(Interval::Weekly, d("2024-06-09")), d("2024-06-03"));
    }

    #[test]
    fn daily_and_yearly() {
        let daily =
            PartitionSpec { interval: Interval::Daily, behind: 1, ahead: 1, ..PartitionSpec::monthly("t", "k") };
        assert_eq!(
            show(&wanted(&daily, at("2024-03-01T00:00:00Z"))),
            [
                "t_2024_02_29 [2024-02-29, 2024-03-01)",
                "t_2024_03_01 [2024-03-01, 2024-03-02)",
                "t_2024_03_02 [2024-03-02, 2024-03-03)"
            ]
        );
        let yearly =
            PartitionSpec { interval: Interval::Yearly, behind: 0, ahead: 0, ..PartitionSpec::monthly("s.t", "k") };
        assert_eq!(show(&wanted(&yearly, at("2024-06-01T00:00:00Z"))), ["t_2024 [2024-01-01, 2025-01-01)"]);
    }

    #[test]
    fn legacy_pattern_is_expressible() {
        let spec = PartitionSpec {
            name: Some("{table}_y{yyyy}m{mm}".into()),
            ..PartitionSpec::monthly("audit_events", "event_date")
        };
        assert!(spec.validate().is_ok());
        assert_eq!(partition_name(&spec, d("2025-12-01")), "audit_events_y2025m12");
        let q = PartitionSpec { name: Some("{table}_{yyyy}_q{q}_{mm}".into()), ..spec };
        assert_eq!(partition_name(&q, d("2025-08-01")), "audit_events_2025_q3_08");
    }

    #[test]
    fn retention_cutoff_is_keep_periods_before_the_current_one() {
        let spec = PartitionSpec {
            retention: Some(super::super::spec::Retention {
                keep: 2,
                action: super::super::spec::RetentionAction::Drop,
            }),
            ..PartitionSpec::monthly("t", "k")
        };
        assert_eq!(retention_cutoff(&spec, at("2025-01-10T00:00:00Z")), Some(d("2024-11-01")));
        assert_eq!(retention_cutoff(&PartitionSpec::monthly("t", "k"), at("2025-01-10T00:00:00Z")), None);
    }

    #[test]
    fn shift_keeps_month_starts_and_goes_both_ways() {
        assert_eq!(shift(Interval::Monthly, d("2024-01-01"), 13), d("2025-02-01"));
        assert_eq!(shift(Interval::Monthly, d("2024-01-01"), -1), d("2023-12-01"));
        assert_eq!(shift(Interval::Yearly, d("2024-01-01"), -2), d("2022-01-01"));
        assert_eq!(shift(Interval::Weekly, d("2024-12-30"), -1), d("2024-12-23"));
    }
}
