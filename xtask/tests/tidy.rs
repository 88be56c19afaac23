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

/// Where `text` uses `/proc` outside a function marked `#[cfg(target_os = "linux")]` that has a
/// `#[cfg(not(target_os = "linux"))]` function of the same name beside it (comments aside):
/// 1-based line numbers with the line.
fn proc_without_portable_fallback(text: &str) -> Vec<(usize, String)> {
    const LINUX: &str = "#[cfg(target_os = \"linux\")]";
    const NOT_LINUX: &str = "#[cfg(not(target_os = \"linux\"))]";
    let lines: Vec<&str> = text.lines().collect();
    let is_fn = |l: &str| {
        let t = l.trim_start();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub(super) "))
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        let t = t.strip_prefix("async ").unwrap_or(t);
        t.strip_prefix("fn ").map(|rest| rest.split(['(', '<']).next().unwrap_or("").trim().to_string())
    };
    // The attributes right above line `i`.
    let attrs = |i: usize| -> Vec<&str> {
        lines[..i].iter().rev().map(|l| l.trim()).take_while(|l| l.starts_with("#[") || l.starts_with("///")).collect()
    };
    let fns: Vec<(usize, String)> = lines.iter().enumerate().filter_map(|(i, l)| is_fn(l).map(|n| (i, n))).collect();
    let mut found = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let code = l.split("//").next().unwrap_or("");
        // A path under /proc, or /proc itself; not a name such as the Pod Security Standard's
        // control "/proc Mount Type".
        if !code.contains("/proc/") && !code.contains("\"/proc\"") {
            continue;
        }
        let enclosing = fns.iter().rev().find(|(j, _)| *j <= i);
        let ok = enclosing.is_some_and(|(j, name)| {
            attrs(*j).contains(&LINUX) && fns.iter().any(|(k, other)| other == name && attrs(*k).contains(&NOT_LINUX))
        });
        if !ok {
            found.push((i + 1, l.trim().to_string()));
        }
    }
    found
}

/// The local backend and test databases run on macOS too: Linux-only interfaces stay behind
/// `#[cfg(target_os = "linux")]` with a portable twin.
#[test]
fn proc_only_behind_linux_cfg_with_a_portable_fallback() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "test"] {
        files_under(&root.join(dir), &mut files);
    }
    let this = Path::new(file!()).file_name().unwrap().to_owned();
    files.retain(|f| f.extension().is_some_and(|e| e == "rs") && f.file_name() != Some(this.as_os_str()));
    assert!(files.len() > 20, "too few Rust files found under {}", root.display());
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (line, l) in proc_without_portable_fallback(&text) {
            found.push(format!("{}:{line}: {l}", f.strip_prefix(&root).unwrap_or(&f).display()));
        }
    }
    assert!(
        found.is_empty(),
        "/proc outside #[cfg(target_os = \"linux\")] code with a portable fallback (macOS has no /proc):\n{}",
        found.join("\n")
    );
}

#[test]
fn proc_detection_wants_the_linux_cfg_and_a_twin() {
    let bare = "fn tag() -> String {\n    std::fs::read_to_string(\"/proc/sys/kernel/hostname\").unwrap()\n}\n";
    assert_eq!(proc_without_portable_fallback(bare).len(), 1);
    let no_twin = format!("#[cfg(target_os = \"linux\")]\n{bare}");
    assert_eq!(proc_without_portable_fallback(&no_twin).len(), 1, "a Linux-only function needs a fallback");
    let both = format!(
        "{no_twin}\n/// Elsewhere.\n#[cfg(not(target_os = \"linux\"))]\nfn tag() -> String {{\n    String::new()\n}}\n"
    );
    assert!(proc_without_portable_fallback(&both).is_empty());
    assert!(proc_without_portable_fallback("//! no `/proc` here\nfn f() {} // not /proc either\n").is_empty());
    assert!(proc_without_portable_fallback("fn f() -> &str {\n    \"/proc Mount Type\"\n}\n").is_empty());
    assert_eq!(proc_without_portable_fallback("fn f() -> bool {\n    Path::new(\"/proc\").is_dir()\n}\n").len(), 1);
}
