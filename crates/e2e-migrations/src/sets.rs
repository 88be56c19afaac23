//! Named migration sets (`migrations/sets.toml`): which files and partitioned tables each set
//! brings, validated as a whole before any database is touched.
//!
//! ```toml
//! [sets.audit]
//! files = ["013_create_audit_events_table.sql"]
//! [[sets.audit.partitions]]
//! table = "audit_events"
//! column = "event_date"
//!
//! [sets.everything_audit]
//! include = ["audit"]
//! ```
//! The set `all` is implicit: every migration in the folder and every partition spec. A folder
//! without a manifest has only `all`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::{Error, Result};
use crate::partitions::PartitionSpec;
use crate::source::{Folder, Migration};

/// The manifest's file name inside the migrations folder.
pub const MANIFEST: &str = "sets.toml";

/// The implicit set holding everything.
pub const ALL: &str = "all";

/// One set as written in the manifest.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetDef {
    /// What the set is for.
    #[serde(default)]
    pub description: String,
    /// Migration file names.
    #[serde(default)]
    pub files: Vec<String>,
    /// Other sets this one includes.
    #[serde(default)]
    pub include: Vec<String>,
    /// Partitioned tables to roll after the migrations.
    #[serde(default)]
    pub partitions: Vec<PartitionSpec>,
}

/// The parsed manifest.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Sets by name.
    #[serde(default)]
    pub sets: BTreeMap<String, SetDef>,
}

impl Manifest {
    /// Parses manifest text; errors carry the file and the TOML position.
    pub fn parse(file: &Path, text: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text).map_err(|e| Error::ManifestSyntax {
            file: file.to_path_buf(),
            line: e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().trim().to_string(),
        })?;
        if m.sets.contains_key(ALL) {
            return Err(Error::ManifestDefinesAll { file: file.to_path_buf() });
        }
        Ok(m)
    }
}

/// The result of resolving requested sets: what to apply and roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<'a> {
    /// The requested set names, as given.
    pub sets: Vec<String>,
    /// The migrations of those sets (with includes), deduplicated, in version order.
    pub migrations: Vec<&'a Migration>,
    /// The partition specs of those sets, deduplicated by table.
    pub partitions: Vec<PartitionSpec>,
    /// Warnings found while validating (files in no set, goose differences).
    pub warnings: Vec<String>,
}

/// A validated manifest over a folder: every set's files exist, includes resolve, no cycles.
#[derive(Debug, Clone)]
pub struct Catalog<'a> {
    folder: &'a Folder,
    /// The manifest file, for messages (it may not exist).
    manifest_file: PathBuf,
    sets: BTreeMap<String, SetDef>,
    warnings: Vec<String>,
}

impl<'a> Catalog<'a> {
    /// Validates `manifest` (or its absence) against `folder` (pure).
    pub fn new(folder: &'a Folder, manifest: Option<Manifest>) -> Result<Catalog<'a>> {
        let manifest_file = folder.dir.join(MANIFEST);
        let mut warnings = folder.warnings.clone();
        let sets = match manifest {
            Some(m) => m.sets,
            None => BTreeMap::new(),
        };
        let has_manifest = !sets.is_empty();
        for (name, def) in &sets {
            for f in &def.files {
                if folder.by_name(f).is_none() {
                    return Err(Error::MissingFile { set: name.clone(), file: f.clone(), dir: folder.dir.clone() });
                }
            }
            for inc in &def.include {
                if inc == ALL {
                    return Err(Error::IncludesAll { file: manifest_file.clone(), set: name.clone() });
                }
                if !sets.contains_key(inc) {
                    return Err(Error::UnknownInclude {
                        file: manifest_file.clone(),
                        set: name.clone(),
                        include: inc.clone(),
                        known: known(&sets),
                    });
                }
            }
            for p in &def.partitions {
                p.validate().map_err(|source| Error::ManifestSpec {
                    file: manifest_file.clone(),
                    set: name.clone(),
                    table: p.table.clone(),
                    source: Box::new(source),
                })?;
            }
        }
        for name in sets.keys() {
            find_cycle(&sets, name, &mut Vec::new())?;
        }
        if has_manifest {
            let named: BTreeSet<&str> = sets.values().flat_map(|d| d.files.iter().map(String::as_str)).collect();
            for m in &folder.migrations {
                if !named.contains(m.name.as_str()) {
                    warnings.push(format!(
                        "{}: warning: in no set of {} (only the set {ALL:?} applies it)",
                        m.path.display(),
                        manifest_file.display()
                    ));
                }
            }
        }
        Ok(Catalog { folder, manifest_file, sets, warnings })
    }

    /// Every set name, `all` included, sorted.
    pub fn known(&self) -> Vec<String> {
        known(&self.sets)
    }

    /// The folder.
    pub fn folder(&self) -> &'a Folder {
        self.folder
    }

    /// Resolves requested set names (with includes) into migrations and partition specs.
    pub fn select(&self, names: &[String]) -> Result<Selection<'a>> {
        let names: Vec<String> = if names.is_empty() { vec![ALL.to_string()] } else { names.to_vec() };
        let mut files: BTreeSet<i64> = BTreeSet::new();
        let mut partitions: Vec<PartitionSpec> = Vec::new();
        let mut add_partitions = |ps: &[PartitionSpec]| -> Result<()> {
            for p in ps {
                match partitions.iter().find(|q| q.table == p.table) {
                    Some(q) if q == p => {}
                    Some(_) => {
                        return Err(Error::ConflictingSpecs {
                            file: self.manifest_file.clone(),
                            table: p.table.clone(),
                        })
                    }
                    None => partitions.push(p.clone()),
                }
            }
            Ok(())
        };
        for name in &names {
            if name == ALL {
                files.extend(self.folder.migrations.iter().map(|m| m.version));
                for def in self.sets.values() {
                    add_partitions(&def.partitions)?;
                }
                continue;
            }
            if !self.sets.contains_key(name) {
                return Err(Error::UnknownSet { name: name.clone(), known: self.known() });
            }
            let mut stack = vec![name.as_str()];
            let mut seen = BTreeSet::new();
            while let Some(n) = stack.pop() {
                if !seen.insert(n) {
                    continue;
                }
                let def = &self.sets[n];
                for f in &def.files {
                    files.insert(self.folder.by_name(f).expect("validated").version);
                }
                add_partitions(&def.partitions)?;
                stack.extend(def.include.iter().map(String::as_str));
            }
        }
        let migrations = files.into_iter().map(|v| self.folder.by_version(v).expect("known version")).collect();
        Ok(Selection { sets: names, migrations, partitions, warnings: self.warnings.clone() })
    }
}

fn known(sets: &BTreeMap<String, SetDef>) -> Vec<String> {
    let mut k: Vec<String> = sets.keys().cloned().collect();
    k.push(ALL.to_string());
    k.sort();
    k
}

fn find_cycle(sets: &BTreeMap<String, SetDef>, name: &str, path: &mut Vec<String>) -> Result<()> {
    if let Some(pos) = path.iter().position(|p| p == name) {
        let mut cycle = path[pos..].to_vec();
        cycle.push(name.to_string());
        return Err(Error::IncludeCycle { cycle });
    }
    path.push(name.to_string());
    for inc in &sets[name].include {
        find_cycle(sets, inc, path)?;
    }
    path.pop();
    Ok(())
}

/// Splits a comma-separated list of set names (`audit,workflow`) into names, rejecting empty
/// ones.
pub fn parse_set_list(value: &str) -> Result<Vec<String>> {
    let names: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        return Err(Error::EmptySetName { list: value.to_string() });
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse_folder;

    fn folder() -> Folder {
        let f = |n: &str| (n.to_string(), "-- +goose Up\nSELECT 1;\n-- +goose Down\nSELECT 1;\n".to_string());
        parse_folder(Path::new("m"), vec![f("013_a.sql"), f("015_b.sql"), f("021_c.sql")], &|_| None).unwrap()
    }

    fn manifest(text: &str) -> Result<Manifest> {
        Manifest::parse(Path::new("m/sets.toml"), text)
    }

    fn names(s: &Selection) -> Vec<String> {
        s.migrations.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn resolves_sets_with_includes_in_version_order() {
        let f = folder();
        let m = manifest("[sets.a]\nfiles=[\"021_c.sql\"]\n[sets.b]\nfiles=[\"013_a.sql\"]\ninclude=[\"a\"]\n[sets.c]\nfiles=[\"015_b.sql\"]\n").unwrap();
        let cat = Catalog::new(&f, Some(m)).unwrap();
        assert_eq!(names(&cat.select(&["b".into()]).unwrap()), ["013_a.sql", "021_c.sql"]);
        assert_eq!(names(&cat.select(&["all".into()]).unwrap()).len(), 3);
        assert!(cat.select(&["c".into()]).unwrap().warnings.is_empty());
    }

    #[test]
    fn unknown_set_lists_known_ones() {
        let f = folder();
        let cat = Catalog::new(&f, Some(manifest("[sets.audit]\nfiles=[\"013_a.sql\"]\n").unwrap())).unwrap();
        let e = cat.select(&["audti".into()]).unwrap_err().to_string();
        assert_eq!(e, "unknown set \"audti\"; known sets: all, audit");
    }

    #[test]
    fn long_lists_of_sets_are_cut_with_a_count() {
        let f = folder();
        let mut text = String::new();
        for i in 0..500 {
            text.push_str(&format!("[sets.s{i:03}]\nfiles=[\"013_a.sql\"]\n"));
        }
        let cat = Catalog::new(&f, Some(manifest(&text).unwrap())).unwrap();
        let e = cat.select(&["nope".into()]).unwrap_err().to_string();
        assert_eq!(e, "unknown set \"nope\"; known sets: all, s000, s001, s002, s003, s004, s005, s006 and 493 more");
        text.push_str("[sets.x]\ninclude=[\"missing\"]\n");
        let e = Catalog::new(&f, Some(manifest(&text).unwrap())).unwrap_err().to_string();
        assert!(e.ends_with("known sets: all, s000, s001, s002, s003, s004, s005, s006 and 494 more"), "{e}");
        let cycle: String =
            (0..300).map(|i| format!("[sets.c{i:03}]\ninclude=[\"c{:03}\"]\n", (i + 1) % 300)).collect();
        let e = Catalog::new(&f, Some(manifest(&cycle).unwrap())).unwrap_err().to_string();
        assert!(e.len() < 200 && e.ends_with("and 293 more"), "{e}");
    }

    #[test]
    fn missing_file_names_set_and_file() {
        let f = folder();
        let e = Catalog::new(&f, Some(manifest("[sets.audit]\nfiles=[\"014_nope.sql\"]\n").unwrap())).unwrap_err();
        assert_eq!(e.to_string(), "set \"audit\" names \"014_nope.sql\", which is not a migration in m");
    }

    #[test]
    fn include_cycle_is_shown() {
        let f = folder();
        let m = manifest("[sets.a]\ninclude=[\"b\"]\n[sets.b]\ninclude=[\"a\"]\n").unwrap();
        let e = Catalog::new(&f, Some(m)).unwrap_err();
        assert_eq!(e.to_string(), "set include cycle: a -> b -> a");
    }

    #[test]
    fn file_in_no_set_is_a_warning() {
        let f = folder();
        let cat = Catalog::new(&f, Some(manifest("[sets.a]\nfiles=[\"013_a.sql\",\"015_b.sql\"]\n").unwrap())).unwrap();
        let w = cat.select(&["a".into()]).unwrap().warnings;
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("021_c.sql") && w[0].contains("in no set"), "{w:?}");
    }

    #[test]
    fn no_manifest_means_one_set_all() {
        let f = folder();
        let cat = Catalog::new(&f, None).unwrap();
        assert_eq!(cat.known(), ["all"]);
        assert_eq!(names(&cat.select(&[]).unwrap()).len(), 3);
    }

    #[test]
    fn manifest_errors_have_lines_and_reject_all() {
        let e = manifest("[sets.a]\nfiles = [\"x.sql\"]\nfiless = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("m/sets.toml: line 3:"), "{e}");
        assert!(manifest("[sets.all]\n").unwrap_err().to_string().contains("implicit"));
    }

    #[test]
    fn empty_set_names_are_rejected() {
        assert_eq!(
            parse_set_list("audit,,workflow").unwrap_err().to_string(),
            "set list \"audit,,workflow\": empty set name"
        );
        assert_eq!(parse_set_list("audit, workflow").unwrap(), ["audit", "workflow"]);
    }
}
