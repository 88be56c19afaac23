//! `cargo xtask migrate new <name> --set <set>`: the next migration file, from a goose template,
//! added to its set in `sets.toml` with the manifest's comments and layout kept (`toml_edit`).
//!
//! The draft (version, file text, new manifest text) is pure and is checked as a whole, the new
//! file parsed by the project's own goose parser and the folder validated with it, before
//! anything is written; then the file is created (never over an existing one) and the manifest
//! replaced atomically. If the manifest cannot be written, the new file is removed again.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use e2e_migrations::sets::{Catalog, Manifest, ALL, MANIFEST};
use e2e_migrations::source::{self, Folder};

use crate::flags::MigrateNew;
use crate::progress::say;

/// What `migrate new` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Draft {
    /// The new file's name, `NNN_name.sql`.
    pub(crate) file_name: String,
    /// Its text.
    pub(crate) contents: String,
    /// The manifest's new text, when the folder has one.
    pub(crate) manifest: Option<String>,
}

/// Refuses a name that is not an identifier (ASCII letters, digits and `_`, not starting with a
/// digit): it becomes part of a file name that goose reads its version from.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => chars.all(|c| c.is_ascii_alphanumeric() || c == '_'),
        _ => false,
    };
    if !ok || name.len() > 100 {
        let suggestion: String = name
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect::<String>()
            .split('_')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        let hint = match suggestion.chars().next() {
            Some(c) if !c.is_ascii_digit() && suggestion.len() <= 100 => format!(", e.g. {suggestion:?}"),
            _ => String::new(),
        };
        bail!(
            "migration name {name:?} is not an identifier: use letters, digits and `_` (not starting with a digit, \
             at most 100 characters){hint}"
        );
    }
    Ok(())
}

/// The digits of a file name's version, as written (`013_x.sql` gives `013`).
fn version_text(file_name: &str) -> &str {
    file_name.split_once('_').map(|(v, _)| v).unwrap_or("")
}

/// The new version and how it is written (pure). Without `explicit`, the highest version plus
/// one, zero-padded to the width of the highest one's file name; in a folder of goose timestamp
/// versions (`YYYYMMDDHHMMSS`), `now` as such a timestamp when that is higher, as `goose create`
/// does. An explicit version that a file already has is refused, naming the file.
pub(crate) fn next_version(folder: &Folder, explicit: Option<i64>, now: DateTime<Utc>) -> Result<(i64, String)> {
    let highest = folder.migrations.last();
    let width = highest.map(|m| version_text(&m.name).len()).unwrap_or(3);
    let version = match explicit {
        Some(v) if v <= 0 => bail!("--version {v}: goose versions start at 1"),
        Some(v) => {
            if let Some(m) = folder.by_version(v) {
                bail!("--version {v}: version {v} already exists: {}", m.path.display());
            }
            v
        }
        None => {
            let Some(m) = highest else {
                return Ok((1, format!("{:0width$}", 1)));
            };
            let text = version_text(&m.name);
            let is_timestamp =
                text.len() == 14 && NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S").is_ok() && m.version > 0;
            let stamp: i64 = now.format("%Y%m%d%H%M%S").to_string().parse().expect("digits");
            if is_timestamp {
                stamp.max(m.version + 1)
            } else {
                m.version + 1
            }
        }
    };
    Ok((version, format!("{version:0width$}")))
}

/// The goose template of a new migration (pure). Goose reads every comment line that holds its
/// `+goose` marker as an annotation, so the StatementBegin example spells the marker `+ goose`.
pub(crate) fn template(file_name: &str) -> String {
    format!(
        "-- {file_name}: say what this migration changes, and why.\n\
         --\n\
         -- `goose up` runs the Up section, `goose down` the Down section. A statement ends at a line\n\
         -- ending in `;`. A statement with `;` inside it (a function body, a DO block) goes between\n\
         -- StatementBegin and StatementEnd annotations, written like the Up line below (here \"+ goose\"\n\
         -- stands for the marker, which goose would read as an annotation even in a comment):\n\
         --\n\
         --   -- + goose StatementBegin\n\
         --   CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$\n\
         --   BEGIN\n\
         --       NEW.updated_at := now();\n\
         --       RETURN NEW;\n\
         --   END;\n\
         --   $$;\n\
         --   -- + goose StatementEnd\n\
         \n\
         -- +goose Up\n\
         \n\
         \n\
         -- +goose Down\n\
         \n"
    )
}

/// Adds `file` to the `files` of set `set` in manifest `text`, keeping everything else as it is
/// (comments, order, layout); `files` is created when the set has none (pure).
pub(crate) fn add_to_manifest(text: &str, set: &str, file: &str) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("cannot parse as TOML")?;
    let table = doc
        .get_mut("sets")
        .and_then(|s| s.as_table_like_mut())
        .and_then(|sets| sets.get_mut(set))
        .and_then(|s| s.as_table_like_mut())
        .with_context(|| format!("no table for set {set:?}"))?;
    match table.get_mut("files") {
        None => {
            let mut files = toml_edit::Array::new();
            files.push(file);
            table.insert("files", toml_edit::value(files));
        }
        Some(item) => {
            let files = item.as_array_mut().with_context(|| format!("sets.{set}.files is not an array"))?;
            if files.iter().any(|f| f.as_str() == Some(file)) {
                bail!("set {set:?} already lists {file:?}");
            }
            // One entry per line stays one per line: the new entry takes the last one's indent,
            // and a comment after the last entry stays on that entry's line.
            let indent = files
                .iter()
                .last()
                .and_then(|last| last.decor().prefix().and_then(|p| p.as_str()).map(str::to_string))
                .filter(|p| p.contains('\n'));
            let trailing = files.trailing().as_str().unwrap_or_default().to_string();
            // Without a trailing comma, the line break before `]` follows the last entry.
            let suffix = files.iter_mut().last().map(|last| {
                let s = last.decor().suffix().and_then(|s| s.as_str()).unwrap_or_default().to_string();
                last.decor_mut().set_suffix("");
                s
            });
            files.push(file);
            let new = files.iter_mut().last().expect("just pushed");
            new.decor_mut().set_suffix(suffix.unwrap_or_default());
            if let Some(indent) = indent {
                let (comment, rest) = trailing.split_at(trailing.find('\n').unwrap_or(trailing.len()));
                new.decor_mut().set_prefix(format!("{comment}{indent}"));
                files.set_trailing(rest);
            }
        }
    }
    Ok(doc.to_string())
}

/// Drafts the new migration over a loaded folder and its manifest text (pure), and checks the
/// result as a whole: the file parses with the project's goose parser, and the folder with the
/// new file and the new manifest is valid.
pub(crate) fn draft(
    folder: &Folder,
    manifest_text: Option<&str>,
    name: &str,
    set: Option<&str>,
    version: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Draft> {
    check_name(name)?;
    let manifest_file = folder.dir.join(MANIFEST);
    let manifest = match manifest_text {
        Some(t) => Some(Manifest::parse(&manifest_file, t)?),
        None => None,
    };
    // the sets a migration can be added to: not the implicit `all`
    let known: Vec<String> = Catalog::new(folder, manifest.clone())?.known().into_iter().filter(|s| s != ALL).collect();
    match (&manifest, set) {
        (None, Some(s)) => {
            bail!("--set {s}: {} has no {MANIFEST}, so its only set is {ALL}; leave out --set", folder.dir.display())
        }
        (Some(_), Some(ALL)) => bail!(
            "--set {ALL}: that set is implicit (every file); name the set the migration belongs to: {}",
            known.join(", ")
        ),
        (Some(m), Some(s)) if !m.sets.contains_key(s) => {
            return Err(e2e_migrations::core::Error::UnknownSet { name: s.to_string(), known }.into())
        }
        (Some(_), None) => bail!(
            "--set SET is required: every migration belongs to a set in {} (known: {})",
            manifest_file.display(),
            known.join(", ")
        ),
        _ => {}
    }
    let (version, digits) = next_version(folder, version, now)?;
    let file_name = format!("{digits}_{name}.sql");
    let contents = template(&file_name);
    let new_manifest = match (manifest_text, set) {
        (Some(t), Some(s)) => {
            Some(add_to_manifest(t, s, &file_name).with_context(|| format!("{}", manifest_file.display()))?)
        }
        _ => None,
    };

    // The folder as it will be: the loaded files plus the new one, parsed by the goose parser.
    let new = source::parse_folder(&folder.dir, vec![(file_name.clone(), contents.clone())], &|_| None)
        .with_context(|| format!("the new file {file_name} would not be a valid goose migration"))?;
    let mut after = folder.clone();
    after.migrations.extend(new.migrations);
    after.migrations.sort_by_key(|m| m.version);
    debug_assert_eq!(after.by_name(&file_name).map(|m| m.version), Some(version));
    let after_manifest = match &new_manifest {
        Some(t) => Some(Manifest::parse(&manifest_file, t)?),
        None => None,
    };
    Catalog::new(&after, after_manifest).context("the folder would not stay valid")?;
    Ok(Draft { file_name, contents, manifest: new_manifest })
}

/// Writes `text` to `path` through a temporary file in the same folder, keeping `path`'s mode.
fn replace_file(path: &Path, text: &str) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let perms = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?.permissions();
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let renamed = std::fs::set_permissions(&tmp, perms).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("replacing {}", path.display()));
    }
    Ok(())
}

impl MigrateNew {
    pub(crate) fn run(self) -> Result<()> {
        let ws = crate::cli_util::workspace()?;
        let dir = match &self.migrations_dir {
            Some(d) => ws.resolve(d),
            None => ws.migrations,
        };
        let dir: PathBuf = std::fs::canonicalize(&dir).with_context(|| format!("{}", dir.display()))?;
        let folder = e2e_migrations::fs::load_folder(&dir).context("invalid migrations")?;
        let manifest_file = dir.join(MANIFEST);
        let manifest_text = match std::fs::read_to_string(&manifest_file) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("{}", manifest_file.display())),
        };
        let draft =
            draft(&folder, manifest_text.as_deref(), &self.name, self.set.as_deref(), self.version, Utc::now())?;

        let path = dir.join(&draft.file_name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, draft.contents.as_bytes()))
            .with_context(|| format!("creating {}", path.display()))?;
        if let Some(text) = &draft.manifest {
            if let Err(e) = replace_file(&manifest_file, text) {
                let _ = std::fs::remove_file(&path);
                return Err(e.context(format!("{} was not created", path.display())));
            }
            let set = self.set.as_deref().unwrap_or_default();
            say!("added {} to set {set} in {}", draft.file_name, manifest_file.display());
        }
        if let Some(highest) = folder.migrations.last().filter(|m| self.version.is_some_and(|v| v < m.version)) {
            say!(
                "note: version {} is below the highest, {}: a database that has that one needs `goose up -allow-missing` for this",
                self.version.unwrap_or_default(),
                highest.name
            );
        }
        println!("{}", path.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use expect_test::expect;

    fn folder(names: &[&str]) -> Folder {
        let files = names
            .iter()
            .map(|n| (n.to_string(), "-- +goose Up\nSELECT 1;\n-- +goose Down\nSELECT 1;\n".to_string()))
            .collect();
        source::parse_folder(Path::new("m"), files, &|_| None).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 30, 5).unwrap()
    }

    fn next(names: &[&str], explicit: Option<i64>) -> Result<String> {
        next_version(&folder(names), explicit, now()).map(|(_, t)| t)
    }

    #[test]
    fn next_version_is_the_highest_plus_one_padded_like_it() {
        assert_eq!(next(&["013_a.sql", "015_b.sql", "021_c.sql"], None).unwrap(), "022");
        assert_eq!(next(&["00001_a.sql"], None).unwrap(), "00002");
        assert_eq!(next(&["9_a.sql", "10_b.sql"], None).unwrap(), "11");
        assert_eq!(next(&["999_a.sql"], None).unwrap(), "1000");
        assert_eq!(next(&[], None).unwrap(), "001");
    }

    #[test]
    fn next_version_in_a_timestamp_folder_is_now() {
        assert_eq!(next(&["20240101120000_a.sql"], None).unwrap(), "20261127123005");
        // a version ahead of the clock: one more than it
        assert_eq!(next(&["20301231235959_a.sql"], None).unwrap(), "20301231235960");
    }

    #[test]
    fn an_explicit_version_that_exists_is_refused_naming_the_file() {
        let e = next(&["013_a.sql", "015_b.sql"], Some(15)).unwrap_err().to_string();
        assert_eq!(e, "--version 15: version 15 already exists: m/015_b.sql");
        assert_eq!(next(&["013_a.sql", "015_b.sql"], Some(30)).unwrap(), "030");
        assert!(next(&["013_a.sql"], Some(0)).is_err());
    }

    #[test]
    fn names_must_be_identifiers() {
        for good in ["add_widgets", "AddWidgets", "_x", "a1"] {
            check_name(good).unwrap();
        }
        let e = check_name("add widgets!").unwrap_err().to_string();
        expect![[r#"migration name "add widgets!" is not an identifier: use letters, digits and `_` (not starting with a digit, at most 100 characters), e.g. "add_widgets""#]]
        .assert_eq(&e);
        for bad in ["", "1st", "a-b", "a.sql", "../x", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_template_parses_as_goose_with_empty_sections() {
        let t = template("022_add_widgets.sql");
        let parsed = e2e_migrations::goose::parse(&t, &|_| None).unwrap();
        assert!(parsed.up.is_empty() && parsed.down.is_empty() && parsed.has_down);
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        expect![[r#"
            -- 022_add_widgets.sql: say what this migration changes, and why.
            --
            -- `goose up` runs the Up section, `goose down` the Down section. A statement ends at a line
            -- ending in `;`. A statement with `;` inside it (a function body, a DO block) goes between
            -- StatementBegin and StatementEnd annotations, written like the Up line below (here "+ goose"
            -- stands for the marker, which goose would read as an annotation even in a comment):
            --
            --   -- + goose StatementBegin
            --   CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
            --   BEGIN
            --       NEW.updated_at := now();
            --       RETURN NEW;
            --   END;
            --   $$;
            --   -- + goose StatementEnd

            -- +goose Up


            -- +goose Down

        "#]]
        .assert_eq(&t);
    }

    #[test]
    fn the_template_example_with_the_marker_restored_is_a_working_block() {
        // What a user gets by uncommenting the example and writing the marker as goose wants it.
        let example: String = template("x")
            .lines()
            .filter_map(|l| l.strip_prefix("--   "))
            .map(|l| format!("{}\n", l.replace("+ goose", "+goose")))
            .collect();
        let parsed = e2e_migrations::goose::parse(&format!("-- +goose Up\n{example}"), &|_| None).unwrap();
        assert_eq!(parsed.up.len(), 1);
        assert!(parsed.up[0].block && parsed.up[0].sql.contains("RETURN NEW;"), "{:?}", parsed.up);
        // ... and why the comment cannot spell it: goose takes such a comment line for an annotation.
        let spelled = "-- +goose Up\n-- e.g. -- +goose StatementBegin\nSELECT 1;\n";
        assert!(e2e_migrations::goose::parse(spelled, &|_| None).is_err());
    }

    const MANIFEST_TEXT: &str = r#"# Named sets.
[sets.audit]
description = "audit" # trailing comment
files = ["013_a.sql"]

# partitions of audit
[[sets.audit.partitions]]
table = "audit_events"
column = "event_date"

[sets.workflow]
files = [
    "015_b.sql",  # the catalog
]

[sets.empty]
description = "nothing yet"
"#;

    #[test]
    fn adding_to_a_set_keeps_comments_and_layout() {
        expect![[r#"
            # Named sets.
            [sets.audit]
            description = "audit" # trailing comment
            files = ["013_a.sql", "022_x.sql"]

            # partitions of audit
            [[sets.audit.partitions]]
            table = "audit_events"
            column = "event_date"

            [sets.workflow]
            files = [
                "015_b.sql",  # the catalog
            ]

            [sets.empty]
            description = "nothing yet"
        "#]]
        .assert_eq(&add_to_manifest(MANIFEST_TEXT, "audit", "022_x.sql").unwrap());
        expect![[r#"
            # Named sets.
            [sets.audit]
            description = "audit" # trailing comment
            files = ["013_a.sql"]

            # partitions of audit
            [[sets.audit.partitions]]
            table = "audit_events"
            column = "event_date"

            [sets.workflow]
            files = [
                "015_b.sql",  # the catalog
                "022_x.sql",
            ]

            [sets.empty]
            description = "nothing yet"
        "#]]
        .assert_eq(&add_to_manifest(MANIFEST_TEXT, "workflow", "022_x.sql").unwrap());
        let no_trailing_comma = "[sets.a]\nfiles = [\n  \"1_a.sql\",\n  \"2_b.sql\"\n]\n";
        assert_eq!(
            add_to_manifest(no_trailing_comma, "a", "3_c.sql").unwrap(),
            "[sets.a]\nfiles = [\n  \"1_a.sql\",\n  \"2_b.sql\",\n  \"3_c.sql\"\n]\n"
        );
        let added = add_to_manifest(MANIFEST_TEXT, "empty", "022_x.sql").unwrap();
        assert!(added.ends_with("[sets.empty]\ndescription = \"nothing yet\"\nfiles = [\"022_x.sql\"]\n"), "{added}");
    }

    fn draft_in(names: &[&str], manifest: Option<&str>, set: Option<&str>) -> Result<Draft> {
        draft(&folder(names), manifest, "add_widgets", set, None, now())
    }

    #[test]
    fn draft_refuses_unknown_missing_and_implicit_sets() {
        let m = "[sets.audit]\nfiles = [\"013_a.sql\"]\n[sets.workflow]\nfiles = [\"015_b.sql\"]\n";
        let names = ["013_a.sql", "015_b.sql"];
        let e = draft_in(&names, Some(m), Some("audti")).unwrap_err().to_string();
        // (--set refuses `all`, so it is not among the sets named)
        assert_eq!(e, r#"unknown set "audti"; known sets: audit, workflow"#);
        let e = draft_in(&names, Some(m), None).unwrap_err().to_string();
        assert_eq!(
            e,
            "--set SET is required: every migration belongs to a set in m/sets.toml (known: audit, workflow)"
        );
        let e = draft_in(&names, Some(m), Some("all")).unwrap_err().to_string();
        assert_eq!(
            e,
            "--set all: that set is implicit (every file); name the set the migration belongs to: audit, workflow"
        );
        let e = draft_in(&names, None, Some("audit")).unwrap_err().to_string();
        assert_eq!(e, "--set audit: m has no sets.toml, so its only set is all; leave out --set");
        // Without a manifest, `--set all` is told the same: leave it out.
        let e = draft_in(&names, None, Some("all")).unwrap_err().to_string();
        assert_eq!(e, "--set all: m has no sets.toml, so its only set is all; leave out --set");
    }

    #[test]
    fn draft_without_a_manifest_writes_only_the_file() {
        let p = draft_in(&[], None, None).unwrap();
        assert_eq!(p.file_name, "001_add_widgets.sql");
        assert_eq!(p.manifest, None);
    }
}
