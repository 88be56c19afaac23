//! The SQL of partitions (pure): creating, moving rows out of the default partition (as
//! maintenance: detach it, copy the rows into new tables, attach them all; and setting aside the
//! foreign keys that reference the table when they refuse), pruning.
//!
//! Every identifier is quoted, every partition is created in its parent's schema, and bounds are
//! literals of the key's type: `'2024-12-01'` for `date`, `'2024-12-01 00:00:00'` for
//! `timestamp`, `'2024-12-01 00:00:00+00'` (UTC, whatever the session's time zone) for
//! `timestamptz`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::calendar::{self, Period};
use super::reconcile::{Existing, PlanError, Prune};
use super::spec::{PartitionSpec, RetentionAction};
use crate::core::{Error, Result};
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

    /// The SQL type name.
    pub fn sql_type(self) -> &'static str {
        match self {
            KeyType::Date => "date",
            KeyType::Timestamp => "timestamp",
            KeyType::Timestamptz => "timestamptz",
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
        self.in_periods_of(None, periods)
    }

    /// [`Parent::in_periods`] with the key qualified by a table alias.
    fn in_periods_of(&self, alias: Option<&str>, periods: &[Period]) -> String {
        let mut sorted = periods.to_vec();
        sorted.sort();
        let mut merged: Vec<Period> = Vec::new();
        for p in sorted {
            match merged.last_mut() {
                Some(last) if last.to >= p.from => last.to = last.to.max(p.to),
                _ => merged.push(p),
            }
        }
        let col = match alias {
            Some(a) => format!("{}.{}", quote(a), quote(&self.column)),
            None => quote(&self.column),
        };
        let one = |p: &Period| format!("{col} >= {} AND {col} < {}", self.key.literal(p.from), self.key.literal(p.to));
        match merged.as_slice() {
            [] => "false".to_string(),
            [p] => one(p),
            many => many.iter().map(|p| format!("({})", one(p))).collect::<Vec<_>>().join(" OR "),
        }
    }
}

/// The savepoint a roll takes before a step that a foreign key may refuse (moving rows,
/// pruning), to run it again once with the keys that reference the table set aside.
pub const BEFORE_KEYS: &str = "e2e_partitions_before_keys";

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

/// Counts the rows of the default partition in each of `periods` (sorted by start, not
/// overlapping): one row `(i, count)` per period holding rows, `i` its 1-based position (the
/// number of period starts at or before the key, which the filter keeps inside a period).
pub fn count_in_periods(p: &Parent, default: &Existing, periods: &[Period]) -> String {
    debug_assert!(periods.windows(2).all(|w| w[0].to <= w[1].from), "sorted, not overlapping");
    let starts = periods.iter().map(|x| p.key.literal(x.from)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT width_bucket({}, ARRAY[{starts}]::{}[])::int4, count(*) FROM ONLY {} WHERE {} GROUP BY 1 ORDER BY 1",
        quote(&p.column),
        p.key.sql_type(),
        p.partition(default),
        p.in_periods(periods)
    )
}

/// `ALTER TABLE ... DETACH PARTITION ...;`: the default partition, before rows move out of it.
///
/// PostgreSQL 15 drops the partition's clones of the parent's triggers (so that deleting from it
/// fires none of them), turns its clones of the parent's foreign keys into keys of its own (which
/// attaching merges back), and refuses (naming the key's clone) while rows of it are referenced
/// through a key on the parent. It locks the tables whose keys reference the parent (`ACCESS
/// EXCLUSIVE`) and those the parent's keys reference (`SHARE ROW EXCLUSIVE`).
pub fn detach(p: &Parent, e: &Existing) -> String {
    format!("ALTER TABLE {} DETACH PARTITION {};", p.qualified(), p.partition(e))
}

/// A table shaped as a partition of the parent, standing alone: the parent's columns in its
/// order, with their types, `NOT NULL`, defaults, generation expressions, storage and
/// compression, and its `CHECK` constraints (which attaching requires), in the parent's
/// tablespace. No trigger, index or foreign key: attaching clones those from the parent, builds
/// the indexes and checks every row against the keys. Identity stays the parent's (a partition
/// has none of its own).
pub fn create_standalone(p: &Parent, name: &str, tablespace: Option<&str>) -> String {
    let space = tablespace.map(|t| format!(" TABLESPACE {}", quote(t))).unwrap_or_default();
    format!(
        "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION){space};",
        p.child(name),
        p.qualified()
    )
}

/// Copies the rows of `period` from the default partition into the standalone table `name`, by
/// column name (`columns`: the parent's non-generated columns; a default partition attached by
/// hand may order its columns differently). Generated columns are computed again from the same
/// values, so they come out as they were. The row count is the number of rows copied.
pub fn copy_rows(p: &Parent, name: &str, default: &Existing, period: Period, columns: &[String]) -> String {
    let cols = column_list(columns);
    format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM ONLY {} WHERE {};",
        p.child(name),
        p.partition(default),
        p.in_periods(&[period])
    )
}

/// Deletes the copied rows from the (detached) default partition; the row count is the number
/// of rows deleted.
pub fn delete_moved(p: &Parent, default: &Existing, periods: &[Period]) -> String {
    format!("DELETE FROM ONLY {} WHERE {};", p.partition(default), p.in_periods(periods))
}

/// `ALTER TABLE ... ATTACH PARTITION ... FOR VALUES FROM (...) TO (...);`: a filled standalone
/// table becomes the period's partition (its rows are checked against the range and the keys).
pub fn attach(p: &Parent, name: &str, period: Period) -> String {
    format!(
        "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({});",
        p.qualified(),
        p.child(name),
        p.key.literal(period.from),
        p.key.literal(period.to)
    )
}

/// `ALTER TABLE ... ATTACH PARTITION ... DEFAULT;`: the default partition back, its rows checked
/// against every other partition's range.
pub fn attach_default(p: &Parent, e: &Existing) -> String {
    format!("ALTER TABLE {} ATTACH PARTITION {} DEFAULT;", p.qualified(), p.partition(e))
}

/// A user trigger of the default partition itself (not a clone of the parent's, which detaching
/// drops) that deleting from it would fire, and the state to put it back in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnTrigger {
    /// Its name.
    pub name: String,
    /// `pg_trigger.tgenabled`: `O` (enabled), `A` (always) or `R` (replica).
    pub enabled: char,
}

/// Turns a trigger of the default partition off while rows move out of it.
pub fn disable_trigger(p: &Parent, default: &Existing, t: &OwnTrigger) -> String {
    format!("ALTER TABLE {} DISABLE TRIGGER {};", p.partition(default), quote(&t.name))
}

/// Puts a trigger of the default partition back in the state it was in.
pub fn restore_trigger(p: &Parent, default: &Existing, t: &OwnTrigger) -> String {
    let how = match t.enabled {
        'A' => "ENABLE ALWAYS",
        'R' => "ENABLE REPLICA",
        _ => "ENABLE",
    };
    format!("ALTER TABLE {} {how} TRIGGER {};", p.partition(default), quote(&t.name))
}

/// A foreign key that references the default partition itself, not the parent: the roll cannot
/// set it aside, and moving a row it references would break it, or cascade into its table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectKey {
    /// The referencing table's schema.
    pub schema: String,
    /// The referencing table.
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// Its columns, in key order.
    pub columns: Vec<String>,
    /// The default partition's columns they reference, in the same order.
    pub referenced: Vec<String>,
    /// `pg_constraint.confdeltype`: `a` no action, `r` restrict, `c` cascade, `n` set null, `d`
    /// set default.
    pub on_delete: char,
}

impl DirectKey {
    /// What deleting a referenced row would do, in words.
    pub fn on_delete_words(&self) -> &'static str {
        match self.on_delete {
            'c' => "ON DELETE CASCADE",
            'n' => "ON DELETE SET NULL",
            'd' => "ON DELETE SET DEFAULT",
            'r' => "ON DELETE RESTRICT",
            _ => "ON DELETE NO ACTION",
        }
    }
}

/// Counts the rows of the key's table that reference rows of the default partition in `periods`.
pub fn rows_referencing(p: &Parent, default: &Existing, key: &DirectKey, periods: &[Period]) -> String {
    let pairs: Vec<String> =
        key.columns.iter().zip(&key.referenced).map(|(c, r)| format!("d.{} = r.{}", quote(r), quote(c))).collect();
    format!(
        "SELECT count(*) FROM {}.{} r WHERE EXISTS (SELECT 1 FROM ONLY {} d WHERE {} AND ({}))",
        quote(&key.schema),
        quote(&key.table),
        p.partition(default),
        pairs.join(" AND "),
        p.in_periods_of(Some("d"), periods)
    )
}

/// A foreign key that references a partitioned table, as declared on its table.
///
/// PostgreSQL enforces such a key partition by partition of the referenced table: a partition
/// whose rows are referenced (even only by rows of its own, as `audit_events`' parent event key
/// does) cannot be detached, so neither moved out of (the default partition) nor pruned; and a
/// row moved to another partition looks deleted from the first. Moving or pruning such rows takes
/// setting the key aside: dropped before and added back after (and validated again, unless it
/// was `NOT VALID`), in the same transaction.
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
/// spec's column. Rolling a live table should go through [`super::roll()`] instead, which reads
/// what exists and moves rows out of the default partition.
pub fn partition_sql(spec: &PartitionSpec, key: KeyType, now: DateTime<Utc>) -> Result<String> {
    spec.validate().map_err(|e| Error::InvalidSpec { table: spec.table.clone(), source: Box::new(e) })?;
    let bad_name = |e| Error::PartitionPlan { table: spec.table.clone(), source: PlanError::BadName(e) };
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
        crate::ident::validate(&w.name).map_err(bad_name)?;
        out.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {parent} FOR VALUES FROM ({}) TO ({});\n",
            child(&w.name),
            key.literal(w.period.from),
            key.literal(w.period.to)
        ));
    }
    if spec.default_partition {
        let name = calendar::default_name(spec);
        crate::ident::validate(&name).map_err(bad_name)?;
        out.push_str(&format!("CREATE TABLE IF NOT EXISTS {} PARTITION OF {parent} DEFAULT;\n", child(&name)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitions::reconcile::Bounds;
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
    fn moving_rows_detaches_copies_by_name_deletes_and_attaches() {
        let jan = Period { from: d("2025-01-01"), to: d("2025-02-01") };
        let mar = Period { from: d("2025-03-01"), to: d("2025-04-01") };
        let default =
            Existing { name: "audit_events_default".into(), schema: Some("archive".into()), bounds: Bounds::Default };
        let p = parent(KeyType::Date);
        check(
            count_in_periods(&p, &default, &[dec(), jan, mar]),
            expect![[
                r#"SELECT width_bucket("event_date", ARRAY['2024-12-01', '2025-01-01', '2025-03-01']::date[])::int4, count(*) FROM ONLY "archive"."audit_events_default" WHERE ("event_date" >= '2024-12-01' AND "event_date" < '2025-02-01') OR ("event_date" >= '2025-03-01' AND "event_date" < '2025-04-01') GROUP BY 1 ORDER BY 1"#
            ]],
        );
        check(
            detach(&p, &default),
            expect![[r#"ALTER TABLE "public"."audit_events" DETACH PARTITION "archive"."audit_events_default";"#]],
        );
        check(
            create_standalone(&p, "audit_events_2025_01", None),
            expect![[
                r#"CREATE TABLE "public"."audit_events_2025_01" (LIKE "public"."audit_events" INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION);"#
            ]],
        );
        check(
            create_standalone(&p, "audit_events_2025_01", Some("fast ssd")),
            expect![[
                r#"CREATE TABLE "public"."audit_events_2025_01" (LIKE "public"."audit_events" INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION) TABLESPACE "fast ssd";"#
            ]],
        );
        let columns = ["event_id".to_string(), "event_date".to_string(), "event_data".to_string()];
        check(
            copy_rows(&p, "audit_events_2025_01", &default, jan, &columns),
            expect![[
                r#"INSERT INTO "public"."audit_events_2025_01" ("event_id", "event_date", "event_data") SELECT "event_id", "event_date", "event_data" FROM ONLY "archive"."audit_events_default" WHERE "event_date" >= '2025-01-01' AND "event_date" < '2025-02-01';"#
            ]],
        );
        check(
            delete_moved(&p, &default, &[jan, dec(), mar]),
            expect![[
                r#"DELETE FROM ONLY "archive"."audit_events_default" WHERE ("event_date" >= '2024-12-01' AND "event_date" < '2025-02-01') OR ("event_date" >= '2025-03-01' AND "event_date" < '2025-04-01');"#
            ]],
        );
        check(
            attach(&p, "audit_events_2025_01", jan),
            expect![[
                r#"ALTER TABLE "public"."audit_events" ATTACH PARTITION "public"."audit_events_2025_01" FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');"#
            ]],
        );
        check(
            attach_default(&p, &default),
            expect![[
                r#"ALTER TABLE "public"."audit_events" ATTACH PARTITION "archive"."audit_events_default" DEFAULT;"#
            ]],
        );
        check(
            parent(KeyType::Date).in_periods(&[dec()]),
            expect![[r#""event_date" >= '2024-12-01' AND "event_date" < '2025-01-01'"#]],
        );
        check(
            count_in_periods(&parent(KeyType::Timestamptz), &default, &[dec()]),
            expect![[
                r#"SELECT width_bucket("event_date", ARRAY['2024-12-01 00:00:00+00']::timestamptz[])::int4, count(*) FROM ONLY "archive"."audit_events_default" WHERE "event_date" >= '2024-12-01 00:00:00+00' AND "event_date" < '2025-01-01 00:00:00+00' GROUP BY 1 ORDER BY 1"#
            ]],
        );
    }

    #[test]
    fn own_triggers_of_the_default_partition_are_put_back_as_they_were() {
        let default = Existing { name: "audit_events_default".into(), schema: None, bounds: Bounds::Default };
        let p = parent(KeyType::Date);
        let t = |enabled| OwnTrigger { name: "keep \"forever\"".into(), enabled };
        check(
            disable_trigger(&p, &default, &t('A')),
            expect![[r#"ALTER TABLE "public"."audit_events_default" DISABLE TRIGGER "keep ""forever""";"#]],
        );
        check(
            restore_trigger(&p, &default, &t('O')),
            expect![[r#"ALTER TABLE "public"."audit_events_default" ENABLE TRIGGER "keep ""forever""";"#]],
        );
        check(
            restore_trigger(&p, &default, &t('A')),
            expect![[r#"ALTER TABLE "public"."audit_events_default" ENABLE ALWAYS TRIGGER "keep ""forever""";"#]],
        );
        check(
            restore_trigger(&p, &default, &t('R')),
            expect![[r#"ALTER TABLE "public"."audit_events_default" ENABLE REPLICA TRIGGER "keep ""forever""";"#]],
        );
    }

    #[test]
    fn rows_referencing_the_default_partition_directly_are_counted_by_key_columns() {
        let default = Existing { name: "audit_events_default".into(), schema: None, bounds: Bounds::Default };
        let key = DirectKey {
            schema: "public".into(),
            table: "notes".into(),
            name: "fk_notes_event".into(),
            columns: vec!["event_id".into(), "event_date".into()],
            referenced: vec!["event_id".into(), "event_date".into()],
            on_delete: 'c',
        };
        assert_eq!(key.on_delete_words(), "ON DELETE CASCADE");
        check(
            rows_referencing(&parent(KeyType::Date), &default, &key, &[dec()]),
            expect![[
                r#"SELECT count(*) FROM "public"."notes" r WHERE EXISTS (SELECT 1 FROM ONLY "public"."audit_events_default" d WHERE d."event_id" = r."event_id" AND d."event_date" = r."event_date" AND ("d"."event_date" >= '2024-12-01' AND "d"."event_date" < '2025-01-01'))"#
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
        let now = DateTime::parse_from_rfc3339("2024-12-15T12:00:00Z").unwrap().with_timezone(&Utc);
        let e = crate::core::report(&partition_sql(&spec, KeyType::Date, now).unwrap_err());
        assert!(e.starts_with("partition spec for audit-events: table: identifier \"audit-events\""), "{e}");
    }
}
