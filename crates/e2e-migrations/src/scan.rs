//! A lexical scanner for PostgreSQL SQL text: its tokens, where text is quoted or commented, and
//! where a statement ends.
//!
//! Goose splits statements at lines that end with `;`. We keep that rule, but only count a
//! semicolon that PostgreSQL itself would see as a statement terminator: not one inside a
//! single-quoted string (including `E'...'` escapes), a quoted identifier, a dollar-quoted body
//! (`$$`, `$tag$`), a comment (`--`, nested `/* */`), parentheses, or the `BEGIN ... END` of an
//! SQL-standard function body (psql's own rule, see [`Boundary`]). The scanner carries its state
//! from one line to the next, so a multi-line `DO $$ ... $$;` stays one statement.
//!
//! We do not need PostgreSQL's full grammar here, only its quoting rules and psql's statement
//! boundaries, which is why this is a small hand-written scanner rather than `pg_query` (see the
//! README's design notes). [`crate::txblock`] reads the tokens of each statement to find what
//! cannot run inside a migration's transaction.

/// Where the scanner is at the end of a line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LexState {
    /// Ordinary SQL text.
    #[default]
    Normal,
    /// Inside `'...'`; `escapes` is true for `E'...'` strings, where a backslash escapes.
    String {
        /// Whether backslash escapes are active (`E'...'`).
        escapes: bool,
    },
    /// Inside a `"quoted identifier"`.
    Identifier,
    /// Inside a dollar-quoted body; the tag without its dollar signs (empty for `$$`).
    Dollar(String),
    /// Inside a block comment, at this nesting depth (PostgreSQL nests `/* */`).
    BlockComment(u32),
}

impl LexState {
    /// A short description of the open construct, for error messages.
    pub fn describe(&self) -> String {
        match self {
            LexState::Normal => "nothing".to_string(),
            LexState::String { escapes: false } => "a quoted string ('...')".to_string(),
            LexState::String { escapes: true } => "an escape string (E'...')".to_string(),
            LexState::Identifier => "a quoted identifier (\"...\")".to_string(),
            LexState::Dollar(tag) => format!("a dollar-quoted body (${tag}$)"),
            LexState::BlockComment(_) => "a block comment (/* ... */)".to_string(),
        }
    }
}

/// The kind of a [`Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted word: a keyword or an identifier (`CREATE`, `t1`, `a$b`).
    Word,
    /// A `"quoted identifier"` (also `U&"..."`).
    QuotedIdent,
    /// A string constant: `'...'`, `E'...'`, `B'...'`, `X'...'`, `N'...'`, `U&'...'`.
    String,
    /// A dollar-quoted body, `$$...$$` or `$tag$...$tag$`.
    Dollar,
    /// A number.
    Number,
    /// `;`
    Semicolon,
    /// `(`
    Open,
    /// `)`
    Close,
    /// Anything else: an operator, `,`, `.`, a parameter `$1`, ...
    Other,
}

/// One token of SQL text (comments and whitespace are not tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Its first character (an offset in characters into the scanned text).
    pub start: usize,
    /// One past its last character.
    pub end: usize,
}

impl Token {
    /// Whether this is the unquoted word `word` (ASCII case-insensitive, as PostgreSQL folds keywords).
    pub fn is_word(&self, chars: &[char], word: &str) -> bool {
        self.kind == TokenKind::Word
            && self.end - self.start == word.chars().count()
            && chars[self.start..self.end].iter().zip(word.chars()).all(|(a, b)| a.eq_ignore_ascii_case(&b))
    }

    /// The token's text.
    pub fn text(&self, chars: &[char]) -> String {
        chars[self.start..self.end].iter().collect()
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

fn is_tag_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()
}

/// Scans `chars` starting in `state`, appending its tokens to `out`; returns the state at the end.
///
/// A construct still open at the end (a string, quoted identifier or dollar body) is a token that
/// ends at `chars.len()`; one continued from an earlier line starts at 0.
pub fn lex(state: &LexState, chars: &[char], out: &mut Vec<Token>) -> LexState {
    let mut st = state.clone();
    let mut i = 0;
    // Where the open quoted construct started (0 when it was open before these chars).
    let mut open_start = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match &mut st {
            LexState::Normal => {
                if c == '-' && next == Some('-') {
                    break; // the rest is a line comment
                }
                if c == '/' && next == Some('*') {
                    st = LexState::BlockComment(1);
                    i += 2;
                    continue;
                }
                if c.is_whitespace() {
                    i += 1;
                    continue;
                }
                let start = i;
                // String prefixes: E'..' (escapes), B'..', X'..', N'..', U&'..' and U&".." (no escapes).
                if matches!(c, 'e' | 'E') && next == Some('\'') {
                    st = LexState::String { escapes: true };
                    open_start = start;
                    i += 2;
                    continue;
                }
                if matches!(c, 'b' | 'B' | 'x' | 'X' | 'n' | 'N') && next == Some('\'') {
                    st = LexState::String { escapes: false };
                    open_start = start;
                    i += 2;
                    continue;
                }
                if matches!(c, 'u' | 'U') && next == Some('&') && matches!(chars.get(i + 2), Some('\'') | Some('"')) {
                    st = if chars[i + 2] == '\'' { LexState::String { escapes: false } } else { LexState::Identifier };
                    open_start = start;
                    i += 3;
                    continue;
                }
                match c {
                    '\'' => {
                        st = LexState::String { escapes: false };
                        open_start = start;
                        i += 1;
                    }
                    '"' => {
                        st = LexState::Identifier;
                        open_start = start;
                        i += 1;
                    }
                    '$' => {
                        // `$tag$` or `$$` opens a body; `$1` is a parameter.
                        let mut j = i + 1;
                        if j < chars.len() && is_tag_start(chars[j]) {
                            j += 1;
                            while j < chars.len() && is_tag_char(chars[j]) {
                                j += 1;
                            }
                        }
                        if j < chars.len() && chars[j] == '$' {
                            st = LexState::Dollar(chars[i + 1..j].iter().collect());
                            open_start = start;
                            i = j + 1;
                        } else {
                            j = i + 1;
                            while j < chars.len() && chars[j].is_ascii_digit() {
                                j += 1;
                            }
                            out.push(Token { kind: TokenKind::Other, start, end: j });
                            i = j;
                        }
                    }
                    ';' | '(' | ')' => {
                        let kind = match c {
                            ';' => TokenKind::Semicolon,
                            '(' => TokenKind::Open,
                            _ => TokenKind::Close,
                        };
                        out.push(Token { kind, start, end: i + 1 });
                        i += 1;
                    }
                    _ if is_ident_start(c) => {
                        let mut j = i + 1;
                        while j < chars.len() && is_ident_char(chars[j]) {
                            j += 1;
                        }
                        out.push(Token { kind: TokenKind::Word, start, end: j });
                        i = j;
                    }
                    _ if c.is_ascii_digit() => {
                        let mut j = i + 1;
                        while j < chars.len()
                            && (chars[j].is_ascii_alphanumeric() || chars[j] == '.' || chars[j] == '_')
                        {
                            // An exponent's sign: 1e-5.
                            if matches!(chars[j], 'e' | 'E') && matches!(chars.get(j + 1), Some('+') | Some('-')) {
                                j += 1;
                            }
                            j += 1;
                        }
                        out.push(Token { kind: TokenKind::Number, start, end: j });
                        i = j;
                    }
                    _ => {
                        out.push(Token { kind: TokenKind::Other, start, end: i + 1 });
                        i += 1;
                    }
                }
            }
            LexState::String { escapes } => {
                if *escapes && c == '\\' {
                    i += 2;
                    continue;
                }
                if c == '\'' {
                    if next == Some('\'') {
                        i += 2;
                        continue;
                    }
                    out.push(Token { kind: TokenKind::String, start: open_start, end: i + 1 });
                    st = LexState::Normal;
                }
                i += 1;
            }
            LexState::Identifier => {
                if c == '"' {
                    if next == Some('"') {
                        i += 2;
                        continue;
                    }
                    out.push(Token { kind: TokenKind::QuotedIdent, start: open_start, end: i + 1 });
                    st = LexState::Normal;
                }
                i += 1;
            }
            LexState::Dollar(tag) => {
                if c == '$' {
                    let tag_len = tag.chars().count();
                    let end = i + 1 + tag_len;
                    if end < chars.len() && chars[end] == '$' && chars[i + 1..end].iter().copied().eq(tag.chars()) {
                        out.push(Token { kind: TokenKind::Dollar, start: open_start, end: end + 1 });
                        st = LexState::Normal;
                        i = end + 1;
                        continue;
                    }
                }
                i += 1;
            }
            LexState::BlockComment(depth) => {
                if c == '/' && next == Some('*') {
                    *depth += 1;
                    i += 2;
                    continue;
                }
                if c == '*' && next == Some('/') {
                    if *depth == 1 {
                        st = LexState::Normal;
                    } else {
                        *depth -= 1;
                    }
                    i += 2;
                    continue;
                }
                i += 1;
            }
        }
    }
    let kind = match st {
        LexState::String { .. } => Some(TokenKind::String),
        LexState::Identifier => Some(TokenKind::QuotedIdent),
        LexState::Dollar(_) => Some(TokenKind::Dollar),
        LexState::Normal | LexState::BlockComment(_) => None,
    };
    if let Some(kind) = kind {
        out.push(Token { kind, start: open_start, end: chars.len() });
    }
    st
}

/// psql's rule (`psqlscan.l`) for where a statement ends: at a `;` outside parentheses and outside
/// the `BEGIN ... END` of a `CREATE [OR REPLACE] FUNCTION|PROCEDURE` body (an SQL-standard body,
/// `BEGIN ATOMIC ... END`, whose statements end in `;` too). Fed the tokens of a statement in
/// order; starts over after each `;` that ends one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boundary {
    /// First letters of the statement's first four words, where they are `create`, `or`,
    /// `replace`, `function` or `procedure` (0 elsewhere), as psql keeps them.
    first: [u8; 4],
    /// Words seen in this statement.
    words: usize,
    /// Open parentheses.
    parens: u32,
    /// Open `BEGIN` (and nested `CASE`) of a function body.
    begins: u32,
    /// Line of the first unclosed `(` / `BEGIN` (for messages), as given to [`Boundary::feed`].
    opened_at: Option<usize>,
}

impl Boundary {
    /// Feeds one token (`chars` is the text it indexes; `line` is where it is, for messages);
    /// returns true when it is a `;` that ends the statement.
    pub fn feed(&mut self, tok: &Token, chars: &[char], line: usize) -> bool {
        match tok.kind {
            TokenKind::Semicolon if self.parens == 0 && self.begins == 0 => {
                *self = Boundary::default();
                return true;
            }
            TokenKind::Open => {
                if self.parens == 0 && self.begins == 0 {
                    self.opened_at = Some(line);
                }
                self.parens += 1;
            }
            TokenKind::Close => self.parens = self.parens.saturating_sub(1),
            TokenKind::Word => {
                let lower = chars[tok.start].to_ascii_lowercase();
                let word = |w: &str| tok.is_word(chars, w);
                if self.words < 4
                    && (word("create") || word("function") || word("procedure") || word("or") || word("replace"))
                {
                    self.first[self.words] = lower as u8;
                }
                self.words += 1;
                let f = self.first;
                let is_routine = f[0] == b'c'
                    && (f[1] == b'f'
                        || f[1] == b'p'
                        || (f[1] == b'o' && f[2] == b'r' && (f[3] == b'f' || f[3] == b'p')));
                if is_routine && self.parens == 0 {
                    if word("begin") {
                        if self.begins == 0 {
                            self.opened_at = Some(line);
                        }
                        self.begins += 1;
                    } else if word("case") && self.begins >= 1 {
                        self.begins += 1;
                    } else if word("end") && self.begins > 0 {
                        self.begins -= 1;
                    }
                }
            }
            _ => {}
        }
        false
    }

    /// What keeps the statement open, if anything: an unclosed `(` or function body.
    pub fn open(&self) -> Option<String> {
        let at = self.opened_at.map(|l| format!(" (opened at line {l})")).unwrap_or_default();
        if self.begins > 0 {
            Some(format!("a function body's BEGIN without its END{at}"))
        } else if self.parens > 0 {
            Some(format!("an unclosed '('{at}"))
        } else {
            None
        }
    }
}

/// What one line contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineScan {
    /// The line ends (ignoring whitespace and comments) with a statement-terminating `;`.
    pub ends_statement: bool,
    /// The line has SQL text outside comments (it is not blank or comment-only).
    pub has_code: bool,
}

/// A scanner fed one line at a time, carrying quoting and statement state between lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanner {
    lex: LexState,
    boundary: Boundary,
}

impl Scanner {
    /// Scans one line (without its line terminator); `lineno` is its line in the file.
    pub fn line(&mut self, line: &str, lineno: usize) -> LineScan {
        let chars: Vec<char> = line.chars().collect();
        let mut tokens = Vec::new();
        let continues = self.lex != LexState::Normal;
        self.lex = lex(&self.lex, &chars, &mut tokens);
        let mut ended_last = false;
        for t in &tokens {
            ended_last = self.boundary.feed(t, &chars, lineno);
        }
        LineScan {
            ends_statement: self.lex == LexState::Normal && ended_last,
            // A line that continues a string, body or comment carries code even if it looks empty.
            has_code: continues || !tokens.is_empty(),
        }
    }

    /// The quoting state at the end of the last line.
    pub fn lex_state(&self) -> &LexState {
        &self.lex
    }

    /// The quoted construct (string, identifier, body, comment) open at the end of the last line.
    pub fn lex_state_open(&self) -> Option<String> {
        (self.lex != LexState::Normal).then(|| format!("{} that is never closed", self.lex.describe()))
    }

    /// What keeps the current statement open at the end of the last line, if anything.
    pub fn open(&self) -> Option<String> {
        if self.lex != LexState::Normal {
            return Some(format!("{} that is never closed", self.lex.describe()));
        }
        self.boundary.open()
    }
}

/// Goose's own rule for the end of a statement: the last whitespace-separated word before any
/// word starting with `--` ends with `;`. Used to warn where goose would split differently.
pub fn goose_ends_with_semicolon(line: &str) -> bool {
    let mut prev = "";
    for word in line.split_whitespace() {
        if word.starts_with("--") {
            break;
        }
        prev = word;
    }
    prev.ends_with(';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(lines: &[&str]) -> Vec<(bool, LexState)> {
        let mut sc = Scanner::default();
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let s = sc.line(l, i + 1);
                (s.ends_statement, sc.lex_state().clone())
            })
            .collect()
    }

    fn kinds(sql: &str) -> Vec<(TokenKind, String)> {
        let chars: Vec<char> = sql.chars().collect();
        let mut out = Vec::new();
        lex(&LexState::Normal, &chars, &mut out);
        out.iter().map(|t| (t.kind, t.text(&chars))).collect()
    }

    #[test]
    fn plain_statement_ends_at_semicolon() {
        assert_eq!(scan_all(&["SELECT 1;"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 1; -- done"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 1 -- no;"]), vec![(false, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 1; /* c */"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 1; SELECT 2"]), vec![(false, LexState::Normal)]);
    }

    #[test]
    fn dollar_body_semicolons_do_not_end_statements() {
        let r = scan_all(&["DO $$ BEGIN", "  PERFORM 1;", "END $$;"]);
        assert_eq!(r[0], (false, LexState::Dollar(String::new())));
        assert_eq!(r[1], (false, LexState::Dollar(String::new())));
        assert_eq!(r[2], (true, LexState::Normal));
    }

    #[test]
    fn tagged_dollar_quote_ignores_other_tags() {
        let r = scan_all(&["CREATE FUNCTION f() RETURNS text AS $fn$", "SELECT $$x;$$;", "$fn$ LANGUAGE sql;"]);
        assert_eq!(r[1], (false, LexState::Dollar("fn".into())));
        assert_eq!(r[2], (true, LexState::Normal));
    }

    #[test]
    fn parameters_and_identifiers_with_dollar_are_not_quotes() {
        assert_eq!(scan_all(&["SELECT $1;"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT a$b$ FROM t;"]), vec![(true, LexState::Normal)]);
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(scan_all(&["SELECT 'a;';"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 'it''s;'"]), vec![(false, LexState::Normal)]);
        assert_eq!(scan_all(&[r"SELECT E'a\';'"]), vec![(false, LexState::Normal)]);
        // In a standard string a backslash is literal: the quote after it closes the string.
        assert_eq!(scan_all(&[r"SELECT 'a\';"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&["SELECT 'open;"]), vec![(false, LexState::String { escapes: false })]);
        // `e'` after an identifier character is not an escape string prefix.
        assert_eq!(scan_all(&[r"SELECT type'a\';"]), vec![(true, LexState::Normal)]);
        assert_eq!(scan_all(&[r"SELECT U&'a\';", r"SELECT X'1f';"]), vec![(true, LexState::Normal); 2]);
    }

    #[test]
    fn quoted_identifiers() {
        assert_eq!(scan_all(&[r#"CREATE TABLE "a;""b" (x int);"#]), vec![(true, LexState::Normal)]);
    }

    #[test]
    fn nested_block_comments() {
        let r = scan_all(&["/* a /* b */ ;", "*/ SELECT 1;"]);
        assert_eq!(r[0], (false, LexState::BlockComment(1)));
        assert_eq!(r[1], (true, LexState::Normal));
    }

    #[test]
    fn semicolons_inside_parentheses_do_not_end_statements() {
        let r = scan_all(&[
            "CREATE RULE r AS ON INSERT TO t DO ALSO (",
            "  INSERT INTO a VALUES (1);",
            "  INSERT INTO b VALUES (1)",
            ");",
        ]);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [false, false, false, true]);
        // A stray `)` does not go below zero.
        assert_eq!(scan_all(&["SELECT 1);", "SELECT 2;"]).iter().map(|x| x.0).collect::<Vec<_>>(), [true, true]);
    }

    #[test]
    fn sql_standard_function_bodies_stay_whole() {
        let r = scan_all(&[
            "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql",
            "BEGIN ATOMIC",
            "  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;",
            "  SELECT x;",
            "END;",
            "SELECT 1;",
        ]);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [false, false, false, false, true, true]);
        let r = scan_all(&["CREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END;"]);
        assert!(r[0].0);
        // BEGIN outside a function definition is not a body.
        assert!(scan_all(&["BEGIN;"])[0].0);
        assert!(scan_all(&["CREATE TABLE begin_log (id int);"])[0].0);
    }

    #[test]
    fn open_constructs_are_described_with_their_line() {
        let mut sc = Scanner::default();
        sc.line("CREATE FUNCTION f() RETURNS int", 1);
        sc.line("BEGIN ATOMIC SELECT 1;", 2);
        assert_eq!(sc.open().unwrap(), "a function body's BEGIN without its END (opened at line 2)");
        let mut sc = Scanner::default();
        sc.line("SELECT (1;", 7);
        assert_eq!(sc.open().unwrap(), "an unclosed '(' (opened at line 7)");
        let mut sc = Scanner::default();
        sc.line("SELECT $x$ ;", 1);
        assert!(sc.open().unwrap().contains("dollar-quoted"));
    }

    #[test]
    fn tokens() {
        use TokenKind::*;
        assert_eq!(
            kinds(r#"SELECT E'a\'b', "x""y", $t$ ; $t$, 1.5e-3, $1 FROM t; -- c"#),
            vec![
                (Word, "SELECT".into()),
                (String, r"E'a\'b'".into()),
                (Other, ",".into()),
                (QuotedIdent, r#""x""y""#.into()),
                (Other, ",".into()),
                (Dollar, "$t$ ; $t$".into()),
                (Other, ",".into()),
                (Number, "1.5e-3".into()),
                (Other, ",".into()),
                (Other, "$1".into()),
                (Word, "FROM".into()),
                (Word, "t".into()),
                (Semicolon, ";".into()),
            ]
        );
        assert_eq!(kinds("a /* x /* y */ ; */ b"), vec![(Word, "a".into()), (Word, "b".into())]);
        assert_eq!(kinds("'open"), vec![(String, "'open".into())]);
    }

    #[test]
    fn goose_rule_matches_goose() {
        assert!(goose_ends_with_semicolon("  PERFORM 1;"));
        assert!(goose_ends_with_semicolon("SELECT 1; -- x;"));
        assert!(!goose_ends_with_semicolon("SELECT 1;/* c */"));
        assert!(!goose_ends_with_semicolon("-- only;"));
    }
}
