//! The fingerprint of a test database request, and the template's name (pure).

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::names::{template_name, HASH_LEN};
use super::FORMAT;
use crate::error::Result;
use crate::partitions::PartitionSpec;
use crate::Project;

/// One selected migration, as it enters the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FingerprintMigration {
    /// The goose version.
    pub version: i64,
    /// The file name.
    pub name: String,
    /// The checksum of its Up section.
    pub checksum: String,
    /// SHA-256 of the Up statements as they run (after `ENVSUB`), and the transaction mode.
    pub statements: String,
}

/// Everything a template's content depends on; equal fingerprints give equal databases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// Layout version of templates.
    pub format: u32,
    /// The requested sets, sorted and deduplicated (`all` when none).
    pub sets: Vec<String>,
    /// The selected migrations in version order.
    pub migrations: Vec<FingerprintMigration>,
    /// The partition specs of the sets.
    pub partitions: Vec<PartitionSpec>,
    /// The UTC day the partitions are rolled for.
    pub date: NaiveDate,
}

impl Fingerprint {
    /// The fingerprint of `sets` of `project` as of `now` (pure; validates the sets).
    pub fn new(project: &Project, sets: &[String], now: DateTime<Utc>) -> Result<Fingerprint> {
        let mut sorted: Vec<String> = sets.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        if sorted.is_empty() {
            sorted.push(crate::sets::ALL.to_string());
        }
        let selection = project.select(&sorted)?;
        let migrations = selection
            .migrations
            .iter()
            .map(|m| {
                let mut h = Sha256::new();
                h.update(if m.sql.no_transaction { b"notx\n" as &[u8] } else { b"tx\n" });
                for s in &m.sql.up {
                    h.update(s.sql.as_bytes());
                    h.update(b"\n;\n");
                }
                FingerprintMigration {
                    version: m.version,
                    name: m.name.clone(),
                    checksum: m.checksum.clone(),
                    statements: hex(&h.finalize()),
                }
            })
            .collect();
        Ok(Fingerprint {
            format: FORMAT,
            sets: sorted,
            migrations,
            partitions: selection.partitions,
            date: now.date_naive(),
        })
    }

    /// Hex SHA-256 of the canonical JSON form.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(serde_json::to_vec(self).expect("serialisable")))
    }

    /// The first 12 hex digits of [`Fingerprint::hash`], used in database names.
    pub(crate) fn short(&self) -> String {
        self.hash()[..HASH_LEN].to_string()
    }

    /// The advisory lock key for building this template (not goose's [`crate::db::LOCK_ID`], so that
    /// building a template never waits for a migration elsewhere on the server).
    pub(crate) fn lock_key(&self) -> i64 {
        let h = Sha256::digest(format!("e2e-migrations template {}", self.hash()));
        i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
    }

    /// The sets as they appear in names: `audit_workflow`, only `[a-z0-9_]`, at most 24 bytes.
    pub(crate) fn label(&self) -> String {
        sets_label(&self.sets)
    }

    /// The template database's name.
    pub(crate) fn template_name(&self) -> String {
        template_name(&self.short(), &self.label())
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const LABEL_LEN: usize = 24;

/// The sets as they appear in template names (pure): lower-case `[a-z0-9_]`, joined by `_`,
/// cut to 24 bytes.
pub(super) fn sets_label(sets: &[String]) -> String {
    let joined = sets.join("_").to_ascii_lowercase();
    let mut s: String = joined.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    s.truncate(LABEL_LEN);
    s
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    use super::*;
    use crate::source::parse_folder;

    /// A project with the sets `audit` (one partitioned table) and `workflow`.
    pub(in crate::testdb) fn project(audit_body: &str) -> Project {
        let f = |n: &str, b: &str| (n.to_string(), format!("-- +goose Up\n{b}\n-- +goose Down\nSELECT 1;\n"));
        let folder = parse_folder(
            Path::new("m"),
            vec![f("013_audit.sql", audit_body), f("015_workflow.sql", "CREATE TABLE w (id int);")],
            &|_| None,
        )
        .unwrap();
        let manifest = crate::Manifest::parse(
            Path::new("m/sets.toml"),
            "[sets.audit]\nfiles=[\"013_audit.sql\"]\n[[sets.audit.partitions]]\ntable=\"a\"\ncolumn=\"d\"\n\
             [sets.workflow]\nfiles=[\"015_workflow.sql\"]\n",
        )
        .unwrap();
        Project { folder, manifest: Some(manifest) }
    }

    /// Midday UTC of a date.
    pub(in crate::testdb) fn at(day: &str) -> DateTime<Utc> {
        NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(12, 0, 0).unwrap().and_utc()
    }

    pub(in crate::testdb) fn sets(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fingerprint_ignores_set_order_and_time_of_day() {
        let p = project("CREATE TABLE a (d date);");
        let a = Fingerprint::new(&p, &sets(&["workflow", "audit"]), at("2025-03-10")).unwrap();
        let b = Fingerprint::new(
            &p,
            &sets(&["audit", "workflow", "audit"]),
            at("2025-03-10") + chrono::Duration::hours(11),
        )
        .unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.sets, ["audit", "workflow"]);
        assert_eq!(a.migrations.len(), 2);
        assert_eq!(a.partitions.len(), 1);
    }

    #[test]
    fn fingerprint_changes_with_migration_day_sets_and_spec() {
        let p = project("CREATE TABLE a (d date);");
        let base = Fingerprint::new(&p, &sets(&["audit"]), at("2025-03-10")).unwrap();
        let edited =
            Fingerprint::new(&project("CREATE TABLE a (d date, x int);"), &sets(&["audit"]), at("2025-03-10")).unwrap();
        let next_day = Fingerprint::new(&p, &sets(&["audit"]), at("2025-03-11")).unwrap();
        let other_sets = Fingerprint::new(&p, &sets(&["audit", "workflow"]), at("2025-03-10")).unwrap();
        let mut spec = base.clone();
        spec.partitions[0].ahead = 6;
        let hashes: BTreeSet<String> =
            [&base, &edited, &next_day, &other_sets, &spec].iter().map(|f| f.hash()).collect();
        assert_eq!(hashes.len(), 5, "every change must give a new template");
        assert_ne!(base.lock_key(), edited.lock_key());
        assert_ne!(base.lock_key(), crate::db::LOCK_ID);
    }

    #[test]
    fn unknown_set_is_refused_before_any_database() {
        let e = Fingerprint::new(&project("SELECT 1;"), &sets(&["audti"]), at("2025-03-10")).unwrap_err();
        assert!(e.to_string().contains("unknown set \"audti\""), "{e}");
    }

    #[test]
    fn long_set_lists_are_cut_to_a_label() {
        let l = sets_label(&sets(&["audit", "workflow", "notification", "extra-set"]));
        assert_eq!(l, "audit_workflow_notificat");
        assert!(template_name(&"0".repeat(12), &l).len() <= crate::ident::MAX_LEN);
    }
}
