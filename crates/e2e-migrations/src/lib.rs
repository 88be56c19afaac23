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
//! - [`progress`]: what a run reports while it works, to an observer the caller gives;
//! - [`partitions`]: monthly (daily, weekly, yearly) partitions rolled from a date;
//! - [`testdb`]: an isolated database per test, cloned from a template;
//! - [`lifecycle`]: where the database lives and how to reach it: this checkout's workspace and
//!   state, the local server (a throwaway PostgreSQL from the machine's binaries), and the one
//!   resolver from a URL and the state to a server;
//! - [`secret`]: generated passwords and ids.

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
pub mod lifecycle;
pub mod migrator;
pub mod partitions;
pub mod plan;
mod process;
pub mod progress;
pub mod scan;
pub mod secret;
pub mod sets;
pub mod source;
pub mod testdb;
pub mod txblock;

pub use error::{Error, Result};
pub use migrator::{Options, Report};
pub use sets::{Catalog, Manifest, Selection};
pub use source::{Folder, Migration};
pub use testdb::TestDatabase;

use std::path::Path;

/// Environment variable that points at another migrations folder (as `--migrations-dir` does).
pub const MIGRATIONS_DIR_ENV: &str = "E2E_MIGRATIONS_DIR";

/// Environment variable naming the state folder (see [`lifecycle::workspace`]).
pub const STATE_DIR_ENV: &str = "E2E_STATE_DIR";

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

    /// Loads the migrations of the workspace the process runs in: `$E2E_MIGRATIONS_DIR` (relative
    /// to the workspace root), else `migrations/` at the root.
    pub fn load_default() -> Result<Project> {
        lifecycle::Workspace::current()?.project()
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
