//! Parses goose-format SQL migrations (`-- +goose Up`, `Down`, `StatementBegin`/`End`,
//! `NO TRANSACTION`, `ENVSUB ON`/`OFF`) into statements, as goose's own parser does.
//!
//! The state machine follows goose's `internal/sqlparser`: the same annotations (case-insensitive),
//! the same placement rules and the same rejections (a section whose last statement lacks its
//! `;`, a `StatementBegin` without `StatementEnd`, a second `Up`, ...), so that a migration that
//! production goose would refuse fails here too, with the file's line. Where goose's line-based
//! splitter would cut a dollar-quoted body apart, we keep the statement whole (see [`crate::scan`])
//! and warn that goose would not.

use crate::scan::{goose_ends_with_semicolon, Scanner};

/// One SQL statement of a section, with the file lines it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement text as goose would send it (its lines joined with `\n`).
    pub sql: String,
    /// For each line of `sql`, its 1-based line number in the file.
    pub lines: Vec<usize>,
    /// Whether it came from a `StatementBegin`/`StatementEnd` block.
    pub block: bool,
}

impl Statement {
    /// The 1-based line where the statement starts.
    pub fn first_line(&self) -> usize {
        self.lines.first().copied().unwrap_or(0)
    }

    /// Maps a 0-based character offset within `sql` to a 1-based (line, column) in the file.
    pub fn position(&self, char_offset: usize) -> (usize, usize) {
        let mut line_idx = 0;
        let mut col = 1;
        for (i, c) in self.sql.chars().enumerate() {
            if i == char_offset {
                break;
            }
            if c == '\n' {
                line_idx += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        let line = self.lines.get(line_idx).or(self.lines.last()).copied().unwrap_or(0);
        (line, col)
    }
}

/// A parsed migration file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedSql {
    /// Statements of the Up section, in order.
    pub up: Vec<Statement>,
    /// Statements of the Down section, in order (empty when there is none).
    pub down: Vec<Statement>,
    /// Whether the file has a `-- +goose Down` annotation.
    pub has_down: bool,
    /// `-- +goose NO TRANSACTION`: run statement by statement, outside a transaction.
    pub no_transaction: bool,
    /// The raw text of the Up section (the lines between `Up` and `Down`), for checksums.
    pub up_text: String,
    /// Things goose would do differently or reject, each with its 1-based line.
    pub warnings: Vec<(usize, String)>,
}

/// A parse error at a 1-based line of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// The line at fault.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A variable reference that `ENVSUB ON` cannot expand (see [`envsubst`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvsubError {
    /// `${` without its `}`.
    #[error("ENVSUB: unterminated ${{ in {line:?}")]
    Unterminated {
        /// The line.
        line: String,
    },
    /// `${...}` whose name is not a variable name.
    #[error("ENVSUB: invalid variable name in ${{{inner}}}")]
    InvalidName {
        /// The text between the braces.
        inner: String,
    },
    /// `${NAME:?message}` (or `${NAME?message}`) with the variable unset (or empty).
    #[error("ENVSUB: ${name} is unset{}: {message}", if *or_empty { " or empty" } else { "" })]
    Required {
        /// The variable.
        name: String,
        /// Whether an empty value counts as unset (`:?`).
        or_empty: bool,
        /// The file's message.
        message: String,
    },
    /// An expansion goose does not support (`${NAME:+x}`, `${NAME/a/b}`, ...).
    #[error("ENVSUB: unsupported expansion ${{{inner}}}")]
    Unsupported {
        /// The text between the braces.
        inner: String,
    },
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { line, message: message.into() })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Annotation {
    Up,
    Down,
    StatementBegin,
    StatementEnd,
    NoTransaction,
    EnvsubOn,
    EnvsubOff,
}

/// Reads an annotation line the way goose's `extractAnnotation` does.
fn extract_annotation(line: &str, lineno: usize) -> Result<Annotation, ParseError> {
    if line.starts_with(' ') || line.starts_with('\t') {
        return err(lineno, format!("annotation {:?} has leading whitespace, which goose rejects", line.trim()));
    }
    let cmd = line.replace("--", "");
    let cmd = cmd.replacen("+goose", "", 1);
    if cmd.contains("+goose") {
        return err(lineno, format!("{:?} contains more than one '+goose' annotation", line.trim()));
    }
    let cmd = cmd.trim().to_ascii_lowercase();
    Ok(match cmd.as_str() {
        "up" => Annotation::Up,
        "down" => Annotation::Down,
        "statementbegin" => Annotation::StatementBegin,
        "statementend" => Annotation::StatementEnd,
        "no transaction" => Annotation::NoTransaction,
        "envsub on" => Annotation::EnvsubOn,
        "envsub off" => Annotation::EnvsubOff,
        _ => return err(lineno, format!("unknown goose annotation {:?}", line.trim())),
    })
}

fn is_annotation(line: &str) -> bool {
    line.trim().starts_with("--") && line.contains("+goose")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Start,
    Up,
    Down,
}

struct Buffer {
    lines: Vec<(usize, String)>,
    scanner: Scanner,
    /// Whether any line so far has SQL outside comments.
    has_code: bool,
    /// Lines inside this simple statement where goose's own rule would have ended it.
    goose_split_at: Option<usize>,
}

impl Buffer {
    fn new() -> Self {
        Buffer { lines: Vec::new(), scanner: Scanner::default(), has_code: false, goose_split_at: None }
    }
    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
    fn take(&mut self, block: bool) -> Statement {
        let lines = std::mem::take(&mut self.lines);
        self.scanner = Scanner::default();
        self.has_code = false;
        self.goose_split_at = None;
        Statement {
            sql: lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n"),
            lines: lines.iter().map(|(n, _)| *n).collect(),
            block,
        }
    }
}

/// What goose's own parser holds as an unfinished statement (see `parse_lines`).
#[derive(Default)]
struct GooseBuffer {
    text: String,
    first_line: usize,
}

impl GooseBuffer {
    /// One non-annotation line, as goose's parser takes it.
    fn feed(&mut self, lineno: usize, line: &str, in_block: bool) {
        if self.text.is_empty() && (line.trim().starts_with("--") || line.is_empty()) {
            return; // goose skips these only while its buffer is empty
        }
        if self.text.is_empty() {
            self.first_line = lineno;
        }
        self.text.push_str(line);
        self.text.push('\n');
        if !in_block && goose_ends_with_semicolon(line) {
            self.text.clear();
        }
    }

    /// At the end of a section: goose refuses one that leaves anything but whitespace buffered.
    fn check(&self, section: Section) -> Result<(), ParseError> {
        if self.text.trim().is_empty() {
            return Ok(());
        }
        let name = if section == Section::Down { "Down" } else { "Up" };
        err(
            self.first_line,
            format!(
                "goose rejects the end of the {name} section from here (\"missing semicolon?\"): its statements end only at a \
                 line whose last word ends in `;`, and text after that (a /* comment */, or a comment after a blank-looking \
                 line of spaces) counts as an unterminated statement"
            ),
        )
    }
}

/// Parses a goose SQL migration. `env` resolves variables for `ENVSUB ON` sections.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ParsedSql, ParseError> {
    if text.starts_with('\u{feff}') {
        return err(1, "the file starts with a UTF-8 byte-order mark, which hides the first annotation from goose; save it without one");
    }
    let raw_lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    // `split` yields a final empty item for a trailing newline; it is not a line of the file.
    let raw_lines = match raw_lines.split_last() {
        Some((&"", rest)) => rest.to_vec(),
        _ => raw_lines,
    };

    if !raw_lines.iter().any(|l| is_annotation(l)) {
        let mut scanner = Scanner::default();
        let has_code = raw_lines.iter().enumerate().any(|(i, l)| scanner.line(l, i + 1).has_code);
        if !has_code {
            return err(1, "an empty migration (no '-- +goose Up' and no SQL); goose rejects it: write its Up section, or remove the file");
        }
        // The one leniency: an unannotated file is all Up.
        let mut parsed = parse_lines(&raw_lines, env, true)?;
        parsed.warnings.insert(
            0,
            (1, "no '-- +goose Up' annotation: applied as all Up, but goose itself rejects this file".to_string()),
        );
        return Ok(parsed);
    }
    parse_lines(&raw_lines, env, false)
}

fn parse_lines(
    raw_lines: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    implicit_up: bool,
) -> Result<ParsedSql, ParseError> {
    let mut out = ParsedSql::default();
    let mut section = if implicit_up { Section::Up } else { Section::Start };
    let mut in_block: Option<usize> = None; // line of the open StatementBegin
    let mut envsub = false;
    let mut buf = Buffer::new();
    let mut up_lines: Vec<&str> = Vec::new();
    // goose's own statement buffer, kept beside ours: goose ends a statement only at a line whose
    // last word ends in `;`, and refuses a section that ends with anything else buffered.
    let mut goose_buf = GooseBuffer::default();

    let flush_check = |buf: &Buffer, section: Section| -> Result<(), ParseError> {
        if !buf.is_empty() && (buf.scanner.open().is_some() || buf.has_code) {
            let first = buf.lines[0].0;
            let what = buf.scanner.open().unwrap_or_else(|| "no terminating semicolon".to_string());
            let name = if section == Section::Down { "Down" } else { "Up" };
            return err(
                first,
                format!("the last statement of the {name} section (starting here) has {what}; goose rejects this"),
            );
        }
        Ok(())
    };

    for (idx, &line) in raw_lines.iter().enumerate() {
        let lineno = idx + 1;
        if section == Section::Up && !is_annotation_of(line, Annotation::Down) {
            up_lines.push(line);
        }
        if section == Section::Start && line.trim().is_empty() {
            continue;
        }
        if is_annotation(line) {
            let ann = extract_annotation(line, lineno)?;
            match ann {
                Annotation::Up => {
                    if section != Section::Start {
                        return err(lineno, "duplicate '-- +goose Up' annotation");
                    }
                    section = Section::Up;
                    up_lines.clear();
                    continue;
                }
                Annotation::Down => {
                    if section != Section::Up || in_block.is_some() {
                        if let Some(open) = in_block {
                            return err(
                                lineno,
                                format!("'-- +goose Down' inside the StatementBegin block opened at line {open}"),
                            );
                        }
                        return err(lineno, "'-- +goose Down' before '-- +goose Up': a migration must start with Up");
                    }
                    flush_check(&buf, section)?;
                    if !implicit_up {
                        goose_buf.check(section)?;
                    }
                    buf = Buffer::new();
                    goose_buf = GooseBuffer::default();
                    section = Section::Down;
                    out.has_down = true;
                    continue;
                }
                Annotation::StatementBegin => {
                    if section == Section::Start || in_block.is_some() {
                        return err(
                            lineno,
                            "'-- +goose StatementBegin' must follow '-- +goose Up' or '-- +goose Down' (and not another StatementBegin)",
                        );
                    }
                    in_block = Some(lineno);
                    continue;
                }
                Annotation::StatementEnd => {
                    if in_block.is_none() {
                        return err(lineno, "'-- +goose StatementEnd' without a '-- +goose StatementBegin'");
                    }
                    if let (Some(open), Some(what)) = (in_block, buf.scanner.lex_state_open()) {
                        return err(
                            open,
                            format!(
                                "the StatementBegin block starting here reaches its StatementEnd (line {lineno}) inside {what}; \
                                 PostgreSQL would read the rest of the file into it"
                            ),
                        );
                    }
                    in_block = None;
                    goose_buf = GooseBuffer::default();
                    let stmt = buf.take(true);
                    match section {
                        Section::Up => out.up.push(stmt),
                        Section::Down => out.down.push(stmt),
                        Section::Start => unreachable!("StatementBegin is refused before Up"),
                    }
                    continue;
                }
                Annotation::NoTransaction => {
                    out.no_transaction = true;
                    continue;
                }
                Annotation::EnvsubOn => {
                    envsub = true;
                    continue;
                }
                Annotation::EnvsubOff => {
                    envsub = false;
                    continue;
                }
            }
        }
        if section != Section::Start {
            goose_buf.feed(lineno, line, in_block.is_some());
        }
        // Before a statement starts, comment lines and empty lines are skipped, as goose does.
        if buf.is_empty() && (line.trim().starts_with("--") || line.is_empty()) {
            continue;
        }
        if section == Section::Start {
            return err(lineno, "SQL before '-- +goose Up': a migration must start with the Up annotation");
        }
        let line = if envsub {
            envsubst(line, env).map_err(|e| ParseError { line: lineno, message: e.to_string() })?
        } else {
            line.to_string()
        };
        let scan = buf.scanner.line(&line, lineno);
        let goose_ends = goose_ends_with_semicolon(&line);
        buf.has_code |= scan.has_code;
        buf.lines.push((lineno, line));
        if in_block.is_some() {
            continue;
        }
        if scan.ends_statement {
            if let Some(split) = buf.goose_split_at {
                out.warnings.push((
                    split,
                    format!(
                        "goose splits the statement starting at line {} here (it reads the line's `;` as an end); wrap it in StatementBegin/StatementEnd",
                        buf.lines[0].0
                    ),
                ));
            }
            let stmt = buf.take(false);
            match section {
                Section::Up => out.up.push(stmt),
                Section::Down => out.down.push(stmt),
                Section::Start => unreachable!(),
            }
        } else if goose_ends && buf.goose_split_at.is_none() {
            buf.goose_split_at = Some(lineno);
        }
    }
    if section == Section::Start {
        return err(raw_lines.len().max(1), "no '-- +goose Up' annotation in a file that has other goose annotations");
    }
    if let Some(open) = in_block {
        return err(open, "'-- +goose StatementBegin' without its '-- +goose StatementEnd'");
    }
    flush_check(&buf, section)?;
    if !implicit_up {
        goose_buf.check(section)?;
    }
    let mut up_text = up_lines.join("\n");
    if implicit_up {
        up_text = raw_lines.join("\n");
    }
    out.up_text = up_text;
    Ok(out)
}

fn is_annotation_of(line: &str, want: Annotation) -> bool {
    is_annotation(line) && extract_annotation(line, 0).map(|a| a == want).unwrap_or(false)
}

/// Expands environment variables as goose's `ENVSUB ON` does (mfridman/interpolate): `$$` is a
/// literal `$`, `$NAME` and `${NAME}` expand (unset is empty), `${NAME:-default}` and
/// `${NAME-default}` give defaults, `${NAME:?message}` and `${NAME?message}` are errors when unset.
pub fn envsubst(line: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvsubError> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let is_name_start = |c: char| c.is_ascii_alphabetic() || c == '_';
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let close = chars[i + 2..].iter().position(|&c| c == '}').map(|p| p + i + 2);
                let Some(close) = close else {
                    return Err(EnvsubError::Unterminated { line: line.to_string() });
                };
                let inner: String = chars[i + 2..close].iter().collect();
                let name_len = inner.chars().take_while(|&c| is_name(c)).count();
                let (name, rest) = inner.split_at(name_len);
                if name.is_empty() || !name.starts_with(is_name_start) {
                    return Err(EnvsubError::InvalidName { inner });
                }
                let val = env(name);
                let expanded = if let Some(d) = rest.strip_prefix(":-") {
                    val.filter(|v| !v.is_empty()).unwrap_or_else(|| d.to_string())
                } else if let Some(d) = rest.strip_prefix('-') {
                    val.unwrap_or_else(|| d.to_string())
                } else if let Some(m) = rest.strip_prefix(":?") {
                    match val.filter(|v| !v.is_empty()) {
                        Some(v) => v,
                        None => {
                            let (name, message) = (name.to_string(), m.to_string());
                            return Err(EnvsubError::Required { name, or_empty: true, message });
                        }
                    }
                } else if let Some(m) = rest.strip_prefix('?') {
                    match val {
                        Some(v) => v,
                        None => {
                            let (name, message) = (name.to_string(), m.to_string());
                            return Err(EnvsubError::Required { name, or_empty: false, message });
                        }
                    }
                } else if rest.is_empty() {
                    val.unwrap_or_default()
                } else {
                    return Err(EnvsubError::Unsupported { inner });
                };
                out.push_str(&expanded);
                i = close + 1;
            }
            Some(&n) if is_name_start(n) => {
                let mut j = i + 1;
                while j < chars.len() && is_name(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&env(&name).unwrap_or_default());
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn sqls(stmts: &[Statement]) -> Vec<&str> {
        stmts.iter().map(|s| s.sql.as_str()).collect()
    }

    #[test]
    fn up_and_down_sections() {
        let p = parse("-- +goose Up\nCREATE TABLE a (x int);\nCREATE TABLE b (y int);\n\n-- +goose Down\nDROP TABLE b;\nDROP TABLE a;\n", &no_env).unwrap();
        assert_eq!(sqls(&p.up), ["CREATE TABLE a (x int);", "CREATE TABLE b (y int);"]);
        assert_eq!(sqls(&p.down), ["DROP TABLE b;", "DROP TABLE a;"]);
        assert_eq!(p.up[1].lines, [3]);
        assert!(p.has_down && !p.no_transaction && p.warnings.is_empty());
        assert_eq!(p.up_text, "CREATE TABLE a (x int);\nCREATE TABLE b (y int);\n");
    }

    #[test]
    fn annotations_are_case_insensitive() {
        let p =
            parse("-- +goose up\n-- +goose no transaction\nSELECT 1;\n-- +goose down\nSELECT 2;\n", &no_env).unwrap();
        assert_eq!(sqls(&p.up), ["SELECT 1;"]);
        assert!(p.no_transaction);
    }

    #[test]
    fn statement_block_is_one_statement() {
        let src = "-- +goose Up\n-- +goose StatementBegin\nCREATE FUNCTION f() RETURNS int AS $$\nBEGIN\n  RETURN 1;\nEND;\n$$ LANGUAGE plpgsql;\n-- +goose StatementEnd\n-- +goose Down\nDROP FUNCTION f;\n";
        let p = parse(src, &no_env).unwrap();
        assert_eq!(p.up.len(), 1);
        assert!(p.up[0].block);
        assert_eq!(p.up[0].lines, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn do_block_outside_statement_begin_stays_whole_and_warns() {
        let src = "-- +goose Up\nDO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;\nSELECT 2;\n";
        let p = parse(src, &no_env).unwrap();
        assert_eq!(sqls(&p.up), ["DO $$\nBEGIN\n  PERFORM 1;\nEND\n$$;", "SELECT 2;"]);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].0, 4);
    }

    #[test]
    fn rejects_missing_semicolon_at_end_of_up() {
        let e = parse("-- +goose Up\nSELECT 1;\nSELECT 2\n-- +goose Down\nSELECT 3;\n", &no_env).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("no terminating semicolon"), "{}", e.message);
    }

    #[test]
    fn rejects_missing_semicolon_at_end_of_file() {
        let e = parse("-- +goose Up\nSELECT 1;\n-- +goose Down\nSELECT 2\n", &no_env).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("Down"));
    }

    #[test]
    fn rejects_unclosed_dollar_body() {
        let e = parse("-- +goose Up\nDO $$ BEGIN\nPERFORM 1;\n", &no_env).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("dollar-quoted"), "{}", e.message);
    }

    #[test]
    fn rejects_statement_begin_without_end() {
        let e = parse("-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n", &no_env).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("StatementEnd"));
    }

    #[test]
    fn rejects_statement_end_without_begin() {
        let e = parse("-- +goose Up\nSELECT 1;\n-- +goose StatementEnd\n", &no_env).unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn rejects_duplicate_up_and_down_first() {
        assert_eq!(parse("-- +goose Up\n-- +goose Up\n", &no_env).unwrap_err().line, 2);
        assert_eq!(parse("-- +goose Down\nSELECT 1;\n", &no_env).unwrap_err().line, 1);
    }

    #[test]
    fn rejects_sql_before_up_and_unknown_annotations() {
        assert_eq!(parse("SELECT 1;\n-- +goose Up\n", &no_env).unwrap_err().line, 1);
        let e = parse("-- +goose Up\n-- +goose Sideways\n", &no_env).unwrap_err();
        assert!(e.message.contains("unknown goose annotation"));
        let e = parse("-- +goose Up\n  -- +goose StatementBegin\n", &no_env).unwrap_err();
        assert!(e.message.contains("leading whitespace"));
    }

    #[test]
    fn unannotated_file_is_all_up_with_warning() {
        let p = parse("CREATE TABLE t (x int);\nINSERT INTO t VALUES (1);\n", &no_env).unwrap();
        assert_eq!(p.up.len(), 2);
        assert!(p.warnings[0].1.contains("goose itself rejects"));
    }

    #[test]
    fn rejects_what_goose_reads_as_unterminated() {
        // A block comment after the last `;`: goose's last word is `*/`.
        let e = parse("-- +goose Up\nCREATE TABLE t (x int); /* note */\n-- +goose Down\nDROP TABLE t;\n", &no_env)
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("goose rejects the end of the Up section"), "{}", e.message);
        // A line holding only a block comment after the last statement.
        let e = parse("-- +goose Up\nSELECT 1;\n/* closing note */\n", &no_env).unwrap_err();
        assert_eq!(e.line, 3);
        // A line of spaces, then a comment: goose buffers both.
        let e = parse("-- +goose Up\nSELECT 1;\n   \n-- trailing\n-- +goose Down\nSELECT 2;\n", &no_env).unwrap_err();
        assert_eq!(e.line, 3, "goose's buffer starts at the line of spaces");
        // What goose accepts stays accepted.
        parse("-- +goose Up\nSELECT 1; -- done\n\n-- trailing comment\n-- +goose Down\nSELECT 2;\n", &no_env).unwrap();
    }

    #[test]
    fn rejects_an_empty_file() {
        for empty in ["", "\n\n", "-- just a comment\n", "/* nothing */\n"] {
            let e = parse(empty, &no_env).unwrap_err();
            assert_eq!(e.line, 1);
            assert!(e.message.contains("an empty migration"), "{empty:?}: {}", e.message);
        }
        // An Up annotation with nothing under it is goose's empty migration, applied and recorded.
        assert!(parse("-- +goose Up\n", &no_env).unwrap().up.is_empty());
    }

    #[test]
    fn rejects_a_block_that_ends_inside_a_quote_or_body() {
        let e = parse(
            "-- +goose Up\n-- +goose StatementBegin\nDO $$ BEGIN\n  PERFORM 1;\n-- +goose StatementEnd\nSELECT 1;\n",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("(line 5) inside a dollar-quoted body ($$) that is never closed"), "{}", e.message);
    }

    #[test]
    fn rejects_an_unclosed_parenthesis_or_function_body_at_the_end() {
        let e = parse("-- +goose Up\nCREATE TABLE t (\n  x int;\n", &no_env).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("an unclosed '(' (opened at line 2)"), "{}", e.message);
    }

    #[test]
    fn rejects_a_byte_order_mark() {
        let e = parse("\u{feff}-- +goose Up\nSELECT 1;\n", &no_env).unwrap_err();
        assert!(e.message.contains("byte-order mark"), "{}", e.message);
    }

    #[test]
    fn crlf_and_comments_between_statements() {
        let p =
            parse("-- +goose Up\r\n-- a comment\r\nSELECT 1; -- trailing\r\n\r\n-- +goose Down\r\n", &no_env).unwrap();
        assert_eq!(sqls(&p.up), ["SELECT 1; -- trailing"]);
        assert_eq!(p.up[0].lines, [3]);
    }

    #[test]
    fn envsub_expands_only_when_on() {
        let env = |k: &str| (k == "SCHEMA").then(|| "app".to_string());
        let src = "-- +goose Up\nSELECT '${SCHEMA}';\n-- +goose ENVSUB ON\nSELECT '${SCHEMA}', '${MISSING:-d}', '$$';\n-- +goose ENVSUB OFF\nSELECT '$SCHEMA';\n";
        let p = parse(src, &env).unwrap();
        assert_eq!(sqls(&p.up), ["SELECT '${SCHEMA}';", "SELECT 'app', 'd', '$';", "SELECT '$SCHEMA';"]);
        assert!(envsubst("${X:?needed}", &no_env).unwrap_err().to_string().contains("needed"));
    }

    #[test]
    fn position_maps_offsets_to_file_lines() {
        let p = parse("-- +goose Up\n\nCREATE TABLE t (\n  x nonsense\n);\n", &no_env).unwrap();
        let s = &p.up[0];
        let off = s.sql.find("nonsense").unwrap();
        assert_eq!(s.position(off), (4, 5));
    }
}

/// Property tests of the statement splitter: random mixes of statements, quotes, `E''` strings,
/// dollar bodies with tags, nested comments, parentheses, SQL-standard bodies and goose
/// annotations.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn chars(set: &'static [char], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(set), 0..max).prop_map(|v| v.into_iter().collect())
    }

    const HOSTILE: &[char] = &['a', 'Z', ' ', ';', '\n', '-', '/', '*', '$', '\'', '"', '\\', '(', ')', 'é', 'E'];

    /// One fragment of a statement (never first: see `statement`).
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(&["x", "tbl", "select", "values", "1", "2.5e-3", "$1", "::text", ",", "=", "a$b"][..])
                .prop_map(str::to_string),
            chars(HOSTILE, 12).prop_map(|c| format!("'{}'", c.replace('\'', "''"))),
            chars(HOSTILE, 12).prop_map(|c| format!("E'{}'", c.replace('\\', "\\\\").replace('\'', "\\'"))),
            chars(HOSTILE, 12).prop_map(|c| format!("\"{}\"", c.replace('"', "\"\""))),
            (prop::sample::select(&["", "t", "body"][..]), chars(HOSTILE, 16))
                .prop_map(|(tag, c)| format!("${tag}${}${tag}$", c.replace('$', "x"))),
            (chars(HOSTILE, 8), chars(HOSTILE, 8)).prop_map(|(a, b)| format!(
                "/* {} /* {} */ ; */",
                a.replace('*', "x"),
                b.replace('*', "x")
            )),
            chars(HOSTILE, 10).prop_map(|c| format!("-- {};\n", c.replace('\n', " "))),
            chars(HOSTILE, 8).prop_map(|c| format!("(x; '{}';\n y)", c.replace('\'', "''"))),
        ]
    }

    /// A statement: a word, fragments separated by spaces or line breaks, and a final `;`.
    fn statement() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (
                prop::sample::select(&["SELECT", "insert", "Update", "x"][..]),
                prop::collection::vec((prop::sample::select(&[" ", "\n", "  "][..]), fragment()), 0..6),
            )
                .prop_map(|(first, rest)| {
                    let mut s = first.to_string();
                    for (sep, f) in rest {
                        s.push_str(sep);
                        s.push_str(&f);
                    }
                    // Goose ends a statement at a line whose last word before any `--` word ends
                    // in `;`; a last line with a `--` word (even quoted) needs the `;` below it.
                    let last = s.rsplit('\n').next().unwrap_or("");
                    if last.split_whitespace().any(|w| w.starts_with("--")) {
                        s.push('\n');
                    }
                    s.push(';');
                    s
                }),
            1 => prop::sample::select(&[" ", "\n"][..]).prop_map(|sep| {
                format!("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql{sep}BEGIN ATOMIC{sep}SELECT CASE WHEN true THEN 1 END;{sep}SELECT 2;{sep}END;")
            }),
        ]
    }

    /// Lines goose and we skip between statements.
    fn between() -> impl Strategy<Value = String> {
        prop::sample::select(&["", "\n", "-- a comment; with semicolons\n", "\n-- note\n\n"][..])
            .prop_map(str::to_string)
    }

    /// A section: statements, some grouped in StatementBegin/End blocks; returns the text and the
    /// statements the splitter must return.
    fn section() -> impl Strategy<Value = (String, Vec<String>)> {
        prop::collection::vec((between(), prop::collection::vec(statement(), 1..3), any::<bool>()), 0..6).prop_map(
            |items| {
                let mut text = String::new();
                let mut want = Vec::new();
                for (gap, stmts, block) in items {
                    text.push_str(&gap);
                    if block {
                        let body = stmts.join("\n");
                        text.push_str(&format!("-- +goose StatementBegin\n{body}\n-- +goose StatementEnd\n"));
                        want.push(body);
                    } else {
                        for s in stmts {
                            text.push_str(&s);
                            text.push('\n');
                            want.push(s);
                        }
                    }
                }
                (text, want)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn splits_only_between_statements_and_gives_back_the_sql((up, want_up) in section(), (down, want_down) in section(), no_tx in any::<bool>()) {
            let tx = if no_tx { "-- +goose NO TRANSACTION\n" } else { "" };
            let file = format!("-- +goose Up\n{tx}{up}-- +goose Down\n{down}");
            let p = parse(&file, &|_| None).map_err(|e| TestCaseError::fail(format!("{}: {}\n{file}", e.line, e.message)))?;
            let got_up: Vec<&str> = p.up.iter().map(|s| s.sql.as_str()).collect();
            let got_down: Vec<&str> = p.down.iter().map(|s| s.sql.as_str()).collect();
            prop_assert_eq!(&got_up, &want_up);
            prop_assert_eq!(&got_down, &want_down);
            prop_assert_eq!(got_up.join("\n"), want_up.join("\n"));
            // Each statement's lines point back at the file's own lines.
            let lines: Vec<&str> = file.lines().collect();
            for s in p.up.iter().chain(&p.down) {
                let from_file: Vec<&str> = s.lines.iter().map(|l| lines[l - 1]).collect();
                prop_assert_eq!(from_file.join("\n"), s.sql.clone());
            }
            // Nothing generated is transaction control at the top level.
            prop_assert!(crate::txblock::check(&p).is_empty(), "{:?}", crate::txblock::check(&p));
        }

        #[test]
        fn a_top_level_commit_is_always_found(stmts in prop::collection::vec(statement(), 0..6), at in 0usize..8) {
            let at = at % (stmts.len() + 1);
            let before: usize = stmts[..at].iter().map(|s| s.lines().count()).sum();
            let mut all = stmts.clone();
            all.insert(at, "COMMIT;".to_string());
            let file = format!("-- +goose Up\n{}\n", all.join("\n"));
            let p = parse(&file, &|_| None).map_err(|e| TestCaseError::fail(format!("{}: {}\n{file}", e.line, e.message)))?;
            let found = crate::txblock::check(&p);
            prop_assert_eq!(found.len(), 1, "{:?}\n{}", found, file);
            prop_assert_eq!((found[0].line, found[0].column), (before + 2, 1));
            prop_assert!(found[0].message.starts_with("COMMIT in a migration"));
        }

        #[test]
        fn never_panics_on_any_input(text in chars(&['a', ' ', ';', '\n', '-', '+', '/', '*', '$', '\'', '"', '\\', '(', ')', 'E', 'g', 'o', 's', 'e', 'U', 'p', 'D', 'w', 'n', 'B', '\r'], 200)) {
            let text = text.replace("-+", "-- +goose ");
            if let Ok(p) = parse(&text, &|_| None) {
                let _ = crate::txblock::check(&p);
                let _ = crate::batch::Batch::new(&p.up, "t", "SELECT 1;");
            }
        }
    }
}
