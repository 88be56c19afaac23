//! The fingerprint of a test database request, and the template's name (pure).

use super::*;

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
    pub fn short(&self) -> String {
        self.hash()[..HASH_LEN].to_string()
    }

    /// The advisory lock key for building this template (not goose's [`db::LOCK_ID`], so that
    /// building a template never waits for a migration elsewhere on the server).
    pub fn lock_key(&self) -> i64 {
        let h = Sha256::digest(format!("e2e-migrations template {}", self.hash()));
        i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
    }

    /// The sets as they appear in names: `audit_workflow`, only `[a-z0-9_]`, at most 24 bytes.
    pub fn label(&self) -> String {
        sets_label(&self.sets)
    }

    /// The template database's name.
    pub fn template_name(&self) -> String {
        template_name(&self.short(), &self.label())
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) const HASH_LEN: usize = 12;
pub(super) const LABEL_LEN: usize = 24;

/// The sets as they appear in template names (pure): lower-case `[a-z0-9_]`, joined by `_`,
/// cut to 24 bytes.
pub fn sets_label(sets: &[String]) -> String {
    let joined = sets.join("_").to_ascii_lowercase();
    let mut s: String = joined.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    s.truncate(LABEL_LEN);
    s
}

/// `e2e_tpl_<hash>_<label>`.
pub fn template_name(short_hash: &str, label: &str) -> String {
    format!("{PREFIX}tpl_{short_hash}_{label}")
}
