//! What a migration cannot run inside its transaction (pure): transaction control, and the
//! statements PostgreSQL refuses inside a transaction block, found before any connection.
//!
//! A migration without `-- +goose NO TRANSACTION` runs in one transaction together with its
//! tracking rows. A `COMMIT` (or `ROLLBACK`, `BEGIN`, `SAVEPOINT`, ...) in the file would end or
//! bend that transaction, so the migration could be half-committed, or recorded without its SQL
//! having run; and the statements that PostgreSQL refuses in a transaction block (its
//! `PreventInTransactionBlock` callers) can only fail there. Each goose statement may hold several
//! SQL statements (a `StatementBegin` block, or two on one line): every top-level one is read, at
//! psql's statement boundaries ([`crate::scan::Boundary`]); quoted text, comments, dollar bodies
//! and SQL-standard bodies (`BEGIN ATOMIC ... END`) are never read as statements.
//!
//! The statements refused up front are those that always fail or end the transaction, whatever
//! the database holds (checked against PostgreSQL 15 by `tests/it/txblock.rs`):
//! - transaction control: `BEGIN`, `START TRANSACTION`, `COMMIT`, `END`, `ROLLBACK` (also `TO
//!   SAVEPOINT`), `ABORT`, `SAVEPOINT`, `RELEASE`, `PREPARE TRANSACTION`, `COMMIT PREPARED`,
//!   `ROLLBACK PREPARED`;
//! - refused in a transaction block: `VACUUM`, `CREATE`/`DROP INDEX CONCURRENTLY`, `REINDEX ...
//!   CONCURRENTLY` (also `REINDEX (CONCURRENTLY)`), `REINDEX SCHEMA|DATABASE|SYSTEM`, `CREATE`/`DROP
//!   DATABASE`, `CREATE`/`DROP TABLESPACE`, `ALTER SYSTEM`, `ALTER DATABASE ... SET TABLESPACE`,
//!   `CLUSTER` without a table, `DISCARD ALL`, `ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY`,
//!   `CREATE SUBSCRIPTION` (unless `connect` or `create_slot` is false), `ALTER SUBSCRIPTION ...
//!   REFRESH PUBLICATION`, `ALTER SUBSCRIPTION ... SET|ADD|DROP PUBLICATION` (unless `refresh` is
//!   false);
//! - `COPY ... FROM STDIN` / `TO STDOUT`, which need a client that streams the data (psql), in
//!   any migration.
//!
//! Left to the server, which then fails the statement and rolls the migration back: those whose
//! refusal depends on the catalog (`CLUSTER` of a partitioned table, `DROP SUBSCRIPTION` of one
//! with a slot) and a `COMMIT` inside a procedure or `DO` block (PostgreSQL refuses it inside a
//! transaction block). The migrator guards its tracking rows as well ([`crate::batch`]), so
//! whatever slips past this check is never recorded as applied.

use crate::goose::{ParsedSql, Statement};
use crate::scan::{lex, Boundary, LexState, Token, TokenKind};

/// One top-level SQL statement of a goose statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlStatement {
    /// Its tokens, without the `;` that ends it (offsets index [`Split::chars`]).
    pub tokens: Vec<Token>,
}

impl SqlStatement {
    /// The offset (in characters) of its first token.
    pub fn start(&self) -> usize {
        self.tokens.first().map(|t| t.start).unwrap_or(0)
    }
}

/// A goose statement cut into its top-level SQL statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The goose statement's text, as characters.
    pub chars: Vec<char>,
    /// Its non-empty SQL statements, in order (an empty one, `;;`, is no statement to PostgreSQL
    /// either).
    pub statements: Vec<SqlStatement>,
    /// Whether the text ends (ignoring comments) with a `;` that ends its last statement.
    pub terminated: bool,
}

/// Cuts `sql` (one goose statement) into its top-level SQL statements, at psql's boundaries.
pub fn split(sql: &str) -> Split {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    lex(&LexState::Normal, &chars, &mut tokens);
    let mut boundary = Boundary::default();
    let mut statements = Vec::new();
    let mut current = Vec::new();
    let mut terminated = false;
    for t in tokens {
        terminated = boundary.feed(&t, &chars, 0);
        if terminated {
            if !current.is_empty() {
                statements.push(SqlStatement { tokens: std::mem::take(&mut current) });
            }
        } else {
            current.push(t);
        }
    }
    if !current.is_empty() {
        statements.push(SqlStatement { tokens: current });
    }
    Split { chars, statements, terminated }
}

/// Why a statement cannot run in a migration's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It begins, ends or bends a transaction.
    TransactionControl,
    /// PostgreSQL refuses it inside a transaction block.
    NotInTransactionBlock,
    /// `COPY` from or to the client, which needs a client that streams the data.
    ClientCopy,
}

/// A statement that cannot run in a migration's transaction: what it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The statement as PostgreSQL names it, e.g. `CREATE INDEX CONCURRENTLY`.
    pub what: String,
    /// Why.
    pub reason: Reason,
}

fn refusal(what: &str, reason: Reason) -> Option<Refusal> {
    Some(Refusal { what: what.to_string(), reason })
}

/// A cursor over one statement's tokens.
struct Words<'a> {
    chars: &'a [char],
    toks: &'a [Token],
}

impl Words<'_> {
    fn is(&self, i: usize, word: &str) -> bool {
        self.toks.get(i).is_some_and(|t| t.is_word(self.chars, word))
    }

    fn kind(&self, i: usize) -> Option<TokenKind> {
        self.toks.get(i).map(|t| t.kind)
    }

    fn text(&self, i: usize) -> String {
        self.toks.get(i).map(|t| t.text(self.chars)).unwrap_or_default()
    }

    fn is_name(&self, i: usize) -> bool {
        matches!(self.kind(i), Some(TokenKind::Word | TokenKind::QuotedIdent))
    }

    /// Past a possibly qualified name starting at `i` (`a`, `"a"."b"`): the next index.
    fn skip_name(&self, mut i: usize) -> usize {
        if !self.is_name(i) {
            return i;
        }
        i += 1;
        while self.text(i) == "." && self.is_name(i + 1) {
            i += 2;
        }
        i
    }

    /// The index after the `)` that closes the `(` at `open`.
    fn skip_parens(&self, open: usize) -> usize {
        let mut depth = 0;
        for (i, t) in self.toks.iter().enumerate().skip(open) {
            match t.kind {
                TokenKind::Open => depth += 1,
                TokenKind::Close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
        }
        self.toks.len()
    }

    /// The `name [= value]` options of the parenthesised list opening at `open`, names lowercased;
    /// the value is `None` when the option has none.
    fn options(&self, open: usize) -> Vec<(String, Option<String>)> {
        let end = self.skip_parens(open).saturating_sub(1);
        let mut out = Vec::new();
        let mut i = open + 1;
        while i < end {
            let name = self.text(i).to_ascii_lowercase();
            let mut j = i + 1;
            if self.text(j) == "=" {
                j += 1;
            }
            let value = (j < end && self.text(j) != ",").then(|| self.text(j).trim_matches('\'').to_ascii_lowercase());
            out.push((name, value));
            while j < end && self.text(j) != "," {
                j += 1;
            }
            i = j + 1;
        }
        out
    }

    /// Whether the options list at `open` sets `name` to false (`false`, `off`, `0`).
    fn option_false(&self, open: usize, name: &str) -> bool {
        self.options(open)
            .iter()
            .any(|(n, v)| n == name && matches!(v.as_deref(), Some("false") | Some("off") | Some("0")))
    }

    /// Whether the options list at `open` turns `name` on (present, without a false value).
    fn option_on(&self, open: usize, name: &str) -> bool {
        self.options(open)
            .iter()
            .any(|(n, v)| n == name && !matches!(v.as_deref(), Some("false") | Some("off") | Some("0")))
    }

    /// The index of the `WITH (` options list at the statement's top level, if any.
    fn with_options(&self) -> Option<usize> {
        let mut depth = 0;
        for (i, t) in self.toks.iter().enumerate() {
            match t.kind {
                TokenKind::Open => depth += 1,
                TokenKind::Close => depth -= 1,
                _ if depth == 0 && self.is(i, "with") && self.kind(i + 1) == Some(TokenKind::Open) => {
                    return Some(i + 1)
                }
                _ => {}
            }
        }
        None
    }

    /// Whether `first` followed by `second` appears at the statement's top level.
    fn has_pair(&self, first: &str, second: &str) -> bool {
        let mut depth = 0;
        (0..self.toks.len()).any(|i| {
            match self.kind(i) {
                Some(TokenKind::Open) => depth += 1,
                Some(TokenKind::Close) => depth -= 1,
                _ => {}
            }
            depth == 0 && self.is(i, first) && self.is(i + 1, second)
        })
    }
}

/// Whether one top-level statement (its tokens) cannot run in a migration's transaction.
pub fn classify(chars: &[char], toks: &[Token]) -> Option<Refusal> {
    use Reason::*;
    let w = Words { chars, toks };
    let first = w.text(0).to_ascii_uppercase();
    if w.kind(0) != Some(TokenKind::Word) {
        return None;
    }
    match first.as_str() {
        "BEGIN" | "COMMIT" | "END" | "ABORT" | "SAVEPOINT" | "RELEASE" => {
            if first == "COMMIT" && w.is(1, "prepared") {
                return refusal("COMMIT PREPARED", TransactionControl);
            }
            refusal(&first, TransactionControl)
        }
        "ROLLBACK" => {
            if w.is(1, "prepared") {
                refusal("ROLLBACK PREPARED", TransactionControl)
            } else if w.is(1, "to") {
                refusal("ROLLBACK TO SAVEPOINT", TransactionControl)
            } else {
                refusal("ROLLBACK", TransactionControl)
            }
        }
        "START" if w.is(1, "transaction") => refusal("START TRANSACTION", TransactionControl),
        // `PREPARE name AS ...` prepares a statement; `PREPARE TRANSACTION 'id'` ends the transaction.
        "PREPARE" if w.is(1, "transaction") && w.kind(2) == Some(TokenKind::String) => {
            refusal("PREPARE TRANSACTION", TransactionControl)
        }
        "VACUUM" => refusal("VACUUM", NotInTransactionBlock),
        "DISCARD" if w.is(1, "all") => refusal("DISCARD ALL", NotInTransactionBlock),
        "CREATE" => {
            let i = if w.is(1, "unique") { 2 } else { 1 };
            if w.is(i, "index") && w.is(i + 1, "concurrently") {
                return refusal("CREATE INDEX CONCURRENTLY", NotInTransactionBlock);
            }
            if w.is(1, "database") {
                return refusal("CREATE DATABASE", NotInTransactionBlock);
            }
            if w.is(1, "tablespace") {
                return refusal("CREATE TABLESPACE", NotInTransactionBlock);
            }
            if w.is(1, "subscription") {
                let off =
                    w.with_options().is_some_and(|o| w.option_false(o, "connect") || w.option_false(o, "create_slot"));
                if !off {
                    return refusal("CREATE SUBSCRIPTION ... WITH (create_slot = true)", NotInTransactionBlock);
                }
            }
            None
        }
        "DROP" => {
            if w.is(1, "index") && w.is(2, "concurrently") {
                return refusal("DROP INDEX CONCURRENTLY", NotInTransactionBlock);
            }
            if w.is(1, "database") {
                return refusal("DROP DATABASE", NotInTransactionBlock);
            }
            if w.is(1, "tablespace") {
                return refusal("DROP TABLESPACE", NotInTransactionBlock);
            }
            None
        }
        "REINDEX" => {
            let mut i = 1;
            if w.kind(1) == Some(TokenKind::Open) {
                if w.option_on(1, "concurrently") {
                    return refusal("REINDEX CONCURRENTLY", NotInTransactionBlock);
                }
                i = w.skip_parens(1);
            }
            for kind in ["schema", "database", "system"] {
                if w.is(i, kind) {
                    return refusal(&format!("REINDEX {}", kind.to_ascii_uppercase()), NotInTransactionBlock);
                }
            }
            if w.is(i + 1, "concurrently") {
                return refusal("REINDEX CONCURRENTLY", NotInTransactionBlock);
            }
            None
        }
        "CLUSTER" => {
            let i = if w.is(1, "verbose") { 2 } else { 1 };
            (i >= toks.len())
                .then(|| Refusal { what: "CLUSTER without a table".to_string(), reason: NotInTransactionBlock })
        }
        "ALTER" => {
            if w.is(1, "system") {
                return refusal("ALTER SYSTEM", NotInTransactionBlock);
            }
            if w.is(1, "database") && w.is(3, "set") && w.is(4, "tablespace") && w.is_name(5) {
                return refusal("ALTER DATABASE ... SET TABLESPACE", NotInTransactionBlock);
            }
            if w.is(1, "table") {
                let detach = (0..toks.len()).find(|&i| w.is(i, "detach") && w.is(i + 1, "partition"));
                if let Some(i) = detach {
                    if w.is(w.skip_name(i + 2), "concurrently") {
                        return refusal("ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY", NotInTransactionBlock);
                    }
                }
                return None;
            }
            if w.is(1, "subscription") {
                if w.is(3, "refresh") && w.is(4, "publication") {
                    return refusal("ALTER SUBSCRIPTION ... REFRESH PUBLICATION", NotInTransactionBlock);
                }
                if ["set", "add", "drop"].iter().any(|v| w.is(3, v)) && w.is(4, "publication") {
                    let off = w.with_options().is_some_and(|o| w.option_false(o, "refresh"));
                    if !off {
                        return refusal("ALTER SUBSCRIPTION ... PUBLICATION with refresh", NotInTransactionBlock);
                    }
                }
            }
            None
        }
        "COPY" => {
            if w.has_pair("from", "stdin") {
                refusal("COPY ... FROM STDIN", ClientCopy)
            } else if w.has_pair("to", "stdout") {
                refusal("COPY ... TO STDOUT", ClientCopy)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A statement the engine refuses to run, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line in the file.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

fn message(r: &Refusal, no_transaction: bool) -> String {
    let what = &r.what;
    match (r.reason, no_transaction) {
        (Reason::TransactionControl, _) => format!(
            "{what} in a migration that runs in a transaction: the engine opens and commits that transaction itself, \
             together with the version's tracking rows; remove the statement, or mark the file \
             `-- +goose NO TRANSACTION` to manage transactions yourself"
        ),
        (Reason::NotInTransactionBlock, false) => format!(
            "{what} cannot run inside a transaction block, and this migration runs in one: mark the file \
             `-- +goose NO TRANSACTION` (its statements then run one at a time, outside a transaction)"
        ),
        (Reason::NotInTransactionBlock, true) => format!(
            "{what} cannot run inside a transaction block, and PostgreSQL runs a goose statement holding several SQL \
             statements as one transaction: give it a statement of its own (its own line ending in `;`, or its own \
             StatementBegin block)"
        ),
        (Reason::ClientCopy, _) => format!(
            "{what} needs a client that streams the rows (psql does; goose and this engine send SQL only): insert \
             them with INSERT, or COPY from a file on the server"
        ),
    }
}

/// The statements of `parsed` (both sections) that cannot run as the migration runs them, in
/// file order.
pub fn check(parsed: &ParsedSql) -> Vec<Finding> {
    let mut out = Vec::new();
    for stmt in parsed.up.iter().chain(parsed.down.iter()) {
        check_statement(stmt, parsed.no_transaction, &mut out);
    }
    out.sort_by_key(|f| (f.line, f.column));
    out
}

fn check_statement(stmt: &Statement, no_transaction: bool, out: &mut Vec<Finding>) {
    let split = split(&stmt.sql);
    let several = split.statements.len() > 1;
    for s in &split.statements {
        let Some(r) = classify(&split.chars, &s.tokens) else { continue };
        let refused = match r.reason {
            Reason::TransactionControl => !no_transaction,
            Reason::NotInTransactionBlock => !no_transaction || several,
            Reason::ClientCopy => true,
        };
        if refused {
            let (line, column) = stmt.position(s.start());
            out.push(Finding { line, column, message: message(&r, no_transaction) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goose::parse;

    fn what(sql: &str) -> Option<String> {
        let s = split(sql);
        assert_eq!(s.statements.len(), 1, "{sql}");
        classify(&s.chars, &s.statements[0].tokens).map(|r| r.what)
    }

    fn findings(file: &str) -> Vec<(usize, usize, String)> {
        let p = parse(file, &|_| None).unwrap();
        check(&p).into_iter().map(|f| (f.line, f.column, f.message)).collect()
    }

    #[test]
    fn transaction_control_is_found() {
        for (sql, want) in [
            ("BEGIN", "BEGIN"),
            ("begin transaction isolation level serializable", "BEGIN"),
            ("START TRANSACTION", "START TRANSACTION"),
            ("COMMIT", "COMMIT"),
            ("commit and chain", "COMMIT"),
            ("END", "END"),
            ("end work", "END"),
            ("ROLLBACK", "ROLLBACK"),
            ("ROLLBACK TO SAVEPOINT s", "ROLLBACK TO SAVEPOINT"),
            ("ABORT", "ABORT"),
            ("SAVEPOINT s", "SAVEPOINT"),
            ("RELEASE SAVEPOINT s", "RELEASE"),
            ("release s", "RELEASE"),
            ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"),
            ("COMMIT PREPARED 'x'", "COMMIT PREPARED"),
            ("ROLLBACK PREPARED 'x'", "ROLLBACK PREPARED"),
        ] {
            assert_eq!(what(sql).as_deref(), Some(want), "{sql}");
        }
    }

    #[test]
    fn statements_refused_in_a_transaction_block_are_found() {
        for (sql, want) in [
            ("VACUUM", "VACUUM"),
            ("vacuum (analyze) t", "VACUUM"),
            ("CREATE INDEX CONCURRENTLY i ON t (x)", "CREATE INDEX CONCURRENTLY"),
            ("create unique index concurrently if not exists i on t (x)", "CREATE INDEX CONCURRENTLY"),
            ("CREATE INDEX CONCURRENTLY ON t (x)", "CREATE INDEX CONCURRENTLY"),
            ("DROP INDEX CONCURRENTLY IF EXISTS i", "DROP INDEX CONCURRENTLY"),
            ("REINDEX TABLE CONCURRENTLY t", "REINDEX CONCURRENTLY"),
            ("REINDEX (VERBOSE) INDEX CONCURRENTLY i", "REINDEX CONCURRENTLY"),
            ("REINDEX (CONCURRENTLY) TABLE t", "REINDEX CONCURRENTLY"),
            ("REINDEX (concurrently true, verbose) TABLE t", "REINDEX CONCURRENTLY"),
            ("REINDEX SCHEMA public", "REINDEX SCHEMA"),
            ("REINDEX (VERBOSE) DATABASE d", "REINDEX DATABASE"),
            ("REINDEX SYSTEM d", "REINDEX SYSTEM"),
            ("CREATE DATABASE d", "CREATE DATABASE"),
            ("DROP DATABASE IF EXISTS d", "DROP DATABASE"),
            ("CREATE TABLESPACE s LOCATION '/x'", "CREATE TABLESPACE"),
            ("DROP TABLESPACE s", "DROP TABLESPACE"),
            ("ALTER SYSTEM SET work_mem = '4MB'", "ALTER SYSTEM"),
            ("ALTER DATABASE d SET TABLESPACE s", "ALTER DATABASE ... SET TABLESPACE"),
            ("CLUSTER", "CLUSTER without a table"),
            ("CLUSTER VERBOSE", "CLUSTER without a table"),
            ("DISCARD ALL", "DISCARD ALL"),
            (
                "ALTER TABLE p DETACH PARTITION s.\"p 1\" CONCURRENTLY",
                "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY",
            ),
            ("CREATE SUBSCRIPTION s CONNECTION 'c' PUBLICATION p", "CREATE SUBSCRIPTION ... WITH (create_slot = true)"),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'c' PUBLICATION p WITH (enabled = false)",
                "CREATE SUBSCRIPTION ... WITH (create_slot = true)",
            ),
            ("ALTER SUBSCRIPTION s REFRESH PUBLICATION", "ALTER SUBSCRIPTION ... REFRESH PUBLICATION"),
            ("ALTER SUBSCRIPTION s SET PUBLICATION p", "ALTER SUBSCRIPTION ... PUBLICATION with refresh"),
            ("COPY t FROM STDIN", "COPY ... FROM STDIN"),
            ("copy t (a, b) from stdin with (format csv)", "COPY ... FROM STDIN"),
            ("COPY (SELECT 1) TO STDOUT", "COPY ... TO STDOUT"),
        ] {
            assert_eq!(what(sql).as_deref(), Some(want), "{sql}");
        }
    }

    #[test]
    fn look_alikes_are_not_refused() {
        for sql in [
            "ANALYZE t",
            "CREATE INDEX i ON t (x)",
            "CREATE INDEX concurrently_named ON t (x)",
            "CREATE INDEX \"concurrently\" ON t (x)",
            "DROP INDEX i",
            "REINDEX TABLE t",
            "REINDEX (CONCURRENTLY false) TABLE t",
            "REINDEX (concurrently off) INDEX i",
            "CLUSTER t",
            "CLUSTER VERBOSE t USING i",
            "DISCARD PLANS",
            "ALTER DATABASE d SET search_path = a",
            "ALTER DATABASE d SET tablespace_setting TO x",
            "ALTER TABLE p DETACH PARTITION c",
            "ALTER TABLE p DETACH PARTITION c FINALIZE",
            "ALTER TABLE t ADD COLUMN concurrently int",
            "CREATE SUBSCRIPTION s CONNECTION 'c' PUBLICATION p WITH (connect = false)",
            "CREATE SUBSCRIPTION s CONNECTION 'c' PUBLICATION p WITH (create_slot = 'false', enabled = false)",
            "ALTER SUBSCRIPTION s SET PUBLICATION p WITH (refresh = false)",
            "ALTER SUBSCRIPTION s DISABLE",
            "PREPARE transaction AS SELECT 1",
            "PREPARE q (int) AS SELECT $1",
            "COPY t FROM '/tmp/f.csv'",
            "COPY t TO '/tmp/out'",
            "SELECT 'COMMIT'",
            "CREATE TABLE begin_log (\"end\" int, commit text)",
            "INSERT INTO t VALUES ($$COMMIT$$)",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
            "DO $$ BEGIN COMMIT; END $$",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            let s = split(sql);
            let r = s.statements.iter().find_map(|st| classify(&s.chars, &st.tokens));
            assert_eq!(r, None, "{sql}");
        }
    }

    #[test]
    fn split_follows_psql_boundaries_and_drops_empty_statements() {
        let s = split(
            "SELECT 1; ; /* c */ SELECT ';'; CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; SELECT 2; END;",
        );
        assert_eq!(s.statements.len(), 3);
        assert!(s.terminated);
        let s = split("SELECT 1; SELECT 2 -- no semicolon");
        assert_eq!(s.statements.len(), 2);
        assert!(!s.terminated);
        assert!(split("-- only a comment\n").statements.is_empty());
        assert_eq!(split("SELECT (1;\n2)").statements.len(), 1, "a ';' inside parentheses is not a boundary");
    }

    #[test]
    fn the_issue_reproduction_is_refused_at_its_lines() {
        let f = findings("-- +goose Up\nCREATE TABLE r (id int);\nCREATE INDEX CONCURRENTLY r_i ON r (id);\nCOMMIT;\n");
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].0, f[0].1), (3, 1));
        assert!(f[0].2.starts_with("CREATE INDEX CONCURRENTLY cannot run inside a transaction block"), "{}", f[0].2);
        assert!(f[0].2.contains("-- +goose NO TRANSACTION"));
        assert_eq!((f[1].0, f[1].1), (4, 1));
        assert!(f[1].2.starts_with("COMMIT in a migration that runs in a transaction"), "{}", f[1].2);
    }

    #[test]
    fn every_statement_of_a_block_is_read() {
        let f = findings(
            "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE a (x int);\n  INSERT INTO a VALUES (1); COMMIT;\n-- +goose StatementEnd\n",
        );
        assert_eq!(f.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), [(4, 29)]);
    }

    #[test]
    fn down_sections_are_checked_too() {
        let f = findings("-- +goose Up\nCREATE INDEX i ON t (x);\n-- +goose Down\nDROP INDEX CONCURRENTLY i;\n");
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn bodies_quotes_and_comments_never_count() {
        let f = findings(
            "-- +goose Up\n\
             -- COMMIT;\n\
             /* COMMIT; /* nested */ VACUUM; */ SELECT 1;\n\
             SELECT 'COMMIT;', E'\\'; COMMIT; --', \"COMMIT\" FROM t;\n\
             DO $body$ BEGIN COMMIT; END $body$;\n\
             -- +goose StatementBegin\n\
             CREATE PROCEDURE p() LANGUAGE sql\n\
             BEGIN ATOMIC\n\
               INSERT INTO t VALUES (1);\n\
             END;\n\
             -- +goose StatementEnd\n",
        );
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn no_transaction_files_may_manage_transactions_but_not_hide_a_concurrent_statement() {
        let ok = "-- +goose Up\n-- +goose NO TRANSACTION\nBEGIN;\nCREATE TABLE a (x int);\nCOMMIT;\nCREATE INDEX CONCURRENTLY i ON a (x);\nVACUUM a;\n";
        assert!(findings(ok).is_empty());
        let two = "-- +goose Up\n-- +goose NO TRANSACTION\nCREATE INDEX CONCURRENTLY i ON a (x); CREATE INDEX CONCURRENTLY j ON a (x);\n";
        let f = findings(two);
        assert_eq!(f.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), [(3, 1), (3, 39)]);
        assert!(f[0].2.contains("give it a statement of its own"), "{}", f[0].2);
        let copy = "-- +goose Up\n-- +goose NO TRANSACTION\nCOPY t FROM stdin;\n";
        assert!(findings(copy)[0].2.starts_with("COPY ... FROM STDIN needs a client"));
    }
}
