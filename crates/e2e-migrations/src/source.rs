//! Reads a goose migrations folder: versioned `NNN_name.sql` files, parsed and checksummed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::core::{Error, Result};
use crate::goose::{self, ParsedSql};

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The goose version: the number before the first `_` of the file name.
    pub version: i64,
    /// The file name, e.g. `013_create_audit_events_table.sql`.
    pub name: String,
    /// The path it was read from.
    pub path: PathBuf,
    /// Its statements.
    pub sql: ParsedSql,
    /// Hex SHA-256 of the Up section with line endings normalised to `\n`.
    pub checksum: String,
}

/// A migrations folder, its files in version order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// The folder.
    pub dir: PathBuf,
    /// Every migration, ordered by version.
    pub migrations: Vec<Migration>,
    /// Warnings: files goose would handle differently, each naming the file and line.
    pub warnings: Vec<String>,
}

impl Folder {
    /// The migration with this file name.
    pub fn by_name(&self, name: &str) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.name == name)
    }

    /// The migration with this version.
    pub fn by_version(&self, version: i64) -> Option<&Migration> {
        self.migrations.binary_search_by_key(&version, |m| m.version).ok().map(|i| &self.migrations[i])
    }
}

/// The goose version of a file name (`013_x.sql` is 13), as goose's `NumericComponent` reads it.
pub fn version_of(file_name: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(".sql")?;
    let (num, _) = stem.split_once('_')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<i64>().ok().filter(|v| *v > 0)
}

/// The checksum of an Up section: SHA-256 over its text with `\r\n` normalised to `\n`.
pub fn checksum(up_text: &str) -> String {
    let normalised = up_text.replace("\r\n", "\n");
    hex(&Sha256::digest(normalised.as_bytes()))
}

/// The checksum of the first `n` statements of an Up section (pure): what a `NO TRANSACTION` run
/// that stopped after statement `n` has applied, so that a file changed only in statements that
/// never ran can resume. `None` when `n` is 0 or more than the section's statements.
pub fn prefix_checksum(up: &[goose::Statement], n: usize) -> Option<String> {
    prefix_checksums(up).nth(n.checked_sub(1)?)
}

/// The [`prefix_checksum`] after each statement of an Up section, in one pass (pure): SHA-256
/// over each statement's text (`\r\n` normalised), each followed by a NUL.
pub fn prefix_checksums(up: &[goose::Statement]) -> impl Iterator<Item = String> + '_ {
    let mut h = Sha256::new();
    up.iter().map(move |s| {
        h.update(s.sql.replace("\r\n", "\n").as_bytes());
        h.update([0u8]);
        hex(&h.clone().finalize())
    })
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds a folder from file names and their contents (pure: no I/O).
///
/// Rejects duplicate versions (naming every file) and files goose would refuse to parse.
pub fn parse_folder(dir: &Path, files: Vec<(String, String)>, env: &dyn Fn(&str) -> Option<String>) -> Result<Folder> {
    let mut warnings = Vec::new();
    let mut by_version: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    for (name, text) in files {
        if !name.ends_with(".sql") {
            continue;
        }
        match version_of(&name) {
            Some(v) => by_version.entry(v).or_default().push((name, text)),
            None => return Err(Error::NotAMigrationName { file: dir.join(&name) }),
        }
    }
    if let Some((version, files)) = by_version.iter().find(|(_, f)| f.len() > 1) {
        let mut files: Vec<PathBuf> = files.iter().map(|(n, _)| dir.join(n)).collect();
        files.sort();
        return Err(Error::DuplicateVersion { version: *version, files });
    }
    let mut migrations = Vec::with_capacity(by_version.len());
    for (version, mut files) in by_version {
        let (name, text) = files.pop().expect("one file per version");
        let path = dir.join(&name);
        let sql = goose::parse(&text, env).map_err(|e| Error::Parse {
            file: path.clone(),
            line: e.line,
            message: e.message,
        })?;
        let findings = crate::txblock::check(&sql);
        if let Some(f) = findings.first() {
            return Err(Error::Refused {
                file: path,
                line: f.line,
                column: f.column,
                message: f.message.clone(),
                more: findings.len() - 1,
            });
        }
        for (line, w) in &sql.warnings {
            warnings.push(format!("{}:{line}: warning: {w}", path.display()));
        }
        let checksum = checksum(&sql.up_text);
        migrations.push(Migration { version, name, path, sql, checksum });
    }
    Ok(Folder { dir: dir.to_path_buf(), migrations, warnings })
}

/// A file's text, or an error naming the line and column of its first byte that is not UTF-8
/// (goose and PostgreSQL read migrations as UTF-8).
pub fn decode(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..bad];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        Error::NotUtf8 { file: path.to_path_buf(), line, column, byte: e.as_bytes()[bad] }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, body: &str) -> (String, String) {
        (name.to_string(), format!("-- +goose Up\n{body}\n-- +goose Down\nSELECT 1;\n"))
    }

    #[test]
    fn versions_are_numeric_not_lexical() {
        let f = parse_folder(
            Path::new("m"),
            vec![file("100_b.sql", "SELECT 100;"), file("20_a.sql", "SELECT 20;"), file("3_c.sql", "SELECT 3;")],
            &|_| None,
        )
        .unwrap();
        let v: Vec<i64> = f.migrations.iter().map(|m| m.version).collect();
        assert_eq!(v, [3, 20, 100]);
    }

    #[test]
    fn duplicate_versions_name_both_files() {
        let e =
            parse_folder(Path::new("m"), vec![file("013_a.sql", "SELECT 1;"), file("13_b.sql", "SELECT 2;")], &|_| {
                None
            })
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("duplicate migration version 13"), "{msg}");
        assert!(msg.contains("m/013_a.sql") && msg.contains("m/13_b.sql"), "{msg}");
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let e = parse_folder(Path::new("m"), vec![file("1_a.sql", "SELECT 1")], &|_| None).unwrap_err();
        assert_eq!(e.to_string().split(": ").next().unwrap(), "m/1_a.sql:2");
    }

    #[test]
    fn sql_files_without_a_version_are_refused_as_goose_does() {
        for bad in ["notes.sql", "0_zero.sql", "x_1.sql"] {
            let e =
                parse_folder(Path::new("m"), vec![file("001_a.sql", "SELECT 1;"), file(bad, "SELECT 2;")], &|_| None)
                    .unwrap_err()
                    .to_string();
            assert!(e.starts_with(&format!("m/{bad}: not a goose migration name")), "{e}");
        }
    }

    #[test]
    fn checksum_ignores_line_endings_only() {
        assert_eq!(checksum("a;\r\nb;\r\n"), checksum("a;\nb;\n"));
        assert_ne!(checksum("a;\nb;\n"), checksum("a;\nc;\n"));
    }

    #[test]
    fn a_file_that_is_not_utf8_is_an_error_with_its_line() {
        let e = decode(Path::new("m/001_latin1.sql"), b"-- +goose Up\nINSERT INTO t VALUES ('caf\xe9');\n".to_vec())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "m/001_latin1.sql:2: not UTF-8 (byte 0xe9 at column 27); goose and PostgreSQL read migrations as UTF-8: \
             save the file as UTF-8"
        );
        assert_eq!(decode(Path::new("m/x.sql"), "é;\n".as_bytes().to_vec()).unwrap(), "é;\n");
    }

    #[test]
    fn version_parsing() {
        assert_eq!(version_of("013_x.sql"), Some(13));
        assert_eq!(version_of("20240101120000_x.sql"), Some(20240101120000));
        assert_eq!(version_of("x_1.sql"), None);
        assert_eq!(version_of("0_zero.sql"), None);
        assert_eq!(version_of("013.sql"), None);
    }
}
