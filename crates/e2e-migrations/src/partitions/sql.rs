//! The SQL of partitions (pure): creating, moving rows out of the default partition (and setting
//! aside the foreign keys that reference the table while they move), pruning.
//!
//! Every identifier is quoted, every partition is created in its parent's schema, and bounds are
//! literals of the key's type: `'2024-12-01'` for `date`, `'2024-12-01 00:00:00'` for
//! `timestamp`, `'2024-12-01 00:00:00+00'` (UTC, whatever the session's time zone) for
//! `timestamptz`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::calendar::{self, Period};
use super::plan::{Existing, Prune};
use super::spec::{PartitionSpec, RetentionAction};
use crate::error::{Error, Result};
use crate::ident::{literal, quote};

/// The type of a partition key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// `date`.
    Date,
    /// `timestamp without time zone` (read as UTC).
    Timestamp,
    /// `timestamp with time zone`.
    Timestamptz,
}

impl KeyType {
    /// From the catalog's type name (`pg_type.typname`); `None` for any other type.
    pub fn from_type_name(name: &str) -> Option<KeyType> {
        match name {
            "date" => Some(KeyType::Date),
            "timestamp" => Some(KeyType::Timestamp),
            "timestamptz" => Some(KeyType::Timestamptz),
            _ => None,
        }
    }

    /// The literal for midnight (UTC) of `day` in this type.
    pub fn literal(self, day: NaiveDate) -> String {
        match self {
            KeyType::Date => literal(&day.to_string()),
            KeyType::Timestamp => literal(&format!("{day} 00:00:00")),
            KeyType::Timestamptz => literal(&format!("{day} 00:00:00+00")),
        }
    }
}

/// A partitioned table as found in the catalog: where to create partitions and how to bound them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parent {
    /// Its schema (partitions go there too).
    pub schema: String,
    /// Its name.
    pub table: String,
    /// The range key column.
    pub column: String,
    /// The key's type.
    pub key: KeyType,
}

impl Parent {
    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        self.child(&self.table)
    }

    /// `"schema"."name"`: a relation in the parent's schema.
    pub fn child(&self, name: &str) -> String {
        format!("{}.{}", quote(&self.schema), quote(name))
    }

    /// An existing partition, qualified with its own schema (the parent's unless it says).
    pub fn partition(&self, e: &Existing) -> String {
        match &e.schema {
            Some(s) => format!("{}.{}", quote(s), quote(&e.name)),
            None => self.child(&e.name),
        }
    }

    /// `"key" >= from AND "key" < to` for each period, contiguous periods merged, OR-ed.
    pub fn in_periods(&self, periods: &[Period]) -> String {
        let mut sorted = periods.to_vec();
        sorted.sort();
        let mut merged: Vec<Period> = Vec::new();
        for p in sorted {
            match merged.last_mut() {
                Some(last) if last.to >= p.from => last.to = last.to.max(p.to),
                _ => merged.push(p),
            }
        }
        let col = quote(&self.column);
        let one = |p: &Period| format!("{col} >= {} AND {col} < {}", self.key.literal(p.from), self.key.literal(p.to));
        match merged.as_slice() {
            [] => "false".to_string(),
            [p] => one(p),
            many => many.iter().map(|p| format!("({})", one(p))).collect::<Vec<_>>().join(" OR "),
        }
    }
}

/// The temporary table that holds rows taken out of the default partition during a roll.
pub const MOVING: &str = "e2e_partitions_moving";

/// The savepoint a roll takes before moving rows (to retry once with foreign keys set aside).
pub const BEFORE_MOVING: &str = "e2e_partitions_before_moving";

/// `CREATE TABLE ... PARTITION OF ... FOR VALUES FROM (...) TO (...);`
pub fn create_partition(p: &Parent, name: &str, period: Period) -> String {
    format!(
        "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({});",
        p.child(name),
        p.qualified(),
        p.key.literal(period.from),
        p.key.literal(period.to)
    )
}

/// `CREATE TABLE ... PARTITION OF ... DEFAULT;`
pub fn create_default(p: &Parent, name: &str) -> String {
    format!("CREATE TABLE {} PARTITION OF {} DEFAULT;", p.child(name), p.qualified())
}

/// Locks the parent for the DDL to come: taking the strongest lock first means no upgrade
/// later, which is how a roll and concurrent inserts deadlock.
pub fn lock_parent(p: &Parent) -> String {
    format!("LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE;", p.qualified())
}

/// Locks a partition (the default one, before rows move out of it), after the parent.
pub fn lock(p: &Parent, e: &Existing) -> String {
    format!("LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE;", p.partition(e))
}

fn column_list(columns: &[String]) -> String {
    columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
}

/// Two statements that take the rows of the default partition `default` in `periods` out into
/// [`MOVING`] (dropped at commit): PostgreSQL refuses a new partition whose range has rows in the
/// default partition. The second statement's row count is the number of rows moved.
///
/// `columns` are the parent's writable (non-generated) columns, named everywhere: a default
/// partition attached by hand may order its columns differently from the parent, and `*` would
/// then put values in the wrong columns.
pub fn take_from_default(p: &Parent, default: &Existing, periods: &[Period], columns: &[String]) -> [String; 2] {
    let cols = column_list(columns);
    [
        format!(
            "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {cols} FROM {} WITH NO DATA;",
            quote(MOVING),
            p.qualified()
        ),
        format!(
            "WITH moved AS (DELETE FROM ONLY {} WHERE {} RETURNING {cols}) INSERT INTO pg_temp.{} ({cols}) SELECT {cols} FROM moved;",
            p.partition(default),
            p.in_periods(periods),
            quote(MOVING)
        ),
    ]
}

/// Puts the rows of [`MOVING`] back through the parent (into the partitions just created):
/// `columns` are the parent's writable (non-generated) columns; identity values are kept.
pub fn put_back(p: &Parent, columns: &[String]) -> String {
    let cols = column_list(columns);
    format!(
        "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM pg_temp.{};",
        p.qualified(),
        quote(MOVING)
    )
}

/// A foreign key that references a partitioned table, as declared on its table.
///
/// PostgreSQL enforces such a key partition by partition of the referenced table, so a row
/// moved from the default partition into a new one looks deleted from the default partition,
/// and a row that references it fails the key ("is still referenced"), deferred or not; and a
/// partition with referenced rows cannot be detached. Moving such rows, or pruning such a
/// partition, takes setting the key aside: dropped before and added back after (and validated
/// again, unless it was `NOT VALID`), in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKey {
    /// The schema of the table that declares it.
    pub schema: String,
    /// The table that declares it (the referencing table).
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// Its definition, as `pg_get_constraintdef` prints it.
    pub definition: String,
    /// Its comment, if any.
    pub comment: Option<String>,
}

impl ForeignKey {
    /// `"schema"."table"`: the referencing table.
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.table))
    }

    /// `ALTER TABLE ... DROP CONSTRAINT ...;`
    pub fn drop(&self) -> String {
        format!("ALTER TABLE {} DROP CONSTRAINT {};", self.qualified_table(), quote(&self.name))
    }

    /// `ALTER TABLE ... ADD CONSTRAINT ... <definition>;` and its comment, as it was.
    pub fn add(&self) -> String {
        let mut s =
            format!("ALTER TABLE {} ADD CONSTRAINT {} {};", self.qualified_table(), quote(&self.name), self.definition);
        if let Some(comment) = &self.comment {
            s.push_str(&format!(
                "\nCOMMENT ON CONSTRAINT {} ON {} IS {};",
                quote(&self.name),
                self.qualified_table(),
                literal(comment)
            ));
        }
        s
    }
}

/// Detaches or drops a partition for retention. Dropping detaches first: a partition of a table
/// that a foreign key references (such as its own self-reference) carries that key's
/// per-partition constraints, which `DROP TABLE` refuses to drop without `CASCADE` (never used).
/// Detaching checks that no row left in the table references rows of the partition, and fails
/// naming the key when one does.
pub fn prune(p: &Parent, prune: &Prune) -> String {
    let detach = format!("ALTER TABLE {} DETACH PARTITION {};", p.qualified(), p.child(&prune.name));
    match prune.action {
        RetentionAction::Detach => detach,
        RetentionAction::Drop => format!("{detach}\nDROP TABLE {};", p.child(&prune.name)),
    }
}

/// The script that creates the partitions `spec` wants at `now` (and its default partition),
/// each `CREATE TABLE IF NOT EXISTS`: the public equivalent of the original design's
/// `generatePartitionSQL(table, monthsAhead)`, with the periods ahead in the spec. The parent is
/// named as the spec names it (unqualified: the search path decides); `key` is the type of the
/// spec's column. Rolling a live table should go through [`super::roll`] instead, which reads
/// what exists and moves rows out of the default partition.
pub fn partition_sql(spec: &PartitionSpec, key: KeyType, now: DateTime<Utc>) -> Result<String> {
    let bad = |message: String| Error::Partition { table: spec.table.clone(), message };
    spec.validate().map_err(bad)?;
    let parent = match spec.schema() {
        Some(s) => format!("{}.{}", quote(s), quote(spec.table_name())),
        None => quote(spec.table_name()),
    };
    let child = |name: &str| match spec.schema() {
        Some(s) => format!("{}.{}", quote(s), quote(name)),
        None => quote(name),
    };
    let mut out = format!(
        "-- partitions of {} on {} at {} ({:?}: {} behind, {} ahead)\n",
        spec.table,
        spec.column,
        now.date_naive(),
        spec.interval,
        spec.behind,
        spec.ahead
    );
    for w in calendar::wanted(spec, now) {
        crate::ident::validate(&w.name).map_err(|e| bad(format!("partition name: {e}")))?;
        out.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {parent} FOR VALUES FROM ({}) TO ({});\n",
            child(&w.name),
            key.literal(w.period.from),
            key.literal(w.period.to)
        ));
    }
    if spec.default_partition {
        let name = calendar::default_name(spec);
        crate::ident::validate(&name).map_err(|e| bad(format!("partition name: {e}")))?;
        out.push_str(&format!("CREATE TABLE IF NOT EXISTS {} PARTITION OF {parent} DEFAULT;\n", child(&name)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitions::plan::Bounds;
    use expect_test::{expect, Expect};

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn parent(key: KeyType) -> Parent {
        Parent { schema: "public".into(), table: "audit_events".into(), column: "event_date".into(), key }
    }

    fn check(actual: String, expect: Expect) {
        expect.assert_eq(&actual);
    }

    fn dec() -> Period {
        Period { from: d("2024-12-01"), to: d("2025-01-01") }
    }

    #[test]
    fn create_date_partition() {
        check(
            create_partition(&parent(KeyType::Date), "audit_events_2024_12", dec()),
            expect![[
                r#"CREATE TABLE "public"."audit_events_2024_12" PARTITION OF "public"."audit_events" FOR VALUES FROM ('2024-12-01') TO ('2025-01-01');"#
            ]],
        );
    }

    #[test]
    fn create_timestamptz_partition_in_utc() {
        check(
            create_partition(&parent(KeyType::Timestamptz), "audit_events_2024_12", dec()),
            expect![[
                r#"CREATE TABLE "public"."audit_events_2024_12" PARTITION OF "public"."audit_events" FOR VALUES FROM ('2024-12-01 00:00:00+00') TO ('2025-01-01 00:00:00+00');"#
            ]],
        );
        check(KeyType::Timestamp.literal(d("2024-02-29")), expect![[r#"'2024-02-29 00:00:00'"#]]);
    }

    #[test]
    fn create_default_partition() {
        check(
            create_default(&parent(KeyType::Date), "audit_events_default"),
            expect![[r#"CREATE TABLE "public"."audit_events_default" PARTITION OF "public"."audit_events" DEFAULT;"#]],
        );
    }

    #[test]
    fn odd_identifiers_are_quoted() {
        let p = Parent { schema: "My Schema".into(), table: "t\"x".into(), column: "when".into(), key: KeyType::Date };
        check(
            create_partition(&p, "t_2024_12", dec()),
            expect![[
                r#"CREATE TABLE "My Schema"."t_2024_12" PARTITION OF "My Schema"."t""x" FOR VALUES FROM ('2024-12-01') TO ('2025-01-01');"#
            ]],
        );
    }

    #[test]
    fn moving_rows_merges_contiguous_periods() {
        let jan = Period { from: d("2025-01-01"), to: d("2025-02-01") };
        let mar = Period { from: d("2025-03-01"), to: d("2025-04-01") };
        let default =
            Existing { name: "audit_events_default".into(), schema: Some("archive".into()), bounds: Bounds::Default };
        let columns = ["event_id".to_string(), "event_date".to_string(), "event_data".to_string()];
        let [create, take] = take_from_default(&parent(KeyType::Date), &default, &[jan, dec(), mar], &columns);
        check(
            create,
            expect![[
                r#"CREATE TEMPORARY TABLE "e2e_partitions_moving" ON COMMIT DROP AS SELECT "event_id", "event_date", "event_data" FROM "public"."audit_events" WITH NO DATA;"#
            ]],
        );
        check(
            take,
            expect![[
                r#"WITH moved AS (DELETE FROM ONLY "archive"."audit_events_default" WHERE ("event_date" >= '2024-12-01' AND "event_date" < '2025-02-01') OR ("event_date" >= '2025-03-01' AND "event_date" < '2025-04-01') RETURNING "event_id", "event_date", "event_data") INSERT INTO pg_temp."e2e_partitions_moving" ("event_id", "event_date", "event_data") SELECT "event_id", "event_date", "event_data" FROM moved;"#
            ]],
        );
        check(
            parent(KeyType::Date).in_periods(&[dec()]),
            expect![[r#""event_date" >= '2024-12-01' AND "event_date" < '2025-01-01'"#]],
        );
    }

    #[test]
    fn putting_rows_back_names_the_columns() {
        check(
            put_back(&parent(KeyType::Date), &["event_id".into(), "event_date".into()]),
            expect![[
                r#"INSERT INTO "public"."audit_events" ("event_id", "event_date") OVERRIDING SYSTEM VALUE SELECT "event_id", "event_date" FROM pg_temp."e2e_partitions_moving";"#
            ]],
        );
    }

    #[test]
    fn foreign_keys_are_set_aside_and_added_back_as_they_were() {
        let fk = ForeignKey {
            schema: "public".into(),
            table: "audit_events".into(),
            name: "fk_audit_events_parent".into(),
            definition: "FOREIGN KEY (parent_event_id, parent_event_date) REFERENCES audit_events(event_id, event_date) ON DELETE RESTRICT".into(),
            comment: None,
        };
        check(fk.drop(), expect![[r#"ALTER TABLE "public"."audit_events" DROP CONSTRAINT "fk_audit_events_parent";"#]]);
        check(
            fk.add(),
            expect![[
                r#"ALTER TABLE "public"."audit_events" ADD CONSTRAINT "fk_audit_events_parent" FOREIGN KEY (parent_event_id, parent_event_date) REFERENCES audit_events(event_id, event_date) ON DELETE RESTRICT;"#
            ]],
        );
        let fk = ForeignKey {
            table: "odd \"name\"".into(),
            comment: Some("the parent's event".into()),
            definition: "FOREIGN KEY (p) REFERENCES audit_events(event_id) NOT VALID".into(),
            ..fk
        };
        check(
            fk.add(),
            expect![[r#"
            ALTER TABLE "public"."odd ""name""" ADD CONSTRAINT "fk_audit_events_parent" FOREIGN KEY (p) REFERENCES audit_events(event_id) NOT VALID;
            COMMENT ON CONSTRAINT "fk_audit_events_parent" ON "public"."odd ""name""" IS 'the parent''s event';"#]],
        );
    }

    #[test]
    fn prune_detaches_or_drops() {
        let p = |action| Prune { name: "audit_events_2024_01".into(), period: dec(), action };
        check(
            prune(&parent(KeyType::Date), &p(RetentionAction::Detach)),
            expect![[r#"ALTER TABLE "public"."audit_events" DETACH PARTITION "public"."audit_events_2024_01";"#]],
        );
        check(
            prune(&parent(KeyType::Date), &p(RetentionAction::Drop)),
            expect![[r#"
                ALTER TABLE "public"."audit_events" DETACH PARTITION "public"."audit_events_2024_01";
                DROP TABLE "public"."audit_events_2024_01";"#]],
        );
    }

    #[test]
    fn lock_statements() {
        check(
            lock_parent(&parent(KeyType::Date)),
            expect![[r#"LOCK TABLE ONLY "public"."audit_events" IN ACCESS EXCLUSIVE MODE;"#]],
        );
        let default = Existing { name: "audit_events_default".into(), schema: None, bounds: Bounds::Default };
        check(
            lock(&parent(KeyType::Date), &default),
            expect![[r#"LOCK TABLE ONLY "public"."audit_events_default" IN ACCESS EXCLUSIVE MODE;"#]],
        );
    }

    #[test]
    fn partition_sql_for_audit_events_in_december() {
        let spec = PartitionSpec::monthly("audit_events", "event_date");
        let now = d("2024-12-15").and_hms_opt(12, 0, 0).unwrap().and_utc();
        check(
            partition_sql(&spec, KeyType::Date, now).unwrap(),
            expect![[r#"
                -- partitions of audit_events on event_date at 2024-12-15 (Monthly: 1 behind, 3 ahead)
                CREATE TABLE IF NOT EXISTS "audit_events_2024_11" PARTITION OF "audit_events" FOR VALUES FROM ('2024-11-01') TO ('2024-12-01');
                CREATE TABLE IF NOT EXISTS "audit_events_2024_12" PARTITION OF "audit_events" FOR VALUES FROM ('2024-12-01') TO ('2025-01-01');
                CREATE TABLE IF NOT EXISTS "audit_events_2025_01" PARTITION OF "audit_events" FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
                CREATE TABLE IF NOT EXISTS "audit_events_2025_02" PARTITION OF "audit_events" FOR VALUES FROM ('2025-02-01') TO ('2025-03-01');
                CREATE TABLE IF NOT EXISTS "audit_events_2025_03" PARTITION OF "audit_events" FOR VALUES FROM ('2025-03-01') TO ('2025-04-01');
                CREATE TABLE IF NOT EXISTS "audit_events_default" PARTITION OF "audit_events" DEFAULT;
            "#]],
        );
    }

    #[test]
    fn partition_sql_qualified_legacy_names_weekly_timestamptz() {
        let spec = PartitionSpec {
            interval: crate::partitions::Interval::Weekly,
            behind: 0,
            ahead: 1,
            name: Some("{table}_y{yyyy}w{ww}".into()),
            default_partition: false,
            ..PartitionSpec::monthly("ops.events", "at")
        };
        let now = d("2024-12-31").and_hms_opt(0, 0, 0).unwrap().and_utc();
        check(
            partition_sql(&spec, KeyType::Timestamptz, now).unwrap(),
            expect![[r#"
                -- partitions of ops.events on at at 2024-12-31 (Weekly: 0 behind, 1 ahead)
                CREATE TABLE IF NOT EXISTS "ops"."events_y2025w01" PARTITION OF "ops"."events" FOR VALUES FROM ('2024-12-30 00:00:00+00') TO ('2025-01-06 00:00:00+00');
                CREATE TABLE IF NOT EXISTS "ops"."events_y2025w02" PARTITION OF "ops"."events" FOR VALUES FROM ('2025-01-06 00:00:00+00') TO ('2025-01-13 00:00:00+00');
            "#]],
        );
    }

    #[test]
    fn partition_sql_refuses_a_bad_spec() {
        let spec = PartitionSpec::monthly("audit-events", "event_date");
        let e = partition_sql(&spec, KeyType::Date, Utc::now()).unwrap_err().to_string();
        assert!(e.starts_with("partition spec for audit-events: table: identifier \"audit-events\""), "{e}");
    }
}
