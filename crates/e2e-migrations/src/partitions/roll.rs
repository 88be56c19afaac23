//! Rolling, listing and pruning partitions on a live database (the I/O around the pure planner).
//!
//! Per table: read the catalog and plan in a read-only transaction; when there is something to
//! do, open one transaction that takes `ACCESS EXCLUSIVE` on the parent and then its default
//! partition (strongest lock first, so no upgrade can deadlock with concurrent inserts), each
//! wait bounded by `lock_timeout` and retried with backoff; re-read and re-plan under the lock;
//! create the partitions, moving the rows of their ranges out of the default partition; prune;
//! commit. Everything runs under the migrations' advisory lock.
//!
//! Moving rows is maintenance, not a delete followed by an insert through the table: the default
//! partition is detached (PostgreSQL then drops its clones of the table's triggers), the rows of
//! each new range are copied by column name into a new table standing alone (no trigger there
//! either), deleted from the detached default partition (its own triggers, if it has any, turned
//! off meanwhile and put back as they were), and both are attached back. So no user trigger
//! fires, and each row arrives as it was, columns that triggers derived and generated ones
//! included. Attaching checks every moved row against the range and the table's foreign keys.
//!
//! Foreign keys that reference the table (such as `audit_events`' own parent event key) are
//! enforced by PostgreSQL partition by partition: a partition whose rows are referenced, even
//! only by rows of its own, cannot be detached (nor dropped). So when detaching (to move rows, or
//! for retention) is refused by such a key, the attempt rolls back to a savepoint, drops the keys
//! that reference the table, runs again, and adds the keys back (validated again: rows left that
//! reference pruned ones fail clearly, and nothing is removed; never `CASCADE`) before
//! committing. This needs ownership of the referencing tables, not superuser. A key declared
//! against the default partition itself cannot be set aside: when it references rows that must
//! move, the roll stops and names it (it would break, or cascade into its table). The roll's
//! constraints are `IMMEDIATE`, so that a deferrable key fails at the statement, not at commit.
//!
//! When a roll cannot proceed, the error names what stopped it: the key, the trigger (or event
//! trigger) whose function raised, or the sessions holding the locks it waited for.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::calendar::{self, Period, Wanted};
use super::catalog::{self, TableInfo};
use super::error::{Holders, RollError};
use super::reconcile::{self, Bound, Bounds, Existing, Mode, TablePlan};
use super::spec::{Interval, PartitionSpec};
use super::sql::{self, ForeignKey, KeyType, OwnTrigger, Parent};
use crate::error::{cut_list, DbContext, Error, Result};
use crate::progress::{notify, Event, Observer};
use crate::{core, db};

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
    /// Told what the roll does as it goes (a wait for the advisory lock, each table), for a
    /// progress display; `None` (the default) reports through `tracing` only.
    pub observer: Option<Observer>,
}

impl Default for RollOptions {
    fn default() -> Self {
        RollOptions {
            lock_timeout: Duration::from_secs(120),
            prune: true,
            table_lock_timeout: Duration::from_millis(500),
            attempts: 40,
            observer: None,
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
        validate(spec)?;
    }
    if specs.is_empty() {
        return Ok(RollReport::default());
    }
    let c: &Client = client;
    let observer = opts.observer.as_ref();
    db::with_lock_observed(c, opts.lock_timeout, observer, async {
        let mut report = RollReport::default();
        for (i, spec) in specs.iter().enumerate() {
            notify(observer, || Event::Rolling { index: i + 1, total: specs.len(), table: spec.table.clone() });
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

/// The spec, checked before any database is touched.
fn validate(spec: &PartitionSpec) -> Result<()> {
    spec.validate()
        .map_err(|e| Error::Core(core::Error::InvalidSpec { table: spec.table.clone(), source: Box::new(e) }))
}

fn plan_for(spec: &PartitionSpec, now: DateTime<Utc>, info: &TableInfo, mode: Mode) -> Result<TablePlan> {
    let wanted = calendar::wanted(spec, now);
    reconcile::plan_table(spec, &wanted, &info.partitions, &info.taken, calendar::retention_cutoff(spec, now), mode)
        .map_err(|source| Error::Core(core::Error::PartitionPlan { table: spec.table.clone(), source }))
}

/// An [`Error::Roll`] of `table`.
fn stopped(table: &str, source: RollError) -> Error {
    Error::Roll { table: table.to_string(), source: Box::new(source) }
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
                    tracing::info!(
                        "{}: rolled on attempt {attempt} ({:.1}s of lock waits)",
                        spec.table,
                        start.elapsed().as_secs_f64()
                    );
                }
                return Ok(report);
            }
            Err(e) if is_lock_conflict(&e) && attempt < opts.attempts => {
                let pause = backoff(attempt);
                let e = crate::error::report(&e);
                tracing::debug!("{}: attempt {attempt}: {e}; retrying in {} ms", spec.table, pause.as_millis());
                tokio::time::sleep(pause).await;
            }
            Err(Error::Db { context, source }) if lock_conflict(&source) => {
                let holders = match catalog::lock_holders(c, info.oid).await {
                    Ok(h) if h.is_empty() => Holders::Released,
                    Ok(h) => Holders::Sessions(h),
                    Err(lookup) => Holders::Unknown(crate::error::report(&lookup)),
                };
                return Err(stopped(
                    &spec.table,
                    RollError::Busy {
                        attempts: attempt,
                        attempt_timeout: opts.table_lock_timeout,
                        waited: start.elapsed(),
                        holders,
                        context,
                        source,
                    },
                ));
            }
            Err(e) => return Err(blame(c, &spec.table, e).await),
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
                return Err(stopped(table, RollError::Replaced));
            }
            let plan = plan_for(spec, now, &info, mode)?;
            let p = &info.parent;
            let mut report = RollReport { present: plan.present, notes: plan.notes.clone(), ..RollReport::default() };
            // Whether the foreign keys that reference the table are set aside (dropped; added
            // back before commit).
            let mut aside = false;

            let periods: Vec<Period> = plan.create.iter().map(|w| w.period).collect();
            let waiting = match (&plan.default, periods.is_empty()) {
                (Some(default), false) => {
                    c.batch_execute(&sql::lock(p, default))
                        .await
                        .db(|| format!("locking the default partition {} of {table}", default.name))?;
                    let counts = rows_in_periods(c, p, default, &periods).await?;
                    (counts.iter().sum::<u64>() > 0).then_some((default, counts))
                }
                _ => None,
            };
            if let Some((default, counts)) = waiting {
                refuse_direct_keys(c, table, p, default, &periods, &info.references).await?;
                // Only detaching can be refused for rows that are referenced; once it is done, a
                // key that refuses a moved row is one the row breaks, which setting keys aside
                // would not mend.
                let why = format!("to move rows of the new ranges out of the default partition {}", default.name);
                let detach = sql::detach(p, default);
                keys_aside_if_refused(c, table, &info.references, &mut aside, &why, || async {
                    c.batch_execute(&detach).await.db(|| {
                        format!("detaching the default partition {} of {table} to move rows out of it", default.name)
                    })
                })
                .await
                .map_err(|e| move_failed(table, &default.name, e))?;
                report.moved_rows = move_rows(c, table, &info, &plan.create, default, &counts)
                    .await
                    .map_err(|e| move_failed(table, &default.name, e))?;
                tracing::debug!(
                    "{table}: moved {} from the default partition into new partitions",
                    crate::core::counted(report.moved_rows, "row", "rows")
                );
            } else {
                let mut ddl: Vec<String> =
                    plan.create.iter().map(|w| sql::create_partition(p, &w.name, w.period)).collect();
                if let Some(d) = &plan.create_default {
                    ddl.push(sql::create_default(p, d));
                }
                if !ddl.is_empty() {
                    let mut what: Vec<&str> = plan.create.iter().map(|w| w.name.as_str()).collect();
                    what.extend(plan.create_default.as_deref());
                    c.batch_execute(&ddl.join("\n")).await.map_err(|e| create_failed(table, &what, e))?;
                }
            }
            report.created = plan.create.iter().map(|w| w.name.clone()).chain(plan.create_default.clone()).collect();

            for prune in &plan.prune {
                let what =
                    format!("retention: {} of {} ({}) of {table}", prune.action.verb(), prune.name, prune.period);
                let why = format!("to {} {}", prune.action.verb(), prune.name);
                let statement = sql::prune(p, prune);
                keys_aside_if_refused(c, table, &info.references, &mut aside, &why, || async {
                    c.batch_execute(&statement).await.db(|| what.clone())
                })
                .await?;
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

/// How many rows of the default partition fall in each of `periods` (the partitions to create).
async fn rows_in_periods(c: &Client, p: &Parent, default: &Existing, periods: &[Period]) -> Result<Vec<u64>> {
    let rows = c
        .query(sql::count_in_periods(p, default, periods).as_str(), &[])
        .await
        .db(|| format!("counting the rows of the new ranges in the default partition {}", default.name))?;
    let mut counts = vec![0u64; periods.len()];
    for r in rows {
        let (i, n): (i32, i64) = (r.get(0), r.get(1));
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| i.checked_sub(1)).and_then(|i| counts.get_mut(i)) {
            *slot = u64::try_from(n).unwrap_or(0);
        }
    }
    Ok(counts)
}

/// Stops the move, naming the key, when a foreign key declared against the default partition
/// itself references rows that must move: the roll cannot set such a key aside, and moving the
/// rows would break it (or cascade into its table, deleting or changing rows there).
async fn refuse_direct_keys(
    c: &Client,
    table: &str,
    p: &Parent,
    default: &Existing,
    periods: &[Period],
    refs: &[ForeignKey],
) -> Result<()> {
    for key in catalog::direct_keys(c, p, default).await? {
        let n: i64 = c
            .query_one(sql::rows_referencing(p, default, &key, periods).as_str(), &[])
            .await
            .db(|| format!("counting the rows of {} that reference {} through {}", key.table, default.name, key.name))?
            .get(0);
        if n > 0 {
            return Err(stopped(
                table,
                RollError::KeyOnDefault {
                    table: table.to_string(),
                    default: default.name.clone(),
                    key: Box::new(key),
                    rows: n,
                    set_aside: refs.iter().map(|k| k.name.clone()).collect(),
                },
            ));
        }
    }
    Ok(())
}

/// Moves the rows of the new ranges out of the default partition, detached, as maintenance,
/// creating the partitions `create` on the way (`counts`: rows waiting for each): the partitions
/// that receive no rows are created as usual, the others as standalone tables filled by copying;
/// the copied rows are deleted from the detached default partition (with its own delete
/// triggers off, and put back as they were); all are attached. Returns the rows moved. Any
/// refusal leaves the transaction to roll back.
async fn move_rows(
    c: &Client,
    table: &str,
    info: &TableInfo,
    create: &[Wanted],
    default: &Existing,
    counts: &[u64],
) -> Result<u64> {
    let p = &info.parent;
    let own = catalog::delete_triggers(c, p, default).await?;

    let filled: Vec<(&Wanted, u64)> = create.iter().zip(counts.iter().copied()).filter(|(_, n)| *n > 0).collect();
    let ddl: Vec<String> = create
        .iter()
        .zip(counts)
        .map(|(w, n)| match n {
            0 => sql::create_partition(p, &w.name, w.period),
            _ => sql::create_standalone(p, &w.name, info.tablespace.as_deref()),
        })
        .collect();
    let names: Vec<&str> = create.iter().map(|w| w.name.as_str()).collect();
    c.batch_execute(&ddl.join("\n")).await.map_err(|e| create_failed(table, &names, e))?;

    let mut total = 0u64;
    for (w, n) in &filled {
        let copied =
            c.execute(sql::copy_rows(p, &w.name, default, w.period, &info.columns).as_str(), &[]).await.db(|| {
                format!("copying {n} rows of {} from the default partition {} into {}", w.period, default.name, w.name)
            })?;
        if copied != *n {
            let (default, period, counted) = (default.name.clone(), w.period, *n);
            return Err(stopped(table, RollError::CopyMismatch { default, period, counted, copied }));
        }
        total += copied;
    }

    let toggle = |sql_of: fn(&Parent, &Existing, &OwnTrigger) -> String| {
        own.iter().map(|t| sql_of(p, default, t)).collect::<Vec<_>>().join("\n")
    };
    let trigger_names = || cut_list(&own.iter().map(|t| t.name.as_str()).collect::<Vec<_>>());
    if !own.is_empty() {
        c.batch_execute(&toggle(sql::disable_trigger)).await.db(|| {
            format!(
                "turning off the delete triggers of {} ({}) while rows move out of it",
                default.name,
                trigger_names()
            )
        })?;
    }
    let periods: Vec<Period> = filled.iter().map(|(w, _)| w.period).collect();
    let deleted = c
        .execute(sql::delete_moved(p, default, &periods).as_str(), &[])
        .await
        .db(|| format!("deleting the {total} copied rows from the detached default partition {}", default.name))?;
    if deleted != total {
        let default = default.name.clone();
        return Err(stopped(table, RollError::DeleteMismatch { default, copied: total, deleted }));
    }
    if !own.is_empty() {
        c.batch_execute(&toggle(sql::restore_trigger))
            .await
            .db(|| format!("putting back the delete triggers of {} ({})", default.name, trigger_names()))?;
    }

    let mut attach: Vec<String> = filled.iter().map(|(w, _)| sql::attach(p, &w.name, w.period)).collect();
    attach.push(sql::attach_default(p, default));
    c.batch_execute(&attach.join("\n")).await.db(|| {
        let filled: Vec<&str> = filled.iter().map(|(w, _)| w.name.as_str()).collect();
        format!(
            "attaching {} and the default partition {} back to {table} (rows are checked against each range and the table's foreign keys)",
            cut_list(&filled),
            default.name
        )
    })?;
    Ok(total)
}

/// The error of creating partitions: running out of lock slots says what to change; anything
/// else keeps the driver's error (and so stays retryable when it is a lock timeout).
fn create_failed(table: &str, names: &[&str], e: tokio_postgres::Error) -> Error {
    if e.code() == Some(&SqlState::OUT_OF_MEMORY) {
        return stopped(table, RollError::OutOfLockSlots { partitions: names.len(), source: e.into() });
    }
    Error::Db { context: format!("creating partitions of {table} ({})", cut_list(names)), source: e.into() }
}

/// Whether the server refused a statement for a foreign key (SQLSTATE 23503).
fn is_fk_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

/// Whether `e` is a foreign key's refusal, naming the key (a trigger that raises SQLSTATE 23503
/// names none, and setting keys aside would not help).
fn refused_by_key(e: &Error) -> bool {
    match e {
        Error::Db { source, .. } => {
            is_fk_violation(source) && source.as_db_error().and_then(|d| d.constraint()).is_some()
        }
        _ => false,
    }
}

/// Runs `run` (moving rows out of the default partition, or pruning), which a foreign key that
/// references the table may refuse: PostgreSQL checks such a key partition by partition, so a
/// partition whose rows are referenced (even by rows of its own) cannot be detached. When a key
/// refuses it and the keys `refs` are not aside yet, rolls back to a savepoint, sets them aside
/// (drops them; the caller adds them back, validated, before commit) and runs it again.
async fn keys_aside_if_refused<T, F, Fut>(
    c: &Client,
    table: &str,
    refs: &[ForeignKey],
    aside: &mut bool,
    why: &str,
    run: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if *aside || refs.is_empty() {
        return run().await;
    }
    let savepoint = crate::ident::quote(sql::BEFORE_KEYS);
    let ctx = || format!("a savepoint {why}");
    c.batch_execute(&format!("SAVEPOINT {savepoint};")).await.db(ctx)?;
    match run().await {
        Err(e) if refused_by_key(&e) => {
            tracing::debug!("{table}: {}; setting foreign keys aside {why}", crate::error::report(&e));
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
            run().await
        }
        Ok(v) => {
            c.batch_execute(&format!("RELEASE SAVEPOINT {savepoint};")).await.db(ctx)?;
            Ok(v)
        }
        // The transaction is aborted; the caller's error rolls it back.
        Err(e) => Err(e),
    }
}

/// The error of moving rows out of the default partition: a foreign key's refusal (one the roll
/// could not set aside, or one a moved row breaks) names the key; anything else (a lock timeout
/// stays retryable; a trigger's error is blamed on the trigger by [`blame`]) is left as it is.
fn move_failed(table: &str, default: &str, e: Error) -> Error {
    let Error::Db { context, source } = e else { return e };
    let Some(constraint) = source.as_db_error().filter(|_| is_fk_violation(&source)).and_then(|d| d.constraint())
    else {
        return Error::Db { context, source };
    };
    let (default, constraint) = (default.to_string(), constraint.to_string());
    stopped(table, RollError::MoveRefusedByKey { default, constraint, context, source })
}

/// The error of adding back a foreign key set aside: when rows left reference rows that
/// retention removed, says so (nothing is removed: the roll rolls back; never `CASCADE`); when
/// the key does not hold otherwise, names it.
fn restore_failed(table: &str, fk: &ForeignKey, pruned: &[String], e: tokio_postgres::Error) -> Error {
    if !is_fk_violation(&e) {
        return Error::Db {
            context: format!(
                "adding back foreign key {} of {} (set aside while rolling the partitions of {table})",
                fk.name, fk.table
            ),
            source: e.into(),
        };
    }
    let (key, key_table, source) = (fk.name.clone(), fk.table.clone(), e.into());
    let why = if pruned.is_empty() {
        RollError::KeyBroken { key, key_table, source }
    } else {
        RollError::RetentionReferenced { pruned: pruned.to_vec(), key, key_table, source }
    };
    stopped(table, why)
}

/// When a PL/pgSQL function raised the error that stopped a roll (a trigger's, or an event
/// trigger's refusing the roll's DDL), names the triggers that run it. Runs after the attempt
/// rolled back; the error is kept as it was when there is nothing to name.
async fn blame(c: &Client, table: &str, e: Error) -> Error {
    let Error::Db { context, source } = e else { return e };
    let Some(function) = source.as_db_error().and_then(|d| d.where_()).and_then(plpgsql_function).map(str::to_string)
    else {
        return Error::Db { context, source };
    };
    let triggers = match catalog::triggers_running(c, &function).await {
        Ok(t) => t,
        Err(lookup) => {
            tracing::debug!("{table}: {}", crate::error::report(&lookup));
            Vec::new()
        }
    };
    stopped(table, RollError::StoppedBy { function, triggers, context, source })
}

/// The function named by an error context line such as `PL/pgSQL function
/// audit.guard_delete() line 4 at RAISE`, without its schema; the innermost (first) one when
/// several are stacked.
fn plpgsql_function(where_: &str) -> Option<&str> {
    let rest = &where_[where_.find("PL/pgSQL function ")? + "PL/pgSQL function ".len()..];
    let name = &rest[..rest.find('(')?];
    let name = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
    (!name.is_empty()).then_some(name)
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
    matches!(e, Error::Db { source, .. } if lock_conflict(source))
}

/// Whether the server gave up waiting for a lock, or broke a deadlock.
fn lock_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED)
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
        validate(spec)?;
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
                let by_spec = reconcile::named_by_spec(spec, e);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_that_raised_is_read_from_the_error_context() {
        assert_eq!(
            plpgsql_function("PL/pgSQL function guarded_events_protect() line 5 at RAISE"),
            Some("guarded_events_protect")
        );
        assert_eq!(plpgsql_function("PL/pgSQL function audit.\"Guard\"(integer) line 2 at RAISE"), Some("Guard"));
        assert_eq!(
            plpgsql_function(
                "PL/pgSQL function inner_fn() line 3 at RAISE\nPL/pgSQL function outer_fn() line 1 at PERFORM"
            ),
            Some("inner_fn")
        );
        assert_eq!(plpgsql_function("SQL statement \"SELECT 1\""), None);
        assert_eq!(plpgsql_function("PL/pgSQL function () line 1"), None);
    }
}
