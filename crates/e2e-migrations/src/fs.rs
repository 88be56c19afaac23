//! Reading a migrations folder from disk: the thin edge that hands file names and text to the
//! pure parsers ([`crate::source::parse_folder`], [`crate::sets::Manifest::parse`]).

use std::path::{Path, PathBuf};

use crate::error::{EntryProblem, Error, Result};
use crate::sets::{Manifest, MANIFEST};
use crate::source::{self, Folder};

/// Reads every `*.sql` entry of `dir` as goose does (following symlinks) and parses the folder,
/// expanding `ENVSUB` from the process environment.
///
/// An entry named `*.sql` that is not a readable file (a directory, a dangling symlink, a symlink
/// loop) is an error naming it: goose lists it too, and fails on it. A file that is not UTF-8 is
/// an error naming its line.
pub fn load_folder(dir: &Path) -> Result<Folder> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sql") {
            continue;
        }
        let path = entry.path();
        if let Some(problem) = entry_problem(&path) {
            return Err(Error::NotAFile { path, problem });
        }
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        files.push((name, source::decode(&path, bytes)?));
    }
    Ok(source::parse_folder(dir, files, &|k| std::env::var(k).ok())?)
}

/// Why `path`, named like a migration, is not a file goose can read; `None` when it is one.
fn entry_problem(path: &Path) -> Option<EntryProblem> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some(EntryProblem::Directory),
        Ok(_) => Some(EntryProblem::NotRegular),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => Some(EntryProblem::SymlinkLoop),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(EntryProblem::DanglingSymlink { target: std::fs::read_link(path).ok() })
        }
        Err(e) => Some(EntryProblem::Unreadable(e)),
    }
}

/// Reads `dir/sets.toml`; `None` when the folder has no manifest.
pub fn load_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let file: PathBuf = dir.join(MANIFEST);
    match std::fs::read_to_string(&file) {
        Ok(text) => Ok(Some(Manifest::parse(&file, &text)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path: file, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use e2e_test_support::TempDir;

    fn tmp() -> TempDir {
        TempDir::new("e2e-source")
    }

    #[test]
    fn a_symlinked_migration_is_read_as_goose_reads_it() {
        let t = tmp();
        let elsewhere = t.join("shared");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("base.sql"), "-- +goose Up\nCREATE TABLE linked (x int);\n").unwrap();
        let dir = t.join("migrations");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("base.sql"), dir.join("001_linked.sql")).unwrap();
        let f = load_folder(&dir).unwrap();
        assert_eq!(f.migrations.len(), 1);
        assert_eq!(f.migrations[0].name, "001_linked.sql");
        assert_eq!(f.migrations[0].sql.up[0].sql, "CREATE TABLE linked (x int);");
    }

    #[test]
    fn entries_named_like_migrations_that_are_not_files_are_errors_naming_them() {
        let t = tmp();
        std::fs::create_dir(t.join("002_dir.sql")).unwrap();
        let e = load_folder(t.path()).unwrap_err().to_string();
        assert!(e.contains("002_dir.sql: a directory named like a migration file"), "{e}");

        let t = tmp();
        std::os::unix::fs::symlink(t.join("gone.sql"), t.join("003_dangling.sql")).unwrap();
        let e = load_folder(t.path()).unwrap_err().to_string();
        assert!(e.contains("003_dangling.sql: a dangling symlink to ") && e.contains("gone.sql"), "{e}");

        let t = tmp();
        std::os::unix::fs::symlink(t.join("004_b.sql"), t.join("004_a.sql")).unwrap();
        std::os::unix::fs::symlink(t.join("004_a.sql"), t.join("004_b.sql")).unwrap();
        let e = load_folder(t.path()).unwrap_err().to_string();
        assert!(e.contains(": a symlink loop; goose lists every *.sql entry"), "{e}");

        // Other entries (a folder of notes, a README) are not goose's business.
        let t = tmp();
        std::fs::create_dir(t.join("notes")).unwrap();
        std::fs::write(t.join("README.md"), "x").unwrap();
        assert!(load_folder(t.path()).unwrap().migrations.is_empty());
    }

    #[test]
    fn a_file_that_is_not_utf8_is_an_error_with_its_line() {
        let t = tmp();
        std::fs::write(t.join("001_latin1.sql"), b"-- +goose Up\nINSERT INTO t VALUES ('caf\xe9');\n").unwrap();
        let e = load_folder(t.path()).unwrap_err();
        assert!(matches!(e, Error::Core(crate::core::Error::NotUtf8 { line: 2, column: 27, byte: 0xe9, .. })), "{e}");
        assert!(e.to_string().contains("001_latin1.sql:2: not UTF-8 (byte 0xe9 at column 27)"), "{e}");
    }

    #[test]
    fn a_manifest_is_read_when_present() {
        let t = tmp();
        assert_eq!(load_manifest(t.path()).unwrap(), None);
        std::fs::write(t.join(MANIFEST), "[sets.a]\nfiles = []\n").unwrap();
        assert_eq!(load_manifest(t.path()).unwrap().unwrap().sets.len(), 1);
        std::fs::write(t.join(MANIFEST), "[sets.all]\n").unwrap();
        let e = load_manifest(t.path()).unwrap_err().to_string();
        assert!(e.ends_with("sets.toml: the set \"all\" is implicit (every file) and cannot be defined"), "{e}");
    }
}
