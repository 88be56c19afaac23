//! Tidy checks over the repository, run as ordinary tests.

use std::path::{Path, PathBuf};

/// Where `text` creates or alters a table (case-insensitive, the two words possibly on separate
/// lines): 1-based line numbers of the first word, with that line.
fn ddl_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let words: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            l.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .filter(|w| !w.is_empty())
                .map(move |w| (i, w.to_ascii_lowercase()))
        })
        .collect();
    // CREATE [GLOBAL|LOCAL] [TEMP|TEMPORARY|UNLOGGED] TABLE, ALTER TABLE.
    const BETWEEN: &[&str] = &["global", "local", "temp", "temporary", "unlogged"];
    let mut found: Vec<(usize, String)> = Vec::new();
    for (i, (line, word)) in words.iter().enumerate() {
        if word != "create" && word != "alter" {
            continue;
        }
        let rest = words[i + 1..].iter().map(|(_, w)| w.as_str());
        let mut rest = rest.skip_while(|w| word == "create" && BETWEEN.contains(w));
        if rest.next() == Some("table") {
            found.push((line + 1, lines[*line].trim().to_string()));
        }
    }
    found.dedup();
    found
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "target" || n.to_string_lossy().starts_with('.')) {
            continue;
        }
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The service test crates use the shared migrations; a table made or changed inline would
/// drift from what production has.
#[test]
fn no_ddl_under_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let test_dir = root.join("test");
    let mut files = Vec::new();
    files_under(&test_dir, &mut files);
    assert!(!files.is_empty(), "no files under {}: is the tidy check looking in the right place?", test_dir.display());
    let mut found = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for (line, l) in ddl_lines(&text) {
            found.push(format!("{}:{line}: {l}", f.strip_prefix(&root).unwrap_or(&f).display()));
        }
    }
    assert!(
        found.is_empty(),
        "CREATE TABLE / ALTER TABLE under test/ (add a migration to migrations/ and a set in sets.toml instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn ddl_detection_is_case_insensitive_and_word_based() {
    assert_eq!(ddl_lines("x\n  create   TABLE t (id int);").len(), 1);
    assert_eq!(ddl_lines("client.execute(\"Alter Table t add c int\")").len(), 1);
    assert!(ddl_lines("INSERT INTO audit_events ...; -- creates tables? no\nlet created_table = 1;").is_empty());
    assert_eq!(ddl_lines("CREATE TEMP TABLE x (id int)").len(), 1);
    assert_eq!(ddl_lines("create global temporary\n table x ()").len(), 1);
    assert_eq!(ddl_lines("CREATE UNLOGGED TABLE x ()").len(), 1);
    assert!(ddl_lines("create index on t (x); alter index i rename to j").is_empty());
}
