//! Tidy checks over the repository, run as ordinary tests: no DDL in the service test crates, a
//! pure core, and a library whose messages name no CLI flag.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn library_src() -> PathBuf {
    root().join("crates/e2e-migrations/src")
}

/// The words of `text`, case-folded, each with its 0-based line and the characters right before
/// and after it (`drop(` and `.truncate(` are Rust calls, not SQL).
fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    for (line, l) in text.lines().enumerate() {
        let chars: Vec<char> = l.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if !(chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Word {
                line,
                text: chars[start..i].iter().collect::<String>().to_ascii_lowercase(),
                before: start.checked_sub(1).map(|b| chars[b]),
                after: chars.get(i).copied(),
            });
        }
    }
    out
}

struct Word {
    line: usize,
    text: String,
    before: Option<char>,
    after: Option<char>,
}

/// What `DROP` removes in SQL (after it, `drop(x)` and `impl Drop for` are Rust).
const DROPPED: &[&str] = &[
    "table",
    "index",
    "view",
    "materialized",
    "schema",
    "sequence",
    "type",
    "domain",
    "function",
    "procedure",
    "trigger",
    "extension",
    "database",
    "constraint",
    "column",
    "policy",
    "rule",
    "role",
    "user",
    "owned",
    "publication",
    "subscription",
    "aggregate",
    "operator",
    "collation",
    "cast",
    "tablespace",
    "event",
    "foreign",
    "server",
    "statistics",
];

/// Where `text` changes the schema or removes data (case-insensitive, word-based, the words
/// possibly on separate lines): `CREATE [GLOBAL|LOCAL] [TEMP|TEMPORARY|UNLOGGED] TABLE`, `CREATE
/// [UNIQUE] INDEX`, `ALTER TABLE`, `DROP <object>` and `TRUNCATE` (not the Rust calls `drop(x)`
/// and `.truncate(n)`): 1-based line numbers of the first word, with that line.
fn ddl_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let words = words(text);
    const BETWEEN: &[&str] = &["global", "local", "temp", "temporary", "unlogged", "unique"];
    let mut found: Vec<(usize, String)> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let mut rest = words[i + 1..].iter().map(|w| w.text.as_str());
        let hit = match w.text.as_str() {
            "create" => matches!(rest.find(|n| !BETWEEN.contains(n)), Some("table" | "index")),
            "alter" => rest.next() == Some("table"),
            "drop" => w.after != Some('(') && rest.next().is_some_and(|n| DROPPED.contains(&n)),
            "truncate" => w.after != Some('(') && w.before != Some('.'),
            _ => false,
        };
        if hit {
            found.push((w.line + 1, lines[w.line].trim().to_string()));
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

/// The service test crates use the shared migrations; a table made, changed, emptied or dropped
/// inline would drift from what production has.
#[test]
fn no_ddl_under_test() {
    let root = root();
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
        "CREATE TABLE / CREATE INDEX / ALTER TABLE / DROP / TRUNCATE under test/ (add a migration to migrations/ and \
         a set in sets.toml instead; a test database is dropped by the library):\n{}",
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
    assert!(ddl_lines("alter index i rename to j; let index = created; // drop it").is_empty());
    // Indexes, drops and truncation change the schema or remove data too.
    assert_eq!(ddl_lines("create index on t (x)").len(), 1);
    assert_eq!(ddl_lines("CREATE UNIQUE\nINDEX CONCURRENTLY i ON t (x)").len(), 1);
    assert_eq!(ddl_lines("c.batch_execute(\"Drop Table audit_events\")").len(), 1);
    assert_eq!(ddl_lines("DROP INDEX IF EXISTS i; drop schema s cascade").len(), 1);
    assert_eq!(ddl_lines("drop materialized view v").len(), 1);
    assert_eq!(ddl_lines("truncate audit_events;").len(), 1);
    assert_eq!(ddl_lines("TRUNCATE TABLE a, b RESTART IDENTITY").len(), 1);
    // Rust's own drop and truncate are not SQL.
    assert!(ddl_lines("drop(client);\nimpl Drop for Db {}\nv.truncate(3);\nstd::mem::drop(x);").is_empty());
}

/// A Rust source file cut into code and string literals, without its comments and without its
/// `#[cfg(test)]` modules: what the library runs, not what tests or documents it.
#[derive(Debug, Default)]
struct Source {
    /// The code outside string literals (a literal is left as `""`).
    code: String,
    /// The string literals: 1-based line and text (escapes as written).
    literals: Vec<(usize, String)>,
}

fn lex(src: &str) -> Source {
    let c: Vec<char> = src.chars().collect();
    let mut out = Source::default();
    let mut line = 1;
    let mut i = 0;
    // `#[cfg(test)]` seen, the item's `{` not yet; then the depth of braces inside it.
    let mut test_item = false;
    let mut skipping: Option<usize> = None;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let at = |s: &str| c[i..].iter().take(s.chars().count()).copied().eq(s.chars());
        let start_line = line;
        // Comments.
        if at("//") {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if at("/*") {
            let mut depth = 0;
            while i < c.len() {
                if c[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    i += 2;
                } else if c[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
            continue;
        }
        // String literals: "..", b"..", r#".."#, br"..".
        let prev_ident = i > 0 && ident(c[i - 1]);
        let prefix = if prev_ident {
            0
        } else if at("br") || at("rb") {
            2
        } else if at("r") || at("b") {
            1
        } else {
            0
        };
        let raw = prefix > 0 && c[i..i + prefix].contains(&'r');
        let mut j = i + prefix;
        let mut hashes = 0;
        while raw && j < c.len() && c[j] == '#' {
            hashes += 1;
            j += 1;
        }
        if j < c.len() && c[j] == '"' && (prefix > 0 || c[i] == '"') {
            j += 1;
            let mut text = String::new();
            loop {
                if j >= c.len() {
                    break;
                }
                if raw && c[j] == '"' && c[j + 1..].iter().take(hashes).filter(|h| **h == '#').count() == hashes {
                    j += 1 + hashes;
                    break;
                }
                if !raw && c[j] == '\\' && j + 1 < c.len() {
                    text.push(c[j]);
                    text.push(c[j + 1]);
                    line += usize::from(c[j + 1] == '\n');
                    j += 2;
                    continue;
                }
                if !raw && c[j] == '"' {
                    j += 1;
                    break;
                }
                line += usize::from(c[j] == '\n');
                text.push(c[j]);
                j += 1;
            }
            if skipping.is_none() {
                out.code.push_str("\"\"");
                out.literals.push((start_line, text));
            }
            i = j;
            continue;
        }
        // Char literals ('x', '\n', '\'') and lifetimes ('a).
        if c[i] == '\'' {
            let len = if c.get(i + 1) == Some(&'\\') {
                c.get(i + 3..).and_then(|r| r.iter().position(|ch| *ch == '\'')).map(|p| p + 4)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(3)
            } else {
                None
            };
            if let Some(len) = len {
                if skipping.is_none() {
                    out.code.push_str("' '");
                }
                i += len;
                continue;
            }
        }
        // Code, minus `#[cfg(test)]` items.
        let ch = c[i];
        line += usize::from(ch == '\n');
        match skipping {
            Some(depth) => {
                skipping = match ch {
                    '{' => Some(depth + 1),
                    '}' if depth == 1 => None,
                    '}' => Some(depth - 1),
                    _ => Some(depth),
                };
            }
            None => {
                out.code.push(ch);
                if out.code.ends_with("#[cfg(test)]") {
                    test_item = true;
                } else if test_item && ch == ';' {
                    test_item = false;
                } else if test_item && ch == '{' {
                    test_item = false;
                    skipping = Some(1);
                }
            }
        }
        i += 1;
    }
    out
}

#[test]
fn the_lexer_finds_literals_and_leaves_out_comments_and_test_modules() {
    let src = "fn a() { let x = \"--one\"; } // \"--no\"\n/* \"--no\" /* nested */ */\nlet r = r#\"a \"--raw\" b\"#;\n\
               let c = '\"'; fn f<'a>(x: &'a str) {}\nlet b = b\"--bytes\";\n#[cfg(test)]\nmod tests { const T: &str = \"--test\"; \
               fn g() { {} } }\nconst AFTER: &str = \"--after\\\"q\";\n";
    let s = lex(src);
    let lits: Vec<(usize, &str)> = s.literals.iter().map(|(l, t)| (*l, t.as_str())).collect();
    assert_eq!(lits, [(1, "--one"), (3, "a \"--raw\" b"), (5, "--bytes"), (8, "--after\\\"q")]);
    assert!(!s.code.contains("const T") && !s.code.contains("fn g") && s.code.contains("AFTER"), "{}", s.code);
    assert!(s.code.contains("fn f<'a>(x: &'a str)"), "{}", s.code);
}

/// The modules of the pure core, as `crate::` paths (`partitions::spec`), from the library's one
/// list of them.
fn core_modules() -> Vec<String> {
    e2e_migrations::core::MODULES.iter().map(|f| f.trim_end_matches(".rs").replace('/', "::")).collect()
}

/// What a core module may not reach: I/O, the clock, the environment, randomness, a client.
const IMPURE: &[&str] = &[
    "tokio_postgres",
    "tokio::",
    "kube::",
    "k8s_openapi",
    "xshell",
    "std::fs",
    "std::env",
    "std::process",
    "std::net",
    "std::io",
    "std::thread",
    "SystemTime",
    "Instant",
    "Utc::now",
    "Local::now",
    "getrandom",
    "nix::",
    "env!(",
    "option_env!(",
    "include_str!(",
    "include_bytes!(",
];

/// The `crate::` and `super::` paths a module's code names, `{a, b}` groups spread out.
fn paths(code: &str, root: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(root) {
        let before = rest[..at].chars().last();
        rest = &rest[at + root.len()..];
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == ':') {
            continue;
        }
        let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let after = &rest[path.len()..];
        if let (true, Some(group)) = (path.is_empty() || path.ends_with("::"), after.strip_prefix('{')) {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                out.push(format!("{path}{item}"));
            }
        } else {
            out.push(path);
        }
    }
    out
}

/// The core is pure: none of its modules reaches I/O, the clock, the environment or a client,
/// itself or through a module of the engine.
#[test]
fn core_modules_do_no_io() {
    let src = library_src();
    let core = core_modules();
    // What `crate::partitions` re-exports from its core modules (`PartitionSpec`, ...).
    let mod_rs = lex(&std::fs::read_to_string(src.join("partitions/mod.rs")).unwrap()).code;
    let mut partition_items: Vec<String> = Vec::new();
    for p in paths(&mod_rs.replace("pub use ", "pub use self::"), "self::") {
        if let Some((module, item)) = p.split_once("::") {
            if core.contains(&format!("partitions::{module}")) {
                partition_items.push(item.to_string());
            }
        }
    }
    let allowed = |path: &str| -> bool {
        let (first, rest) = path.split_once("::").unwrap_or((path, ""));
        if first == "partitions" {
            let second = rest.split("::").next().unwrap_or("");
            return core.contains(&format!("partitions::{second}")) || partition_items.iter().any(|i| i == second);
        }
        core.contains(&first.to_string())
    };
    let mut found = Vec::new();
    for module in &core {
        let file = src.join(format!("{}.rs", module.replace("::", "/")));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (core::MODULES names a file that is not there)", file.display()));
        let code = lex(&text).code;
        // `use std::{fs, ...}` spread out, so that a grouped import is seen as well.
        let std_paths: Vec<String> = paths(&code, "std::").iter().map(|p| format!("std::{p}")).collect();
        let haystack = format!("{code}\n{}", std_paths.join("\n"));
        for bad in IMPURE {
            if haystack.contains(bad) {
                found.push(format!("{module}: {bad}"));
            }
        }
        for path in paths(&code, "crate::") {
            if !allowed(&path) {
                found.push(format!("{module}: crate::{path}, which is not in the core"));
            }
        }
        let parent = module.rsplit_once("::").map(|(p, _)| p);
        for path in paths(&code, "super::") {
            let sibling = match parent {
                Some(p) => format!("{p}::{}", path.split("::").next().unwrap_or("")),
                None => String::new(),
            };
            if !core.contains(&sibling) {
                found.push(format!("{module}: super::{path}, which is not in the core"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the pure core (e2e_migrations::core::MODULES) reaches I/O, the clock, the environment or a client; hand it \
         plain data from the engine or crate::fs instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn core_purity_check_sees_imports_in_every_form() {
    let code = lex("use std::{collections::BTreeMap, fs};\nuse crate::{db, ident::quote};\nfn f() { crate::error::cut_list(&[1]); }\n// std::env in a comment\nconst S: &str = \"std::process\";\n").code;
    let p = paths(&code, "crate::");
    assert_eq!(p, ["db", "ident::quote", "error::cut_list"]);
    assert_eq!(paths(&code, "std::"), ["collections::BTreeMap", "fs"]);
    assert!(!code.contains("std::env") && !code.contains("std::process"));
}

/// Flags of other tools that the library may quote, in a literal that names the tool: goose's own
/// are single-dash (`-allow-missing`) and never match; psql's are listed here when a message
/// tells how to do something with psql.
const FOREIGN_FLAGS: &[(&str, &[&str])] =
    &[("psql", &["--single-transaction", "--no-psqlrc", "--file", "--variable"]), ("pg_config", &["--bindir"])];

/// The CLI flags (`--word`) a string literal names, unless the literal is one process argument
/// (`--auth-local=scram-sha-256`: no space) or the flag is another tool's that the literal
/// names.
fn flags_named(literal: &str) -> Vec<String> {
    if literal.starts_with("--") && !literal.contains(char::is_whitespace) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut rest = literal;
    while let Some(at) = rest.find("--") {
        let flag: String =
            rest[at + 2..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '-' || c.is_ascii_digit()).collect();
        rest = &rest[at + 2..];
        if !flag.starts_with(|c: char| c.is_ascii_lowercase()) {
            continue;
        }
        let flag = format!("--{flag}");
        let foreign = FOREIGN_FLAGS
            .iter()
            .any(|(tool, flags)| flags.contains(&flag.as_str()) && words(literal).iter().any(|w| w.text == *tool));
        if !foreign {
            out.push(flag);
        }
    }
    out
}

/// The library is called from test crates as well as from the CLI: its messages say what to do in
/// its own terms (an option, a setting), and xtask adds its flags (`xtask/src/hints.rs`).
#[test]
fn library_messages_name_no_cli_flag() {
    let src = library_src();
    let mut files = Vec::new();
    files_under(&src, &mut files);
    let mut found = Vec::new();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        for (line, literal) in lex(&std::fs::read_to_string(f).unwrap()).literals {
            let flags = flags_named(&literal);
            if !flags.is_empty() {
                found.push(format!("src/{rel}:{line}: {} in {literal:?}", flags.join(", ")));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the library names CLI flags in its messages; say it in the library's terms and add the flag in \
         xtask/src/hints.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn flags_in_messages_are_found_and_arguments_and_foreign_flags_are_not() {
    assert_eq!(flags_named("--sets {value:?}: empty set name"), ["--sets"]);
    assert_eq!(flags_named("restore the file, or pass --accept-drift"), ["--accept-drift"]);
    assert_eq!(flags_named("a longer --lock-timeout or --connect-timeout"), ["--lock-timeout", "--connect-timeout"]);
    assert!(flags_named("--auth-local=scram-sha-256").is_empty());
    assert!(flags_named("--pwfile={}").is_empty());
    assert!(flags_named("-- partitions of {} on {}").is_empty());
    assert!(flags_named("`-- +goose NO TRANSACTION`").is_empty());
    assert!(flags_named("needs `goose up -allow-missing` for this").is_empty());
    assert!(flags_named("load it with psql --single-transaction --file x.sql").is_empty());
    assert_eq!(flags_named("load it with --single-transaction"), ["--single-transaction"]);
}

/// The header of a migration that creates a partitioned table (its lines before `-- +goose Up`)
/// speaks of the period its spec in `sets.toml` declares, and of no other (013's once said "by
/// day" of a table partitioned by month).
#[test]
fn migration_headers_say_the_declared_partition_interval() {
    use e2e_migrations::partitions::Interval;
    let project = e2e_migrations::Project::load(&root().join("migrations")).unwrap();
    let specs = project.select(&[]).unwrap().partitions;
    assert!(!specs.is_empty(), "the project declares partitioned tables");
    let period = |i: Interval| match i {
        Interval::Daily => ["day", "daily", "days"],
        Interval::Weekly => ["week", "weekly", "weeks"],
        Interval::Monthly => ["month", "monthly", "months"],
        Interval::Yearly => ["year", "yearly", "years"],
    };
    for spec in specs {
        let creates = |sql: &str| {
            let w: Vec<String> = words(sql).into_iter().map(|w| w.text).collect();
            w.windows(3).any(|t| t[0] == "create" && t[1] == "table" && t[2] == spec.table_name())
        };
        let m = project
            .folder
            .migrations
            .iter()
            .find(|m| m.sql.up.iter().any(|s| creates(&s.sql)))
            .unwrap_or_else(|| panic!("no migration creates {}", spec.table));
        let text = std::fs::read_to_string(&m.path).unwrap();
        let header: String = text.lines().take_while(|l| !l.starts_with("-- +goose")).collect::<Vec<_>>().join("\n");
        let said: Vec<String> = words(&header).into_iter().map(|w| w.text).collect();
        for other in [Interval::Daily, Interval::Weekly, Interval::Monthly, Interval::Yearly] {
            let named = period(other).iter().any(|p| said.iter().any(|w| w == p));
            if other == spec.interval {
                assert!(named, "{}: the header does not say the {other:?} partitioning of {}", m.name, spec.table);
            } else {
                assert!(
                    !named,
                    "{}: the header speaks of {other:?} partitions; {} is {:?}",
                    m.name, spec.table, spec.interval
                );
            }
        }
    }
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
