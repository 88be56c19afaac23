//! The whole job on one connection: apply the selected sets, then roll their partitions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::error::Result;
use crate::migrator::{self, Options, Report};
use crate::partitions::{self, RollOptions, RollReport};
use crate::Project;

/// What [`migrate_and_roll`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApplyReport {
    /// The migrations part.
    pub migrations: Report,
    /// The partitions part.
    pub partitions: RollReport,
    /// Validation warnings (files in no set, goose differences).
    pub warnings: Vec<String>,
}

/// Applies the migrations of `sets` of `project` (empty means `all`) and rolls their partitions
/// as of `now`: the whole job of a setup, on one connection.
pub async fn migrate_and_roll(
    client: &mut Client,
    project: &Project,
    sets: &[String],
    opts: &Options,
    now: DateTime<Utc>,
) -> Result<ApplyReport> {
    let selection = project.select(sets)?;
    let migrations = migrator::up(client, &project.folder, &selection.migrations, opts).await?;
    let roll_opts = RollOptions { lock_timeout: opts.lock_timeout, ..RollOptions::default() };
    let partitions = partitions::roll(client, &selection.partitions, now, &roll_opts).await?;
    Ok(ApplyReport { migrations, partitions, warnings: selection.warnings })
}
