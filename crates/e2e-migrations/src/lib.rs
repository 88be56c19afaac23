//! Goose-compatible migrations, rolling partitions and isolated databases for end-to-end tests.
//!
//! The pieces, from pure to I/O (the pure ones, the [`core`], do no I/O at all):
//! - [`scan`] and [`goose`]: reading goose-format SQL files into statements, as goose does;
//! - [`txblock`]: what a migration cannot run inside its transaction, refused before connecting;
//! - [`source`]: a migrations folder, versioned and checksummed;
//! - [`sets`]: the named sets of `sets.toml`, validated before any database is touched;
//! - [`plan`]: what is applied, pending, drifted or unknown;
//! - [`batch`]: one migration as one guarded simple-query string (pure);
//! - [`fs`]: reading a migrations folder and its manifest from disk;
//! - [`migrator`]: applying and reverting on one connection under an advisory lock;
//! - [`partitions`]: monthly (daily, weekly, yearly) partitions rolled from a date;
//! - [`local`]: the embedded default, a throwaway PostgreSQL server from the machine's binaries.

pub mod apply;
pub mod batch;
pub mod core;
pub mod db;
pub mod error;
pub mod fs;
pub mod goose;
pub mod ident;
#[cfg(feature = "kube")]
pub mod kube;
pub mod local;
pub mod migrator;
pub mod partitions;
pub mod plan;
pub mod scan;
pub mod sets;
pub mod source;
pub mod state;
pub mod testdb;
pub mod txblock;

pub use error::{Error, Result};
pub use migrator::{Options, Report};
pub use sets::{Catalog, Manifest, Selection};
pub use source::{Folder, Migration};
pub use testdb::TestDatabase;

use std::path::{Path, PathBuf};

/// Environment variable that points at another migrations folder (as `--migrations-dir` does).
pub const MIGRATIONS_DIR_ENV: &str = "E2E_MIGRATIONS_DIR";

/// Environment variable naming the state folder (overrides `target/e2e`).
pub const STATE_DIR_ENV: &str = "E2E_STATE_DIR";

/// Where setup keeps its state (the local server, kubeconfigs, the connection it made):
/// `$E2E_STATE_DIR`, else `$CARGO_TARGET_DIR/e2e`, else `target/e2e` under the nearest ancestor
/// of the current folder holding `Cargo.lock` (the workspace root, also when cargo runs a test
/// crate from its own folder).
pub fn state_root() -> PathBuf {
    if let Some(d) = std::env::var_os(STATE_DIR_ENV) {
        return PathBuf::from(d);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("e2e");
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let root = cwd.ancestors().find(|a| a.join("Cargo.lock").is_file()).unwrap_or(&cwd);
    root.join("target").join("e2e")
}

/// The project's own `migrations/` folder, as compiled into this crate.
pub fn bundled_migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations")
}

/// A loaded migrations folder and its manifest.
#[derive(Debug, Clone)]
pub struct Project {
    /// The folder's migrations.
    pub folder: Folder,
    /// Its `sets.toml`, if any.
    pub manifest: Option<Manifest>,
}

impl Project {
    /// Reads and validates `dir` (files and manifest); nothing touches a database.
    pub fn load(dir: &Path) -> Result<Project> {
        let folder = fs::load_folder(dir)?;
        let manifest = fs::load_manifest(dir)?;
        let project = Project { folder, manifest };
        project.catalog()?;
        Ok(project)
    }

    /// Loads `$E2E_MIGRATIONS_DIR`, else the project's own folder.
    pub fn load_default() -> Result<Project> {
        match std::env::var_os(MIGRATIONS_DIR_ENV) {
            Some(d) => Project::load(Path::new(&d)),
            None => Project::load(&bundled_migrations_dir()),
        }
    }

    /// The validated sets.
    pub fn catalog(&self) -> Result<Catalog<'_>> {
        Ok(Catalog::new(&self.folder, self.manifest.clone())?)
    }

    /// Resolves set names (empty means `all`).
    pub fn select(&self, sets: &[String]) -> Result<Selection<'_>> {
        Ok(self.catalog()?.select(sets)?)
    }
}
