//! Rolling, listing and pruning partitions on a live database (the I/O around the pure planner).
//!
//! Per table: read the catalog and plan in a read-only transaction; when there is something to
//! do, open one transaction that takes `ACCESS EXCLUSIVE` on the parent and then its default
//! partition (strongest lock first, so no upgrade can deadlock with concurrent inserts), each
//! wait bounded by `lock_timeout` and retried with backoff; re-read and re-plan under the lock;
//! take rows of the new ranges out of the default partition, create the partitions, put the rows
//! back through the parent, prune; commit. Everything runs under the migrations' advisory lock.
//!
//! Foreign keys that reference the table (such as `audit_events`' own parent event key) are
//! enforced by PostgreSQL partition by partition of the referenced table: a referenced row moved
//! out of the default partition looks deleted from it and fails the key, even a deferred one
//! (checked at commit, the key is looked up in the default partition alone, so making the key
//! `DEFERRABLE` does not help); and a partition whose rows are referenced, even only by rows of
//! its own, cannot be detached (nor dropped). So when taking the rows, or pruning, fails on a
//! foreign key, the attempt rolls back to a savepoint, drops the keys that reference the table,
//! runs the statement again, and adds the keys back (validated again: rows left that reference
//! pruned ones fail clearly, and nothing is removed; never `CASCADE`) before committing. This
//! needs ownership of the referencing tables, not superuser. The roll's constraints are
//! `IMMEDIATE`, so that a deferrable key fails at the statement, not at commit. A partition
//! detached while the keys were aside keeps no copy of them.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::calendar::{self, Period, Wanted};
use super::catalog::{self, TableInfo};
use super::plan::{self, Bound, Bounds, Existing, Mode, Plan};
use super::spec::{Interval, PartitionSpec};
use super::sql::{self, ForeignKey, KeyType};
use crate::db;
use crate::error::{describe_db_error, DbContext, Error, Result};

/// Options for rolling partitions.
#[derive(Debug, Clone)]
pub struct RollOptions {
    /// How long to wait for the advisory lock shared with migrations.
    pub lock_timeout: Duration,
    /// Apply retention (detach or drop old partitions) where a spec asks for it.
    pub prune: bool,
    /// How long one attempt waits for a table lock (`SET LOCAL lock_timeout`) before it rolls
    /// back and retries: short, so that a roll queued behind a long transaction does not hold up
    /// the inserts queued behind it, and gives up before the server's deadlock detector fires.
    pub table_lock_timeout: Duration,
    /// Attempts per table before giving up on its locks.
    pub attempts: u32,
}

impl Default for RollOptions {
    fn default() -> Self {
        RollOptions {
            lock_timeout: Duration::from_secs(120),
            prune: true,
            table_lock_timeout: Duration::from_millis(500),
            attempts: 40,
        }
    }
}

/// What a roll (or prune) did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RollReport {
    /// Partitions created, by name (default partitions included).
    pub created: Vec<String>,
    /// Rows moved out of default partitions into new ones.
    pub moved_rows: u64,
    /// Partitions detached or dropped by retention.
    pub pruned: Vec<String>,
    /// Wanted periods that were already covered.
    pub present: usize,
    /// Notes: overlaps found, partitions respected under foreign names, old ones kept.
    pub notes: Vec<String>,
}

impl RollReport {
    fn absorb(&mut self, other: RollReport) {
        self.created.extend(other.created);
        self.moved_rows += other.moved_rows;
        self.pruned.extend(other.pruned);
        self.present += other.present;
        self.notes.extend(other.notes);
    }
}

/// Rolls the partitions of `specs` as of `now`: creates the wanted ones (moving rows waiting in
/// the default partition into them) and, with `opts.prune`, applies retention. A second roll at
/// the same instant changes nothing. Errs naming the table when a spec does not fit its table.
pub async fn roll(
    client: &mut Client,
    specs: &[PartitionSpec],
    now: DateTime<Utc>,
    opts: &RollOptions,
) -> Result<RollReport> {
    run(client, specs, now, opts, Mode { create: true, prune: opts.prune }).await
}

/// Applies retention only: detaches or drops partitions older than each spec keeps.
pub async fn prune(
    client: &mut Client,
    specs: &[PartitionSpec],
    now: DateTime<Utc>,
    opts: &RollOptions,
) -> Result<RollReport> {
    run(client, specs, now, opts, Mode { create: false, prune: true }).await
}

async fn run(
    client: &mut Client,
    specs: &[PartitionSpec],
    now: DateTime<Utc>,
    opts: &RollOptions,
    mode: Mode,
) -> Result<RollReport> {
    for spec in specs {
        spec.validate().map_err(|message| Error::Partition { table: spec.table.clone(), message })?;
    }
    if specs.is_empty() {
        return Ok(RollReport::default());
    }
    let c: &Client = client;
    db::with_lock(c, opts.lock_timeout, async {
        let mut report = RollReport::default();
        for spec in specs {
            report.absorb(roll_table(c, spec, now, opts, mode).await?);
        }
        Ok(report)
    })
    .await
}

/// The names a roll of `spec` at `now` may create.
fn candidates(spec: &PartitionSpec, wanted: &[Wanted]) -> Vec<String> {
    let mut names: Vec<String> = wanted.iter().map(|w| w.name.clone()).collect();
    names.push(calendar::default_name(spec));
    names
}

fn plan_for(spec: &PartitionSpec, now: DateTime<Utc>, info: &TableInfo, mode: Mode) -> Result<Plan> {
    let wanted = calendar::wanted(spec, now);
    plan::plan(spec, &wanted, &info.partitions, &info.taken, calendar::retention_cutoff(spec, now), mode)
        .map_err(|message| Error::Partition { table: spec.table.clone(), message })
}

async fn roll_table(
    c: &Client,
    spec: &PartitionSpec,
    now: DateTime<Utc>,
    opts: &RollOptions,
    mode: Mode,
) -> Result<RollReport> {
    let names = candidates(spec, &calendar::wanted(spec, now));
    let info = read_only(c, &spec.table, catalog::read(c, spec, &names)).await?;
    let first = plan_for(spec, now, &info, mode)?;
    if first.is_noop() {
        return Ok(RollReport { present: first.present, notes: first.notes, ..RollReport::default() });
    }
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match locked_attempt(c, spec, now, opts, mode, &info, &names).await {
            Ok(report) => {
                if attempt > 1 {
                    tracing::info!("{}: rolled on attempt {attempt} ({:.1}s of lock waits)", spec.table, start.elapsed().as_secs_f64());
                }
                return Ok(report);
            }
            Err(e) if is_lock_conflict(&e) && attempt < opts.attempts => {
                let pause = backoff(attempt);
                tracing::debug!("{}: attempt {attempt}: {e}; retrying in {} ms", spec.table, pause.as_millis());
                tokio::time::sleep(pause).await;
            }
            Err(e) if is_lock_conflict(&e) => {
                return Err(Error::Partition {
                    table: spec.table.clone(),
                    message: format!(
                        "could not lock the table in {attempt} attempts of {} ms each ({:.1}s): other sessions keep it busy; last: {e}",
                        opts.table_lock_timeout.as_millis(),
                        start.elapsed().as_secs_f64()
                    ),
                })
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt, in one transaction: lock, re-read, re-plan, act, commit.
async fn locked_attempt(
    c: &Client,
    spec: &PartitionSpec,
    now: DateTime<Utc>,
    opts: &RollOptions,
    mode: Mode,
    seen: &TableInfo,
    names: &[String],
) -> Result<RollReport> {
    let table = &spec.table;
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = '{}ms'; SET CONSTRAINTS ALL IMMEDIATE; {}\n{}",
        opts.table_lock_timeout.as_millis().max(1),
        catalog::SESSION,
        sql::lock_parent(&seen.parent)
    );
    transaction(
        c,
        &begin,
        &format!("locking {table} (lock_timeout {} ms)", opts.table_lock_timeout.as_millis()),
        async {
            let info = catalog::read(c, spec, names).await?;
            if info.oid != seen.oid {
                return Err(Error::Partition {
                    table: table.clone(),
                    message: "the table was replaced while rolling; run again".into(),
                });
            }
            let plan = plan_for(spec, now, &info, mode)?;
            let p = &info.parent;
            let mut report = RollReport { present: plan.present, notes: plan.notes.clone(), ..RollReport::default() };

            let mut moving = 0u64;
            // Whether the foreign keys that reference the table are set aside (dropped; added
            // back before commit).
            let mut aside = false;
            if let (Some(default), false) = (&plan.default, plan.create.is_empty()) {
                c.batch_execute(&sql::lock(p, default))
                    .await
                    .db(|| format!("locking the default partition {} of {table}", default.name))?;
                let periods: Vec<Period> = plan.create.iter().map(|w| w.period).collect();
                let [make, take] = sql::take_from_default(p, default, &periods, &info.columns);
                c.batch_execute(&make).await.db(|| format!("making a temporary table for rows of {}", default.name))?;
                let why = format!("to move rows of the new ranges out of the default partition {}", default.name);
                moving = keys_aside_if_refused(c, table, &info.references, &mut aside, &why, || {
                    c.execute(take.as_str(), &[])
                })
                .await?
                .map_err(|e| move_failed(table, &default.name, &info.references, aside, e))?;
            }

            let mut ddl: Vec<String> =
                plan.create.iter().map(|w| sql::create_partition(p, &w.name, w.period)).collect();
            if let Some(d) = &plan.create_default {
                ddl.push(sql::create_default(p, d));
            }
            if !ddl.is_empty() {
                c.batch_execute(&ddl.join("\n")).await.db(|| {
                    let mut what: Vec<&str> = plan.create.iter().map(|w| w.name.as_str()).collect();
                    what.extend(plan.create_default.as_deref());
                    format!("creating partitions of {table} ({})", what.join(", "))
                })?;
            }
            report.created = plan.create.iter().map(|w| w.name.clone()).chain(plan.create_default.clone()).collect();

            if moving > 0 {
                let back = c.execute(sql::put_back(p, &info.columns).as_str(), &[]).await.db(|| {
                    format!("putting {moving} rows from the default partition of {table} into the new partitions")
                })?;
                if back != moving {
                    return Err(Error::Partition {
                        table: table.clone(),
                        message: format!(
                            "took {moving} rows out of the default partition but put back {back}; rolled back"
                        ),
                    });
                }
                report.moved_rows = moving;
                tracing::debug!("{table}: moved {moving} rows from the default partition into new partitions");
            }
            for prune in &plan.prune {
                let what =
                    format!("retention: {} of {} ({}) of {table}", prune.action.verb(), prune.name, prune.period);
                let why = format!("to {} {}", prune.action.verb(), prune.name);
                let statement = sql::prune(p, prune);
                keys_aside_if_refused(c, table, &info.references, &mut aside, &why, || c.batch_execute(&statement))
                    .await?
                    .db(|| what.clone())?;
                report.pruned.push(prune.name.clone());
            }

            if aside {
                for fk in &info.references {
                    c.batch_execute(&fk.add()).await.map_err(|e| restore_failed(table, fk, &report.pruned, e))?;
                }
            }
            Ok(report)
        },
    )
    .await
}

/// Whether the server refused a statement for a foreign key (SQLSTATE 23503).
fn is_fk_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

/// Runs `run` (moving rows out of the default partition, or pruning), which a foreign key that
/// references the table may refuse: PostgreSQL checks such a key partition by partition, so a
/// referenced row moved to another partition looks deleted, and a partition whose rows are
/// referenced (even by rows of its own) cannot be detached. When it is refused for a foreign key
/// and the keys `refs` are not aside yet, rolls back to a savepoint, sets them aside (drops them;
/// the caller adds them back, validated, before commit) and runs it again. The outer error is
/// the savepoint's or the setting aside's; the inner one is `run`'s last.
async fn keys_aside_if_refused<T, F>(
    c: &Client,
    table: &str,
    refs: &[ForeignKey],
    aside: &mut bool,
    why: &str,
    run: impl Fn() -> F,
) -> Result<Result<T, tokio_postgres::Error>>
where
    F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    if *aside || refs.is_empty() {
        return Ok(run().await);
    }
    let savepoint = crate::ident::quote(sql::BEFORE_MOVING);
    let ctx = || format!("a savepoint {why}");
    c.batch_execute(&format!("SAVEPOINT {savepoint};")).await.db(ctx)?;
    match run().await {
        Err(e) if is_fk_violation(&e) => {
            tracing::debug!("{table}: {}; setting foreign keys aside {why}", describe_db_error(&e));
            c.batch_execute(&format!("ROLLBACK TO SAVEPOINT {savepoint}; RELEASE SAVEPOINT {savepoint};"))
                .await
                .db(ctx)?;
            for fk in refs {
                c.batch_execute(&fk.drop()).await.db(|| {
                    format!(
                        "setting foreign key {} of {} aside {why} (rows there are referenced; the key is dropped, then added back and validated in the same transaction, which needs ownership of {})",
                        fk.name, fk.table, fk.table
                    )
                })?;
            }
            *aside = true;
            Ok(run().await)
        }
        Ok(v) => {
            c.batch_execute(&format!("RELEASE SAVEPOINT {savepoint};")).await.db(ctx)?;
            Ok(Ok(v))
        }
        // The transaction is aborted; the caller's error rolls it back.
        Err(e) => Ok(Err(e)),
    }
}

/// The error of taking rows out of the default partition: a foreign key that the roll could not
/// set aside is named, with what to do; anything else keeps the driver's error (and so stays
/// retryable when it is a lock timeout).
fn move_failed(table: &str, default: &str, refs: &[ForeignKey], aside: bool, e: tokio_postgres::Error) -> Error {
    if !is_fk_violation(&e) {
        return Error::Db {
            context: format!("taking rows of the new ranges out of the default partition {default} of {table}"),
            source: e,
        };
    }
    let db = e.as_db_error();
    let constraint = db.and_then(|d| d.constraint()).unwrap_or("(unnamed)");
    let why = if aside {
        let names: Vec<&str> = refs.iter().map(|k| k.name.as_str()).collect();
        format!("it is not one of the keys that reference {table} ({}), which the roll set aside", names.join(", "))
    } else {
        format!("it does not reference {table} itself, so the roll cannot set it aside")
    };
    Error::Partition {
        table: table.to_string(),
        message: format!(
            "cannot move rows of the new ranges out of the default partition {default}: foreign key {constraint} still references them ({why}); reference {table} rather than one of its partitions, or move the referencing rows first; rolled back: {}",
            describe_db_error(&e)
        ),
    }
}

/// The error of adding back a foreign key set aside: when rows left reference rows that
/// retention removed, says so (nothing is removed: the roll rolls back; never `CASCADE`).
fn restore_failed(table: &str, fk: &ForeignKey, pruned: &[String], e: tokio_postgres::Error) -> Error {
    if !is_fk_violation(&e) || pruned.is_empty() {
        return Error::Db {
            context: format!(
                "adding back foreign key {} of {} (set aside while rolling the partitions of {table})",
                fk.name, fk.table
            ),
            source: e,
        };
    }
    Error::Partition {
        table: table.to_string(),
        message: format!(
            "retention cannot remove {}: rows left in {} still reference rows there through foreign key {} ({}); rolled back, nothing removed: delete or update the referencing rows first, or keep more periods",
            pruned.join(", "),
            fk.table,
            fk.name,
            describe_db_error(&e)
        ),
    }
}

/// Runs `body` between `begin` (which opens the transaction, and may lock) and `COMMIT`; rolls
/// back when either fails, so that the connection is never left inside a transaction.
async fn transaction<T>(
    c: &Client,
    begin: &str,
    what: &str,
    body: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    if let Err(e) = c.batch_execute(begin).await {
        let _ = c.batch_execute("ROLLBACK").await;
        return Err(e).db(|| what.to_string());
    }
    match body.await {
        Ok(v) => {
            c.batch_execute("COMMIT").await.db(|| format!("committing ({what})"))?;
            Ok(v)
        }
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Runs `body` in a read-only transaction configured to parse bounds.
async fn read_only<T>(c: &Client, table: &str, body: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let what = format!("reading the partitions of {table}");
    transaction(c, &format!("BEGIN READ ONLY; {}", catalog::SESSION), &what, body).await
}

fn is_lock_conflict(e: &Error) -> bool {
    match e {
        Error::Db { source, .. } => {
            matches!(source.code(), Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED)
        }
        _ => false,
    }
}

/// Pause before attempt `n + 1`: doubling from 25 ms up to 1 s, with jitter.
fn backoff(n: u32) -> Duration {
    let base = 25u64.saturating_mul(1 << n.min(6)).min(1000);
    let mut b = [0u8; 2];
    let jitter = if getrandom::fill(&mut b).is_ok() { u64::from(u16::from_le_bytes(b)) % (base / 2 + 1) } else { 0 };
    Duration::from_millis(base / 2 + jitter)
}

/// One partition as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed {
    /// Its table name.
    pub name: String,
    /// Its schema.
    pub schema: String,
    /// `DEFAULT` or `[from, to)`.
    pub bounds: String,
    /// Lower bound (`None` for the default partition).
    pub from: Option<String>,
    /// Upper bound, exclusive (`None` for the default partition).
    pub to: Option<String>,
    /// Whether it is the default partition.
    pub default: bool,
    /// Rows in it.
    pub rows: i64,
    /// Whether the spec's pattern names it for exactly its period (it is "ours").
    pub by_spec: bool,
}

/// One table as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    /// The table as the spec names it.
    pub table: String,
    /// Its schema.
    pub schema: String,
    /// The key column.
    pub column: String,
    /// The key's type.
    pub key: KeyType,
    /// The spec's interval.
    pub interval: Interval,
    /// Every partition, default last, others by lower bound.
    pub partitions: Vec<Listed>,
    /// Rows in all partitions.
    pub total_rows: i64,
    /// Partitions the spec wants at the instant that a roll would create.
    pub missing: Vec<Wanted>,
    /// Notes from planning (overlaps, foreign names).
    pub notes: Vec<String>,
}

/// Lists each spec's partitions with bounds and row counts, and what a roll at `now` would add.
pub async fn list(client: &mut Client, specs: &[PartitionSpec], now: DateTime<Utc>) -> Result<Vec<Listing>> {
    let c: &Client = client;
    let mut out = Vec::new();
    for spec in specs {
        spec.validate().map_err(|message| Error::Partition { table: spec.table.clone(), message })?;
        let names = candidates(spec, &calendar::wanted(spec, now));
        let (info, rows) = read_only(c, &spec.table, async {
            let info = catalog::read(c, spec, &names).await?;
            let rows = catalog::row_counts(c, &info.parent, &info.partitions).await?;
            Ok((info, rows))
        })
        .await?;
        let plan = plan_for(spec, now, &info, Mode { create: true, prune: false })?;
        let mut partitions: Vec<(Bounds, Listed)> = info
            .partitions
            .iter()
            .zip(rows)
            .map(|(e, rows)| {
                let (from, to) = match e.bounds {
                    Bounds::Range { from, to } => (Some(from.to_string()), Some(to.to_string())),
                    Bounds::Default => (None, None),
                };
                let by_spec = e.schema.is_none() && is_by_spec(spec, e);
                let listed = Listed {
                    name: e.name.clone(),
                    schema: e.schema.clone().unwrap_or_else(|| info.parent.schema.clone()),
                    bounds: e.bounds.to_string(),
                    from,
                    to,
                    default: e.bounds == Bounds::Default,
                    rows,
                    by_spec,
                };
                (e.bounds, listed)
            })
            .collect();
        partitions.sort_by_key(|(b, l)| match b {
            Bounds::Range { from, .. } => (0, *from, l.name.clone()),
            Bounds::Default => (1, Bound::MaxValue, l.name.clone()),
        });
        let partitions: Vec<Listed> = partitions.into_iter().map(|(_, l)| l).collect();
        out.push(Listing {
            table: spec.table.clone(),
            schema: info.parent.schema.clone(),
            column: spec.column.clone(),
            key: info.parent.key,
            interval: spec.interval,
            total_rows: partitions.iter().map(|l| l.rows).sum(),
            partitions,
            missing: plan.create,
            notes: plan.notes,
        });
    }
    Ok(out)
}

fn is_by_spec(spec: &PartitionSpec, e: &Existing) -> bool {
    match e.bounds {
        Bounds::Default => e.name == calendar::default_name(spec),
        Bounds::Range { from, to } => from.as_day().is_some_and(|d| {
            calendar::period_start(spec.interval, d) == d
                && Bound::day(calendar::period_at(spec.interval, d).to) == to
                && calendar::partition_name(spec, d) == e.name
        }),
    }
}
