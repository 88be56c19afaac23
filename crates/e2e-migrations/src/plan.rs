//! Compares the migrations a selection wants with what the database has applied (pure).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::core::{Error, Result};
use crate::source::{Folder, Migration};

/// One row of goose's `goose_db_version` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GooseRow {
    /// The row id (goose reads the newest row per version).
    pub id: i64,
    /// The migration version (0 is goose's initial marker row).
    pub version: i64,
    /// Whether that row marks the version applied (old goose wrote `false` rows on down).
    pub is_applied: bool,
}

/// What we record beside goose's table for one applied version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRow {
    /// The version.
    pub version: i64,
    /// The file name when it was applied.
    pub file_name: String,
    /// The Up checksum when it was applied.
    pub checksum: String,
    /// Statements of a `NO TRANSACTION` migration that completed, while it is not yet applied.
    pub statements_done: Option<i32>,
    /// The checksum of those statements ([`crate::source::prefix_checksum`]); `None` in rows
    /// written before it was recorded.
    pub done_checksum: Option<String>,
}

/// The versions goose considers applied: for each version, its newest row decides.
pub fn goose_applied(rows: &[GooseRow]) -> BTreeSet<i64> {
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.id));
    let mut seen = BTreeSet::new();
    let mut applied = BTreeSet::new();
    for r in sorted {
        if r.version == 0 || !seen.insert(r.version) {
            continue;
        }
        if r.is_applied {
            applied.insert(r.version);
        }
    }
    applied
}

/// The applied versions, most recently applied first: goose's order (the newest row of
/// `goose_db_version` decides each version, and its id orders them), which `goose down` follows.
pub fn applied_by_recency(rows: &[GooseRow]) -> Vec<i64> {
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.id));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in sorted {
        if r.version == 0 || !seen.insert(r.version) {
            continue;
        }
        if r.is_applied {
            out.push(r.version);
        }
    }
    out
}

/// What `down` reverts, in order, as goose does: the most recently applied version, or with `to`,
/// every applied version above `to`, most recently applied first. Versions of other sets are left
/// alone; a version to revert that has no file in `folder` (it could belong to any set), or whose
/// file has no Down section, stops everything before anything is reverted, naming it: `down`
/// never skips past it to an older one.
pub fn down_targets<'a>(
    folder: &Folder,
    selected: &[&'a Migration],
    goose: &[GooseRow],
    to: Option<i64>,
) -> Result<Vec<&'a Migration>> {
    let by_version: BTreeMap<i64, &'a Migration> = selected.iter().map(|m| (m.version, *m)).collect();
    let candidates: Vec<i64> = applied_by_recency(goose)
        .into_iter()
        .filter(|v| by_version.contains_key(v) || folder.by_version(*v).is_none())
        .filter(|v| to.is_none_or(|t| *v > t))
        .collect();
    let candidates = if to.is_none() { candidates.into_iter().take(1).collect() } else { candidates };
    let missing: Vec<i64> = candidates.iter().copied().filter(|v| !by_version.contains_key(v)).collect();
    if !missing.is_empty() {
        return Err(Error::DownWithoutFile { versions: missing, to, dir: folder.dir.clone() });
    }
    let targets: Vec<&'a Migration> = candidates.iter().map(|v| by_version[v]).collect();
    if let Some(m) = targets.iter().find(|m| !m.sql.has_down) {
        return Err(Error::NoDownSection { file: m.path.clone() });
    }
    Ok(targets)
}

/// The state of one selected migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Applied, and the file still has the checksum it was applied with.
    Applied,
    /// Applied by goose itself (or before checksums were kept): nothing to compare with.
    AppliedUnverified,
    /// Applied, but the file's Up section changed since.
    Drifted,
    /// Not applied yet.
    Pending,
    /// A `NO TRANSACTION` migration interrupted part-way; the next run resumes it.
    Partial,
    /// A `NO TRANSACTION` migration interrupted part-way whose file changed since: refused.
    PartialChanged,
}

/// The plan for a selection against a database: what [`compare`] finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationPlan<'a> {
    /// Each selected migration with its state, in version order.
    pub migrations: Vec<(&'a Migration, State)>,
    /// Applied versions that have no file in the folder.
    pub unknown: Vec<i64>,
    /// For a `Partial` migration, the statements already done.
    pub resume: BTreeMap<i64, usize>,
}

impl<'a> MigrationPlan<'a> {
    /// Migrations to apply, in version order (a version lower than an applied one included).
    pub fn pending(&self) -> Vec<&'a Migration> {
        self.migrations.iter().filter(|(_, s)| matches!(s, State::Pending | State::Partial)).map(|(m, _)| *m).collect()
    }

    /// Applied migrations whose file changed.
    pub fn drifted(&self) -> Vec<&'a Migration> {
        self.migrations.iter().filter(|(_, s)| *s == State::Drifted).map(|(m, _)| *m).collect()
    }

    /// Refuses drift unless `accept` is set, and always refuses to resume an interrupted
    /// `NO TRANSACTION` migration whose file changed (its first statements are the old ones).
    pub fn check_drift(&self, accept: bool) -> Result<()> {
        if let Some((m, _)) = self.migrations.iter().find(|(_, s)| *s == State::PartialChanged) {
            let done = self.resume.get(&m.version).copied().unwrap_or(0);
            return Err(Error::PartialChanged { file: m.path.clone(), version: m.version, done });
        }
        let drifted = self.drifted();
        if drifted.is_empty() || accept {
            return Ok(());
        }
        Err(Error::Drift { files: drifted.iter().map(|m| m.path.display().to_string()).collect() })
    }
}

/// Compares `selected` with what the database reports applied (goose's rows and ours).
pub fn compare<'a>(
    folder: &Folder,
    selected: &[&'a Migration],
    goose: &[GooseRow],
    meta: &[MetaRow],
) -> MigrationPlan<'a> {
    let applied = goose_applied(goose);
    let meta: BTreeMap<i64, &MetaRow> = meta.iter().map(|m| (m.version, m)).collect();
    let mut resume = BTreeMap::new();
    let migrations = selected
        .iter()
        .map(|m| {
            let state = if applied.contains(&m.version) {
                match meta.get(&m.version) {
                    Some(row) if row.statements_done.is_none() && row.checksum != m.checksum => State::Drifted,
                    Some(row) if row.statements_done.is_none() => State::Applied,
                    _ => State::AppliedUnverified,
                }
            } else {
                match meta.get(&m.version).and_then(|r| r.statements_done.map(|d| (r, d))) {
                    Some((row, done)) if done > 0 => {
                        resume.insert(m.version, done as usize);
                        // the statements that ran are unchanged: the rest may have been fixed
                        let ran_unchanged = row.done_checksum.is_some()
                            && row.done_checksum == crate::source::prefix_checksum(&m.sql.up, done as usize);
                        if row.checksum == m.checksum || ran_unchanged {
                            State::Partial
                        } else {
                            State::PartialChanged
                        }
                    }
                    _ => State::Pending,
                }
            };
            (*m, state)
        })
        .collect();
    let unknown = applied.iter().copied().filter(|v| folder.by_version(*v).is_none()).collect();
    MigrationPlan { migrations, unknown, resume }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse_folder;
    use std::path::Path;

    fn folder(versions: &[i64]) -> Folder {
        let files = versions
            .iter()
            .map(|v| (format!("{v:03}_m.sql"), format!("-- +goose Up\nSELECT {v};\n-- +goose Down\nSELECT 0;\n")))
            .collect();
        parse_folder(Path::new("m"), files, &|_| None).unwrap()
    }

    fn goose(rows: &[(i64, i64, bool)]) -> Vec<GooseRow> {
        rows.iter().map(|&(id, version, is_applied)| GooseRow { id, version, is_applied }).collect()
    }

    fn meta(f: &Folder, v: i64) -> MetaRow {
        let m = f.by_version(v).unwrap();
        MetaRow {
            version: v,
            file_name: m.name.clone(),
            checksum: m.checksum.clone(),
            statements_done: None,
            done_checksum: None,
        }
    }

    #[test]
    fn newest_goose_row_decides() {
        let rows = goose(&[(1, 0, true), (2, 1, true), (3, 2, true), (4, 2, false)]);
        assert_eq!(goose_applied(&rows).into_iter().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn plan_applies_lower_versions_that_are_missing() {
        let f = folder(&[1, 2, 3]);
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        let p = compare(&f, &sel, &goose(&[(1, 0, true), (2, 3, true)]), &[meta(&f, 3)]);
        let pending: Vec<i64> = p.pending().iter().map(|m| m.version).collect();
        assert_eq!(pending, [1, 2]);
        assert!(p.check_drift(false).is_ok());
    }

    #[test]
    fn plan_fails_on_checksum_mismatch() {
        let f = folder(&[1, 2]);
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        let mut changed = meta(&f, 2);
        changed.checksum = "0".repeat(64);
        let p = compare(&f, &sel, &goose(&[(1, 1, true), (2, 2, true)]), &[meta(&f, 1), changed]);
        let e = p.check_drift(false).unwrap_err().to_string();
        assert!(e.contains("m/002_m.sql") && e.contains("accept the drift"), "{e}");
        assert!(p.check_drift(true).is_ok());
        assert!(p.pending().is_empty());
    }

    #[test]
    fn applied_by_goose_alone_is_unverified_not_drift() {
        let f = folder(&[1]);
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        let p = compare(&f, &sel, &goose(&[(1, 1, true)]), &[]);
        assert_eq!(p.migrations[0].1, State::AppliedUnverified);
    }

    #[test]
    fn partial_migration_whose_file_changed_is_refused() {
        let f = folder(&[1]);
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        let mut row = meta(&f, 1);
        row.statements_done = Some(1);
        row.checksum = "0".repeat(64);
        let p = compare(&f, &sel, &goose(&[]), &[row]);
        assert_eq!(p.migrations[0].1, State::PartialChanged);
        let e = p.check_drift(true).unwrap_err().to_string();
        assert!(
            e.contains("m/001_m.sql") && e.contains("stopped after statement 1") && e.contains("version_id = 1"),
            "{e}"
        );
    }

    #[test]
    fn unknown_applied_versions_are_reported() {
        let f = folder(&[1]);
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        let p = compare(&f, &sel, &goose(&[(1, 0, true), (2, 1, true), (3, 7, true)]), &[meta(&f, 1)]);
        assert_eq!(p.unknown, [7]);
    }

    fn names(ms: &[&Migration]) -> Vec<i64> {
        ms.iter().map(|m| m.version).collect()
    }

    #[test]
    fn down_reverts_the_most_recently_applied_version_as_goose_does() {
        let f = folder(&[1, 2, 3]);
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        // Applied in the order 3, 1, 2 (sets applied at different times): goose reverts 2 first.
        let rows = goose(&[(1, 0, true), (2, 3, true), (3, 1, true), (4, 2, true)]);
        assert_eq!(names(&down_targets(&f, &sel, &rows, None).unwrap()), [2]);
        assert_eq!(names(&down_targets(&f, &sel, &rows, Some(1)).unwrap()), [2, 3]);
        assert_eq!(names(&down_targets(&f, &sel, &rows, Some(0)).unwrap()), [2, 1, 3]);
        // Old goose's reverted rows (is_applied = false) leave a version unapplied.
        let rows = goose(&[(1, 0, true), (2, 1, true), (3, 2, true), (4, 2, false)]);
        assert_eq!(names(&down_targets(&f, &sel, &rows, None).unwrap()), [1]);
        assert!(down_targets(&f, &sel, &goose(&[(1, 0, true)]), None).unwrap().is_empty());
    }

    #[test]
    fn down_refuses_a_newest_version_without_a_file_and_never_skips_it() {
        let f = folder(&[1, 2]);
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        let rows = goose(&[(1, 0, true), (2, 1, true), (3, 2, true), (4, 9, true)]);
        let e = down_targets(&f, &sel, &rows, None).unwrap_err().to_string();
        assert!(e.contains("version 9 (the most recently applied version) has no file in m"), "{e}");
        let e = down_targets(&f, &sel, &rows, Some(1)).unwrap_err().to_string();
        assert!(e.contains("version 9 (applied above 1)"), "{e}");
        // Below `to`, an unknown version is not in the way.
        let rows = goose(&[(1, 0, true), (2, 9, true), (3, 1, true), (4, 2, true)]);
        assert_eq!(names(&down_targets(&f, &sel, &rows, None).unwrap()), [2]);
        assert_eq!(names(&down_targets(&f, &sel, &rows, Some(9)).unwrap()), Vec::<i64>::new());
    }

    #[test]
    fn down_refuses_a_version_without_a_down_section_before_reverting_anything() {
        let files = vec![
            ("001_a.sql".to_string(), "-- +goose Up\nSELECT 1;\n-- +goose Down\nSELECT 0;\n".to_string()),
            ("002_b.sql".to_string(), "-- +goose Up\nSELECT 2;\n".to_string()),
        ];
        let f = parse_folder(Path::new("m"), files, &|_| None).unwrap();
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        let rows = goose(&[(1, 0, true), (2, 1, true), (3, 2, true)]);
        let e = down_targets(&f, &sel, &rows, Some(0)).unwrap_err().to_string();
        assert_eq!(e, "m/002_b.sql: no '-- +goose Down' section, so it cannot be reverted (nothing was reverted)");
        assert!(matches!(down_targets(&f, &sel, &rows, Some(0)), Err(Error::NoDownSection { .. })));
    }

    #[test]
    fn down_with_sets_leaves_other_sets_alone() {
        let f = folder(&[1, 2, 3]);
        let sel: Vec<&Migration> = vec![f.by_version(1).unwrap(), f.by_version(2).unwrap()];
        let rows = goose(&[(1, 0, true), (2, 1, true), (3, 2, true), (4, 3, true)]);
        assert_eq!(names(&down_targets(&f, &sel, &rows, None).unwrap()), [2]);
    }

    /// A `NO TRANSACTION` run that stopped on a failing statement resumes once that statement
    /// (or any later one) is fixed: only the statements that ran must be unchanged.
    #[test]
    fn a_partial_run_resumes_when_only_statements_that_never_ran_changed() {
        let two = |second: &str| {
            let text = format!("-- +goose NO TRANSACTION\n-- +goose Up\nSELECT 1;\n{second}\n");
            parse_folder(Path::new("m"), vec![("001_m.sql".into(), text)], &|_| None).unwrap()
        };
        let before = two("SELECT no_such_column;");
        let m = &before.migrations[0];
        let row = MetaRow {
            statements_done: Some(1),
            done_checksum: crate::source::prefix_checksum(&m.sql.up, 1),
            ..meta(&before, 1)
        };
        let fixed = two("SELECT 2;");
        let sel: Vec<&Migration> = fixed.migrations.iter().collect();
        let p = compare(&fixed, &sel, &goose(&[]), std::slice::from_ref(&row));
        assert_eq!(p.migrations[0].1, State::Partial, "only the statement that failed changed");
        assert_eq!(p.resume[&1], 1);
        assert!(p.check_drift(false).is_ok());
        // a change to the statement that ran is still refused
        let changed = parse_folder(
            Path::new("m"),
            vec![("001_m.sql".into(), "-- +goose NO TRANSACTION\n-- +goose Up\nSELECT 10;\nSELECT 2;\n".into())],
            &|_| None,
        )
        .unwrap();
        let sel: Vec<&Migration> = changed.migrations.iter().collect();
        let p = compare(&changed, &sel, &goose(&[]), std::slice::from_ref(&row));
        assert_eq!(p.migrations[0].1, State::PartialChanged);
        // a row from before done_checksum was recorded: the whole file must be unchanged
        let old = MetaRow { done_checksum: None, ..row };
        let sel: Vec<&Migration> = fixed.migrations.iter().collect();
        assert_eq!(compare(&fixed, &sel, &goose(&[]), &[old]).migrations[0].1, State::PartialChanged);
    }

    #[test]
    fn partial_no_transaction_migration_resumes() {
        let f = folder(&[1]);
        let sel: Vec<&Migration> = f.migrations.iter().collect();
        let mut row = meta(&f, 1);
        row.statements_done = Some(2);
        let p = compare(&f, &sel, &goose(&[]), &[row]);
        assert_eq!(p.migrations[0].1, State::Partial);
        assert_eq!(p.resume[&1], 2);
        assert_eq!(p.pending().len(), 1);
    }
}
