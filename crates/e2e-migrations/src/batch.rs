//! One migration as one simple-query string (pure): `BEGIN`, a transaction-local marker, the
//! migration's statements, a guard that raises unless the marker is still set and then returns a
//! checkpoint row, the tracking rows, `COMMIT`; and which part of that string an error came from.
//!
//! Why one string: the server runs it in one round trip and stops at the first error, so nothing
//! after a failed statement is run or answered (no "current transaction is aborted" replies, no
//! tracking rows after an error). Why the marker: it is set with `SET LOCAL` right after `BEGIN`,
//! so it lives exactly as long as that transaction. If anything in the file ends the transaction
//! (a `COMMIT` the up-front check could not see, see [`crate::txblock`]), the statements after it
//! run in a transaction of their own, where the marker is unset: the guard raises there, before
//! the tracking rows, and the version is never recorded as applied.
//!
//! An error is attributed to its statement by the server's error position (an offset in the
//! whole string, which PostgreSQL reports for a multi-statement string), or, for an error without
//! one, by the number of statements that completed before it (one `CommandComplete` each), counted
//! at psql's statement boundaries like the server's ([`crate::txblock::split`]). That count is
//! right only while the server reads the file as the check does; the checkpoint row tells which
//! side of the guard the error is on whatever the count says: before it came back, the error is
//! in the migration's own SQL, never in the tracking rows.

use crate::goose::Statement;
use crate::txblock;

/// The custom setting that marks the migration's own transaction.
pub const MARKER: &str = "e2e_migrations.transaction";

/// The column of the checkpoint row, which the guard's piece returns once every statement of the
/// migration ran in its transaction (its value is the run's token).
pub const CHECKPOINT_COLUMN: &str = "e2e_migrations_checkpoint";

/// The message of the guard's error, when the migration's transaction ended early.
pub const GUARD_MESSAGE: &str = "e2e-migrations: the migration's transaction ended before its tracking rows";

/// A part of the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `BEGIN` and the marker.
    Start,
    /// The migration's statement with this index.
    Statement(usize),
    /// The guard: the marker was gone, so the transaction had ended.
    Guard,
    /// The tracking rows and `COMMIT` (a tracking error, or a deferred constraint at commit).
    Finish,
    /// The migration's own SQL, past its last statement by the count although the checkpoint
    /// never came back: the server read more statements in the file than the check did (a
    /// `COMMIT` or a quote the check could not see), and one of those failed.
    Unseen,
}

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// The part.
    pub part: Part,
    /// For a statement, the offset (in characters) within its SQL where the error is, or where
    /// the SQL statement that failed starts.
    pub offset: usize,
    /// Whether `offset` is the server's own error position (else the failing statement's start).
    pub exact: bool,
}

#[derive(Debug, Clone)]
struct Piece {
    part: Part,
    /// Offset of the piece in the string, in characters.
    start: usize,
    /// Its length in characters.
    len: usize,
    /// Where each of its SQL statements starts, relative to the piece.
    statements: Vec<usize>,
}

/// The string and its layout.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The string to send.
    pub text: String,
    pieces: Vec<Piece>,
}

impl Batch {
    /// Builds the string for `statements`, marking the transaction with `token` (a fresh random
    /// value per run, also the checkpoint row's value) and recording it with `tracking` (SQL
    /// statements ending in `;`).
    pub fn new(statements: &[Statement], token: &str, tracking: &str) -> Batch {
        let mut b = Batch { text: String::new(), pieces: Vec::new() };
        b.push(Part::Start, &format!("BEGIN;\nSET LOCAL {MARKER} = '{token}';\n"));
        for (i, s) in statements.iter().enumerate() {
            let split = txblock::split(&s.sql);
            let mut text = s.sql.clone();
            if !split.terminated && !split.statements.is_empty() {
                // A StatementBegin block may end without `;`; a line of its own also ends a
                // trailing line comment.
                text.push_str("\n;");
            }
            text.push('\n');
            b.push(Part::Statement(i), &text);
        }
        b.push(
            Part::Guard,
            &format!(
                "DO $e2e_guard$ BEGIN IF current_setting('{MARKER}', true) IS DISTINCT FROM '{token}' THEN \
                 RAISE EXCEPTION USING ERRCODE = '25000', MESSAGE = '{}'; END IF; END $e2e_guard$;\n\
                 SELECT '{token}' AS {CHECKPOINT_COLUMN};\n",
                GUARD_MESSAGE.replace('\'', "''")
            ),
        );
        b.push(Part::Finish, &format!("{tracking}\nCOMMIT;\n"));
        b
    }

    fn push(&mut self, part: Part, text: &str) {
        let split = txblock::split(text);
        let statements = split.statements.iter().map(|s| s.start()).collect();
        let len = split.chars.len();
        let start = self.pieces.last().map(|p| p.start + p.len).unwrap_or(0);
        self.pieces.push(Piece { part, start, len, statements });
        self.text.push_str(text);
    }

    /// The part holding the server's error position (1-based, in characters).
    pub fn locate_position(&self, position: usize) -> Located {
        let at = position.saturating_sub(1);
        let piece =
            self.pieces.iter().find(|p| at < p.start + p.len).or(self.pieces.last()).expect("a batch has pieces");
        Located { part: piece.part, offset: at.saturating_sub(piece.start), exact: true }
    }

    /// The part whose statement failed after `completed` statements of the string completed;
    /// `past_guard` says whether the checkpoint row came back. Before it, the error is in the
    /// migration's own SQL: a count that reaches the guard or beyond is [`Part::Unseen`].
    pub fn locate_completed(&self, completed: usize, past_guard: bool) -> Located {
        if past_guard {
            return Located { part: Part::Finish, offset: 0, exact: false };
        }
        let mut left = completed;
        for p in &self.pieces {
            if matches!(p.part, Part::Guard | Part::Finish) {
                break;
            }
            if left < p.statements.len() {
                return Located { part: p.part, offset: p.statements[left], exact: false };
            }
            left -= p.statements.len();
        }
        Located { part: Part::Unseen, offset: 0, exact: false }
    }

    /// How many SQL statements the string holds (the `CommandComplete`s of a run that succeeds).
    pub fn statement_count(&self) -> usize {
        self.pieces.iter().map(|p| p.statements.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goose::parse;

    fn batch(file: &str) -> (Vec<Statement>, Batch) {
        let p = parse(file, &|_| None).unwrap();
        let b = Batch::new(&p.up, "t0k", "INSERT INTO a VALUES (1);\nINSERT INTO b VALUES (1);");
        (p.up, b)
    }

    /// The 1-based position of `needle` in the batch text, in characters.
    fn pos(b: &Batch, needle: &str) -> usize {
        b.text[..b.text.find(needle).unwrap()].chars().count() + 1
    }

    #[test]
    fn the_string_begins_marks_guards_tracks_and_commits() {
        let (_, b) = batch("-- +goose Up\nCREATE TABLE t (x int);\n");
        expect_test::expect![[r#"
            BEGIN;
            SET LOCAL e2e_migrations.transaction = 't0k';
            CREATE TABLE t (x int);
            DO $e2e_guard$ BEGIN IF current_setting('e2e_migrations.transaction', true) IS DISTINCT FROM 't0k' THEN RAISE EXCEPTION USING ERRCODE = '25000', MESSAGE = 'e2e-migrations: the migration''s transaction ended before its tracking rows'; END IF; END $e2e_guard$;
            SELECT 't0k' AS e2e_migrations_checkpoint;
            INSERT INTO a VALUES (1);
            INSERT INTO b VALUES (1);
            COMMIT;
        "#]]
        .assert_eq(&b.text);
        assert_eq!(b.statement_count(), 8);
    }

    #[test]
    fn unterminated_blocks_get_a_semicolon_on_a_line_of_their_own() {
        let (_, b) = batch(
            "-- +goose Up\n-- +goose StatementBegin\nSELECT 1 -- no semicolon\n-- +goose StatementEnd\nSELECT 2;\n",
        );
        assert!(b.text.contains("SELECT 1 -- no semicolon\n;\nSELECT 2;\n"), "{}", b.text);
        assert_eq!(b.statement_count(), 2 + 2 + 2 + 3);
    }

    #[test]
    fn positions_map_to_their_statement() {
        let (stmts, b) = batch("-- +goose Up\nCREATE TABLE t (x int);\n-- +goose StatementBegin\nSELECT 1;\nSELECT nope FROM t;\n-- +goose StatementEnd\n");
        let l = b.locate_position(pos(&b, "nope"));
        assert_eq!((l.part, l.exact), (Part::Statement(1), true));
        assert_eq!(stmts[1].position(l.offset), (5, 8));
        assert_eq!(b.locate_position(pos(&b, "BEGIN;")).part, Part::Start);
        assert_eq!(b.locate_position(pos(&b, "DO $e2e_guard$")).part, Part::Guard);
        assert_eq!(b.locate_position(pos(&b, "INSERT INTO b")).part, Part::Finish);
        assert_eq!(b.locate_position(b.text.chars().count() + 10).part, Part::Finish);
    }

    #[test]
    fn completed_counts_map_to_their_statement() {
        let (stmts, b) = batch(
            "-- +goose Up\nCREATE TABLE t (x int);\n-- +goose StatementBegin\nINSERT INTO t VALUES (1); ;\nINSERT INTO t VALUES (2);\n-- +goose StatementEnd\nSELECT 'é';\n",
        );
        // BEGIN and SET LOCAL complete first.
        assert_eq!(b.locate_completed(0, false).part, Part::Start);
        assert_eq!(b.locate_completed(1, false).part, Part::Start);
        assert_eq!(b.locate_completed(2, false).part, Part::Statement(0));
        let l = b.locate_completed(4, false);
        assert_eq!((l.part, l.exact), (Part::Statement(1), false));
        assert_eq!(stmts[1].position(l.offset), (5, 1), "the empty statement `;` completes nothing");
        assert_eq!(b.locate_completed(5, false).part, Part::Statement(2));
        // Past the checkpoint: the tracking rows or COMMIT, whatever the count.
        assert_eq!(b.locate_completed(8, true).part, Part::Finish);
        assert_eq!(b.locate_completed(3, true).part, Part::Finish);
    }

    #[test]
    fn a_count_past_the_statements_before_the_checkpoint_is_the_migrations_own_sql() {
        // The server read more statements than the check: the count runs into the guard, the
        // tracking rows, or past the end, yet the checkpoint never came back.
        let (_, b) = batch("-- +goose Up\nCREATE TABLE t (x int);\n");
        for completed in [3, 4, 5, 7, 8, 99] {
            assert_eq!(b.locate_completed(completed, false).part, Part::Unseen, "{completed}");
        }
        assert_eq!(b.locate_completed(2, false).part, Part::Statement(0));
    }

    #[test]
    fn multibyte_text_keeps_positions_in_characters() {
        let (stmts, b) = batch("-- +goose Up\nSELECT 'ééé';\nSELECT nope;\n");
        let l = b.locate_position(pos(&b, "nope"));
        assert_eq!(l.part, Part::Statement(1));
        assert_eq!(stmts[1].position(l.offset), (3, 8));
    }
}
