//! Reading a partitioned table from the catalog: its key, its columns, its partitions and bounds,
//! the foreign keys that reference it; and, when a roll moves rows or cannot proceed, what stands
//! in its way (keys and triggers of the default partition, lock holders, the triggers that run a
//! function).
//!
//! Partitions come from `pg_inherits`, their bounds from `pg_get_expr(relpartbound)`, parsed
//! (never guessed from names). The bound text follows the session's `DateStyle` and `TimeZone`,
//! so [`read`] must run inside a transaction that [`SESSION`] configured.

use futures_util::future::join_all;
use tokio_postgres::Client;

use super::bounds::parse_bounds;
use super::error::RollError;
use super::reconcile::Existing;
use super::spec::PartitionSpec;
use super::sql::{DirectKey, ForeignKey, KeyType, OwnTrigger, Parent};
use crate::error::{DbContext, Error, Result};
use crate::ident::quote_qualified;

/// Settings (local to the current transaction) under which bound expressions are parsed.
pub const SESSION: &str =
    "SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL TimeZone = 'UTC'; SET LOCAL IntervalStyle = 'postgres';";

/// What the catalog says about a spec's table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The parent's oid.
    pub oid: u32,
    /// The parent, resolved (schema, name, key column and type).
    pub parent: Parent,
    /// Its writable columns (not dropped, not generated), in the parent's order: what moving rows
    /// copies, by name (a partition may order its columns differently).
    pub columns: Vec<String>,
    /// The foreign keys that reference the parent (its own self-references included), declared
    /// on their tables (not the per-partition clones): what moving rows may have to re-create.
    pub references: Vec<ForeignKey>,
    /// Its partitions with their bounds, by name.
    pub partitions: Vec<Existing>,
    /// Its tablespace, when it names one (partitions go there too).
    pub tablespace: Option<String>,
    /// Names among the candidates that other relations of the parent's schema hold.
    pub taken: Vec<String>,
}

/// Reads the spec's table, checking that it exists, is range-partitioned and on the spec's
/// column (of type `date`, `timestamp` or `timestamptz`). `candidates` are the names a roll may
/// create; those held by other relations come back in [`TableInfo::taken`]. Must run inside a
/// transaction configured by [`SESSION`].
pub async fn read(client: &Client, spec: &PartitionSpec, candidates: &[String]) -> Result<TableInfo> {
    let bad = |source: RollError| Error::Roll { table: spec.table.clone(), source: Box::new(source) };
    let ctx = || format!("reading the catalog for {}", spec.table);
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, pt.partstrat::text, pt.partnatts::int4,
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                    a.attname::text, ty.typname::text, ty.typtype::text,
                    (SELECT spcname::text FROM pg_tablespace WHERE oid = c.reltablespace)
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]
               LEFT JOIN pg_type ty ON ty.oid = a.atttypid
              WHERE c.oid = to_regclass($1)",
            &[&quote_qualified(&spec.table)],
        )
        .await
        .db(ctx)?;
    let Some(row) = row else {
        return Err(bad(RollError::NoTable));
    };
    let oid: u32 = row.get(0);
    let schema: String = row.get(1);
    let table: String = row.get(2);
    let relkind: String = row.get(3);
    if relkind != "p" {
        let relkind = relkind.chars().next().unwrap_or('?');
        return Err(bad(RollError::NotPartitioned { relkind, column: spec.column.clone() }));
    }
    let strategy: String = row.get(4);
    let natts: i32 = row.get(5);
    let keydef: String = row.get(6);
    let key_column: Option<String> = row.get(7);
    if strategy != "r" || natts != 1 || key_column.as_deref() != Some(spec.column.as_str()) {
        return Err(bad(RollError::WrongKey { keydef, column: spec.column.clone() }));
    }
    let type_name: String = row.get(8);
    let type_kind: String = row.get(9);
    let Some(key) = KeyType::from_type_name(&type_name).filter(|_| type_kind == "b") else {
        return Err(bad(RollError::KeyType { column: spec.column.clone(), type_name }));
    };
    let parent = Parent { schema: schema.clone(), table, column: spec.column.clone(), key };
    let tablespace: Option<String> = row.get(10);

    let by_oid: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&oid];
    let by_name: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&schema, &candidates, &oid];
    let (parts, columns, taken, references) = tokio::join!(
        client.query(
            "SELECT c.relname::text, n.nspname::text, pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE i.inhparent = $1
              ORDER BY 1",
            &by_oid,
        ),
        client.query(
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
              ORDER BY attnum",
            &by_oid,
        ),
        client.query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname::text = ANY($2)
                AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid AND i.inhparent = $3)
              ORDER BY 1",
            &by_name,
        ),
        client.query(
            "SELECT n.nspname::text, r.relname::text, k.conname::text, pg_get_constraintdef(k.oid),
                    obj_description(k.oid, 'pg_constraint')
               FROM pg_constraint k
               JOIN pg_class r ON r.oid = k.conrelid
               JOIN pg_namespace n ON n.oid = r.relnamespace
              WHERE k.contype = 'f' AND k.confrelid = $1 AND k.conparentid = 0
              ORDER BY 1, 2, 3",
            &by_oid,
        ),
    );
    let mut partitions = Vec::new();
    for r in parts.db(ctx)? {
        let name: String = r.get(0);
        let part_schema: String = r.get(1);
        let expr: String = r.get(2);
        let bounds = match parse_bounds(&expr, key) {
            Ok(b) => b,
            Err(source) => return Err(bad(RollError::Bound { partition: name, source })),
        };
        partitions.push(Existing { name, schema: (part_schema != schema).then_some(part_schema), bounds });
    }
    let columns = columns.db(ctx)?.iter().map(|r| r.get(0)).collect();
    let taken = taken.db(ctx)?.iter().map(|r| r.get(0)).collect();
    let references = references
        .db(ctx)?
        .iter()
        .map(|r| ForeignKey {
            schema: r.get(0),
            table: r.get(1),
            name: r.get(2),
            definition: r.get(3),
            comment: r.get(4),
        })
        .collect();
    Ok(TableInfo { oid, parent, columns, references, partitions, taken, tablespace })
}

/// Counts the rows of each partition (its whole subtree), in order.
pub async fn row_counts(client: &Client, parent: &Parent, partitions: &[Existing]) -> Result<Vec<i64>> {
    let queries: Vec<String> =
        partitions.iter().map(|e| format!("SELECT count(*) FROM {}", parent.partition(e))).collect();
    let results = join_all(queries.iter().map(|q| client.query_one(q.as_str(), &[]))).await;
    results
        .into_iter()
        .zip(partitions)
        .map(|(r, e)| r.map(|row| row.get::<_, i64>(0)).db(|| format!("counting the rows of {}", e.name)))
        .collect()
}

/// The foreign keys declared against the partition `e` itself (not clones of keys on the
/// parent): the roll cannot set them aside.
pub async fn direct_keys(client: &Client, parent: &Parent, e: &Existing) -> Result<Vec<DirectKey>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, r.relname::text, k.conname::text, k.confdeltype::text,
                    ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(num, i)
                            JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num ORDER BY u.i),
                    ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(num, i)
                            JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.num ORDER BY u.i)
               FROM pg_constraint k
               JOIN pg_class r ON r.oid = k.conrelid
               JOIN pg_namespace n ON n.oid = r.relnamespace
              WHERE k.contype = 'f' AND k.confrelid = to_regclass($1) AND k.conparentid = 0
              ORDER BY 1, 2, 3",
            &[&parent.partition(e)],
        )
        .await
        .db(|| format!("reading the foreign keys that reference {}", e.name))?;
    Ok(rows
        .iter()
        .map(|r| DirectKey {
            schema: r.get(0),
            table: r.get(1),
            name: r.get(2),
            on_delete: r.get::<_, String>(3).chars().next().unwrap_or('a'),
            columns: r.get(4),
            referenced: r.get(5),
        })
        .collect())
}

/// The user triggers of the table `e` that a `DELETE` would fire (enabled, or enabled always),
/// with their states.
pub async fn delete_triggers(client: &Client, parent: &Parent, e: &Existing) -> Result<Vec<OwnTrigger>> {
    let rows = client
        .query(
            "SELECT tgname::text, tgenabled::text FROM pg_trigger
              WHERE tgrelid = to_regclass($1) AND NOT tgisinternal AND tgenabled IN ('O', 'A')
                AND (tgtype::int4 & 8) <> 0
              ORDER BY 1",
            &[&parent.partition(e)],
        )
        .await
        .db(|| format!("reading the triggers of {}", e.name))?;
    Ok(rows
        .iter()
        .map(|r| OwnTrigger { name: r.get(0), enabled: r.get::<_, String>(1).chars().next().unwrap_or('O') })
        .collect())
}

/// Who holds locks on the table `oid`, its partitions, the tables whose keys reference them and
/// the tables its keys reference (other sessions only), one line each: `pid 4242 (audit-writer,
/// idle in transaction: "INSERT ...") holding RowExclusiveLock on guarded_actors`.
pub async fn lock_holders(client: &Client, oid: u32) -> Result<Vec<String>> {
    let rows = client
        .query(
            "WITH parts AS (SELECT inhrelid AS rel FROM pg_inherits WHERE inhparent = $1),
                  scope AS (
                    SELECT $1::oid AS rel
                    UNION SELECT rel FROM parts
                    UNION SELECT conrelid FROM pg_constraint
                           WHERE contype = 'f' AND (confrelid = $1 OR confrelid IN (SELECT rel FROM parts))
                    UNION SELECT confrelid FROM pg_constraint WHERE contype = 'f' AND conrelid = $1)
             SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), coalesce(left(a.query, 80), ''),
                    string_agg(DISTINCT l.mode || ' on ' || l.relation::regclass::text, ', ')
               FROM pg_locks l
               JOIN scope s ON s.rel = l.relation
               JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              GROUP BY 1, 2, 3, 4
              ORDER BY 1",
            &[&oid],
        )
        .await
        .db(|| "finding who holds locks on the table".to_string())?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "pid {} ({}, {}: {:?}) holding {}",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(3),
                r.get::<_, String>(4)
            )
        })
        .collect())
}

/// The triggers and event triggers that run the function `name` (a trigger cloned onto
/// partitions counts once, as its parent's): `trigger t on s.tab`, `event trigger e
/// (ddl_command_start)`.
pub async fn triggers_running(client: &Client, name: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT format('trigger %I on %s', t.tgname, t.tgrelid::regclass)
               FROM pg_trigger t JOIN pg_proc f ON f.oid = t.tgfoid
              WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND f.proname = $1
             UNION ALL
             SELECT format('event trigger %I (%s)', e.evtname, e.evtevent)
               FROM pg_event_trigger e JOIN pg_proc f ON f.oid = e.evtfoid
              WHERE f.proname = $1 AND e.evtenabled <> 'D'
             ORDER BY 1",
            &[&name],
        )
        .await
        .db(|| format!("finding the triggers that run {name}()"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
